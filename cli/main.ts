#!/usr/bin/env node
import { Command, CommanderError } from "commander";
import { clientCommands } from "./client-commands.js";
import { clusterCommand } from "./cluster-command.js";
import { withCliConventions } from "./commands/client-command.js";
import { startCommand } from "./start-command.js";

// The program follows the commands' conventions too: an unknown command is one USAGE line, exit 2.
const program = withCliConventions(new Command("twinmesh")).description("twinmesh: a runtime for real-time digital twins").version("0.1.0");

program.addCommand(startCommand());
program.addCommand(clusterCommand());
for (const command of clientCommands()) program.addCommand(command);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  // Our commands choose their exit code; of commander's own, help and --version exit 0 and
  // the rest are usage errors: exit 2.
  if (err instanceof CommanderError) process.exit(err.code.startsWith("twinmesh.") || err.exitCode === 0 ? err.exitCode : 2);
  // Not isTwinmeshError: importing the runtime here would load RocksDB, tsx and pino into every
  // client command. A TwinmeshError (or a CLI error) carries its stable reason as a string.
  const reason = typeof err === "object" && err !== null && "reason" in err && typeof err.reason === "string" ? err.reason : undefined;
  const message = err instanceof Error ? err.message : String(err);
  const text = reason === undefined ? message : `${message} (${reason})`;
  console.error(`twinmesh: ${text}`);
  process.exit(1);
}
