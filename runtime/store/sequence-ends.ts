import type { PartitionId } from "../partition/partitioning.js";
import type { RocksStore } from "./rocks-store.js";

/** A per-partition sequence keyspace (alert log, outbox, dead letters) as {@link sequenceEnds} reads it. */
export interface PartitionedSequence {
  /** Partition `p`'s keys, from its lowest seq. */
  range(p: PartitionId): { gte: string; lt: string };
  /** The partition and seq of a key of the keyspace. */
  keyOf(key: string): { partition: PartitionId; seq: number };
}

/** The lowest and highest seq one partition holds. */
export interface SequenceEnds {
  readonly first: number;
  readonly last: number;
}

/**
 * The first and last seq of every partition in `[fromP, toP]` that holds keys of `sequence`:
 * two seeks per such partition and one more, however long the sequences are, so a start-up
 * reads no more than the partitions in use.
 */
export async function sequenceEnds(
  store: RocksStore,
  sequence: PartitionedSequence,
  fromP: PartitionId,
  toP: PartitionId,
): Promise<Map<PartitionId, SequenceEnds>> {
  const ends = new Map<PartitionId, SequenceEnds>();
  const lt = sequence.range(toP).lt;
  let p: number = fromP;
  while (p <= toP) {
    const found = await edgeKey(store, { gte: sequence.range(p as PartitionId).gte, lt }, false);
    if (found === undefined) break;
    const { partition } = sequence.keyOf(found);
    const range = sequence.range(partition);
    // A key of another layout (an older format's, met while upgrading) sorts among these: read
    // the partition's own range.
    const firstKey = found >= range.gte && found < range.lt ? found : await edgeKey(store, range, false);
    const lastKey = firstKey === undefined ? undefined : await edgeKey(store, range, true);
    if (firstKey !== undefined && lastKey !== undefined) ends.set(partition, { first: sequence.keyOf(firstKey).seq, last: sequence.keyOf(lastKey).seq });
    p = Math.max(p, partition) + 1;
  }
  return ends;
}

async function edgeKey(store: RocksStore, range: { gte: string; lt: string }, reverse: boolean): Promise<string | undefined> {
  for await (const chunk of store.scan({ ...range, limit: 1, reverse }, { values: false })) return chunk[0]?.[0];
  return undefined;
}
