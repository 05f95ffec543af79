import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

interface HashRingInstance {
  get(key: string): string;
  range(key: string, size: number, unique: boolean): string[];
}
type HashRingConstructor = new (
  servers: Record<string, { vnodes: number }>,
  algorithm?: string,
  options?: { replicas?: number; "max cache size"?: number },
) => HashRingInstance;
const HashRing = require("hashring") as HashRingConstructor;

/** Virtual nodes per node: fixed, so adding a node moves only the keys it takes over. */
export const VNODES_PER_NODE = 64;

/**
 * An immutable view of the ring at one epoch. The owner of a key is the first node clockwise
 * from the key's hash; its replicas are the next distinct nodes. Every node gets the same fixed
 * number of virtual nodes (never weights, which would rescale every node's points and move keys
 * between old nodes on a join). Routing decisions carry `epoch`, so a stale owner's writes can be
 * fenced.
 */
export class RingSnapshot {
  private readonly ring: HashRingInstance | undefined;
  /** The member node ids, sorted. */
  readonly nodes: readonly string[];

  constructor(
    /** The membership version this ring was built from (etcd's revision in a cluster). */
    readonly epoch: bigint,
    nodes: readonly string[],
  ) {
    this.nodes = [...new Set(nodes)].sort();
    const servers: Record<string, { vnodes: number }> = {};
    for (const node of this.nodes) servers[node] = { vnodes: VNODES_PER_NODE };
    this.ring = this.nodes.length === 0 ? undefined : new HashRing(servers, "md5", { "max cache size": 10_000 });
  }

  /** The ring key of a twin. */
  static key(kind: string, id: string): string {
    return `${kind}\u0000${id}`;
  }

  /** The node that owns `key`. @throws Error on an empty ring */
  ownerOf(key: string): string {
    if (this.ring === undefined) throw new Error("the ring has no nodes");
    return this.ring.get(key);
  }

  /** The owner followed by up to `replicationFactor - 1` distinct successors. */
  replicasOf(key: string, replicationFactor: number): string[] {
    if (this.ring === undefined) return [];
    return this.ring.range(key, Math.min(replicationFactor, this.nodes.length), true);
  }
}
