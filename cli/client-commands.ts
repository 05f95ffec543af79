import type { Command } from "commander";
import { alertsCommand } from "./commands/alerts-command.js";
import { deadLettersCommand } from "./commands/dead-letters-command.js";
import { ringCommand } from "./commands/ring-command.js";
import { sendCommand } from "./commands/send-command.js";
import { simulateCommand } from "./commands/simulate-command.js";
import { statusCommand } from "./commands/status-command.js";
import { twinCommands } from "./commands/twin-commands.js";
import { exitQuietlyOnClosedStdout } from "./output.js";

/**
 * The commands that talk to a running node: send, get, query, aggregate, message, delete,
 * alerts (list, watch, ack, resolve), dead-letters (list, show, retry, delete), simulate, ring and status. Each takes `--address` (env
 * `TWINMESH_ADDRESS`, default 127.0.0.1:7420) and `--json`; errors are one line on stderr,
 * `twinmesh: <message> (<REASON>)`, with exit code 1 (2 for a usage error).
 */
export function clientCommands(): Command[] {
  const commands = [sendCommand(), ...twinCommands(), alertsCommand(), deadLettersCommand(), simulateCommand(), ringCommand(), statusCommand()];
  // Only these exit when their reader goes (`twinmesh query … | head`): a node does not stop
  // because whoever read its banner did.
  for (const command of commands) command.hook("preAction", () => exitQuietlyOnClosedStdout());
  return commands;
}
