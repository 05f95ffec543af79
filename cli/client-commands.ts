import type { Command } from "commander";

/** The commands that talk to a running node (send, get, query, alerts, simulate). */
export function clientCommands(): Command[] {
  return [];
}
