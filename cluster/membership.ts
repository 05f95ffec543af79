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

/** A fixed member list: the single-node default. Its epoch never changes. */
export class StaticMembership implements Membership {
  private readonly snapshot: { readonly members: readonly NodeInfo[]; readonly ring: RingSnapshot };

  constructor(members: readonly NodeInfo[]) {
    if (members.length === 0) throw new Error("static membership needs at least one node");
    this.snapshot = {
      members: [...members],
      ring: new RingSnapshot(
        1n,
        members.map((m) => m.id),
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
