/**
 * A hand-written protobuf encoder for the pages of twins QueryTwins sends. protobuf-es's
 * `toBinary` spends most of a large query's time on them (it first turns each state into
 * `google.protobuf.Struct` messages, then walks them by reflection); this encoder walks the
 * state's JSON directly into a shared buffer. protobuf-es stays the reference: the output is
 * byte for byte what `toBinary` gives (the unit tests compare them on generated states), and
 * views this encoder does not cover are encoded by `toBinary` itself.
 *
 * A page, `QueryTwinsResponse{ twins: [...] }`, is its twins' `twins` entries end to end (a
 * repeated field is written as one tag, length and message per element), so each twin is encoded
 * on its own as a one-twin page, as soon as the scan finds it, and {@link QueryTwinsPage} joins
 * them: no twin is held as an object until its page is full.
 */
import { toBinary } from "@bufbuild/protobuf";
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
} from "../client/snapshot-wire-tags.js";
import { type QueryTwinsResponse, QueryTwinsResponseSchema } from "../proto/gen/twinmesh/v1/twin_pb.js";
import type { JsonObject, TwinView } from "../runtime/index.js";
import { type Encoded, preEncoded } from "./grpc/encoded.js";
import { toSnapshot } from "./proto-convert.js";

/** Twins in one QueryTwins page at most: enough that grpc's cost per message is small beside the twins'. */
export const MAX_PAGE_TWINS = 500;
/** Bytes of one QueryTwins page at most, unless its one twin alone is larger. */
export const MAX_PAGE_BYTES = 64 * 1024;

/** Bounds of a {@link QueryTwinsPage}; tests pass small ones. */
export interface QueryTwinsPageOptions {
  /** @defaultValue {@link MAX_PAGE_TWINS} */
  readonly maxTwins?: number;
  /** @defaultValue {@link MAX_PAGE_BYTES} */
  readonly maxBytes?: number;
}

/**
 * One page of QueryTwins results being filled: {@link add} encodes a twin at once, {@link take}
 * hands out the page as one `QueryTwinsResponse` (the same bytes as `toBinary` of the page) and
 * starts the next. The page is full at `maxTwins` twins, or when the next twin could take it past
 * `maxBytes`: the caller checks {@link full} after each twin, so a page passes `maxBytes` by at
 * most one twin, and a twin larger than `maxBytes` is a page of its own.
 */
export class QueryTwinsPage {
  private parts: Uint8Array[] = [];
  private size = 0;
  private readonly maxTwins: number;
  private readonly maxBytes: number;

  constructor(
    options: QueryTwinsPageOptions = {},
    private readonly writer: SnapshotWriter = sharedWriter,
  ) {
    this.maxTwins = options.maxTwins ?? MAX_PAGE_TWINS;
    this.maxBytes = options.maxBytes ?? MAX_PAGE_BYTES;
  }

  /** Twins in the page. */
  get twins(): number {
    return this.parts.length;
  }

  /** Bytes of the page so far. */
  get bytes(): number {
    return this.size;
  }

  /** True when the page holds `maxTwins` twins or `maxBytes` bytes: take it before adding more. */
  get full(): boolean {
    return this.parts.length >= this.maxTwins || this.size >= this.maxBytes;
  }

  /**
   * Encodes `view` as the page's next twin.
   * @throws whatever {@link encodeQueryTwinsSnapshot} throws; the page is left as it was.
   */
  add(view: TwinView): void {
    const entry: Uint8Array = encodeQueryTwinsSnapshot(view, this.writer);
    this.parts.push(entry);
    this.size += entry.length;
  }

  /** The page as one message, and an empty page after it. An empty page is an empty message. */
  take(): Encoded<QueryTwinsResponse> {
    const parts = this.parts;
    const size = this.size;
    this.parts = [];
    this.size = 0;
    return preEncoded(QueryTwinsResponseSchema, join(parts, size));
  }
}

/**
 * The parts end to end. Entries the writer wrote one after another in one slab already are: the
 * page is then a view over them, with no copy (no later write touches a finished entry's bytes).
 */
function join(parts: readonly Uint8Array[], size: number): Uint8Array {
  const first = parts[0];
  if (first === undefined) return Buffer.alloc(0);
  let end = first.byteOffset + first.length;
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i] as Uint8Array;
    if (part.buffer !== first.buffer || part.byteOffset !== end) return Buffer.concat(parts, size);
    end += part.length;
  }
  return new Uint8Array(first.buffer, first.byteOffset, size);
}

/**
 * Encodes a one-twin page, `QueryTwinsResponse{ twins: [toSnapshot(view)] }`, in the protobuf
 * binary format, with the same bytes as protobuf-es's `toBinary` (fields in number order, zero
 * scalars omitted, the state's keys in `Object.keys` order, minimal varints). These bytes are also
 * the twin's entry in a longer page. A state value that is not JSON is written as `toBinary`
 * writes it: `undefined`, a function, a symbol or a bigint as an empty `google.protobuf.Value`,
 * NaN and infinities as doubles.
 *
 * Counters and a `lastEventTime` that are not non-negative safe integers are left to `toBinary`,
 * so they fail (a fractional version) or encode (a time before 1970) exactly as it does.
 *
 * The result is a Buffer that no later call writes to: a view of a large slab that later messages
 * fill further, kept alive by its views until grpc-js has sent them.
 * @throws whatever `toSnapshot` and `toBinary` throw for such counters, e.g. a RangeError for a fractional version.
 */
export function encodeQueryTwinsSnapshot(view: TwinView, into: SnapshotWriter = sharedWriter): Encoded<QueryTwinsResponse> {
  if (!isUint(view.version) || !isUint(view.lastSeq) || (view.lastEventTime !== undefined && !isUint(view.lastEventTime))) {
    return preEncoded(QueryTwinsResponseSchema, toBinary(QueryTwinsResponseSchema, { $typeName: "twinmesh.v1.QueryTwinsResponse", twins: [toSnapshot(view)] }));
  }
  const w = into;
  w.begin();
  w.byte(TAG_RESPONSE_TWINS);
  const twin = w.beginLength();
  if (view.kind !== "") {
    w.byte(TAG_SNAPSHOT_KIND);
    w.string(view.kind);
  }
  if (view.id !== "") {
    w.byte(TAG_SNAPSHOT_ID);
    w.string(view.id);
  }
  // toSnapshot always sets the state, so even an empty one is written (as a zero length).
  w.byte(TAG_SNAPSHOT_STATE);
  const state = w.beginLength();
  writeStructFields(w, view.state);
  w.endLength(state);
  if (view.version !== 0) {
    w.byte(TAG_SNAPSHOT_VERSION);
    w.varint(view.version);
  }
  if (view.lastSeq !== 0) {
    w.byte(TAG_SNAPSHOT_LAST_SEQ);
    w.varint(view.lastSeq);
  }
  if (view.lastEventTime !== undefined) writeTimestamp(w, view.lastEventTime);
  if (view.ownerNodeId !== "") {
    w.byte(TAG_SNAPSHOT_OWNER_NODE_ID);
    w.string(view.ownerNodeId);
  }
  w.endLength(twin);
  return preEncoded(QueryTwinsResponseSchema, w.finish());
}

/** The size of a slab messages are written into (a larger message gets a slab of its own). */
const SLAB_BYTES = 64 * 1024;
/** Strings up to this length are copied by a JavaScript loop while they are ASCII: cheaper than the native UTF-8 writer's call. */
const ASCII_LOOP_MAX_CHARS = 64;

function isUint(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** The fields of a `google.protobuf.Struct`: one map entry per key, in `Object.keys` order as protobuf-es writes them. */
function writeStructFields(w: SnapshotWriter, obj: JsonObject): void {
  for (const key of Object.keys(obj)) {
    w.byte(TAG_STRUCT_ENTRY);
    const entry = w.beginLength();
    w.byte(TAG_ENTRY_KEY);
    w.string(key);
    w.byte(TAG_ENTRY_VALUE);
    const value = w.beginLength();
    writeValueKind(w, obj[key]);
    w.endLength(value);
    w.endLength(entry);
  }
}

/**
 * The `kind` oneof of a `google.protobuf.Value`. A oneof member is written even when it is a zero
 * value (0, "", false), and null is `null_value: NULL_VALUE`, the enum's 0. protobuf-es leaves the
 * oneof unset for anything else (undefined, a function, a bigint), which writes nothing.
 */
function writeValueKind(w: SnapshotWriter, value: unknown): void {
  switch (typeof value) {
    case "number":
      w.byte(TAG_VALUE_NUMBER);
      w.double(value);
      return;
    case "string":
      w.byte(TAG_VALUE_STRING);
      w.string(value);
      return;
    case "boolean":
      w.byte(TAG_VALUE_BOOL);
      w.byte(value ? 1 : 0);
      return;
    case "object": {
      if (value === null) {
        w.byte(TAG_VALUE_NULL);
        w.byte(0);
        return;
      }
      if (Array.isArray(value)) {
        w.byte(TAG_VALUE_LIST);
        const list = w.beginLength();
        // for...of, as protobuf-es iterates: a hole in a sparse array is undefined, an empty Value.
        for (const item of value as unknown[]) {
          w.byte(TAG_LIST_VALUES);
          const element = w.beginLength();
          writeValueKind(w, item);
          w.endLength(element);
        }
        w.endLength(list);
        return;
      }
      w.byte(TAG_VALUE_STRUCT);
      const struct = w.beginLength();
      writeStructFields(w, value as JsonObject);
      w.endLength(struct);
      return;
    }
  }
}

/** A `google.protobuf.Timestamp` from epoch ms ≥ 0, split as protobuf-es's `timestampFromMs` splits it. */
function writeTimestamp(w: SnapshotWriter, ms: number): void {
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  w.byte(TAG_SNAPSHOT_LAST_EVENT_TIME);
  const timestamp = w.beginLength();
  if (seconds !== 0) {
    w.byte(TAG_TIMESTAMP_SECONDS);
    w.varint(seconds);
  }
  if (nanos !== 0) {
    w.byte(TAG_TIMESTAMP_NANOS);
    w.varint(nanos);
  }
  w.endLength(timestamp);
}

/**
 * Writes messages one after another into a slab, a large buffer, and hands each out as a view of
 * its bytes: no copy, and no allocation but the view (Node's own pool for small Buffers works the
 * same way). The views keep their slab alive until grpc-js has sent them; a full slab is replaced.
 *
 * A length-delimited field gets one byte for its length, enough below 128 bytes; a longer payload
 * is moved up when its length is known, so the length varint is minimal, as protobuf-es writes it.
 * Positions of open lengths are relative to the message's start, because a message that outgrows
 * the slab moves to a new one.
 */
export class SnapshotWriter {
  private slab: Buffer;
  /** Where the message being written starts in the slab. */
  private start = 0;
  private pos = 0;

  /** @param slabBytes - The size of each slab; tests pass small ones to make messages cross slab ends. */
  constructor(private readonly slabBytes = SLAB_BYTES) {
    this.slab = Buffer.allocUnsafeSlow(slabBytes);
  }

  /** Starts a message, dropping what a call that threw midway left behind. */
  begin(): void {
    this.pos = this.start;
  }

  /** The message written since {@link begin}, as a view of the slab. */
  finish(): Buffer {
    const message = Buffer.from(this.slab.buffer, this.slab.byteOffset + this.start, this.pos - this.start);
    if (this.slab.length > this.slabBytes) {
      // A slab grown for one huge message is not kept for the small ones that follow.
      this.slab = Buffer.allocUnsafeSlow(this.slabBytes);
      this.pos = 0;
    }
    this.start = this.pos;
    return message;
  }

  byte(b: number): void {
    this.reserve(1);
    this.slab[this.pos++] = b;
  }

  /** An unsigned varint of a safe integer (up to 8 bytes for 2^53 - 1). */
  varint(n: number): void {
    this.reserve(8);
    const buf = this.slab;
    let pos = this.pos;
    while (n > 0x7f) {
      // `&` keeps the low 32 bits of any safe integer, so it is exact for the low 7; the division is exact too.
      buf[pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    buf[pos++] = n;
    this.pos = pos;
  }

  /** A double, little-endian, as protobuf-es's DataView writes it. */
  double(n: number): void {
    this.reserve(8);
    this.pos = this.slab.writeDoubleLE(n, this.pos);
  }

  /** A length-prefixed UTF-8 string; lone surrogates become U+FFFD, as with TextEncoder. */
  string(s: string): void {
    const chars = s.length;
    // UTF-8 takes one to three bytes per UTF-16 code unit (four per surrogate pair), and the length takes at most 5.
    this.reserve(chars * 3 + 5);
    const buf = this.slab;
    const at = this.pos;
    if (chars <= ASCII_LOOP_MAX_CHARS) {
      let pos = at + 1; // a length below 128 fits the one byte reserved here
      let i = 0;
      for (; i < chars; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) break;
        buf[pos++] = c;
      }
      if (i === chars) {
        buf[at] = chars;
        this.pos = pos;
        return;
      }
    }
    // The byte length is at least the length in code units: reserve that many length bytes, and
    // move the text up if the byte length needs more.
    const guess = varintSize(chars);
    const written = buf.write(s, at + guess, "utf8");
    const size = varintSize(written);
    if (size !== guess) buf.copyWithin(at + size, at + guess, at + guess + written);
    writeLength(buf, at, written, size);
    this.pos = at + size + written;
  }

  /** Reserves one byte for the length of a field that follows; returns its offset in the message, for {@link endLength}. */
  beginLength(): number {
    this.reserve(1);
    return this.pos++ - this.start;
  }

  /** Writes the length of the payload opened at `offset`, moving the payload up if the length needs more than one byte. */
  endLength(offset: number): void {
    const len = this.pos - (this.start + offset) - 1;
    if (len < 0x80) {
      this.slab[this.start + offset] = len;
      return;
    }
    const size = varintSize(len);
    // Reserving may move the message to a new slab: positions are taken after it.
    this.reserve(size - 1);
    const at = this.start + offset;
    this.slab.copyWithin(at + size, at + 1, this.pos);
    writeLength(this.slab, at, len, size);
    this.pos += size - 1;
  }

  /** Makes room for `bytes` more; a message that does not fit moves, as written so far, to a new slab. */
  private reserve(bytes: number): void {
    if (this.pos + bytes <= this.slab.length) return;
    const written = this.pos - this.start;
    const slab = Buffer.allocUnsafeSlow(Math.max(this.slabBytes, 2 * (written + bytes)));
    this.slab.copy(slab, 0, this.start, this.pos);
    this.slab = slab;
    this.start = 0;
    this.pos = written;
  }
}

/** Writes `len` as a varint of exactly `size` bytes at `at`. */
function writeLength(buf: Buffer, at: number, len: number, size: number): void {
  for (let i = 1; i < size; i++) {
    buf[at++] = (len & 0x7f) | 0x80;
    len >>>= 7;
  }
  buf[at] = len;
}

/** Bytes of the varint of a length (below 2^32). */
function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x20_0000 ? 3 : n < 0x1000_0000 ? 4 : 5;
}

/** One writer for the process: each twin is encoded in one synchronous call, so calls never overlap. */
const sharedWriter = new SnapshotWriter();
