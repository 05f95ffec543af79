import type * as grpc from "@grpc/grpc-js";
import { ConfigError, type Logger, outboxMessageId, type RemoteMessages, StatusCode, type TwinRuntime } from "../runtime/index.js";
import type { AdapterOptions } from "../server/grpc/index.js";
import { ClusterOwnership, ClusterRouter } from "./cluster-router.js";
import type { FailureDetectorOptions } from "./failure-detector.js";
import { ForwardClient } from "./forward-client.js";
import { type NodeInfo, STATIC_EPOCH, StaticMembership } from "./membership.js";
import type { NodeId } from "./node-id.js";
import { resolveNodeSettings } from "./node-settings.js";
import type { PeerAddress } from "./peer-list.js";
import { PeerPool, type PeerState } from "./peer-pool.js";
import { addPeerService, type LocalNode } from "./peer-service.js";
import type { RingSnapshot } from "./ring-snapshot.js";
import { RoutedCallError, RoutedCalls } from "./routed-calls.js";

/** How a node takes part in a static cluster (`twinmesh start --peers …`). */
export interface ClusterOptions {
  /** The other nodes (`--peers`); empty for a one-node cluster. */
  readonly peers: readonly PeerAddress[];
  /** Copies kept of each partition, capped at the cluster size. @defaultValue 3 */
  readonly replicationFactor?: number;
  /** When a silent peer is down. */
  readonly failureDetector?: FailureDetectorOptions;
  /** How often peers are pinged. @defaultValue 250 */
  readonly heartbeatIntervalMs?: number;
}

/** The default replication factor of a cluster (design §5). */
export const DEFAULT_REPLICATION_FACTOR = 3;

/** A member as `twinmesh ring` shows it. */
export interface MemberView {
  readonly id: string;
  readonly address: string;
  /** `self`, or the peer's condition: `up`, `down`, `incompatible`. */
  readonly condition: string;
  readonly problem: string | undefined;
  /** Partitions it owns (first of their preference lists). */
  readonly owned: number;
  /** Partitions it holds a replica of (the rest of their preference lists). */
  readonly replicated: number;
}

/**
 * This node's part in a static cluster: the ring of this node and its `--peers`, the peer pool
 * (heartbeats, failure detection, settings agreement), forwarding, and the router every RPC goes
 * through. Made before the runtime opens, because the host's admission consults its ownership;
 * {@link attach}ed once the runtime is open.
 */
export class ClusterNode {
  readonly ownership: ClusterOwnership;
  /** Twin-to-twin messages to another node's twins, sent to the owner as SendToTwin keyed by the message's id. */
  readonly remoteMessages: RemoteMessages;
  readonly replicationFactor: number;
  private runtime: TwinRuntime | undefined;
  private ring: RingSnapshot | undefined;
  private pool: PeerPool | undefined;
  private forwarding: ForwardClient | undefined;
  private router: ClusterRouter | undefined;
  private local: LocalNode | undefined;
  private calls: RoutedCalls | undefined;

  /** @throws ConfigError (BAD_OPTION) for a replication factor below 1. */
  constructor(
    readonly self: NodeId,
    private readonly options: ClusterOptions,
    private readonly log: Logger,
  ) {
    this.replicationFactor = options.replicationFactor ?? DEFAULT_REPLICATION_FACTOR;
    if (!Number.isSafeInteger(this.replicationFactor) || this.replicationFactor < 1 || this.replicationFactor > 64) {
      throw new ConfigError("BAD_OPTION", `--replication-factor is ${this.replicationFactor}; use a whole number from 1 to 64`);
    }
    this.ownership = new ClusterOwnership(
      self,
      () => this.runtime,
      () => this.ring,
    );
    this.remoteMessages = {
      send: async (entry) => {
        const owner = this.ownership.ownerOf(entry.toKind, entry.toId);
        const calls = this.calls;
        if (owner === undefined || calls === undefined) {
          throw new RoutedCallError(StatusCode.UNAVAILABLE, "NOT_SERVING", "the node is joining its cluster", true);
        }
        // The key is unique in the cluster and names no node (the sender's partition and its
        // outbox seq there), so the owner's inbox marks recognise a redelivery after a lost
        // answer, also one that a new owner of the sender's partition sends after a failover.
        await calls.sendToTwin(owner, entry.toKind, entry.toId, entry.message, outboxMessageId(entry));
      },
    };
  }

  /** Builds the ring, the pool and the router over the open runtime. Call once. */
  attach(runtime: TwinRuntime): ClusterRouter {
    if (this.router !== undefined) return this.router;
    const members: NodeInfo[] = [{ id: this.self, address: "", labels: {} }, ...this.options.peers.map((p) => ({ id: p.id, address: p.address, labels: {} }))];
    const membership = new StaticMembership(members, runtime.partitioning, this.replicationFactor);
    const settings = resolveNodeSettings({
      partitions: runtime.partitioning.partitions,
      replicationFactor: this.replicationFactor,
      kinds: runtime.registry.kindNames(),
    });
    this.local = { id: this.self, settings, epoch: () => STATIC_EPOCH, catchingUp: () => false };
    const pool = new PeerPool(this.local, this.options.peers, {
      log: this.log,
      failureDetector: this.options.failureDetector,
      heartbeatIntervalMs: this.options.heartbeatIntervalMs,
    });
    pool.onChange((peer) => {
      const level = peer.condition === "incompatible" ? "error" : "info";
      this.log[level]({ peer: peer.id, address: peer.address, condition: peer.condition, problem: peer.problem }, `peer ${peer.id} is ${peer.condition}`);
    });
    this.pool = pool;
    this.forwarding = new ForwardClient(pool, { log: this.log });
    this.calls = new RoutedCalls(
      this.self,
      (peer) => pool.channel(peer),
      (peer) => pool.isUp(peer),
    );
    this.runtime = runtime;
    this.router = new ClusterRouter(
      {
        self: this.self,
        runtime,
        ring: () => this.currentRing(),
        pool,
        forwarding: this.forwarding,
        calls: this.calls,
        log: this.log,
      },
      this.ownership,
    );
    this.ring = membership.current().ring;
    return this.router;
  }

  /** Serves PeerService (Ping, Forward) on `server`. */
  serve(server: grpc.Server, adapter: AdapterOptions): void {
    const local = this.local;
    const router = this.router;
    if (local === undefined || router === undefined) throw new Error("ClusterNode.serve before attach");
    addPeerService(server, local, { forward: router }, { adapter, log: this.log });
  }

  /** Starts the heartbeats. Peers need not be reachable: they are tried until they answer. */
  start(): void {
    this.pool?.start();
  }

  /** Every member with its condition and partition shares, this node first. */
  members(): MemberView[] {
    const ring = this.currentRing();
    const peers = new Map<string, PeerState>((this.pool?.states() ?? []).map((p) => [p.id, p]));
    return ring.nodes.map((id) => {
      const share = ring.shareOf(id);
      const peer = peers.get(id);
      return {
        id,
        address: peer?.address ?? "",
        condition: id === this.self ? "self" : (peer?.condition ?? "down"),
        problem: peer?.problem,
        owned: share.owned,
        replicated: share.replicated,
      };
    });
  }

  /** The ring now. */
  currentRing(): RingSnapshot {
    if (this.ring === undefined) throw new Error("the cluster ring is read before the node joined");
    return this.ring;
  }

  /** Stops forwarding and heartbeats. Idempotent. */
  async close(): Promise<void> {
    await this.forwarding?.close();
    await this.pool?.close();
  }
}
