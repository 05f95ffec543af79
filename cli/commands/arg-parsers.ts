import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { InvalidArgumentError } from "commander";
import { Consistency } from "../../client/index.js";
import { UsageError } from "../output.js";

/**
 * Parsers of command-line values. Option parsers throw commander's InvalidArgumentError (so
 * commander names the option); parsers of positional values throw {@link UsageError}.
 */

/** Largest seq the contract allows (2^53 − 1, so every language holds it exactly). */
export const MAX_SEQ = 2n ** 53n - 1n;

/** An option parser for whole numbers in `[min, max]`. */
export function wholeNumber(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

/**
 * `--address`: `host:port` as grpc-js takes it (also `[v6]:port`, `dns:…`, `unix:…`). A port, when
 * given, must be a whole number from 1 to 65535: grpc-js would otherwise fail later with an
 * UNAVAILABLE that blames the node.
 */
export function parseAddress(value: string): string {
  const port = /:(\d*)$/.exec(value)?.[1];
  if (value.trim() === "" || (port !== undefined && !/^unix:/.test(value) && !(Number(port) >= 1 && Number(port) <= 65_535 && port !== ""))) {
    throw new InvalidArgumentError('expected host:port with a port from 1 to 65535, e.g. "127.0.0.1:7420"');
  }
  return value;
}

/** An option parser for finite numbers greater than 0. */
export function positiveNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError("expected a number greater than 0");
  return n;
}

/** `--seq`: 0 (unsequenced) to 2^53 − 1. */
export function parseSeqOption(value: string): bigint {
  const seq = parseSeq(value);
  if (seq === undefined) throw new InvalidArgumentError(`expected a whole number from 0 to ${MAX_SEQ}`);
  return seq;
}

/** A seq from text or a JSON number; undefined when it is not one. */
export function parseSeq(value: unknown): bigint | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) && value >= 0 ? BigInt(value) : undefined;
  if (typeof value !== "string" || !/^\d{1,16}$/.test(value)) return undefined;
  const seq = BigInt(value);
  return seq <= MAX_SEQ ? seq : undefined;
}

/** `--time`: an ISO 8601 date-time (or epoch ms). */
export function parseTimeOption(value: string): Date {
  const time = parseTime(value);
  if (time === undefined) throw new InvalidArgumentError('expected an ISO 8601 time such as "2025-01-31T12:00:00Z"');
  return time;
}

/** A time from ISO text or epoch ms; undefined when it is not one. */
export function parseTime(value: unknown): Date | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? new Date(value) : undefined;
  if (typeof value !== "string" || value.trim() === "") return undefined;
  const asNumber = Number(value);
  const time = Number.isFinite(asNumber) ? new Date(asNumber) : new Date(value);
  return Number.isNaN(time.getTime()) ? undefined : time;
}

const CONSISTENCY = { local: Consistency.LOCAL, quorum: Consistency.QUORUM, all: Consistency.ALL } as const;
/** The `--consistency` choices. */
export const CONSISTENCY_CHOICES = Object.keys(CONSISTENCY);

/** The Consistency of a `--consistency` choice; unset means the server's default. */
export function toConsistency(choice: string | undefined): Consistency {
  return choice === undefined ? Consistency.UNSPECIFIED : (CONSISTENCY[choice as keyof typeof CONSISTENCY] ?? Consistency.UNSPECIFIED);
}

/** `bpm=72 spo2=97` → `{ bpm: 72, spo2: 97 }`. @throws UsageError naming the bad pair */
export function parseChannels(pairs: readonly string[]): Record<string, number> {
  const channels: Record<string, number> = {};
  for (const pair of pairs) {
    const [name, text] = splitPair(pair, "channel", "bpm=72");
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value)) throw new UsageError(`channel ${name}: "${text}" is not a finite number; write it as ${name}=72.5`);
    channels[name] = value;
  }
  return channels;
}

/**
 * `--attr ward=ward-a --attr bed=4` → `{ ward: "ward-a", bed: 4 }`. A value that reads as JSON
 * (a number, true/false/null, a quoted string, an object) is taken as that JSON; anything else is
 * a string.
 */
export function parseAttributes(pairs: readonly string[]): JsonObject {
  const attributes: JsonObject = {};
  for (const pair of pairs) {
    const [name, text] = splitPair(pair, "attribute", "ward=ward-a");
    attributes[name] = parseJsonOrString(text);
  }
  return attributes;
}

function parseJsonOrString(text: string): JsonValue {
  try {
    return JSON.parse(text) as JsonValue;
  } catch {
    return text;
  }
}

function splitPair(pair: string, what: string, example: string): [string, string] {
  const at = pair.indexOf("=");
  if (at <= 0) throw new UsageError(`${what} "${pair}" is not name=value; write it as ${example}`);
  return [pair.slice(0, at), pair.slice(at + 1)];
}

/** A JSON object from the command line. @throws UsageError when it is not valid JSON or not an object */
export function parseJsonObject(text: string, what: string): JsonObject {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${what} is not valid JSON (${(err as Error).message}); quote it for the shell, e.g. '{"limit": 120}'`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new UsageError(`${what} must be a JSON object, e.g. '{"limit": 120}'`);
  return value as JsonObject;
}
