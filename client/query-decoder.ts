/**
 * A hand-written decoder for the pages of twins QueryTwins streams. protobuf-es's
 * `fromBinary` builds `google.protobuf.Struct` messages and converts them to JSON afterwards;
 * this decoder reads the state's JSON straight from the bytes. protobuf-es stays the reference:
 * the result is what `fromBinary` returns (the unit tests compare them on generated states), and
 * anything off the path a twin message takes is handed to `fromBinary` itself.
 */
import { fromBinary, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { type QueryTwinsResponse, QueryTwinsResponseSchema, type TwinSnapshot } from "../proto/gen/twinmesh/v1/twin_pb.js";
import {
  TAG_ENTRY_KEY,
  TAG_ENTRY_VALUE,
  TAG_LIST_VALUES,
  TAG_RESPONSE_TWINS,
  TAG_SNAPSHOT_ID,
  TAG_SNAPSHOT_KIND,
  TAG_SNAPSHOT_LAST_EVENT_TIME,
  TAG_SNAPSHOT_LAST_SEQ,
  TAG_SNAPSHOT_OWNER_NODE_ID,
  TAG_SNAPSHOT_STATE,
  TAG_SNAPSHOT_VERSION,
  TAG_STRUCT_ENTRY,
  TAG_TIMESTAMP_NANOS,
  TAG_TIMESTAMP_SECONDS,
  TAG_VALUE_BOOL,
  TAG_VALUE_LIST,
  TAG_VALUE_NULL,
  TAG_VALUE_NUMBER,
  TAG_VALUE_STRING,
  TAG_VALUE_STRUCT,
} from "./snapshot-wire-tags.js";

/**
 * Decodes a `twinmesh.v1.QueryTwinsResponse`, with the same result as protobuf-es's
 * `fromBinary(QueryTwinsResponseSchema, bytes)`: the same `$typeName`s, defaults and key order,
 * `version` and `lastSeq` as bigints, the state as the JSON object protobuf-es gives a Struct field.
 *
 * It reads a page of twins as any protobuf encoder writes it (each twin's fields once, in number
 * order). Everything else goes to `fromBinary`, so it is decoded, or rejected, exactly as there:
 * the summary, a message without twins, unknown or repeated fields, other wire types, integers
 * beyond 2^53 - 1, timestamps before 1970, invalid UTF-8, truncated bytes, states nested more than
 * 32 levels deep.
 * @throws whatever `fromBinary` throws for malformed bytes, e.g. a RangeError "premature EOF".
 */
export function decodeQueryTwinsResponse(bytes: Uint8Array): QueryTwinsResponse {
  return decodeTwinMessage(bytes) ?? fromBinary(QueryTwinsResponseSchema, bytes);
}

/**
 * The fast path of {@link decodeQueryTwinsResponse} alone: the message when it holds one or more
 * twins and nothing else, in the form encoders write; undefined for anything it leaves to `fromBinary`.
 * Exported for the tests, which check which path a message takes.
 */
export function decodeTwinMessage(bytes: Uint8Array): QueryTwinsResponse | undefined {
  try {
    return new Reader(bytes).queryTwinsResponse();
  } catch (err) {
    if (err instanceof OffFastPath) return undefined;
    throw err;
  }
}

/**
 * Struct and list values nested deeper than this are left to `fromBinary`. Each level is two
 * messages (a Value and its Struct or ListValue), so `fromBinary`'s limit of 100 nested messages is
 * not reached on the fast path, and its error for deeper bytes is the one callers see.
 */
const MAX_FAST_DEPTH = 32;

/** Slots of {@link recentStrings}, a power of two. */
const RECENT_STRING_SLOTS = 1024;
/**
 * Short ASCII strings decoded recently, by a hash of their bytes; a collision replaces the older
 * one. State keys repeat from twin to twin (and so do kinds, owners and enum-like values), and
 * returning the string already made saves making it again and lets V8 reuse its property-key
 * lookups when the key is stored into a new state object. Filled up front: an array written at
 * scattered indices would become a slow dictionary.
 */
const recentStrings: string[] = new Array<string>(RECENT_STRING_SLOTS).fill("");
/** Longer strings are not looked up in {@link recentStrings}, and take TextDecoder's path. */
const RECENT_STRING_MAX_BYTES = 32;
/** protobuf-es decodes proto3 strings strictly, and keeps a leading U+FEFF as text. */
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Scratch for reading doubles: their bytes are copied in, in the host's byte order. */
const float64 = new Float64Array(1);
const float64Bytes = new Uint8Array(float64.buffer);
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Thrown inside the decoder where it hands the message to `fromBinary`; never escapes. */
class OffFastPath extends Error {}

/**
 * Reads one message. Every read is bounded by the end of the field that contains it, and any
 * surprise throws {@link OffFastPath}.
 */
class Reader {
  private pos = 0;
  private depth = 0;

  constructor(private readonly buf: Uint8Array) {}

  queryTwinsResponse(): QueryTwinsResponse {
    const end = this.buf.length;
    // Only a message holding nothing but twins, one or more: the summary comes once per query.
    const twins: TwinSnapshot[] = [];
    do {
      this.expect(TAG_RESPONSE_TWINS, end);
      twins.push(this.twinSnapshot(this.lengthEnd(end)));
    } while (this.pos < end);
    return { $typeName: "twinmesh.v1.QueryTwinsResponse", twins };
  }

  private twinSnapshot(end: number): TwinSnapshot {
    let kind = "";
    let id = "";
    let state: JsonObject | undefined;
    let version = 0n;
    let lastSeq = 0n;
    let lastEventTime: Timestamp | undefined;
    let ownerNodeId = "";
    let lastTag = 0;
    while (this.pos < end) {
      const tag = this.buf[this.pos++] ?? 0;
      // Field numbers up to 7 fit a one-byte tag; requiring them to rise also rules out repeats, which fromBinary merges.
      if (tag <= lastTag) throw new OffFastPath();
      lastTag = tag;
      switch (tag) {
        case TAG_SNAPSHOT_KIND:
          kind = this.string(end);
          break;
        case TAG_SNAPSHOT_ID:
          id = this.string(end);
          break;
        case TAG_SNAPSHOT_STATE:
          state = this.structFields(this.lengthEnd(end));
          break;
        case TAG_SNAPSHOT_VERSION:
          version = BigInt(this.varint(end));
          break;
        case TAG_SNAPSHOT_LAST_SEQ:
          lastSeq = BigInt(this.varint(end));
          break;
        case TAG_SNAPSHOT_LAST_EVENT_TIME:
          lastEventTime = this.timestamp(this.lengthEnd(end));
          break;
        case TAG_SNAPSHOT_OWNER_NODE_ID:
          ownerNodeId = this.string(end);
          break;
        default:
          throw new OffFastPath();
      }
    }
    // The keys in fromBinary's order: create()'s defaults first, then message fields as they are read.
    const twin: TwinSnapshot = { $typeName: "twinmesh.v1.TwinSnapshot", kind, id, version, lastSeq, ownerNodeId };
    if (state !== undefined) twin.state = state;
    if (lastEventTime !== undefined) twin.lastEventTime = lastEventTime;
    return twin;
  }

  private timestamp(end: number): Timestamp {
    let seconds = 0;
    let nanos = 0;
    if (this.pos < end && this.buf[this.pos] === TAG_TIMESTAMP_SECONDS) {
      this.pos++;
      seconds = this.varint(end); // a negative int64 (before 1970) takes 10 bytes, more than varint() reads
    }
    if (this.pos < end && this.buf[this.pos] === TAG_TIMESTAMP_NANOS) {
      this.pos++;
      nanos = this.varint(end);
      if (nanos > 0x7fff_ffff) throw new OffFastPath(); // beyond int32, which fromBinary truncates
    }
    if (this.pos !== end) throw new OffFastPath();
    return { $typeName: "google.protobuf.Timestamp", seconds: BigInt(seconds), nanos };
  }

  /**
   * The entries of a `google.protobuf.Struct`, as the plain object protobuf-es makes: keys in
   * wire order, a repeated key keeps its first place and its last value, and `__proto__` is an
   * own property.
   */
  private structFields(end: number): JsonObject {
    const obj: JsonObject = {};
    while (this.pos < end) {
      this.expect(TAG_STRUCT_ENTRY, end);
      const entryEnd = this.lengthEnd(end);
      this.expect(TAG_ENTRY_KEY, entryEnd);
      const key = this.string(entryEnd);
      this.expect(TAG_ENTRY_VALUE, entryEnd);
      const value = this.value(this.lengthEnd(entryEnd));
      if (this.pos !== entryEnd) throw new OffFastPath();
      if (key === "__proto__") Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
      else obj[key] = value;
    }
    return obj;
  }

  /** A `google.protobuf.Value` as JSON: an unset kind is null, as protobuf-es makes it. */
  private value(end: number): JsonValue {
    if (this.pos === end) return null;
    let value: JsonValue;
    switch (this.buf[this.pos++]) {
      case TAG_VALUE_NULL:
        // null_value is an enum; protobuf-es turns any value of it into null.
        this.smallVarint(end);
        value = null;
        break;
      case TAG_VALUE_NUMBER:
        value = this.double(end);
        break;
      case TAG_VALUE_STRING:
        value = this.string(end);
        break;
      case TAG_VALUE_BOOL:
        value = this.smallVarint(end) !== 0;
        break;
      case TAG_VALUE_STRUCT:
        if (++this.depth > MAX_FAST_DEPTH) throw new OffFastPath();
        value = this.structFields(this.lengthEnd(end));
        this.depth--;
        break;
      case TAG_VALUE_LIST:
        if (++this.depth > MAX_FAST_DEPTH) throw new OffFastPath();
        value = this.listValues(this.lengthEnd(end));
        this.depth--;
        break;
      default:
        throw new OffFastPath();
    }
    // A second member of the oneof: fromBinary's rules decide which one stays.
    if (this.pos !== end) throw new OffFastPath();
    return value;
  }

  private listValues(end: number): JsonValue[] {
    const values: JsonValue[] = [];
    while (this.pos < end) {
      this.expect(TAG_LIST_VALUES, end);
      const valueEnd = this.lengthEnd(end);
      values.push(this.value(valueEnd));
    }
    return values;
  }

  /** A length-delimited UTF-8 string; short ASCII ones come from {@link recentStrings} when they repeat. */
  private string(end: number): string {
    const stop = this.lengthEnd(end);
    const start = this.pos;
    const buf = this.buf;
    this.pos = stop;
    const len = stop - start;
    if (len <= RECENT_STRING_MAX_BYTES) {
      let hash = len;
      let i = start;
      for (; i < stop; i++) {
        const b = buf[i] ?? 0;
        if (b > 0x7f) break;
        hash = (Math.imul(hash, 31) + b) | 0;
      }
      if (i === stop) {
        const slot = (hash ^ (hash >>> 10)) & (RECENT_STRING_SLOTS - 1);
        const recent = recentStrings[slot] ?? "";
        if (recent.length === len && sameAscii(recent, buf, start)) return recent;
        const s = asciiString(buf, start, stop);
        recentStrings[slot] = s;
        return s;
      }
    }
    try {
      return utf8.decode(buf.subarray(start, stop));
    } catch {
      throw new OffFastPath(); // invalid UTF-8: fromBinary throws its own error for it
    }
  }

  /** A little-endian double, copied into {@link float64} (cheaper than a DataView per message). */
  private double(end: number): number {
    const buf = this.buf;
    const p = this.pos;
    if (p + 8 > end) throw new OffFastPath();
    if (HOST_LITTLE_ENDIAN) for (let i = 0; i < 8; i++) float64Bytes[i] = buf[p + i] ?? 0;
    else for (let i = 0; i < 8; i++) float64Bytes[7 - i] = buf[p + i] ?? 0;
    this.pos = p + 8;
    return float64[0] ?? 0;
  }

  /** Reads a length varint and returns where its payload ends, within `end`. */
  private lengthEnd(end: number): number {
    const len = this.varint(end);
    if (len > end - this.pos) throw new OffFastPath();
    return this.pos + len;
  }

  /** An unsigned varint of at most 8 bytes that is a safe integer (2^53 - 1 or less); anything else is off the fast path. */
  private varint(end: number): number {
    const buf = this.buf;
    let n = 0;
    let scale = 1;
    for (let i = 0; i < 8 && this.pos < end; i++) {
      const b = buf[this.pos++] ?? 0;
      // Exact while the sum stays below 2^53; a larger value rounds to at least 2^53 and is refused.
      n += (b & 0x7f) * scale;
      if (b < 0x80) {
        if (n > Number.MAX_SAFE_INTEGER) break;
        return n;
      }
      scale *= 128;
    }
    throw new OffFastPath();
  }

  /** A one-byte varint (an enum or a bool as encoders write them). */
  private smallVarint(end: number): number {
    const b = this.buf[this.pos++];
    if (this.pos > end || b === undefined || b > 0x7f) throw new OffFastPath();
    return b;
  }

  private expect(tag: number, end: number): void {
    if (this.pos >= end || this.buf[this.pos] !== tag) throw new OffFastPath();
    this.pos++;
  }
}

function sameAscii(s: string, buf: Uint8Array, start: number): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) !== buf[start + i]) return false;
  return true;
}

function asciiString(buf: Uint8Array, start: number, stop: number): string {
  let s = "";
  for (let i = start; i < stop; i++) s += String.fromCharCode(buf[i] ?? 0);
  return s;
}
