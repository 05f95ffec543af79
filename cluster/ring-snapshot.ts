import { createRequire } from "node:module";
import type { PartitionId, Partitioning } from "../runtime/index.js";

const require = createRequire(import.meta.url);

interface HashRingInstance {
  range(key: string, size: number, unique: boolean): string[];
}
type HashRingConstructor = new (
  servers: Record<string, { vnodes: number }>,
  algorithm?: string,
  options?: { replicas?: number; "max cache size"?: number },
) => HashRingInstance;
const HashRing = require("hashring") as HashRingConstructor;

/** Virtual nodes per node: fixed, so adding a node moves only the partitions it takes over. */
export const VNODES_PER_NODE = 64;

/** The key a partition has on the ring. Part of placement: changing it moves every partition. */
export function partitionRingKey(partition: PartitionId): string {
  return `partition-${partition}`;
}

/** How many partitions a node owns and replicates in one ring, given who is live. */
export interface NodeShare {
  readonly owned: number;
  readonly replicated: number;
}

/**
 * An immutable placement of partitions on nodes at one epoch. A partition's preference list is
 * the first node clockwise from its ring key followed by the next `replicationFactor - 1`
 * distinct nodes; its owner is the first *live* node of that list, the others hold its replicas.
 * Every node gets the same fixed number of virtual nodes (never weights, which would rescale
 * every node's points and move partitions between old nodes on a join). Ownership decisions
 * carry `epoch`, so a stale owner's writes can be fenced.
 */
export class RingSnapshot {
  /** The member node ids, sorted. */
  readonly nodes: readonly string[];
  /** Copies kept of each partition: the configured factor capped at the cluster size. */
  readonly replicationFactor: number;
  private readonly lists: readonly (readonly string[])[];

  /**
   * @param epoch the membership version this ring was built from (etcd's revision in a cluster).
   * @throws RangeError on an empty node list or a replication factor below 1.
   */
  constructor(
    readonly epoch: bigint,
    nodes: readonly string[],
    readonly partitioning: Partitioning,
    replicationFactor: number,
  ) {
    this.nodes = [...new Set(nodes)].sort();
    if (this.nodes.length === 0) throw new RangeError("a ring needs at least one node");
    if (!Number.isSafeInteger(replicationFactor) || replicationFactor < 1)
      throw new RangeError(`replication factor ${replicationFactor} is not a whole number of at least 1`);
    this.replicationFactor = Math.min(replicationFactor, this.nodes.length);
    const servers: Record<string, { vnodes: number }> = {};
    for (const node of this.nodes) servers[node] = { vnodes: VNODES_PER_NODE };
    const ring = new HashRing(servers, "md5", { "max cache size": 1 });
    this.lists = partitioning.all().map((p) => Object.freeze(ring.range(partitionRingKey(p), this.replicationFactor, true)));
  }

  /** The partition's preference list: its first choice of owner, then its replicas, in order. */
  preferenceList(partition: PartitionId): readonly string[] {
    const list = this.lists[partition];
    if (list === undefined) throw new RangeError(`partition ${partition} is not below ${this.partitioning.partitions}`);
    return list;
  }

  /** The first node of the partition's list that `isLive` accepts; undefined when none is. */
  ownerOf(partition: PartitionId, isLive: (node: string) => boolean = () => true): string | undefined {
    return this.preferenceList(partition).find(isLive);
  }

  /** The partitions `node` owns and those it holds a replica of, given who is live. */
  shareOf(node: string, isLive: (node: string) => boolean = () => true): NodeShare {
    let owned = 0;
    let replicated = 0;
    for (const p of this.partitioning.all()) {
      if (!this.preferenceList(p).includes(node)) continue;
      if (this.ownerOf(p, isLive) === node) owned++;
      else replicated++;
    }
    return { owned, replicated };
  }
}
