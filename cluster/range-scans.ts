import { create } from "@bufbuild/protobuf";
import { type KeyChange, KeyChangeSchema } from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { Keys, type PartitionId, type TwinRuntime } from "../runtime/index.js";
import { type EpochStart, PartitionCopies, type PartitionPoint, parseCopyState } from "./partition-copies.js";

/** Keys per chunk of a whole-range copy. */
export const RANGE_CHUNK_KEYS = 512;

/** A partition's stored replication state, read in the same snapshot as its keys. */
export interface RangeState {
  readonly point: PartitionPoint;
  readonly history: readonly EpochStart[];
}

/** One partition's whole-range copy, sent to the node that asked for it. */
export interface RangeCopy {
  readonly partition: PartitionId;
  /** Aborted when the caller has gone: its keys are no longer collected. */
  readonly signal: AbortSignal;
  /** Sends up to {@link RANGE_CHUNK_KEYS} of the partition's keys; the scan waits for it. */
  chunk(puts: KeyChange[], first: boolean): Promise<void>;
  /** Sends the last keys with the partition's state (undefined: none stored). */
  end(state: RangeState | undefined, puts: KeyChange[], first: boolean): Promise<void>;
}

/**
 * Runs `scan` on batches of items, one batch at a time per key: the items added in one turn of
 * the event loop, or while that key's previous batch runs, go into its next batch.
 */
class TurnBatches<T> {
  private readonly waiting = new Map<string, T[]>();
  private readonly running = new Set<string>();

  constructor(private readonly scan: (batch: T[]) => Promise<void>) {}

  add(key: string, item: T): void {
    const list = this.waiting.get(key);
    if (list === undefined) this.waiting.set(key, [item]);
    else list.push(item);
    this.start(key);
  }

  private start(key: string): void {
    if (this.running.has(key)) return;
    this.running.add(key);
    setImmediate(() => {
      const batch = this.waiting.get(key) ?? [];
      this.waiting.delete(key);
      void this.scan(batch).finally(() => {
        this.running.delete(key);
        if (this.waiting.has(key)) this.start(key);
      });
    });
  }
}

interface Pending {
  readonly copy: RangeCopy;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

interface InScan extends Pending {
  puts: KeyChange[];
  first: boolean;
  state: RangeState | undefined;
  failed: boolean;
}

/**
 * Whole-range copies of partitions, served from shared scans. A partition's keys are spread over
 * the whole store (a twin record's key names its kind and id, not its partition), so each copy
 * reads every key once: the copies one peer asks for while a scan is being set up or running
 * share the next scan, and a node catching up 256 partitions reads the store a few dozen times,
 * not 256. Each copy's keys and state come from that scan's one snapshot, so they agree. Copies
 * for different peers never share a scan: a slow receiver holds back only its own node's.
 */
export class RangeScans {
  /** Batches by the peer that asked. */
  private readonly batches = new TurnBatches<Pending>((batch) => this.scan(batch));

  constructor(private readonly runtime: TwinRuntime) {}

  /** Sends `copy`'s partition from the next scan for `peer`; resolves once its end is sent. */
  copy(peer: string, copy: RangeCopy): Promise<void> {
    return new Promise<void>((resolve, reject) => this.batches.add(peer, { copy, resolve, reject }));
  }

  private async scan(batch: readonly Pending[]): Promise<void> {
    const { store, partitioning } = this.runtime;
    const byPartition = new Map<number, InScan[]>();
    for (const pending of batch) {
      if (pending.copy.signal.aborted) {
        pending.resolve();
        continue;
      }
      const entry: InScan = { ...pending, puts: [], first: true, state: undefined, failed: false };
      const list = byPartition.get(pending.copy.partition);
      if (list === undefined) byPartition.set(pending.copy.partition, [entry]);
      else list.push(entry);
    }
    if (byPartition.size === 0) return;
    const stateKeys = new Map([...byPartition.keys()].map((p) => [PartitionCopies.keyOf(p as PartitionId), p]));
    const live = (e: InScan): boolean => !e.failed && !e.copy.signal.aborted;
    const send = async (e: InScan, work: () => Promise<void>): Promise<void> => {
      try {
        await work();
      } catch (err) {
        e.failed = true;
        e.reject(err);
      }
    };
    try {
      // One iterator, one snapshot: every partition's keys and its position agree.
      for await (const chunk of store.scan({ gte: "", lt: "\u{10FFFF}" })) {
        for (const [key, value] of chunk) {
          const stateOf = stateKeys.get(key);
          if (stateOf !== undefined) {
            const state = parseCopyState(value);
            for (const e of byPartition.get(stateOf) ?? []) e.state = state;
            continue;
          }
          const partition = Keys.partitionOfKey(key, partitioning);
          const entries = partition === undefined ? undefined : byPartition.get(partition);
          if (entries === undefined) continue;
          for (const e of entries) if (live(e)) e.puts.push(create(KeyChangeSchema, { key: Buffer.from(key), value: Buffer.from(value) }));
        }
        let anyLive = false;
        for (const entries of byPartition.values()) {
          for (const e of entries) {
            if (!live(e)) continue;
            anyLive = true;
            if (e.puts.length < RANGE_CHUNK_KEYS) continue;
            const puts = e.puts;
            e.puts = [];
            await send(e, () => e.copy.chunk(puts, e.first));
            e.first = false;
          }
        }
        if (!anyLive) break;
      }
      for (const entries of byPartition.values()) {
        for (const e of entries) {
          if (!live(e)) {
            if (!e.failed) e.resolve();
            continue;
          }
          await send(e, () => e.copy.end(e.state, e.puts, e.first));
          if (!e.failed) e.resolve();
        }
      }
    } catch (err) {
      for (const entries of byPartition.values()) for (const e of entries) if (!e.failed) e.reject(err);
    }
  }
}

/**
 * The keys this node holds of some partitions, read by one scan for every partition asked for
 * in the same turn of the event loop (or while a scan runs): a node whose copies take whole
 * ranges deletes its own keys of each first, and reading the store once per partition made a
 * 256-partition catch-up read it 256 times. Ask only for partitions nothing else writes until
 * the caller has used the answer (a catching-up copy: its shipments are held meanwhile).
 */
export class PartitionKeyScans {
  private readonly batches = new TurnBatches<KeysWanted>((batch) => this.scan(batch));

  constructor(private readonly runtime: TwinRuntime) {}

  keysOf(partition: PartitionId): Promise<string[]> {
    return new Promise((resolve, reject) => this.batches.add("", { partition, resolve, reject }));
  }

  private async scan(batch: readonly KeysWanted[]): Promise<void> {
    const { store, partitioning } = this.runtime;
    const keys = new Map<number, string[]>(batch.map((w) => [w.partition, []]));
    try {
      for await (const chunk of store.scan({ gte: "", lt: "\u{10FFFF}" }, { values: false })) {
        for (const [key] of chunk) {
          const partition = Keys.partitionOfKey(key, partitioning);
          if (partition !== undefined) keys.get(partition)?.push(key);
        }
      }
    } catch (err) {
      for (const w of batch) w.reject(err);
      return;
    }
    for (const w of batch) w.resolve(keys.get(w.partition) ?? []);
  }
}

/** A partition whose keys a caller waits for. */
interface KeysWanted {
  readonly partition: number;
  readonly resolve: (keys: string[]) => void;
  readonly reject: (err: unknown) => void;
}
