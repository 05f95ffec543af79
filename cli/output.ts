import { type DescMessage, type JsonValue, type MessageShape, ScalarType, toJson } from "@bufbuild/protobuf";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { CommanderError } from "commander";
import { TwinmeshClientError } from "../client/index.js";

/**
 * Printing for the client commands: one error line, JSON documents and lines, tables cut to the
 * terminal, and a progress line on stderr. Commands print only through these helpers, so every
 * command's output follows the same rules:
 *
 * - results go to stdout; errors, progress and notices go to stderr;
 * - an error is one line, `twinmesh: <message> (<REASON>)`, with no stack trace;
 * - `--json` prints one JSON document, or one JSON line per message for streams.
 */

/** Exit codes of the client commands. */
export const EXIT = {
  ok: 0,
  /** The node answered with an error, rejected an event, or could not be reached. */
  failed: 1,
  /** The command line was wrong; nothing was sent. */
  usage: 2,
} as const;

/** A problem with the command line or its input, found before anything was sent. Exits 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
  readonly reason = "USAGE";
}

/** A failure the CLI detected itself (a rejected event, a bad input line…), with its reason. */
export class CliError extends Error {
  override readonly name = "CliError";
  constructor(
    message: string,
    readonly reason: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
  }
}

/**
 * Thrown after the error line was printed: `cli/main.ts` exits with `exitCode` on any
 * CommanderError, and prints nothing more.
 */
export function exitWith(exitCode: number, message: string): CommanderError {
  return new CommanderError(exitCode, exitCode === EXIT.usage ? "twinmesh.usage" : "twinmesh.failed", message);
}

/** The one line describing `err`, without the `twinmesh: ` prefix. */
export function describeError(err: unknown, address?: string): { line: string; exitCode: number } {
  if (err instanceof UsageError) return { line: `${err.message} (${err.reason})`, exitCode: EXIT.usage };
  if (err instanceof CliError) return { line: `${err.message} (${err.reason})`, exitCode: err.exitCode };
  if (err instanceof TwinmeshClientError) {
    const reason = err.reason ?? GrpcStatus[err.code] ?? `STATUS_${err.code}`;
    let message = clientErrorMessage(err);
    if (err.reason === undefined && err.code === GrpcStatus.UNAVAILABLE && address !== undefined) {
      message = `cannot reach a twinmesh node at ${address} (${message}); start one with 'twinmesh start --demo', or pass --address`;
    } else if (err.reason === undefined && err.code === GrpcStatus.DEADLINE_EXCEEDED && address !== undefined) {
      message = `the node at ${address} did not answer in time (${message})`;
    }
    for (const v of err.violations) if (!message.includes(v.field)) message += `; ${v.field}: ${v.description}`;
    return { line: `${message} (${reason})`, exitCode: EXIT.failed };
  }
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return { line: `${oneLine(err.message)} (${typeof code === "string" ? code : "ERROR"})`, exitCode: EXIT.failed };
  }
  return { line: `${oneLine(String(err))} (ERROR)`, exitCode: EXIT.failed };
}

/** Writes `twinmesh: <line>` to stderr. */
export function printErrorLine(line: string): void {
  process.stderr.write(`twinmesh: ${line}\n`);
}

/** Writes a notice (not a result) to stderr, e.g. "reconnecting". */
export function printNotice(text: string): void {
  process.stderr.write(`twinmesh: ${text}\n`);
}

/**
 * A client error's message on one line, with grpc-js's connection noise cut: "No connection
 * established. Last error: Error: connect ECONNREFUSED 127.0.0.1:7420. Resolution note: " becomes
 * "connect ECONNREFUSED 127.0.0.1:7420".
 */
export function clientErrorMessage(err: TwinmeshClientError): string {
  const message = oneLine(err.message);
  const cause = /Last error: (?:Error: )?(.*?)(?:\.? Resolution note.*|\s*\(\d{4}-.*|\.)?$/.exec(message)?.[1]?.trim();
  return cause || message;
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, "; ").trim();
}

/**
 * Exits quietly when the reader of stdout goes away (`twinmesh query … | head`), instead of
 * dying on an unhandled EPIPE with a stack trace. Idempotent.
 */
export function exitQuietlyOnClosedStdout(): void {
  if (process.stdout.listenerCount("error") > 0) return;
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(EXIT.ok);
    throw err;
  });
}

/**
 * Keeps a long-running process (a node, `twinmesh cluster`) running when the reader of its stdout
 * goes away: its banner and notices are lost, its work is not (a supervisor that restarts on
 * failure would read a quiet exit 0 as a clean stop). Idempotent.
 */
export function ignoreClosedStdout(): void {
  if (process.stdout.listenerCount("error") > 0) return;
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
  });
}

/** Writes one line to stdout. */
export function printLine(text = ""): void {
  process.stdout.write(`${text}\n`);
}

/** Prints a plain value as one pretty JSON document. */
export function printJson(value: unknown): void {
  printLine(JSON.stringify(value, jsonReplacer, 2));
}

/** Prints a plain value as one JSON line (streams print one line per message). */
export function printJsonLine(value: unknown): void {
  printLine(JSON.stringify(value, jsonReplacer));
}

/** Bigints as numbers when they fit a double exactly, else as decimal strings (as {@link messageJson} does). */
function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value !== "bigint") return value;
  return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString();
}

/**
 * A protobuf message as the CLI prints it with `--json`: protobuf's canonical JSON (the form
 * grpcurl prints: field names in lowerCamelCase, enums by their full name such as
 * `"EVENT_STATUS_ACCEPTED"`, timestamps as RFC 3339), with every field present so scripts can
 * rely on the shape, except that 64-bit integers (seqs, versions, counts) are JSON numbers
 * (also as map values) whenever they are at most 2^53 − 1, which every one of them is in practice (the canonical form
 * quotes them all); a larger one stays a decimal string, so no digit is ever lost.
 */
export function messageJson<Desc extends DescMessage>(schema: Desc, message: MessageShape<Desc>): unknown {
  return safeIntegersAsNumbers(schema, toJson(schema, message, { alwaysEmitImplicit: true }));
}

const LONG_TYPES: ReadonlySet<ScalarType> = new Set([ScalarType.INT64, ScalarType.UINT64, ScalarType.SINT64, ScalarType.FIXED64, ScalarType.SFIXED64]);

/** Rewrites, in place, the 64-bit integer fields of a message's canonical JSON that fit a double exactly. */
function safeIntegersAsNumbers(schema: DescMessage, json: JsonValue): JsonValue {
  // Well-known types (Timestamp, Struct, …) have JSON forms of their own: leave them as they are.
  if (schema.typeName.startsWith("google.protobuf.") || typeof json !== "object" || json === null || Array.isArray(json)) return json;
  for (const field of schema.fields) {
    const value = json[field.jsonName];
    if (value === undefined || value === null) continue;
    if (field.fieldKind === "scalar" && LONG_TYPES.has(field.scalar)) json[field.jsonName] = safeNumber(value);
    else if (field.fieldKind === "list" && field.listKind === "scalar" && LONG_TYPES.has(field.scalar) && Array.isArray(value)) {
      json[field.jsonName] = value.map(safeNumber);
    } else if (field.fieldKind === "message") safeIntegersAsNumbers(field.message, value);
    else if (field.fieldKind === "list" && field.listKind === "message" && Array.isArray(value)) {
      for (const item of value) safeIntegersAsNumbers(field.message, item);
    } else if (field.fieldKind === "map" && field.mapKind === "scalar" && LONG_TYPES.has(field.scalar) && typeof value === "object" && !Array.isArray(value)) {
      for (const [k, item] of Object.entries(value)) if (item !== undefined) value[k] = safeNumber(item);
    } else if (field.fieldKind === "map" && field.mapKind === "message" && typeof value === "object" && !Array.isArray(value)) {
      for (const item of Object.values(value)) if (item !== undefined) safeIntegersAsNumbers(field.message, item);
    }
  }
  return json;
}

function safeNumber(value: JsonValue): JsonValue {
  if (typeof value !== "string" || !/^-?\d+$/.test(value)) return value;
  const n = Number(value);
  return Number.isSafeInteger(n) ? n : value;
}

/** JSON of a plain value, on one line, with bigints as numbers where they fit. */
export function compactJson(value: unknown): string {
  return JSON.stringify(value, jsonReplacer) ?? "null";
}

/** Width to cut table lines to: the terminal's, `COLUMNS` when set, or none when piped. */
export function terminalColumns(): number | undefined {
  const env = Number(process.env.COLUMNS);
  if (Number.isSafeInteger(env) && env > 0) return env;
  // A pseudo-terminal may report 0 columns: then do not cut.
  return process.stdout.isTTY && process.stdout.columns > 0 ? process.stdout.columns : undefined;
}

/** Cuts `text` to `width` characters, ending with "…" when cut. */
export function truncate(text: string, width: number): string {
  if (width <= 0) return "";
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 1))}…`;
}

/**
 * Formats rows as a left-aligned table under upper-case headers. The last column takes the
 * rest of the line and is cut to `width` (when given); the others are as wide as their longest cell.
 */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[], width = terminalColumns()): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const render = (cells: readonly string[]): string => {
    const fixed = cells.slice(0, -1).map((c, i) => c.padEnd(widths[i] ?? 0));
    const prefix = fixed.length === 0 ? "" : `${fixed.join("  ")}  `;
    const last = cells[cells.length - 1] ?? "";
    const line = `${prefix}${last}`;
    return width === undefined ? line : truncate(line, width);
  };
  return [render(headers.map((h) => h.toUpperCase())), ...rows.map(render)];
}

/** A number for a person: whole numbers as they are, others with up to 3 decimals. */
export function formatNumber(n: number): string {
  if (Number.isInteger(n)) return String(n);
  return String(Number(n.toFixed(3)));
}

/** A duration for a person: "0.04 s", "3.2 s", "61 s". */
export function formatSeconds(ms: number): string {
  const s = ms / 1000;
  return `${s < 10 ? Number(s.toFixed(2)) : s < 100 ? Number(s.toFixed(1)) : Math.round(s)} s`;
}

/** An ISO timestamp of epoch ms, or "-" when absent. */
export function formatTime(ms: number | undefined): string {
  return ms === undefined ? "-" : new Date(ms).toISOString();
}

/**
 * One progress line on stderr. On a terminal it rewrites itself at most every `ttyEveryMs`;
 * otherwise (a log file, a pipe) it prints a full line every `plainEveryMs`, so logs stay readable.
 * `done()` clears a terminal line; the caller then prints its summary.
 */
export class ProgressLine {
  private readonly tty = process.stderr.isTTY === true;
  // Off a terminal the first line waits a full period: a short run prints only its summary.
  private lastMs = this.tty ? 0 : Date.now();
  private shown = false;

  constructor(
    private readonly ttyEveryMs = 200,
    private readonly plainEveryMs = 5_000,
  ) {}

  /** Shows `text` if enough time passed since the last update (or always with `force`). */
  update(text: string, force = false): void {
    const now = Date.now();
    if (!force && now - this.lastMs < (this.tty ? this.ttyEveryMs : this.plainEveryMs)) return;
    this.lastMs = now;
    if (this.tty) {
      const width = process.stderr.columns || 80;
      process.stderr.write(`\r\x1b[2K${truncate(text, width - 1)}`);
      this.shown = true;
    } else {
      process.stderr.write(`${text}\n`);
    }
  }

  /** Clears the line on a terminal. Idempotent. */
  done(): void {
    if (this.tty && this.shown) process.stderr.write("\r\x1b[2K");
    this.shown = false;
  }
}
