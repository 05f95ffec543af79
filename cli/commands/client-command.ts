import { Command, type CommanderError, Option } from "commander";
import { TwinmeshClient } from "../../client/index.js";
import { describeError, EXIT, exitWith, printErrorLine, UsageError } from "../output.js";
import { parseAddress } from "./arg-parsers.js";

/** Where a client command connects when neither `--address` nor `TWINMESH_ADDRESS` is set. */
export const DEFAULT_ADDRESS = "127.0.0.1:7420";

/** The options every client command has. */
export interface ClientCommandOptions {
  /** `host:port` of the node. */
  readonly address: string;
  /** Print JSON instead of text. */
  readonly json?: boolean;
}

// Commander's own exits that are not errors.
const NOT_ERRORS = new Set(["commander.helpDisplayed", "commander.version"]);

/**
 * Applies the CLI's error conventions to a command (and later to its subcommands, which call it
 * too): a usage error prints one line, `twinmesh: <message>; see 'twinmesh <cmd> --help' (USAGE)`,
 * and exits 2; `--help` exits 0. Commands added with `addCommand` do not inherit these settings
 * from the program, so each command sets them itself.
 */
export function withCliConventions(command: Command): Command {
  return command
    .configureOutput({
      outputError: (text, write) => {
        // One line: commander puts its suggestion ("(Did you mean send?)") on a line of its own.
        const message = text
          .trim()
          .replace(/^error:\s*/, "")
          .replace(/\s*\n\s*/g, " ")
          .replace(/\.$/, "");
        write(`twinmesh: ${message}; see '${commandPath(command)} --help' (USAGE)\n`);
      },
    })
    .exitOverride((err: CommanderError) => {
      if (NOT_ERRORS.has(err.code)) throw exitWith(EXIT.ok, err.message);
      throw exitWith(EXIT.usage, err.message);
    });
}

/** `twinmesh alerts watch` for the command `watch` under `alerts`. */
function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c !== null; c = c.parent) names.unshift(c.name());
  return names[0] === "twinmesh" ? names.join(" ") : ["twinmesh", ...names].join(" ");
}

/** A command that talks to a node: `--address` (env `TWINMESH_ADDRESS`) and `--json`, plus the conventions above. */
export function clientCommand(name: string, description: string): Command {
  return withCliConventions(new Command(name))
    .description(description)
    .addOption(new Option("--address <host:port>", "the node to talk to").env("TWINMESH_ADDRESS").default(DEFAULT_ADDRESS).argParser(parseAddress))
    .option("--json", "print JSON (one document, or one JSON line per streamed message)");
}

/**
 * Runs a command's body with a client for `--address`, closes the client, and turns any error
 * into the one stderr line and the exit code: 2 for a {@link UsageError}, else 1. Usage errors
 * go through commander, so they look like commander's own.
 */
export async function withClient(command: Command, options: ClientCommandOptions, body: (client: TwinmeshClient) => Promise<void>): Promise<void> {
  const client = new TwinmeshClient(options.address);
  try {
    await body(client);
  } catch (err) {
    if (err instanceof UsageError) command.error(err.message, { exitCode: EXIT.usage, code: "twinmesh.usage" });
    const { line, exitCode } = describeError(err, options.address);
    printErrorLine(line);
    throw exitWith(exitCode, line);
  } finally {
    client.close();
  }
}
