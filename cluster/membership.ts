import type { Partitioning } from "../runtime/index.js";
import { RingSnapshot } from "./ring-snapshot.js";

/** A node as membership knows it. */
export interface NodeInfo {
  readonly id: string;
  /** `host:port` of its gRPC server. */
  readonly address: string;
  /** Placement labels, e.g. `tier=edge`, `site=plant-1`. */
  readonly labels: Readonly<Record<string, string>>;
}

/**
 * Who is in the cluster. Providers: `static` (a fixed list; for one machine and tests: it cannot
 * fence a partitioned node) and, with the cluster issue, `etcd` (leases and watches; etcd's
 * revision is the ring epoch).
 */
export interface Membership {
  /** The current members and the ring built from them. */
  current(): { readonly members: readonly NodeInfo[]; readonly ring: RingSnapshot };
  /** Calls `listener` on every membership change; returns the unsubscribe function. */
  onChange(listener: () => void): () => void;
  close(): Promise<void>;
}

/** The epoch of a static ring: it never changes. */
export const STATIC_EPOCH = 1n;

/** A fixed member list: the single-node default and `--peers`. Its epoch never changes. */
export class StaticMembership implements Membership {
  private readonly snapshot: { readonly members: readonly NodeInfo[]; readonly ring: RingSnapshot };

  /** @throws RangeError without members, or with a replication factor below 1. */
  constructor(members: readonly NodeInfo[], partitioning: Partitioning, replicationFactor: number) {
    this.snapshot = {
      members: [...members],
      ring: new RingSnapshot(
        STATIC_EPOCH,
        members.map((m) => m.id),
        partitioning,
        replicationFactor,
      ),
    };
  }

  current(): { readonly members: readonly NodeInfo[]; readonly ring: RingSnapshot } {
    return this.snapshot;
  }

  onChange(): () => void {
    return () => undefined;
  }

  async close(): Promise<void> {}
}
