import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Event, EventSchema, PublishStreamRequestSchema } from "../proto/gen/twinmesh/v1/telemetry_pb.js";

/**
 * Pre-encoded PublishStream batches. Everything here runs before the timed part of a run, so the
 * load generator's hot loop only patches a batch id and writes bytes.
 */

/** The kind of {@link BenchTwin}. */
export const BENCH_KIND = "bench";
/** Width of every batch id; ids are patched in place in the encoded bytes. */
export const BATCH_ID_CHARS = 16;
const BATCH_ID_TAG = 0x0a; // field 1 (batch_id), wire type 2

/** Digits of a twin number in its id: enough for `twins - 1`, so ids sort numerically. */
export function twinIdWidth(twins: number): number {
  return Math.max(1, String(Math.max(0, twins - 1)).length);
}

/** The id of twin number `i`: `t-` and `i` zero-padded to `width` digits. */
export function twinId(i: number, width: number): string {
  return `t-${String(i).padStart(width, "0")}`;
}

/** A reading of channel `value`, uniform in [0, 100) with three decimals. */
export function readingValue(random: () => number): number {
  return Math.floor(random() * 100_000) / 1_000;
}

/** A small seeded PRNG (mulberry32), so a run's twin choices and values are reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/**
 * The highest seq sent to each twin of one data set (a set of twins on one node's data
 * directory). New seqs are `max(last, base) + 1`, so they are fresh in every run: `base` is the
 * run's start time in ms × 1000 (or 0 with contiguous seqs).
 */
export class SeqBook {
  readonly last: Float64Array;
  readonly width: number;
  constructor(readonly twins: number) {
    this.last = new Float64Array(twins);
    this.width = twinIdWidth(twins);
  }
  /** Takes the next seq of twin `i` at once (for single sends: unary Publish, probes). */
  take(i: number, base: number): number {
    const seq = Math.max(this.last[i] as number, base) + 1;
    this.last[i] = seq;
    return seq;
  }
}

/** Which twins a pool addresses, and how. */
export interface PoolPlan {
  /** Twins `[from, to)` of the data set (ignored when `list` is given). */
  readonly from: number;
  readonly to: number;
  /** Exactly these twins, one event each, instead of a range. */
  readonly list?: Uint32Array;
  readonly streams: number;
  readonly batchEvents: number;
  /**
   * `random`: each event goes to a random twin of its stream's share, `eventsPerStream` events per
   * stream. `sequential`: each twin of the range (or list) gets exactly one event, in order.
   */
  readonly order: "random" | "sequential";
  readonly eventsPerStream: number;
  /** Seq base of the run (ms × 1000), or 0 for contiguous seqs. */
  readonly seqBase: number;
  readonly seed: number;
  /** The batches' `Consistency` (wire value); absent: the server's default. */
  readonly consistency?: number;
}

/** One pre-encoded batch and what it holds. */
export interface EncodedBatch {
  readonly bytes: Buffer;
  readonly events: number;
  /** Twin number of each event. */
  readonly twins: Uint32Array;
  /** Seq of each event. */
  readonly seqs: Float64Array;
}

/**
 * Batches per stream. Stream `s` owns the `s`-th, `s + streams`-th, … twin of the range (or list),
 * so one source's events all travel, in seq order, on one stream.
 */
export interface EncodedPool {
  readonly streams: EncodedBatch[][];
  readonly events: number;
  readonly bytes: number;
  readonly encodeMs: number;
}

/**
 * Encodes the batches of `plan` with protobuf-es `toBinary`. Seqs are taken from a scratch copy of
 * `book`; call {@link commitSent} after the run with how many batches of each stream were sent.
 */
export function encodePool(book: SeqBook, plan: PoolPlan): EncodedPool {
  const started = performance.now();
  const random = seededRandom(plan.seed);
  const scratch = book.last.slice();
  const list = plan.list;
  const span = list === undefined ? plan.to - plan.from : list.length;
  const twinAt = list === undefined ? (rel: number) => plan.from + rel : (rel: number) => list[rel] as number;
  const streams: EncodedBatch[][] = [];
  let events = 0;
  let bytes = 0;
  const time = timestampFromMs(Date.now());
  for (let s = 0; s < plan.streams; s++) {
    const share = s >= span ? 0 : Math.ceil((span - s) / plan.streams);
    const total = plan.order === "sequential" ? share : share === 0 ? 0 : plan.eventsPerStream;
    const batches: EncodedBatch[] = [];
    let j = 0;
    for (let done = 0; done < total; ) {
      const n = Math.min(plan.batchEvents, total - done);
      const twins = new Uint32Array(n);
      const seqs = new Float64Array(n);
      const evs: Event[] = new Array(n);
      for (let k = 0; k < n; k++) {
        const slot = plan.order === "sequential" ? j++ : Math.floor(random() * share);
        const i = twinAt(s + slot * plan.streams);
        const seq = Math.max(scratch[i] as number, plan.seqBase) + 1;
        scratch[i] = seq;
        twins[k] = i;
        seqs[k] = seq;
        evs[k] = create(EventSchema, {
          kind: BENCH_KIND,
          sourceId: twinId(i, book.width),
          seq: BigInt(seq),
          time,
          channels: { value: readingValue(random) },
        });
      }
      const encoded = Buffer.from(
        toBinary(
          PublishStreamRequestSchema,
          create(PublishStreamRequestSchema, { batchId: "0".repeat(BATCH_ID_CHARS), events: evs, consistency: plan.consistency ?? 0 }),
        ),
      );
      if (encoded[0] !== BATCH_ID_TAG || encoded[1] !== BATCH_ID_CHARS) throw new Error("batch_id is not where the encoder expects it; cannot patch batch ids");
      batches.push({ bytes: encoded, events: n, twins, seqs });
      events += n;
      bytes += encoded.length;
      done += n;
    }
    streams.push(batches);
  }
  return { streams, events, bytes, encodeMs: performance.now() - started };
}

/** Records the seqs of the batches that were sent: `sent[s]` leading batches of stream `s`. */
export function commitSent(book: SeqBook, pool: EncodedPool, sent: readonly number[]): void {
  pool.streams.forEach((list, s) => {
    const n = Math.min(sent[s] ?? 0, list.length);
    for (let b = 0; b < n; b++) {
      const batch = list[b] as EncodedBatch;
      for (let k = 0; k < batch.events; k++) {
        const i = batch.twins[k] as number;
        const seq = batch.seqs[k] as number;
        if (seq > (book.last[i] as number)) book.last[i] = seq;
      }
    }
  });
}

/**
 * Writes `id` (at most {@link BATCH_ID_CHARS} characters, padded on the left with `0`) into the
 * batch's bytes and returns it as a string.
 */
export function patchBatchId(bytes: Buffer, id: number, prefix: string): string {
  const digits = String(id);
  const text = prefix + digits.padStart(BATCH_ID_CHARS - prefix.length, "0");
  if (text.length !== BATCH_ID_CHARS) throw new Error(`batch id ${text} is longer than ${BATCH_ID_CHARS} characters`);
  bytes.write(text, 2, BATCH_ID_CHARS, "latin1");
  return text;
}
