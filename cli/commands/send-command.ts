import { type FileHandle, open } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Command, Option } from "commander";
import { EventResultSchema, EventSchema, EventStatus, type TwinmeshClient, TwinmeshClientError } from "../../client/index.js";
import { CliError, clientErrorMessage, formatSeconds, messageJson, ProgressLine, printJson, printLine, printNotice, UsageError } from "../output.js";
import { type EventInit, PublishPipeline, type PublishTotals } from "../simulator/index.js";
import {
  CONSISTENCY_CHOICES,
  parseAttributes,
  parseChannels,
  parseSeq,
  parseSeqOption,
  parseTime,
  parseTimeOption,
  toConsistency,
  wholeNumber,
} from "./arg-parsers.js";
import { type ClientCommandOptions, clientCommand, withClient } from "./client-command.js";

interface SendOptions extends ClientCommandOptions {
  seq?: bigint;
  time?: Date;
  attr: string[];
  consistency?: string;
  file?: string;
  batch: number;
}

/** Most events the node takes in one request (its default `maxBatchEvents`). */
const MAX_BATCH = 10_000;

/** `twinmesh send`: one event with Publish, or a JSON-lines file over PublishStream. */
export function sendCommand(): Command {
  return clientCommand("send", "publish one event (or a file of events with --file) and print the outcome")
    .argument("[kind]", "the twin kind, e.g. patient")
    .argument("[source-id]", "the data source, which is also the twin id, e.g. bed-4")
    .argument("[channels...]", "readings as channel=value, e.g. bpm=72 spo2=97")
    .addOption(new Option("--seq <n>", "the source's sequence number (0: unsequenced, never deduplicated)").argParser(parseSeqOption))
    .addOption(new Option("--time <iso>", "when the reading was taken (default: when the node receives it)").argParser(parseTimeOption))
    .option("--attr <key=value...>", 'an attribute; a value that reads as JSON (72, true, "x") is taken as JSON, else as text', collect, [])
    .addOption(
      new Option("--consistency <level>", "copies that must be durable before the answer (default: the node's; see below)").choices(CONSISTENCY_CHOICES),
    )
    .option("--file <events.jsonl>", 'send every line of a JSON-lines file: {"kind", "source_id", "seq", "channels", "attributes", "time"} ("-" reads stdin)')
    .addOption(new Option("--batch <n>", "events per PublishStream request with --file").default(500).argParser(wholeNumber(1, MAX_BATCH)))
    .addHelpText(
      "after",
      `
Outcomes: ACCEPTED (applied), DUPLICATE (this source and seq were applied before; exit 0),
REJECTED (exit 1; the reason says why). With --file, a summary counts each outcome and
exits 1 if any event was rejected.

Consistency counts durable copies of the twin, the owner's included: local is one, quorum a
majority of the replication factor, all every copy. A cluster's default is quorum; a
single node keeps one copy (replication factor 1), so there quorum and all are met by that
copy, as local is ('twinmesh ring' shows the factor).

Examples:
  twinmesh send patient bed-4 bpm=72 spo2=97 --seq 1 --attr ward=ward-a
  twinmesh send vehicle truck-7 speed_kmh=88 lat=51.92 lon=4.47 --time 2025-01-31T12:00:00Z
  twinmesh send --file events.jsonl --batch 1000`,
    )
    .action(async (kind: string | undefined, sourceId: string | undefined, channels: string[], options: SendOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        if (options.file !== undefined) {
          if (kind !== undefined)
            throw new UsageError(`--file sends the events of the file; drop the arguments ("${[kind, sourceId, ...channels].filter(Boolean).join(" ")}")`);
          await sendFile(client, options.file, options);
        } else {
          if (kind === undefined || sourceId === undefined)
            throw new UsageError("name the twin kind and the source id, e.g. 'twinmesh send patient bed-4 bpm=72', or pass --file");
          if (channels.length === 0) throw new UsageError("give at least one reading as channel=value, e.g. bpm=72");
          await sendOne(client, { kind, sourceId, channels: parseChannels(channels), attributes: parseAttributes(options.attr) }, options);
        }
      });
    });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

async function sendOne(
  client: TwinmeshClient,
  e: { kind: string; sourceId: string; channels: Record<string, number>; attributes: JsonObject },
  options: SendOptions,
): Promise<void> {
  const event = create(EventSchema, {
    kind: e.kind,
    sourceId: e.sourceId,
    seq: options.seq ?? 0n,
    time: options.time === undefined ? undefined : timestampFromDate(options.time),
    channels: e.channels,
    attributes: Object.keys(e.attributes).length === 0 ? undefined : e.attributes,
  });
  const { results } = await client.publish([event], toConsistency(options.consistency));
  const result = results[0];
  if (result === undefined) throw new CliError("the node answered without a result for the event", "NO_RESULT");
  const what = `${e.kind}/${e.sourceId} seq ${event.seq}`;
  if (options.json) printJson({ event: messageJson(EventSchema, event), result: messageJson(EventResultSchema, result) });
  if (result.status === EventStatus.REJECTED) {
    const hint = result.retryable ? "; it may succeed if sent again with the same --seq" : "";
    throw new CliError(`event ${what} was rejected: ${result.message}${hint}`, result.reason || "REJECTED");
  }
  if (options.json) return;
  printLine(result.status === EventStatus.ACCEPTED ? `ACCEPTED ${what}` : `DUPLICATE ${what}: already applied, not applied again`);
}

/** A line of the file, by number, so rejections can point at it. */
type LineNumber = number;

async function sendFile(client: TwinmeshClient, file: string, options: SendOptions): Promise<void> {
  const name = file === "-" ? "stdin" : file;
  // Open before sending anything, so a wrong path is one clear error and nothing else happens.
  const input = file === "-" ? process.stdin : (await openEventsFile(file)).createReadStream({ encoding: "utf8" });
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  const pipeline = new PublishPipeline<LineNumber>(client, {
    maxBatchEvents: options.batch,
    consistency: toConsistency(options.consistency),
    onStreamError: (err, reopenInMs) =>
      printNotice(
        `the stream to ${options.address} failed (${err instanceof TwinmeshClientError ? clientErrorMessage(err) : err.message}); resending in ${reopenInMs} ms`,
      ),
  });
  const progress = new ProgressLine();
  const t0 = performance.now();
  const show = (totals: PublishTotals<LineNumber>, force = false): void => progress.update(progressText(name, totals, performance.now() - t0), force);
  let lineNumber = 0;
  let badLine: UsageError | undefined;
  try {
    for await (const line of lines) {
      lineNumber++;
      if (line.trim() === "") continue;
      await pipeline.push(parseEventLine(line, name, lineNumber), lineNumber);
      show(pipeline.totals);
    }
  } catch (err) {
    if (!(err instanceof UsageError)) {
      await pipeline.close().catch(() => undefined);
      throw err;
    }
    // Stop reading, but let what was sent be answered: the summary says what was applied.
    badLine = err;
  } finally {
    lines.close();
  }
  const totals = await pipeline.close();
  progress.done();
  const elapsedMs = performance.now() - t0;
  printSummary(name, totals, elapsedMs, options.json === true);
  if (badLine !== undefined) throw new CliError(`${badLine.message}; the ${totals.pushed} events before it were sent`, "BAD_LINE");
  if (totals.rejected > 0) throw new CliError(`${totals.rejected} of ${totals.pushed} events were rejected`, totals.rejections[0]?.reason ?? "REJECTED");
}

async function openEventsFile(file: string): Promise<FileHandle> {
  try {
    return await open(file, "r");
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new CliError(`cannot read the events file ${file}: ${e.message.replace(/^\w+: /, "").replace(/, open .*$/, "")}`, e.code ?? "ERROR");
  }
}

function progressText(name: string, t: PublishTotals<LineNumber>, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? Math.round((t.accepted + t.duplicate + t.rejected) / (elapsedMs / 1000)) : 0;
  return `${name}: sent ${t.pushed} events: ${t.accepted} accepted, ${t.duplicate} duplicate, ${t.rejected} rejected, ${t.pending} waiting (${rate} events/s)`;
}

function printSummary(name: string, t: PublishTotals<LineNumber>, elapsedMs: number, json: boolean): void {
  const seconds = elapsedMs / 1000;
  const rate = seconds > 0 ? Math.round(t.pushed / seconds) : 0;
  if (json) {
    printJson({
      file: name,
      events: t.pushed,
      accepted: t.accepted,
      duplicate: t.duplicate,
      rejected: t.rejected,
      retried: t.retried,
      elapsedMs: Math.round(elapsedMs),
      rejections: t.rejections.map((r) => ({ reason: r.reason, count: r.count, firstLine: r.tag, firstMessage: r.message })),
    });
    return;
  }
  printLine(
    `${name}: ${t.pushed} events in ${formatSeconds(elapsedMs)} (${rate} events/s): ${t.accepted} accepted, ${t.duplicate} duplicate, ${t.rejected} rejected`,
  );
  if (t.retried > 0) printLine(`  ${t.retried} sends were retries of retryable rejections`);
  for (const r of t.rejections.slice(0, 5))
    printLine(`  ${r.count} × ${r.reason}, first at line ${r.tag} (${r.kind}/${r.sourceId} seq ${r.seq}): ${r.message}`);
  if (t.rejections.length > 5) printLine(`  … and ${t.rejections.length - 5} more reasons`);
}

/**
 * One line of an events file: `{"kind", "source_id", "seq", "channels", "attributes", "time"}`
 * (`sourceId` is accepted too; `seq` may be a number or a decimal string; `time` ISO 8601 or
 * epoch ms). The node checks what it must (kind known, channels finite); this checks the shape.
 * @throws UsageError naming the file, the line and the field
 */
function parseEventLine(line: string, file: string, lineNumber: number): EventInit {
  const where = `${file} line ${lineNumber}`;
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new UsageError(`${where} is not JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new UsageError(`${where} is not a JSON object`);
  const o = value as Record<string, unknown>;
  const kind = o.kind;
  const sourceId = o.source_id ?? o.sourceId;
  if (typeof kind !== "string" || kind === "") throw new UsageError(`${where}: "kind" must be a non-empty string`);
  if (typeof sourceId !== "string" || sourceId === "") throw new UsageError(`${where}: "source_id" must be a non-empty string`);
  const seq = o.seq === undefined ? 0n : parseSeq(o.seq);
  if (seq === undefined) throw new UsageError(`${where}: "seq" must be a whole number from 0 to 2^53-1, got ${JSON.stringify(o.seq)}`);
  const channels = o.channels ?? {};
  if (typeof channels !== "object" || channels === null || Array.isArray(channels)) throw new UsageError(`${where}: "channels" must be an object of numbers`);
  for (const [name, v] of Object.entries(channels)) {
    if (typeof v !== "number") throw new UsageError(`${where}: channel "${name}" must be a number, got ${JSON.stringify(v)}`);
  }
  const attributes = o.attributes;
  if (attributes !== undefined && (typeof attributes !== "object" || attributes === null || Array.isArray(attributes))) {
    throw new UsageError(`${where}: "attributes" must be an object`);
  }
  let time: Date | undefined;
  if (o.time !== undefined) {
    time = parseTime(o.time);
    if (time === undefined) throw new UsageError(`${where}: "time" must be an ISO 8601 time or epoch ms, got ${JSON.stringify(o.time)}`);
  }
  return {
    kind,
    sourceId,
    seq,
    channels: channels as Record<string, number>,
    attributes: attributes as JsonObject | undefined,
    time: time === undefined ? undefined : timestampFromDate(time),
  };
}
