import { toJson } from "@bufbuild/protobuf";
import { timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import { type Command, Option } from "commander";
import {
  AggregateTwinsResponseSchema,
  DeleteTwinResponseSchema,
  type QuerySummary,
  QuerySummarySchema,
  SendToTwinResponseSchema,
  type TwinSnapshot,
  TwinSnapshotSchema,
} from "../../client/index.js";
import { compactJson, formatNumber, formatTable, formatTime, messageJson, printJson, printJsonLine, printLine } from "../output.js";
import { parseJsonObject, wholeNumber } from "./arg-parsers.js";
import { type ClientCommandOptions, clientCommand, withClient } from "./client-command.js";

/** Largest page the node serves (its `MAX_QUERY_LIMIT`). */
const MAX_QUERY_LIMIT = 10_000;

/** `twinmesh get`, `query`, `aggregate`, `message` and `delete`: the TwinService commands. */
export function twinCommands(): Command[] {
  return [getCommand(), queryCommand(), aggregateCommand(), messageCommand(), deleteCommand()];
}

function getCommand(): Command {
  return clientCommand("get", "print a twin's committed state, version, last seq, last event time and owner")
    .argument("<kind>", "the twin kind, e.g. patient")
    .argument("<id>", "the twin id, e.g. bed-4")
    .addHelpText("after", "\nExit 1 with TWIN_NOT_FOUND when the twin never received an event or was deleted.\n\nExample:\n  twinmesh get patient patient-1")
    .action(async (kind: string, id: string, options: ClientCommandOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const { twin } = await client.getTwin({ kind, id });
        if (twin === undefined) throw new Error(`the node answered GetTwin for ${kind}/${id} without a twin`);
        if (options.json) {
          printJson(messageJson(TwinSnapshotSchema, twin));
          return;
        }
        const lastEvent = twin.lastEventTime === undefined ? "-" : formatTime(timestampMs(twin.lastEventTime));
        printLine(`${twin.kind}/${twin.id}  version ${twin.version}  last seq ${twin.lastSeq}  last event ${lastEvent}  owner ${twin.ownerNodeId || "-"}`);
        printLine(JSON.stringify(twin.state ?? {}, null, 2));
      });
    });
}

interface QueryOptions extends ClientCommandOptions {
  filter?: string;
  orderBy?: string;
  limit?: number;
  pageToken?: string;
  all?: boolean;
}

function queryCommand(): Command {
  return clientCommand("query", "list the twins of a kind that match a CEL filter, as a table")
    .argument("<kind>", "the twin kind, e.g. patient")
    .option("--filter <cel>", "CEL over id, kind and state, e.g. 'state.ewma > 120.0 && id.startsWith(\"bed-\")'")
    .option("--order-by <path>", "a state field path with an optional ' desc', e.g. 'state.ewma desc' (default: by id)")
    .addOption(new Option("--limit <n>", `twins per page, 1 to ${MAX_QUERY_LIMIT} (default: the node's, 1000)`).argParser(wholeNumber(1, MAX_QUERY_LIMIT)))
    .option("--page-token <token>", "continue after a previous page (same kind, filter and order)")
    .option("--all", "follow the page tokens to the last page")
    .addHelpText(
      "after",
      `
Prints id, version and the state as compact JSON (cut to the terminal width), then the
summary: twins matched and scanned, filter evaluation errors, and the next page token.
With --json, one JSON line per twin, {"twin": …}, then {"summary": …} (a summary per
page with --all), however the node groups twins into messages.

Examples:
  twinmesh query patient --filter 'state.ewma > 100.0' --order-by 'state.ewma desc' --limit 10
  twinmesh query vehicle --filter 'state.fleet == "fleet-a" && state.speedKmh > 80.0' --all`,
    )
    .action(async (kind: string, options: QueryOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const rows: string[][] = [];
        let pageToken = options.pageToken ?? "";
        let pages = 0;
        let listed = 0;
        let last: QuerySummary | undefined;
        let evaluationErrors = 0n;
        let firstEvaluationError = "";
        do {
          pages++;
          last = undefined;
          for await (const message of client.queryTwins({ kind, filter: options.filter, orderBy: options.orderBy, limit: options.limit, pageToken })) {
            // The node sends twins a page per message; the output is one line per twin either way.
            for (const twin of message.twins) {
              listed++;
              if (options.json) printJsonLine({ twin: messageJson(TwinSnapshotSchema, twin) });
              else rows.push(twinRow(twin));
            }
            if (message.summary !== undefined) {
              last = message.summary;
              if (options.json) printJsonLine({ summary: messageJson(QuerySummarySchema, message.summary) });
            }
          }
          if (last === undefined) throw new Error("the query stream ended without its summary; the node may have stopped");
          // Ordered pages each rescan every twin, so their errors repeat: count the worst page.
          if (last.evaluationErrors > evaluationErrors) evaluationErrors = last.evaluationErrors;
          firstEvaluationError ||= last.firstEvaluationError;
          pageToken = last.nextPageToken;
        } while (options.all && pageToken !== "");
        if (options.json) return;
        for (const line of formatTable(["id", "version", "state"], rows)) printLine(line);
        printLine(querySummaryLine(options.all ? undefined : last, { listed, pages, evaluationErrors, firstEvaluationError, nextPageToken: pageToken }));
      });
    });
}

function twinRow(twin: TwinSnapshot): string[] {
  return [twin.id, String(twin.version), compactJson(twin.state ?? {})];
}

function querySummaryLine(
  page: QuerySummary | undefined,
  all: { listed: number; pages: number; evaluationErrors: bigint; firstEvaluationError: string; nextPageToken: string },
): string {
  const parts =
    page === undefined
      ? [`${all.listed} matched in ${all.pages} page${all.pages === 1 ? "" : "s"}`, `${all.evaluationErrors} evaluation errors`]
      : [`${page.matched} matched`, `${page.scanned} scanned`, `${page.evaluationErrors} evaluation errors`];
  let line = parts.join(", ");
  if (all.firstEvaluationError !== "") line += ` (first: ${all.firstEvaluationError})`;
  if (all.nextPageToken !== "") line += `; next page: --page-token ${all.nextPageToken}`;
  return line;
}

interface AggregateOptions extends ClientCommandOptions {
  field: string;
  groupBy?: string;
  filter?: string;
}

function aggregateCommand(): Command {
  return clientCommand("aggregate", "count, sum, average, min and max of a numeric state field, grouped")
    .argument("<kind>", "the twin kind, e.g. patient")
    .requiredOption("--field <path>", "a numeric state field path, e.g. state.ewma")
    .option("--group-by <path>", "a state field path to group by, e.g. state.ward (default: one group)")
    .option("--filter <cel>", "CEL over id, kind and state; only matching twins count")
    .addHelpText("after", "\nExample:\n  twinmesh aggregate patient --field state.ewma --group-by state.ward --filter 'state.samples > 10.0'")
    .action(async (kind: string, options: AggregateOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const response = await client.aggregateTwins({ kind, field: options.field, groupBy: options.groupBy, filter: options.filter });
        if (options.json) {
          printJson(messageJson(AggregateTwinsResponseSchema, response));
          return;
        }
        const rows = response.groups.map((g) => {
          const key = g.key === undefined ? null : toJson(ValueSchema, g.key);
          const label = key === null ? (options.groupBy === undefined ? "(all)" : "(none)") : typeof key === "string" ? key : compactJson(key);
          return [label, String(g.count), formatNumber(g.sum), formatNumber(g.avg), formatNumber(g.min), formatNumber(g.max)];
        });
        for (const line of formatTable(["group", "count", "sum", "avg", "min", "max"], rows)) printLine(line);
        printLine(`${response.matched} matched, ${response.scanned} scanned, ${response.evaluationErrors} evaluation errors`);
      });
    });
}

interface MessageOptions extends ClientCommandOptions {
  idempotencyKey?: string;
}

function messageCommand(): Command {
  return clientCommand("message", "deliver a JSON message to a twin's onMessage handler (SendToTwin)")
    .argument("<kind>", "the twin kind, e.g. ward")
    .argument("<id>", "the twin id, e.g. ward-a")
    .argument("<json>", "the message, a JSON object")
    .option("--idempotency-key <key>", "a key: a second message with the same key is not delivered again")
    .addHelpText(
      "after",
      `
Answered after the twin's turn committed. Prints the twin's version after it.

Example:
  twinmesh message ward ward-a '{"bed":"bed-4","ewma":80,"spo2":97,"alerts":[],"critical":false,"atMs":0}' --idempotency-key m-1`,
    )
    .action(async (kind: string, id: string, json: string, options: MessageOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const message = parseJsonObject(json, "the message");
        const response = await client.sendToTwin({ kind, id, message, idempotencyKey: options.idempotencyKey });
        if (options.json) {
          printJson(messageJson(SendToTwinResponseSchema, response));
          return;
        }
        printLine(
          response.duplicate
            ? `DUPLICATE ${kind}/${id}: idempotency key ${options.idempotencyKey} was used before; not delivered again (version ${response.version})`
            : `DELIVERED ${kind}/${id}: version ${response.version}`,
        );
      });
    });
}

interface DeleteOptions extends ClientCommandOptions {
  keepTombstone?: boolean;
}

function deleteCommand(): Command {
  return clientCommand("delete", "delete a twin's state, timers and open alerts (DeleteTwin)")
    .argument("<kind>", "the twin kind, e.g. patient")
    .argument("<id>", "the twin id, e.g. bed-4")
    .option("--keep-tombstone", "keep the source's seqs and idempotency keys, so late retries are rejected TWIN_DELETED")
    .addHelpText(
      "after",
      "\nBy default the delete forgets the source's seqs and the twin's idempotency keys: the next\nevent (a re-provisioned device starting again at seq 1) makes a fresh twin. With\n--keep-tombstone a late retry (a seq at or below the last one applied, or an idempotency key\nused before) is REJECTED with TWIN_DELETED instead; higher seqs make a fresh twin.\n\nExamples:\n  twinmesh delete patient bed-4\n  twinmesh delete patient bed-4 --keep-tombstone",
    )
    .action(async (kind: string, id: string, options: DeleteOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const response = await client.deleteTwin({ kind, id, keepTombstone: options.keepTombstone === true });
        if (options.json) {
          printJson(messageJson(DeleteTwinResponseSchema, response));
          return;
        }
        const seqs = response.tombstoneSeq > 0n ? `seqs up to ${response.tombstoneSeq} and ` : "";
        const tombstone = response.tombstone ? `; tombstone keeps out ${seqs}earlier idempotency keys` : "";
        if (!response.existed) {
          printLine(`${kind}/${id} has no state; nothing to delete${tombstone}`);
          return;
        }
        const alerts = response.resolvedAlertIds.length === 0 ? "" : ` (${response.resolvedAlertIds.join(", ")})`;
        printLine(
          `DELETED ${kind}/${id}: ${response.timersCancelled} timers cancelled, ${response.resolvedAlertIds.length} alerts resolved${alerts}${tombstone}`,
        );
      });
    });
}
