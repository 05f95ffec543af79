import { setMaxListeners } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import {
  ConfigError,
  type Logger,
  outboxMessageId,
  type RemoteMessages,
  type ReplicationStage,
  StatusCode,
  type Tracing,
  type TwinRuntime,
} from "../runtime/index.js";
import type { AdapterOptions } from "../server/grpc/index.js";
import { ClusterOwnership, ClusterRouter } from "./cluster-router.js";
import { reportFailpoints } from "./failpoints.js";
import type { FailureDetectorOptions } from "./failure-detector.js";
import { ForwardClient } from "./forward-client.js";
import { type NodeInfo, STATIC_EPOCH, StaticMembership } from "./membership.js";
import type { NodeId } from "./node-id.js";
import { resolveNodeSettings } from "./node-settings.js";
import { PartitionCopies } from "./partition-copies.js";
import { PartitionOwnership } from "./partition-ownership.js";
import { PartitionReplica } from "./partition-replica.js";
import type { PeerAddress } from "./peer-list.js";
import { isCurrentPeer, PeerCondition, PeerPool, type PeerState } from "./peer-pool.js";
import { addPeerService, type LocalNode } from "./peer-service.js";
import { majorityOf } from "./quorum.js";
import { type ReplicaPeers, Replicator } from "./replicator.js";
import type { RingSnapshot } from "./ring-snapshot.js";
import { RoutedCallError, RoutedCalls } from "./routed-calls.js";

/** How long a starting node waits for its peers to answer before catching up from those that do. */
const CATCH_UP_PEER_WAIT_MS = 3000;

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
  /**
   * For this long after the node starts, taking a partition waits for every copy of it to answer
   * (`--startup-grace-ms`), so a whole cluster restarted at once keeps its LOCAL writes. @defaultValue 10000
   */
  readonly startupGraceMs?: number;
  /**
   * A partition this node should own and has not served for this long is stuck: logged at error
   * level with why, counted in status (`--stuck-after-ms`). @defaultValue 30000
   */
  readonly stuckAfterMs?: number;
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

/** What {@link ClusterNode.metricsView} reports. Counters only grow while the node runs. */
export interface ClusterMetricsView {
  /** The ring epoch this node routes by. */
  readonly epoch: bigint;
  /** Nodes in the ring, and those up as this node sees them (itself included once it serves). */
  readonly members: number;
  readonly membersUp: number;
  /** Partitions this node serves as owner now. */
  readonly ownedPartitions: number;
  /** True while this node catches up after a start and owns nothing. */
  readonly catchingUp: boolean;
  /** Batches and events this node forwarded to other owners. */
  readonly forwardedBatches: number;
  readonly forwardedEvents: number;
  /** Replication shipments sent, answers that waited for replica acks, and waits that fell short. */
  readonly shipments: number;
  readonly replicaWaits: number;
  readonly replicaShortfalls: number;
  /** Of those, the waits whose answers that asked for fewer copies were still met. */
  readonly replicaShortfallsMetInPart: number;
  /** Catch-ups this node fetched from another copy of a partition, and of those, whole key-range copies. */
  readonly catchUps: number;
  readonly rangeCopies: number;
  /** Per replica: shipments of the partitions this node owns that it was sent and has not confirmed. */
  readonly replicationLag: ReadonlyMap<string, number>;
  /** Where partitions move on this node now. */
  readonly handoff: HandoffProgress;
}

/** Partitions on their way to (or being rebuilt on) this node, as {@link ClusterNode.metricsView} counts them. */
export interface HandoffProgress {
  /** Partitions this node should own and does not serve yet. */
  readonly taking: number;
  /** Copies on this node catching up from another copy (as owner-to-be or as replica). */
  readonly catchingUp: number;
  /** Of the taking partitions, those whose previous owner still held them when last asked. */
  readonly waitingForPreviousOwner: number;
  /** Of the taking partitions, those not served for `stuckAfterMs` or more (logged at error level with why). */
  readonly stuck: number;
  /** Copies marked rebuilding after this node lost data. */
  readonly rebuilding: number;
}

/** Told how long a node's cluster work took. Must be cheap and must not throw. */
export interface ClusterTimings {
  /** A replica answered one Replicate request `seconds` after reading it off its owner's stream (its queue wait and its write). */
  replicaApplied(seconds: number): void;
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
  /** The host's replication stage: ships each committed group to the replicas of its partitions. */
  readonly replication: ReplicationStage;
  readonly replicationFactor: number;
  /** Where cluster durations go (the metrics exporter sets it); none by default, and then nothing is recorded. */
  timings: ClusterTimings | undefined;
  /** This node's own cluster lines (`component` `cluster`). */
  private readonly log: Logger;
  private replicator: Replicator | undefined;
  private replica: PartitionReplica | undefined;
  private partitions: PartitionOwnership | undefined;
  private ring: RingSnapshot | undefined;
  private pool: PeerPool | undefined;
  private forwarding: ForwardClient | undefined;
  private router: ClusterRouter | undefined;
  private local: LocalNode | undefined;
  private calls: RoutedCalls | undefined;
  private runtime: TwinRuntime | undefined;
  private copies: PartitionCopies | undefined;
  /**
   * Aborted when this node stops serving its peers' streams (see {@link stopServingPeers}). Each
   * open Forward and Replicate stream listens: two per peer, a bounded count above Node's default
   * warning threshold (10) in clusters of seven or more.
   */
  private readonly peersServed = withoutListenerLimit(new AbortController());

  /** @throws ConfigError (BAD_OPTION) for a replication factor below 1. */
  constructor(
    readonly self: NodeId,
    private readonly options: ClusterOptions,
    /** The node's root logger: each part takes its own `cluster.*` component from it. */
    private readonly rootLog: Logger,
    /** Spans for forward and replication hops of traced batches; absent: tracing off. */
    private readonly tracing?: Tracing,
  ) {
    this.log = rootLog.child({ component: "cluster" });
    this.replicationFactor = options.replicationFactor ?? DEFAULT_REPLICATION_FACTOR;
    if (!Number.isSafeInteger(this.replicationFactor) || this.replicationFactor < 1 || this.replicationFactor > 64) {
      throw new ConfigError("BAD_OPTION", `--replication-factor is ${this.replicationFactor}; use a whole number from 1 to 64`);
    }
    this.ownership = new ClusterOwnership();
    const clusterSize = Math.min(this.replicationFactor, options.peers.length + 1);
    this.replication = {
      operationCopies: majorityOf(clusterSize),
      // A message leaves once its sending write cannot be lost with this node: else a retry of
      // that write on a new owner sends it again, and the new owner reuses its id.
      messageCopies: majorityOf(clusterSize),
      prepare: (group) => this.replicator?.prepare(group),
      replicate: (group) => this.replicator?.replicate(group),
      aborted: (group) => this.replicator?.aborted(group),
    };
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

  /** Builds the ring, the pool, replication and the router over the open runtime. Call once. */
  async attach(runtime: TwinRuntime): Promise<ClusterRouter> {
    if (this.router !== undefined) return this.router;
    this.runtime = runtime;
    const copies = await PartitionCopies.load(runtime.store, runtime.partitioning.partitions);
    this.copies = copies;
    const members: NodeInfo[] = [{ id: this.self, address: "", labels: {} }, ...this.options.peers.map((p) => ({ id: p.id, address: p.address, labels: {} }))];
    const membership = new StaticMembership(members, runtime.partitioning, this.replicationFactor);
    const settings = resolveNodeSettings({
      partitions: runtime.partitioning.partitions,
      replicationFactor: this.replicationFactor,
      kinds: runtime.registry.kindNames(),
    });
    this.local = {
      id: this.self,
      settings,
      epoch: () => STATIC_EPOCH,
      catchingUp: () => this.partitions?.catchingUp ?? true,
      diskProblem: () => runtime.host.diskProblem,
      members: () => this.ring?.nodes,
    };
    const pool = new PeerPool(this.local, this.options.peers, {
      log: this.rootLog,
      failureDetector: this.options.failureDetector,
      heartbeatIntervalMs: this.options.heartbeatIntervalMs,
    });
    pool.onChange((peer) => {
      const level = peer.condition === "incompatible" ? "error" : "info";
      this.log[level]({ peer: peer.id, address: peer.address, condition: peer.condition, problem: peer.problem }, `peer ${peer.id} is ${peer.condition}`);
    });
    this.pool = pool;
    const peers: ReplicaPeers = {
      isUp: (peer) => pool.isUp(peer),
      isCurrent: (peer) => isCurrentPeer(pool.state(peer)),
      channel: (peer) => pool.channel(peer),
    };
    const log = this.rootLog;
    reportFailpoints(log);
    const ring = (): RingSnapshot => this.currentRing();
    this.replicator = new Replicator({
      self: this.self,
      runtime,
      ring,
      peers,
      copies,
      log: log.child({ component: "cluster.replicator" }),
      tracing: this.tracing,
      superseded: (p) => this.partitions?.superseded(p),
    });
    this.replica = new PartitionReplica({
      self: this.self,
      runtime,
      copies,
      replicator: this.replicator,
      ring,
      channel: (peer) => pool.channel(peer),
      holds: (p) => this.partitions?.holding(p) ?? false,
      superseded: (p) => this.partitions?.superseded(p),
      log: log.child({ component: "cluster.replica" }),
      tracing: this.tracing,
      applied: (seconds) => this.timings?.replicaApplied(seconds),
    });
    this.partitions = new PartitionOwnership({
      self: this.self,
      runtime,
      ring,
      peers,
      copies,
      replica: this.replica,
      replicator: this.replicator,
      log: log.child({ component: "cluster.ownership" }),
      startupGraceMs: this.options.startupGraceMs,
      stuckAfterMs: this.options.stuckAfterMs,
      stallAfterMs: pool.safeStallMs,
    });
    this.ownership.attach(this.partitions);
    pool.onChange((peer) => {
      if (peer.condition === PeerCondition.UP) this.replica?.sourceUp(peer.id);
      else {
        this.replica?.sourceDown(peer.id);
        // What it was sent and has not confirmed is not waited for: answers that the other
        // replicas can give are answered now, not at their timeout.
        this.replicator?.notCountingOn(peer.id, `${peer.id} is ${peer.condition}`);
      }
      this.partitions?.nudge();
    });
    this.forwarding = new ForwardClient(pool, { log: this.rootLog, tracing: this.tracing });
    this.calls = new RoutedCalls(
      this.self,
      (peer) => pool.channel(peer),
      (peer) => pool.isUp(peer),
    );
    this.ring = membership.current().ring;
    this.router = new ClusterRouter(
      {
        self: this.self,
        runtime,
        ring: () => this.currentRing(),
        pool,
        forwarding: this.forwarding,
        calls: this.calls,
        log: this.rootLog,
      },
      this.ownership,
    );
    return this.router;
  }

  /** Serves PeerService (Ping, Forward) on `server`. */
  serve(server: grpc.Server, adapter: AdapterOptions): void {
    const local = this.local;
    const router = this.router;
    if (local === undefined || router === undefined) throw new Error("ClusterNode.serve before attach");
    const replica = this.replica;
    addPeerService(
      server,
      local,
      { forward: router, replicate: replica, fetchPartition: replica, partitionStates: replica, claimPartitions: replica },
      { adapter, log: this.rootLog, tracing: this.tracing, stopping: this.peersServed.signal },
    );
  }

  /**
   * Ends the peers' open Forward and Replicate streams to this node, after answering what they
   * sent: at shutdown, once the host has drained, so the server does not wait out its grace for
   * streams only the peers would end. Idempotent.
   */
  stopServingPeers(): void {
    this.peersServed.abort();
  }

  /**
   * Starts the heartbeats, then catches up from the partitions' owners (peers need not be
   * reachable: they are tried until they answer) and takes this node's partitions.
   */
  start(): void {
    this.pool?.start();
    this.partitions?.start(CATCH_UP_PEER_WAIT_MS).catch((err: unknown) => this.log.error({ err }, "joining the cluster failed"));
  }

  /** True while this node catches up: it owns nothing yet, and gRPC health says NOT_SERVING. */
  get catchingUp(): boolean {
    return this.partitions?.catchingUp ?? true;
  }

  /** Calls `listener` when {@link catchingUp} may have changed; returns the unsubscribe function. */
  onCatchingUpChange(listener: () => void): () => void {
    return this.partitions?.onChange(listener) ?? (() => undefined);
  }

  /** Every member with its condition and partition shares, this node first. */
  members(): MemberView[] {
    const ring = this.currentRing();
    const peers = new Map<string, PeerState>((this.pool?.states() ?? []).map((p) => [p.id, p]));
    const selfDisk = this.runtime?.host.diskProblem;
    const live = (id: string): boolean => (id === this.self ? this.partitions?.current === true : isCurrentPeer(peers.get(id)));
    return ring.nodes.map((id) => {
      const share = ring.shareOf(id, live);
      const peer = peers.get(id);
      const up = id === this.self || peer?.condition === "up";
      const catching = id === this.self ? this.catchingUp : up && peer?.catchingUp === true;
      const diskFull = up && (id === this.self ? selfDisk : peer?.diskProblem) !== undefined;
      return {
        id,
        address: peer?.address ?? "",
        condition: diskFull ? "disk-full" : catching ? "catching-up" : id === this.self ? "self" : (peer?.condition ?? "down"),
        // A full disk: what it reported (what to free).
        problem: id === this.self ? selfDisk : (peer?.problem ?? (diskFull ? peer?.diskProblem : undefined)),
        // This node knows what it has taken; of a peer, only what it should own.
        owned: id === this.self ? (this.partitions?.ownedCount ?? 0) : share.owned,
        replicated: share.replicated,
      };
    });
  }

  /**
   * This node's view of its cluster for the metrics exporter, read when it is scraped: nothing
   * here is counted on the event path beyond the forward and replication stats it reads.
   */
  metricsView(): ClusterMetricsView {
    const ring = this.ring;
    let peersUp = 0;
    for (const peer of this.pool?.states() ?? []) if (peer.condition === "up") peersUp++;
    const replicated = this.replicator?.stats;
    return {
      epoch: ring?.epoch ?? 0n,
      members: ring?.nodes.length ?? 0,
      // This node counts itself up once it serves (it has caught up).
      membersUp: peersUp + (this.catchingUp ? 0 : 1),
      ownedPartitions: this.partitions?.ownedCount ?? 0,
      catchingUp: this.catchingUp,
      forwardedBatches: this.forwarding?.stats.batches ?? 0,
      forwardedEvents: this.forwarding?.stats.events ?? 0,
      shipments: replicated?.shipments ?? 0,
      replicaWaits: replicated?.waits ?? 0,
      replicaShortfalls: replicated?.shortfalls ?? 0,
      replicaShortfallsMetInPart: replicated?.metInPart ?? 0,
      catchUps: this.replica?.stats.catchUps ?? 0,
      rangeCopies: this.replica?.stats.rangeCopies ?? 0,
      replicationLag: this.replicator?.lag() ?? new Map(),
      handoff: this.handoffProgress(),
    };
  }

  private handoffProgress(): HandoffProgress {
    let catchingUp = 0;
    let rebuilding = 0;
    const { replica, copies, runtime } = this;
    for (const p of runtime?.partitioning.all() ?? []) {
      if (replica?.isCatchingUp(p) === true) catchingUp++;
      if (copies?.get(p).rebuilding === true) rebuilding++;
    }
    const handoff = this.partitions?.handoff;
    return {
      taking: handoff?.taking ?? 0,
      waitingForPreviousOwner: handoff?.waitingForPreviousOwner ?? 0,
      stuck: handoff?.stuck ?? 0,
      catchingUp,
      rebuilding,
    };
  }

  /** The ring now. */
  currentRing(): RingSnapshot {
    if (this.ring === undefined) throw new Error("the cluster ring is read before the node joined");
    return this.ring;
  }

  /** Stops forwarding and heartbeats. Idempotent. */
  async close(): Promise<void> {
    this.stopServingPeers();
    this.partitions?.close();
    this.replica?.close();
    this.replicator?.close();
    await this.forwarding?.close();
    await this.pool?.close();
  }
}

/** `controller`, whose signal takes any number of listeners without Node's leak warning. */
function withoutListenerLimit(controller: AbortController): AbortController {
  setMaxListeners(0, controller.signal);
  return controller;
}
