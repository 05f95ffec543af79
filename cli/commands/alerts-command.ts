import { setTimeout as delay } from "node:timers/promises";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Command, Option } from "commander";
import {
  type Alert,
  AlertSchema,
  AlertSeverity,
  AlertState,
  type ListAlertsResponse,
  ListAlertsResponseSchema,
  type TwinmeshClient,
  TwinmeshClientError,
  WatchAlertsResponseSchema,
} from "../../client/index.js";
import { clientErrorMessage, formatTable, formatTime, messageJson, printJson, printJsonLine, printLine, printNotice } from "../output.js";
import { wholeNumber } from "./arg-parsers.js";
import { type ClientCommandOptions, clientCommand, withCliConventions, withClient } from "./client-command.js";

/** Largest page the node serves. */
const MAX_PAGE_SIZE = 1_000;
/** Reconnect delays of `alerts watch`: doubling from the first to the last, reset by a change. */
const WATCH_RETRY_FIRST_MS = 250;
const WATCH_RETRY_MAX_MS = 5_000;

const SEVERITY: Record<AlertSeverity, string> = {
  [AlertSeverity.UNSPECIFIED]: "-",
  [AlertSeverity.INFO]: "info",
  [AlertSeverity.WARNING]: "warning",
  [AlertSeverity.CRITICAL]: "critical",
};
const STATE: Record<AlertState, string> = {
  [AlertState.UNSPECIFIED]: "-",
  [AlertState.OPEN]: "OPEN",
  [AlertState.ACKNOWLEDGED]: "ACKNOWLEDGED",
  [AlertState.RESOLVED]: "RESOLVED",
};

/** `twinmesh alerts list|watch|ack|resolve`. */
export function alertsCommand(): Command {
  return withCliConventions(new Command("alerts"))
    .description("list, watch, acknowledge and resolve the alerts twins raise")
    .addCommand(listCommand())
    .addCommand(watchCommand())
    .addCommand(ackCommand())
    .addCommand(resolveCommand())
    .addHelpText(
      "after",
      `
Filters are CEL over id, kind, twin_id, code, severity ("info", "warning", "critical"),
message, state ("OPEN", "ACKNOWLEDGED", "RESOLVED"), count, raised_at and updated_at.

Examples:
  twinmesh alerts list --filter 'state == "OPEN" && severity == "critical"'
  twinmesh alerts watch --json
  twinmesh alerts ack 'patient/patient-3/tachycardia@12'`,
    );
}

/** One alert as a line: time, severity, state, twin, code, message, and the id to act on it. */
export function alertLine(a: Alert): string {
  const time = formatTime(a.updatedAt === undefined ? undefined : timestampMs(a.updatedAt));
  const count = a.count > 1n ? ` (×${a.count})` : "";
  return `${time}  ${SEVERITY[a.severity].padEnd(8)}  ${STATE[a.state].padEnd(12)}  ${a.kind}/${a.twinId}  ${a.code}  ${a.message}${count}  [${a.id}]`;
}

interface ListOptions extends ClientCommandOptions {
  filter?: string;
  pageSize?: number;
  pageToken?: string;
  all?: boolean;
}

function listCommand(): Command {
  return clientCommand("list", "list alerts that match a CEL filter, and the cursor to watch from")
    .option("--filter <cel>", "CEL over the alert's fields, e.g. 'state == \"OPEN\"'")
    .addOption(new Option("--page-size <n>", `alerts per page, 1 to ${MAX_PAGE_SIZE} (default: the node's, 100)`).argParser(wholeNumber(1, MAX_PAGE_SIZE)))
    .option("--page-token <token>", "continue after a previous page")
    .option("--all", "follow the page tokens to the last page")
    .addHelpText(
      "after",
      `
The cursor printed last lets 'alerts watch --cursor' continue with exactly the changes
after this listing. With --json, one document: {"alerts": […], "nextPageToken", "cursor"}.

Example:
  twinmesh alerts list --filter 'state == "OPEN" && kind == "patient"' --all`,
    )
    .action(async (options: ListOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const alerts: Alert[] = [];
        let pageToken = options.pageToken ?? "";
        let first: ListAlertsResponse | undefined;
        do {
          const page = await client.listAlerts({ filter: options.filter, pageSize: options.pageSize, pageToken });
          // The first page's cursor: watching from it may repeat a change seen on a later page,
          // but never misses one.
          first ??= page;
          alerts.push(...page.alerts);
          pageToken = page.nextPageToken;
        } while (options.all && pageToken !== "");
        const cursor = first?.cursor ?? "";
        if (options.json) {
          printJson(messageJson(ListAlertsResponseSchema, { ...(first as ListAlertsResponse), alerts, nextPageToken: pageToken, cursor }));
          return;
        }
        const rows = alerts.map((a) => [
          a.id,
          SEVERITY[a.severity],
          STATE[a.state],
          String(a.count),
          formatTime(a.updatedAt === undefined ? undefined : timestampMs(a.updatedAt)),
          a.message,
        ]);
        for (const line of formatTable(["id", "severity", "state", "count", "updated", "message"], rows)) printLine(line);
        let footer = `${alerts.length} alert${alerts.length === 1 ? "" : "s"}; watch from here: twinmesh alerts watch --cursor ${cursor}`;
        if (pageToken !== "") footer += `; next page: --page-token ${pageToken}`;
        printLine(footer);
      });
    });
}

interface WatchOptions extends ClientCommandOptions {
  cursor?: string;
  filter?: string;
}

function watchCommand(): Command {
  return clientCommand("watch", "print every alert change as it happens, until Ctrl-C")
    .option("--cursor <cursor>", "continue after this cursor (from 'alerts list' or an earlier watch) instead of from now")
    .option("--filter <cel>", "CEL over the alert's fields, as in 'alerts list'")
    .addHelpText(
      "after",
      `
Each change is a line: time, severity, state, twin, code, message and [alert id]; with
--json, one JSON line per change with its cursor. If the node goes away the watch
reconnects from the last cursor, so nothing is lost or repeated. Ctrl-C exits 0 and
prints the last cursor on stderr, to resume with --cursor.

Example:
  twinmesh alerts watch --filter 'severity == "critical"'`,
    )
    .action(async (options: WatchOptions, command: Command) => {
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      let cursor = options.cursor ?? "";
      try {
        await withClient(command, options, async (client) => {
          // Without a cursor, take "now" from a listing: then even a watch that saw no change
          // can be resumed exactly.
          if (cursor === "") cursor = (await client.listAlerts({ pageSize: 1 })).cursor;
          let attempt = 0;
          while (!stop.signal.aborted) {
            let lost: string;
            try {
              for await (const change of client.watchAlerts({ cursor, filter: options.filter }, stop.signal)) {
                attempt = 0;
                cursor = change.cursor;
                if (options.json) printJsonLine(messageJson(WatchAlertsResponseSchema, change));
                else if (change.alert !== undefined) printLine(alertLine(change.alert));
              }
              if (stop.signal.aborted) break;
              lost = "the node ended the stream";
            } catch (err) {
              // Only a node that went away (or is shedding load) is worth waiting for.
              if (!(err instanceof TwinmeshClientError) || !err.retryable) throw err;
              lost = clientErrorMessage(err);
            }
            attempt++;
            const waitMs = Math.min(WATCH_RETRY_MAX_MS, WATCH_RETRY_FIRST_MS * 2 ** (attempt - 1));
            printNotice(`lost the alert stream (${lost}); reconnecting in ${waitMs} ms from cursor ${cursor}`);
            await delay(waitMs, undefined, { signal: stop.signal }).catch(() => undefined);
          }
        });
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
      printNotice(`stopped; resume with: twinmesh alerts watch --cursor ${cursor}`);
    });
}

function ackCommand(): Command {
  return alertActionCommand("ack", "acknowledge an open alert: a person has seen it", (client, id) => client.acknowledgeAlert(id));
}

function resolveCommand(): Command {
  return alertActionCommand("resolve", "resolve an alert (a no-op when it is resolved already)", (client, id) => client.resolveAlert(id));
}

function alertActionCommand(name: string, description: string, act: (client: TwinmeshClient, id: string) => Promise<{ alert?: Alert }>): Command {
  return clientCommand(name, description)
    .argument("<id>", "the alert id, as 'alerts list' prints it, e.g. patient/patient-3/tachycardia@12")
    .addHelpText("after", `\nPrints the alert after the change.\n\nExample:\n  twinmesh alerts ${name} 'patient/patient-3/tachycardia@12'`)
    .action(async (id: string, options: ClientCommandOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const { alert } = await act(client, id);
        if (alert === undefined) throw new Error(`the node answered without the alert ${id}`);
        if (options.json) printJson(messageJson(AlertSchema, alert));
        else printLine(alertLine(alert));
      });
    });
}
