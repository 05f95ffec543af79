#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { isTwinmeshError } from "../runtime/index.js";
import { clientCommands } from "./client-commands.js";
import { startCommand } from "./start-command.js";

const program = new Command("twinmesh")
  .description("twinmesh: a runtime for real-time digital twins")
  .version("0.1.0")
  .showHelpAfterError("(run with --help for usage)")
  .exitOverride();

program.addCommand(startCommand());
for (const command of clientCommands()) program.addCommand(command);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Our commands choose their exit code; of commander's own, help and --version exit 0 and
  // the rest are usage errors: exit 2.
  if (err instanceof CommanderError) process.exit(err.code.startsWith("twinmesh.") || err.exitCode === 0 ? err.exitCode : 2);
  const text = isTwinmeshError(err) ? `${err.message} (${err.reason})` : err instanceof Error ? err.message : String(err);
  console.error(`twinmesh: ${text}`);
  process.exit(1);
}
