import type { BatchOp, PartitionId, TwinRuntime } from "../runtime/index.js";

/**
 * Epochs are below this. An owner's epoch grows by 256 at each change of owner, so a cluster
 * stays far below it (2^40 changes); a peer's epoch near 2^53 would leave the next owner's epoch
 * (`nextEpoch`) no exact integer. No node claims, promises or follows an epoch at or above it: a
 * partition whose copies promised an epoch just below it (a forged claim: peers do not
 * authenticate each other yet) cannot be taken again, and its owner-to-be says so in its log and
 * status instead of claiming ever higher epochs.
 */
export const EPOCH_LIMIT = 2 ** 48;

/** A partition point a peer may name: an epoch below {@link EPOCH_LIMIT}, a position below 2^53. */
export function plausiblePoint(epoch: number | bigint, position: number | bigint): boolean {
  return epoch >= 0 && epoch < EPOCH_LIMIT && position >= 0 && position <= Number.MAX_SAFE_INTEGER;
}

/**
 * The epoch a node begins when it takes a partition: above every epoch it has heard of, and its
 * own (the low byte is the node's index among the members), so two nodes that take a partition
 * without hearing of each other (one of them was down) never begin the same epoch, and their
 * histories tell their writes apart.
 */
export function nextEpoch(highest: number, nodeIndex: number): number {
  return (Math.floor(highest / EPOCH_NODE_SLOTS) + 1) * EPOCH_NODE_SLOTS + nodeIndex;
}

/** The index among the members of the node that began `epoch` (see {@link nextEpoch}). */
export function epochBeginner(epoch: number | bigint): number {
  return typeof epoch === "bigint" ? Number(epoch % BigInt(EPOCH_NODE_SLOTS)) : epoch % EPOCH_NODE_SLOTS;
}

/** Members an epoch tells apart. */
const EPOCH_NODE_SLOTS = 256;

type RocksStore = TwinRuntime["store"];

/** Where an epoch began in a partition's history: the first position written in it. */
export interface EpochStart {
  readonly epoch: number;
  readonly start: number;
}

/** A point of a partition's history: the owner epoch and the last position applied. */
export interface PartitionPoint {
  readonly epoch: number;
  readonly position: number;
}

/** True when point `a` is ahead of `b`: a newer epoch, or the same epoch at a later position. */
export function ahead(a: PartitionPoint, b: PartitionPoint): boolean {
  return a.epoch > b.epoch || (a.epoch === b.epoch && a.position > b.position);
}

/** The node-local key of a partition's replication state. Never replicated: each copy keeps its own. */
const PREFIX = "\u0000meta\u0000repl\u0000";

function keyOf(partition: PartitionId): string {
  return `${PREFIX}${partition.toString(16).padStart(4, "0")}`;
}

/**
 * This node's copy of one partition: the epoch of the owner it follows (or is), the last
 * position applied, and the epochs of its history. Positions count the partition's shipments
 * (one per committed group that touched it); an epoch is an owner's term, raised by each new
 * owner when it takes the partition and unique to that owner (only the epoch a node began is
 * written under), so two copies agree up to a position when their histories agree up to it (as
 * Kafka's leader epochs).
 */
export class PartitionCopy {
  epoch = 0;
  position = 0;
  history: EpochStart[] = [];
  /** The highest position whose group is written on this node (the owner ships only those). */
  written = 0;
  /**
   * The epoch this node began as the partition's owner, while it is the epoch the copy follows;
   * 0 otherwise. Only writes under it are numbered and shipped: a node that caught up from a
   * newer owner never writes under that owner's epoch.
   */
  writer = 0;
  /**
   * True while this copy is rebuilt after this node lost data (design §5, "a node that lost its
   * data"): it may lack writes this node acknowledged, so it counts toward no majority that takes
   * the partition. Stored with the copy's state, so a crash while rebuilding keeps it; a
   * whole-range copy keeps it too (it is about this node, not the history it follows).
   */
  rebuilding = false;
  /** Where this copy stood when this node began {@link writer}: sent with the epoch's announcement. */
  begunFrom: PartitionPoint | undefined;
  /**
   * The newest epoch this copy promised to a node claiming the partition (docs/architecture.md,
   * "Why claims"): from the promise on it confirms no shipment of an older epoch. Stored with the
   * copy's state, so a restart keeps the promise; kept when the copy is replaced by a whole range.
   */
  promised = 0;

  constructor(readonly partition: PartitionId) {}

  /** True when the copy holds nothing: no position and no history. */
  get empty(): boolean {
    return this.position === 0 && this.history.length === 0;
  }

  /** True while this node owns the partition under the epoch it began: only then are its writes numbered and shipped. */
  get writing(): boolean {
    return this.writer !== 0 && this.writer === this.epoch;
  }

  get point(): PartitionPoint {
    return { epoch: this.epoch, position: this.position };
  }

  /**
   * The last position `epoch` covers in this copy's history: the position before the next
   * epoch's start, or this copy's position for its current epoch; undefined when the epoch is
   * not in its history.
   */
  endOf(epoch: number): number | undefined {
    const i = this.history.findIndex((h) => h.epoch === epoch);
    if (i === -1) return undefined;
    const next = this.history[i + 1];
    return next === undefined ? this.position : next.start - 1;
  }

  /**
   * True when a copy standing at `other` holds a prefix of this copy's history: everything up
   * to `other.position` agrees. An empty copy is a prefix of every history.
   */
  extends(other: PartitionPoint): boolean {
    if (other.position === 0) return true;
    const end = this.endOf(other.epoch);
    return end !== undefined && other.position <= end;
  }

  /** Remembers this copy's state; the function returned puts it back (a write of it failed). */
  save(): () => void {
    const { epoch, position, written, writer, history, begunFrom, promised } = this;
    return () => {
      this.promised = promised;
      this.epoch = epoch;
      this.position = position;
      this.written = written;
      this.writer = writer;
      this.history = history;
      this.begunFrom = begunFrom;
    };
  }

  /** True while the copy promised a newer epoch than it follows: it confirms nothing of the epoch it follows. */
  get fenced(): boolean {
    return this.promised > this.epoch;
  }

  /**
   * Starts a new epoch at the next position: this node takes the partition as its owner.
   * @throws RangeError when `epoch` is not newer than the copy's (a bug: epochs only grow).
   */
  beginEpoch(epoch: number): void {
    if (epoch <= this.epoch) throw new RangeError(`partition ${this.partition}: epoch ${epoch} does not follow ${this.epoch}`);
    this.begunFrom = this.point;
    this.epoch = epoch;
    this.writer = epoch;
    this.history = [...this.history, { epoch, start: this.position + 1 }];
    // The epoch's first position is an empty shipment that tells the replicas of the new epoch.
    this.position++;
    this.written = this.position;
  }

  /** Becomes a copy of another node's history at `point` (after a catch-up). */
  adopt(point: PartitionPoint, history: readonly EpochStart[]): void {
    if (point.epoch !== this.writer) {
      this.writer = 0;
      this.begunFrom = undefined;
    }
    this.epoch = point.epoch;
    this.position = point.position;
    this.written = point.position;
    this.history = history.filter((h) => h.start <= point.position + 1).map((h) => ({ ...h }));
  }

  /** Forgets everything: the copy is being replaced by a whole-range copy. */
  clear(): void {
    this.writer = 0;
    this.begunFrom = undefined;
    this.epoch = 0;
    this.position = 0;
    this.written = 0;
    this.history = [];
  }

  /** The write that stores this state (in the same batch as the changes it describes). */
  op(): BatchOp {
    if (this.empty && !this.rebuilding && this.promised === 0) return { type: "del", key: keyOf(this.partition) };
    const state: { e: number; p: number; h: number[][]; r?: 1; c?: number } = {
      e: this.epoch,
      p: this.position,
      h: this.history.map((h) => [h.epoch, h.start]),
    };
    if (this.rebuilding) state.r = 1;
    if (this.promised > this.epoch) state.c = this.promised;
    return { type: "put", key: keyOf(this.partition), value: JSON.stringify(state) };
  }

  /** The state as another node may read it. */
  snapshot(): { readonly point: PartitionPoint; readonly history: readonly EpochStart[] } {
    return { point: this.point, history: this.history.map((h) => ({ ...h })) };
  }
}

/** Parses a stored state; undefined for a damaged one (the copy then counts as empty and is copied again). */
export function parseCopyState(raw: string): { point: PartitionPoint; history: EpochStart[]; rebuilding: boolean; promised: number } | undefined {
  try {
    const v = JSON.parse(raw) as { e?: unknown; p?: unknown; h?: unknown; r?: unknown; c?: unknown };
    if (!Number.isSafeInteger(v.e) || !Number.isSafeInteger(v.p) || !Array.isArray(v.h)) return undefined;
    const history: EpochStart[] = [];
    for (const entry of v.h as unknown[]) {
      if (!Array.isArray(entry) || !Number.isSafeInteger(entry[0]) || !Number.isSafeInteger(entry[1])) return undefined;
      history.push({ epoch: entry[0] as number, start: entry[1] as number });
    }
    // A damaged promise is a damaged state: dropping it would let the copy confirm an older owner again.
    if (v.c !== undefined && !Number.isSafeInteger(v.c)) return undefined;
    const promised = (v.c as number | undefined) ?? 0;
    return { point: { epoch: v.e as number, position: v.p as number }, history, rebuilding: v.r === 1, promised };
  } catch {
    return undefined;
  }
}

/** Every partition's copy on this node, loaded from its data directory. */
export class PartitionCopies {
  private readonly copies: PartitionCopy[];

  private constructor(partitions: number) {
    this.copies = Array.from({ length: partitions }, (_, p) => new PartitionCopy(p as PartitionId));
  }

  /** Reads the stored states of `partitions` partitions. */
  static async load(store: RocksStore, partitions: number): Promise<PartitionCopies> {
    const copies = new PartitionCopies(partitions);
    for await (const chunk of store.scan({ gte: PREFIX, lt: `${PREFIX}\u{10FFFF}` })) {
      for (const [key, value] of chunk) {
        const partition = Number.parseInt(key.slice(PREFIX.length), 16);
        const copy = copies.copies[partition];
        const state = parseCopyState(value);
        if (copy === undefined || state === undefined) continue;
        copy.adopt(state.point, state.history);
        copy.rebuilding = state.rebuilding;
        copy.promised = state.promised;
      }
    }
    return copies;
  }

  get(partition: PartitionId): PartitionCopy {
    const copy = this.copies[partition];
    if (copy === undefined) throw new RangeError(`partition ${partition} is out of range`);
    return copy;
  }

  /** The key of a partition's state, to recognise it in a whole-store scan. */
  static keyOf(partition: PartitionId): string {
    return keyOf(partition);
  }
}
