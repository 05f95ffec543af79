import type { Telemetry } from "../twin/telemetry.js";
import type { JsonObject } from "../util/json.js";
import { jsonInputProblem, MAX_JSON_INPUT_DEPTH } from "../util/json-input.js";
import { hasControlCharacter, MAX_TWIN_ID_BYTES, quoteInput } from "../util/text.js";
import type { ResolvedHostOptions } from "./host-options.js";
import type { TurnOutcome } from "./twin-message.js";
import type { TwinRegistry } from "./twin-registry.js";

/** One telemetry event as the runtime takes it (the gRPC layer converts from protobuf). */
export interface IngestEvent {
  readonly kind: string;
  readonly sourceId: string;
  /** 0 for unsequenced; at most 2^53-1. */
  readonly seq: number | bigint;
  /**
   * Epoch ms; absent means "received now". Valid from {@link MIN_EVENT_TIME_MS} to
   * {@link MAX_EVENT_TIME_MS}; NaN stands for a time the wire layer could not read.
   */
  readonly timeMs?: number;
  readonly channels?: Readonly<Record<string, number>>;
  readonly attributes?: JsonObject;
}

/**
 * The earliest event time taken, 0001-01-01T00:00:00Z: the range of RFC 3339 and of
 * `google.protobuf.Timestamp`, well inside what a JavaScript `Date` holds (±8.64e15 ms), so every
 * accepted time is a valid `Date` for the handler and a valid `last_event_time` for readers.
 */
export const MIN_EVENT_TIME_MS = -62_135_596_800_000;
/** The latest event time taken, 9999-12-31T23:59:59.999Z (see {@link MIN_EVENT_TIME_MS}). */
export const MAX_EVENT_TIME_MS = 253_402_300_799_999;

/**
 * A stored last event time as readers may see it: undefined unless a whole number of ms from
 * {@link MIN_EVENT_TIME_MS} to {@link MAX_EVENT_TIME_MS}. Records written before event times were
 * checked may hold any number, which no `google.protobuf.Timestamp` can carry.
 */
export function readableEventTime(ms: number | undefined): number | undefined {
  return ms !== undefined && Number.isSafeInteger(ms) && ms >= MIN_EVENT_TIME_MS && ms <= MAX_EVENT_TIME_MS ? ms : undefined;
}

const EMPTY: Readonly<Record<string, number>> = Object.freeze({});
const EMPTY_ATTRIBUTES: JsonObject = Object.freeze({}) as JsonObject;
/** The longest kind name a class can declare (see KIND_PATTERN). */
const MAX_KIND_LENGTH = 63;

/** The Telemetry a handler sees. `time` is made on first read. */
export class TelemetryEvent implements Telemetry {
  private date: Date | undefined;
  constructor(
    readonly sourceId: string,
    readonly seq: number,
    readonly timeMs: number,
    readonly channels: Readonly<Record<string, number>>,
    readonly attributes: Readonly<JsonObject>,
  ) {}
  get time(): Date {
    return (this.date ??= new Date(this.timeMs));
  }
}

function reject(reason: string, message: string): TurnOutcome {
  return { status: "rejected", reason, message, retryable: false };
}

/**
 * Checks every event of a batch before any of it is applied: `results[i]` is the rejection of
 * `events[i]` or the Telemetry to deliver. A bug that throws here fails the whole call with
 * nothing applied, never half a batch.
 */
export function validateBatch(
  events: readonly IngestEvent[],
  registry: TwinRegistry,
  limits: ResolvedHostOptions,
  nowMs: number,
): (TurnOutcome | TelemetryEvent)[] {
  const results = new Array<TurnOutcome | TelemetryEvent>(events.length);
  for (let i = 0; i < events.length; i++) results[i] = validateEvent(events[i] as IngestEvent, registry, limits, nowMs);
  return results;
}

/**
 * Checks one event; returns the rejection, or the Telemetry to deliver.
 * Messages name the field, the value and what a valid one looks like.
 */
export function validateEvent(e: IngestEvent, registry: TwinRegistry, limits: ResolvedHostOptions, nowMs: number): TurnOutcome | TelemetryEvent {
  if (typeof e.kind !== "string" || e.kind.length === 0)
    return reject("BAD_FIELD", `event has no kind; set kind to one of: ${registry.kindNames().join(", ")}`);
  // No kind can be this long: the field is malformed, not merely unknown.
  if (e.kind.length > MAX_KIND_LENGTH) return reject("BAD_FIELD", `kind is ${e.kind.length} characters; the limit is ${MAX_KIND_LENGTH}`);
  if (registry.find(e.kind) === undefined) {
    const known = registry.kindNames();
    return reject(
      "UNKNOWN_KIND",
      `unknown twin kind ${quoteInput(e.kind)}; this node knows ${known.length === 0 ? "no kinds" : known.map((k) => `"${k}"`).join(", ")}`,
    );
  }
  const id = e.sourceId;
  if (typeof id !== "string" || id.length === 0)
    return reject("BAD_FIELD", "event has an empty source_id; set it to the data source's id (it is the twin's id)");
  if (id.length > MAX_TWIN_ID_BYTES || Buffer.byteLength(id) > MAX_TWIN_ID_BYTES) {
    return reject("BAD_FIELD", `source_id is ${Buffer.byteLength(id)} bytes; the limit is ${MAX_TWIN_ID_BYTES}`);
  }
  if (hasControlCharacter(id)) return reject("BAD_FIELD", `source_id ${quoteInput(id)} contains control characters; use printable characters`);
  let seq: number;
  if (typeof e.seq === "bigint") {
    if (e.seq > BigInt(Number.MAX_SAFE_INTEGER) || e.seq < 0n)
      return reject("BAD_SEQ", `seq ${e.seq} is above 2^53-1; sequence numbers must fit a double exactly`);
    seq = Number(e.seq);
  } else {
    seq = e.seq;
    if (!Number.isSafeInteger(seq) || seq < 0) return reject("BAD_SEQ", `seq ${seq} is not a whole number from 0 to 2^53-1`);
  }
  let timeMs = e.timeMs;
  if (timeMs === undefined) timeMs = nowMs;
  else if (Number.isNaN(timeMs)) {
    return reject(
      "BAD_TIME",
      "event time is not a valid timestamp (its nanos must be 0 to 999999999); send the time the reading was taken, or leave time unset",
    );
  } else if (!(timeMs >= MIN_EVENT_TIME_MS && timeMs <= MAX_EVENT_TIME_MS)) {
    return reject(
      "BAD_TIME",
      `event time is ${timeMs} ms from 1970-01-01, outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z (RFC 3339); send the time the reading was taken, or leave time unset`,
    );
  } else if (timeMs > nowMs + limits.maxClockSkewMs) {
    return reject(
      "TIME_IN_FUTURE",
      `event time ${new Date(timeMs).toISOString()} is ${Math.round((timeMs - nowMs) / 1000)} s ahead of the node's clock (limit ${limits.maxClockSkewMs / 1000} s); fix the source's clock or leave time unset`,
    );
  }
  const channels = e.channels ?? EMPTY;
  let count = 0;
  for (const name in channels) {
    const value = channels[name];
    if (name.length === 0 || name.length > 128) return reject("BAD_CHANNEL", `channel name ${quoteInput(name, 32)} must be 1-128 characters`);
    // As for source_id: a channel name reaches handlers, state and logs.
    if (hasControlCharacter(name)) return reject("BAD_CHANNEL", `channel name ${quoteInput(name)} contains control characters; use printable characters`);
    if (typeof value !== "number" || !Number.isFinite(value)) {
      return reject("BAD_CHANNEL", `channel ${quoteInput(name)} is ${String(value)}; channel values must be finite numbers`);
    }
    if (++count > limits.maxChannels) return reject("TOO_MANY_CHANNELS", `event has more than ${limits.maxChannels} channels; split it or raise maxChannels`);
  }
  const attributes = e.attributes ?? EMPTY_ATTRIBUTES;
  if (attributes !== EMPTY_ATTRIBUTES) {
    const problem = jsonInputProblem(attributes, MAX_JSON_INPUT_DEPTH);
    if (problem !== undefined) return reject("BAD_ATTRIBUTES", `attributes${problem.path} ${problem.why}`);
    let size = 0;
    for (const _ in attributes) {
      size = JSON.stringify(attributes).length;
      break;
    }
    if (size > limits.maxAttributesBytes) {
      return reject("ATTRIBUTES_TOO_LARGE", `attributes are ${size} bytes; the limit is ${limits.maxAttributesBytes}`);
    }
  }
  return new TelemetryEvent(id, seq, timeMs, channels, attributes);
}
