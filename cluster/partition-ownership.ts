import { type PartitionState, PeerService } from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import type { Logger, OwnershipGate, PartitionId, TurnOutcome, TwinRuntime } from "../runtime/index.js";
import { FAILPOINTS, freezeAt } from "./failpoints.js";
import { LogLimiter } from "./log-limiter.js";
import type { NodeId } from "./node-id.js";
import {
  ahead,
  EPOCH_LIMIT,
  epochBeginner,
  nextEpoch,
  type PartitionCopies,
  type PartitionCopy,
  type PartitionPoint,
  plausiblePoint,
} from "./partition-copies.js";
import type { PartitionReplica } from "./partition-replica.js";
import { callUnary } from "./peer-rpc.js";
import { intersectingEveryMajority, majorityOf } from "./quorum.js";
import type { ReplicaPeers, Replicator } from "./replicator.js";
import type { RingSnapshot } from "./ring-snapshot.js";

/** What {@link PartitionOwnership} works with. */
export interface PartitionOwnershipConfig {
  readonly self: NodeId;
  readonly runtime: TwinRuntime;
  readonly ring: () => RingSnapshot;
  readonly peers: ReplicaPeers;
  readonly copies: PartitionCopies;
  readonly replica: PartitionReplica;
  readonly replicator: Replicator;
  readonly log: Logger;
  /**
   * For this long after the node starts, taking a partition waits for every copy of it to answer
   * (not just a majority), so a whole cluster restarted at once keeps writes acknowledged at
   * LOCAL, which only the previous owner holds. @defaultValue 10000
   */
  readonly startupGraceMs?: number;
  /** A partition this node should own and has not served for this long is stuck (see {@link PartitionOwnership.handoff}). @defaultValue 30000 */
  readonly stuckAfterMs?: number;
  /** How long a new owner waits for the previous one to let a partition go. @defaultValue 5000 */
  readonly handoffTimeoutMs?: number;
  /**
   * This node's event loop stalled this long (frozen, starved, a long pause) may have been taken
   * for dead by its peers, which then took its partitions: it stops serving them until their
   * copies say no newer epoch began. The node passes {@link PeerPool.safeStallMs}. @defaultValue 500
   */
  readonly stallAfterMs?: number;
}

enum Hold {
  NONE = 0,
  ACQUIRING = 1,
  OWNED = 2,
}

/** How often ownership is reconciled with who is live, besides every membership change. */
const RECONCILE_MS = 200;
/** See {@link PartitionOwnershipConfig.stallAfterMs}. */
const DEFAULT_STALL_AFTER_MS = 500;
/** How often the event loop marks itself as running (see {@link PartitionOwnership.checkStall}). */
const STALL_TICK_MS = 50;
/** A peer asked for its partition states answers within this. */
const STATES_DEADLINE_MS = 2000;
/** A peer asked to promise partitions answers within this (its promise is a durable write). */
const CLAIM_DEADLINE_MS = 2000;
/** After letting a partition go, this node still reports it held this long: turns that started before finish. */
const RELEASE_GRACE_MS = 500;
/** Partitions caught up at once (the replica fetches as many at once; see PartitionReplica's MAX_FETCHES). */
const CATCH_UP_CONCURRENCY = 16;
/** The longest pause before a partition whose claims failed is claimed again (before jitter). */
const CLAIM_BACKOFF_MAX_MS = 3000;
/** How often a node rebuilding its copies asks its peers whether they have caught up with a majority. */
const REBUILD_CHECK_MS = 1000;
/** A partition this node should own and has not served for this long is stuck: logged at error level, counted in status. */
const STUCK_AFTER_MS = 30_000;

/**
 * Why a partition this node should own is not taken yet: a node ahead of it in the list is still
 * catching up (in the startup grace), too few current copies answered, its previous owner still
 * holds it, too few copies promised the new epoch (another node claimed a newer one), or the
 * catch-up from the most advanced copy did not reach that copy, or no epoch is left to claim it
 * under (a copy promised one just below {@link EPOCH_LIMIT}).
 */
type WaitReason = "ahead-catching-up" | "too-few-copies" | "previous-owner-holds" | "too-few-promises" | "catch-up-short" | "epochs-exhausted";

/** Where a partition this node should own and does not serve stands: why it last waited, or that it is catching up or being taken now. */
type UntakenReason = WaitReason | "catching-up" | "taking" | "checking-after-stall";

/**
 * Which node runs each partition, and this node's part in moving partitions (design §5). The
 * owner of a partition is the first node of its preference list that is live and caught up.
 * When that becomes this node, it *takes* the partition before serving it: it asks the other
 * copies where they stand (a majority must answer; all of them during the startup grace),
 * waits while one of them still holds it (a handoff), then claims the partition under its new
 * epoch: as many copies must promise it (this one too), and from its promise on a copy confirms
 * no older owner's write. It catches up from the most advanced promised copy when that is ahead
 * of its own, and only then begins the epoch and serves: every write acknowledged under an older
 * epoch is on a promised copy, and none is acknowledged after. When another node becomes the
 * owner, this one refuses new work for the partition at once (retryable) and keeps reporting it
 * held until its last writes are out.
 *
 * A restarted node first catches up every partition it holds a copy of from its current owner,
 * reporting itself `catching up` meanwhile: its peers neither give it partitions nor count it.
 * A node that finds at its start that it lost data (its peers' histories name epochs it began
 * and has no record of, or its data directory is empty and no peer answers) marks its copies
 * `rebuilding` and stays catching up until each copy holds all that the most advanced of a
 * majority of the other, trusted copies holds: a copy that lost writes this node acknowledged
 * must not outvote the one copy left with them.
 *
 * Static membership cannot fence: a node cut off from its peers but not from clients keeps
 * serving what it owned until it notices, as the etcd issue's leases will prevent.
 */
export class PartitionOwnership implements OwnershipGate {
  private readonly holds: Hold[];
  private readonly releasedAt: number[];
  private readonly handoffSince = new Map<number, number>();
  /** Peers that answered since this node started: one of them that then went silent is known down. */
  private readonly seenUp = new Set<NodeId>();
  private readonly startedAt = performance.now();
  private timer: NodeJS.Timeout | undefined;
  private startingUp = true;
  /** Copies of this node marked {@link PartitionCopy.rebuilding}: while any is, this node catches up. */
  private rebuilding = 0;
  /** For a rebuilding copy, the most advanced point of a trusted majority it has yet to reach. */
  private readonly rebuildTargets = new Map<number, PartitionPoint>();
  private lastRebuildCheck = Number.NEGATIVE_INFINITY;
  private checkingRebuilt = false;
  /** Peers current at the last reconcile: one that becomes current is asked whether it follows a newer epoch of a partition this node owns. */
  private readonly currentPeers = new Set<NodeId>();
  private closed = false;
  private stopDiskWatch: () => void = () => undefined;
  private readonly listeners = new Set<() => void>();
  /**
   * Partitions whose last claims too few copies promised, and when to claim them again: each
   * failed claim leaves promises behind that fence the current owner, so two nodes whose views
   * disagree must not claim in lockstep every reconcile (Raft's randomised election timeouts).
   */
  private readonly claimBackoff = new Map<number, { failures: number; until: number }>();
  /** Partitions this node should own and does not serve: since when, and why it last waited. */
  private readonly untaken = new Map<number, { since: number; reason: UntakenReason; stuck: boolean }>();
  /** Partitions left without an epoch to claim, logged at most once a minute. */
  private readonly exhausted = new LogLimiter(60_000);
  /** When the event loop last showed it runs (its own short timer, or a check of ownership): a longer gap is a stall. */
  private lastTick = performance.now();
  private tickTimer: NodeJS.Timeout | undefined;
  /** Stalls noticed so far: work that spans one (a take, a check of the copies) does not act on what it read before it. */
  private stalls = 0;
  /** Owned partitions not served since a stall, until their copies say no other node took them meanwhile. */
  private readonly verifying = new Set<number>();
  private verifyRunning = false;

  constructor(private readonly config: PartitionOwnershipConfig) {
    const n = config.runtime.partitioning.partitions;
    this.holds = new Array<Hold>(n).fill(Hold.NONE);
    this.releasedAt = new Array<number>(n).fill(Number.NEGATIVE_INFINITY);
  }

  /**
   * True while this node catches up after its start, or rebuilds copies after it lost data: it
   * owns nothing and counts toward no quorum.
   */
  get catchingUp(): boolean {
    return this.startingUp || this.rebuilding > 0;
  }

  /**
   * True while this node may own partitions and count toward quorums: it is not catching up, and
   * its disk takes writes (a node whose disk is full lets its partitions go to the next copies,
   * and takes them back, catching up first, once space is freed).
   */
  get current(): boolean {
    return !this.catchingUp && this.config.runtime.host.diskProblem === undefined;
  }

  /** Calls `listener` when this node's catching-up state, its disk's, or a partition it owns changes. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Catches up, then reconciles ownership every {@link RECONCILE_MS} and at `nudge`. */
  async start(waitForPeersMs: number): Promise<void> {
    await this.catchUpAll(waitForPeersMs);
    this.startingUp = false;
    this.notify();
    this.timer = setInterval(() => this.reconcile(), RECONCILE_MS);
    this.timer.unref();
    // A short tick of its own marks the event loop as running, so a stall is measured by how
    // late it comes, not by how busy the node happens to be.
    this.lastTick = performance.now();
    this.tickTimer = setInterval(() => this.checkStall(true), STALL_TICK_MS);
    this.tickTimer.unref();
    // A full disk lets this node's partitions go at once; freed space takes them back.
    this.stopDiskWatch = this.config.runtime.host.onServingChange(() => {
      this.notify();
      this.reconcile();
    });
    this.reconcile();
  }

  /** Reconciles now (a peer's condition changed). */
  nudge(): void {
    if (!this.startingUp) this.reconcile();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.tickTimer !== undefined) clearInterval(this.tickTimer);
    this.stopDiskWatch();
  }

  /** The node that should run `partition` now, or undefined when no copy of it is live. */
  ownerOfPartition(partition: PartitionId): NodeId | undefined {
    const { self, peers } = this.config;
    for (const node of this.config.ring().preferenceList(partition)) {
      if (node === self) {
        if (this.current) return self;
      } else if (peers.isCurrent(node as NodeId)) return node as NodeId;
    }
    return undefined;
  }

  /** The node that should run `kind`/`id` now. */
  ownerOf(kind: string, id: string): NodeId | undefined {
    return this.ownerOfPartition(this.config.runtime.partitioning.partitionOf(kind, id));
  }

  /**
   * True when this node serves `partition` now. After a stall of the event loop, it first holds
   * back every owned partition (see {@link checkStall}).
   */
  owns(partition: PartitionId): boolean {
    this.checkStall();
    return (
      this.holds[partition] === Hold.OWNED &&
      !(this.verifying.size > 0 && this.verifying.has(partition)) &&
      this.ownerOfPartition(partition) === this.config.self
    );
  }

  /** Another node took `partition` under a newer epoch (its shipments say so): stop serving it. */
  superseded(partition: PartitionId): void {
    this.verifying.delete(partition);
    if (this.holds[partition] !== Hold.OWNED) return;
    this.holds[partition] = Hold.NONE;
    this.releasedAt[partition] = performance.now();
    this.config.log.warn({ partition }, "another node owns this partition under a newer epoch; letting it go");
    this.notify();
  }

  /** How many partitions this node serves now. */
  get ownedCount(): number {
    let n = 0;
    for (const p of this.config.runtime.partitioning.all()) if (this.owns(p)) n++;
    return n;
  }

  /**
   * Partitions this node should own now and does not serve yet (it is taking them), and of those
   * the ones whose previous owner still held them when last asked (a handoff). Read-only: for
   * status and metrics.
   */
  get handoff(): { readonly taking: number; readonly waitingForPreviousOwner: number; readonly stuck: number } {
    let taking = 0;
    let waitingForPreviousOwner = 0;
    let stuck = 0;
    for (const p of this.config.runtime.partitioning.all()) {
      if ((this.holds[p] === Hold.OWNED && !this.verifying.has(p)) || this.ownerOfPartition(p) !== this.config.self) continue;
      taking++;
      if (this.handoffSince.has(p)) waitingForPreviousOwner++;
      if (this.untaken.get(p)?.stuck === true) stuck++;
    }
    return { taking, waitingForPreviousOwner, stuck };
  }

  /** True while this node serves `partition`, or may still write to it (just let go of it). */
  holding(partition: PartitionId): boolean {
    const copy = this.config.copies.get(partition);
    return this.holds[partition] === Hold.OWNED || copy.written < copy.position || performance.now() - (this.releasedAt[partition] ?? 0) < RELEASE_GRACE_MS;
  }

  /** Copies of `partition` that can be durable now: this node's and each live, caught-up replica's. */
  liveCopies(partition: PartitionId): number {
    let live = 0;
    for (const node of this.config.ring().preferenceList(partition)) {
      if (node === this.config.self ? this.current : this.config.peers.isCurrent(node as NodeId)) live++;
    }
    return live;
  }

  refusal(kind: string, id: string): TurnOutcome | undefined {
    this.checkStall();
    const partition = this.config.runtime.partitioning.partitionOf(kind, id);
    const owner = this.ownerOfPartition(partition);
    if (owner === this.config.self) {
      if (this.verifying.size > 0 && this.verifying.has(partition)) {
        return {
          status: "rejected",
          reason: "PARTITION_MOVING",
          message: `this node (${this.config.self}) stalled long enough for its peers to take partition ${partition} (twin ${kind}/${id}); it serves it again once its copies say none did; retry in a moment`,
          retryable: true,
        };
      }
      if (this.holds[partition] === Hold.OWNED) return undefined;
      return {
        status: "rejected",
        reason: "PARTITION_MOVING",
        message: `partition ${partition} (twin ${kind}/${id}) is moving to this node (${this.config.self}), which is taking the most advanced copy first; retry in a moment`,
        retryable: true,
      };
    }
    if (owner === undefined) {
      return {
        status: "rejected",
        reason: this.catchingUp ? "NOT_SERVING" : "OWNER_UNAVAILABLE",
        message: this.catchingUp
          ? `this node (${this.config.self}) is catching up after its start; retry in a moment, or send to another node`
          : this.config.runtime.host.diskProblem !== undefined
            ? `this node's (${this.config.self}) disk refuses writes and no other copy of partition ${partition} (twin ${kind}/${id}) is live (${this.config.ring().preferenceList(partition).join(", ")}); retry with the same seqs when space is freed or a copy is back`
            : `no copy of partition ${partition} (twin ${kind}/${id}) is live: ${this.config.ring().preferenceList(partition).join(", ")} are all down; retry with the same seqs when one is back`,
        retryable: true,
      };
    }
    return {
      status: "rejected",
      reason: "NOT_OWNER",
      message: `twin ${kind}/${id} is owned by ${owner}, not by this node (${this.config.self}); send it to ${owner}, or to any node, which forwards it`,
      retryable: true,
    };
  }

  /**
   * Notices a stall of this node's event loop (see {@link PartitionOwnershipConfig.stallAfterMs}):
   * its peers may have marked it down and taken its partitions under newer epochs, and the failure
   * detector, which credits peers with this node's own stalls, shows no peer going away and
   * coming back. Every owned partition stops being served until {@link verifyOwned} hears from
   * its copies: reads served meanwhile could miss writes the new owner acknowledged.
   */
  private checkStall(tick = false): void {
    const now = performance.now();
    const gap = now - this.lastTick;
    if (gap <= (this.config.stallAfterMs ?? DEFAULT_STALL_AFTER_MS)) {
      if (tick) this.lastTick = now;
      return;
    }
    this.lastTick = now;
    if (this.startingUp || this.closed) return;
    this.stalls++;
    let suspended = 0;
    for (const p of this.config.runtime.partitioning.all()) {
      if (this.holds[p] !== Hold.OWNED || this.verifying.has(p)) continue;
      this.verifying.add(p);
      suspended++;
    }
    if (suspended === 0) {
      this.verifyOwned();
      return;
    }
    this.config.log.warn(
      { stalledMs: Math.round(gap), partitions: suspended },
      "this node's event loop stalled long enough for its peers to take its partitions; it serves them again once their copies say no newer epoch began",
    );
    this.notify();
    this.verifyOwned();
  }

  /**
   * Asks the copies of the partitions held back since a stall where they stand: one whose copies
   * (enough of them, with this one, to include any majority that promised a newer epoch) follow
   * no newer epoch is served again; one that another node took is let go, and taken again through
   * a claim, catching up first. Copies that do not answer keep their partitions waiting: they are
   * asked again at the next reconcile.
   */
  private verifyOwned(): void {
    if (this.verifyRunning || this.verifying.size === 0 || this.closed) return;
    this.verifyRunning = true;
    const partitions = [...this.verifying] as PartitionId[];
    const ring = this.config.ring();
    const stalls = this.stalls;
    void this.peerStates(partitions, ring)
      .then(async (states) => {
        this.checkStall();
        // Answers read across another stall may predate a claim made during it: ask again.
        if (this.closed || this.stalls !== stalls) return;
        const restored: PartitionId[] = [];
        let taken = 0;
        for (const p of partitions) {
          if (!this.verifying.has(p)) continue;
          const own = this.config.copies.get(p);
          const list = ring.preferenceList(p);
          // A newer epoch needs promises from a majority of the copies; answers from this many
          // (this one included) meet every majority. A copy rebuilding after it lost its disk
          // lost its promises too: its word counts only when it names a newer epoch.
          const needed = intersectingEveryMajority(list.length);
          let answered = 1;
          let newer = own.promised > own.epoch;
          for (const node of list) {
            if (node === this.config.self) continue;
            const state = states.get(node as NodeId)?.get(p);
            if (state === undefined) continue;
            if (!state.rebuilding) answered++;
            if (Math.max(pointOf(state).epoch, Number(state.promised), ...historyEpochs(state)) > own.epoch) newer = true;
          }
          if (newer) {
            if (this.holds[p] === Hold.OWNED) taken++;
            this.superseded(p);
          } else if (answered >= needed) {
            this.verifying.delete(p);
            if (this.holds[p] === Hold.OWNED) restored.push(p);
          }
        }
        if (taken > 0) this.config.log.warn({ partitions: taken }, "other nodes took partitions while this node stalled; taking them again, catching up first");
        if (restored.length > 0) {
          this.config.log.info({ partitions: restored.length }, "no other node took these partitions while this node stalled; serving them again");
          // Their outbox and timers were passed over while they were held back.
          await this.config.runtime.partitionsChanged(restored);
        }
        if (taken > 0 || restored.length > 0) this.notify();
      })
      .catch((err: unknown) => this.config.log.warn({ err }, "checking partitions after a stall failed; checked again in a moment"))
      .finally(() => {
        this.verifyRunning = false;
      });
  }

  /** Takes the partitions this node should own and lets go of the others. */
  private reconcile(): void {
    if (this.closed) return;
    this.checkStall();
    this.verifyOwned();
    const { self, runtime, peers } = this.config;
    for (const node of this.config.ring().nodes) if (node !== self && peers.isUp(node as NodeId)) this.seenUp.add(node as NodeId);
    this.checkReturnedPeers();
    if (this.rebuilding > 0 && !this.checkingRebuilt && performance.now() - this.lastRebuildCheck >= REBUILD_CHECK_MS) {
      this.checkingRebuilt = true;
      this.lastRebuildCheck = performance.now();
      void this.checkRebuilt()
        .catch((err: unknown) => this.config.log.warn({ err }, "checking rebuilt copies failed; checked again in a second"))
        .finally(() => {
          this.checkingRebuilt = false;
        });
    }
    const wanted: PartitionId[] = [];
    for (const p of runtime.partitioning.all()) {
      const owner = this.ownerOfPartition(p);
      if (owner === self) {
        if (this.holds[p] === Hold.NONE && !(performance.now() < (this.claimBackoff.get(p)?.until ?? 0))) wanted.push(p);
        continue;
      }
      this.untaken.delete(p);
      this.handoffSince.delete(p);
      this.verifying.delete(p);
      if (this.holds[p] === Hold.OWNED) {
        this.holds[p] = Hold.NONE;
        this.releasedAt[p] = performance.now();
        this.config.log.info({ partition: p, owner }, "partition moved to another node");
        this.notify();
      }
    }
    this.watchUntaken();
    // Partitions being taken are ACQUIRING, not NONE: each is in one acquire at a time, and one
    // whose catch-up is slow holds up no other.
    if (wanted.length > 0) {
      void this.acquire(wanted).catch((err: unknown) => {
        // A take cut short by the node's shutdown (its store closed under it) is no failure.
        if (this.closed) this.config.log.debug({ err }, "taking partitions stopped: the node is shutting down");
        else this.config.log.error({ err }, "taking partitions failed; they are tried again at the next reconcile (200 ms)");
      });
    }
  }

  /**
   * Takes `partitions`: reads where their copies stand, claims them under new epochs, begins the
   * epochs of those whose copy here is the most advanced of the promised ones, then catches the
   * others up from that copy and begins theirs. A partition that must wait (too few copies
   * answered or promised, a previous owner still holds it, a catch-up fell short) is tried again
   * at the next reconcile, or after a growing pause once its claims failed; why is logged at
   * debug level.
   */
  private async acquire(partitions: PartitionId[]): Promise<void> {
    for (const p of partitions) {
      this.holds[p] = Hold.ACQUIRING;
      const untaken = this.untaken.get(p);
      if (untaken !== undefined) untaken.reason = "taking";
    }
    try {
      await this.tryAcquire(partitions);
    } finally {
      // Any not taken (a write or a peer failed midway) are tried again at the next reconcile.
      for (const p of partitions) if (this.holds[p] === Hold.ACQUIRING) this.holds[p] = Hold.NONE;
    }
  }

  private async tryAcquire(partitions: PartitionId[]): Promise<void> {
    const { self, ring: currentRing, copies, replica, log } = this.config;
    const ring = currentRing();
    const stalls = this.stalls;
    const states = await this.peerStates(partitions, ring);
    const grace = performance.now() - this.startedAt < (this.config.startupGraceMs ?? 10_000);
    const ready: PartitionId[] = [];
    const catchUps: { partition: PartitionId; source: NodeId; point: PartitionPoint }[] = [];
    /** Partitions whose copies answered enough, to be claimed: the copies each needs to promise, of those that may. */
    const claimable: { partition: PartitionId; needed: number; voters: NodeId[] }[] = [];
    const lost: PartitionId[] = [];
    const waiting = new Map<WaitReason, PartitionId[]>();
    const wait = (p: PartitionId, reason: WaitReason): void => {
      this.holds[p] = Hold.NONE; // tried again at the next reconcile
      const untaken = this.untaken.get(p);
      if (untaken !== undefined) untaken.reason = reason;
      if (reason !== "previous-owner-holds") this.handoffSince.delete(p);
      waiting.set(reason, [...(waiting.get(reason) ?? []), p]);
    };
    for (const p of partitions) {
      const list = ring.preferenceList(p).filter((n) => n !== self) as NodeId[];
      const answered = list.filter((n) => states.get(n)?.has(p));
      if (answered.some((n) => this.lostData(p, states.get(n)?.get(p)))) {
        lost.push(p);
        this.holds[p] = Hold.NONE;
        continue;
      }
      // Only a copy that is current (its node does not catch up) and trusted (not rebuilding
      // after its node lost data) speaks for the partition: an empty or partial copy would let
      // a lagging copy outvote the one that holds acknowledged writes.
      const voters = answered.filter((n) => this.config.peers.isCurrent(n) && states.get(n)?.get(p)?.rebuilding !== true);
      // The others that make a majority of the copies with this one; in the startup grace every
      // copy but those seen up and then lost, so a cluster restarted at once waits for the node
      // with the writes.
      const othersNeeded = majorityOf(list.length + 1) - 1;
      const needed = grace ? Math.max(othersNeeded, list.filter((n) => !(this.seenUp.has(n) && !this.config.peers.isUp(n))).length) : othersNeeded;
      const held = answered.filter((n) => states.get(n)?.get(p)?.owned === true);
      // In the grace, a node ahead of this one in the list that is up but still catching up
      // will own the partition in a moment: taking it meanwhile would only move it twice.
      if (grace && this.aheadCatchingUp(p, ring)) wait(p, "ahead-catching-up");
      else if (voters.length < needed) wait(p, "too-few-copies");
      else if (held.length > 0 && !this.handoffExpired(p)) wait(p, "previous-owner-holds");
      else {
        this.handoffSince.delete(p);
        claimable.push({ partition: p, needed, voters });
      }
    }
    if (lost.length > 0) await this.markRebuilding(lost, "a peer's copy names an epoch this node began and has no record of");
    if (claimable.length > 0) freezeAt(FAILPOINTS.freezeBeforeClaim);
    // The claims: each partition's new epoch, above every epoch its copies follow, began or promised.
    const epochs = new Map<PartitionId, number>();
    const index = ring.nodes.indexOf(self);
    const exhausted: { partition: PartitionId; top: number }[] = [];
    for (const { partition } of claimable) {
      const copy = copies.get(partition);
      let top = Math.max(copy.epoch, copy.promised);
      for (const peerStates of states.values()) {
        const state = peerStates.get(partition);
        top = Math.max(top, pointOf(state).epoch, Number(state?.promised ?? 0n), ...historyEpochs(state));
      }
      const epoch = nextEpoch(top, index);
      // No copy would promise it (nor this one): claiming it anyway would only raise this
      // copy's promise at every reconcile. The partition waits for an operator.
      if (epoch >= EPOCH_LIMIT) exhausted.push({ partition, top });
      else epochs.set(partition, epoch);
    }
    if (exhausted.length > 0) {
      for (const { partition } of exhausted) {
        wait(partition, "epochs-exhausted");
        this.backOff(partition);
      }
      const held = this.exhausted.admit();
      if (held !== undefined) {
        log.error(
          { partitions: exhausted.map((e) => e.partition), highestEpochs: exhausted.map((e) => e.top), heldBack: held },
          "partitions cannot be taken: a copy follows or promised an epoch just below 2^48, so no epoch is left to claim them under. No member comes near it: a node impersonated a member (peers do not authenticate each other yet) or one has a bug. They stay unserved, and this node claims nothing higher. Keep node ports reachable only by the members; no command clears the copies' stored promise yet",
        );
      }
    }
    const claiming = claimable.filter(({ partition }) => epochs.has(partition));
    const promises = await this.claim(claiming, epochs);
    for (const { partition: p, needed, voters } of claiming) {
      const epoch = epochs.get(p) as number;
      // A copy counts once it promised this epoch: from then on it confirms no older owner's write.
      const promised = voters.filter((n) => promises.get(n)?.get(p)?.promised === BigInt(epoch) && promises.get(n)?.get(p)?.rebuilding !== true);
      if (copies.get(p).promised !== epoch || promised.length < needed) {
        wait(p, "too-few-promises");
        this.backOff(p);
        continue;
      }
      this.claimBackoff.delete(p);
      const most = mostAdvanced(promised, promises, p);
      if (most !== undefined && ahead(most.point, copies.get(p).point)) {
        catchUps.push({ partition: p, source: most.node, point: most.point });
        const untaken = this.untaken.get(p);
        if (untaken !== undefined) untaken.reason = "catching-up";
      } else ready.push(p);
    }
    // Those that need no catch-up are served at once, the others each as soon as it caught up: a
    // slow catch-up delays only its own partition.
    await this.begin(ready, epochs, stalls);
    await runLimited(catchUps, CATCH_UP_CONCURRENCY, async ({ partition, source, point }) => {
      // A catch-up joined from another source may stop short of the most advanced copy: check.
      if ((await replica.catchUp(partition, source)) && !ahead(point, copies.get(partition).point)) await this.begin([partition], epochs, stalls);
      else wait(partition, "catch-up-short");
    });
    for (const [reason, list] of waiting) log.debug({ partitions: list, reason }, "partitions not taken yet; tried again at the next reconcile");
  }

  /** Claims `partition` again only after a growing, jittered pause (see {@link claimBackoff}). */
  private backOff(partition: PartitionId): void {
    const failures = (this.claimBackoff.get(partition)?.failures ?? 0) + 1;
    const pause = Math.min(CLAIM_BACKOFF_MAX_MS, RECONCILE_MS * 2 ** (failures - 1)) * (0.5 + Math.random());
    this.claimBackoff.set(partition, { failures, until: performance.now() + pause });
  }

  /**
   * Notes since when each partition this node should own has gone unserved, and logs at error
   * level those unserved for `stuckAfterMs` (once each, with why they last waited), and again
   * once they are served.
   */
  private watchUntaken(): void {
    const { self, runtime, log } = this.config;
    const stuckAfterMs = this.config.stuckAfterMs ?? STUCK_AFTER_MS;
    const now = performance.now();
    const stuck: { partition: number; reason: UntakenReason }[] = [];
    for (const p of runtime.partitioning.all()) {
      if (this.ownerOfPartition(p) !== self) continue;
      const untaken = this.untaken.get(p);
      if (this.holds[p] === Hold.OWNED && !this.verifying.has(p)) {
        if (untaken?.stuck === true) log.info({ partition: p, afterMs: Math.round(now - untaken.since) }, "a stuck partition is served again");
        this.untaken.delete(p);
      } else if (untaken === undefined) this.untaken.set(p, { since: now, reason: this.verifying.has(p) ? "checking-after-stall" : "taking", stuck: false });
      else if (!untaken.stuck && now - untaken.since >= stuckAfterMs) {
        untaken.stuck = true;
        stuck.push({ partition: p, reason: untaken.reason });
      }
    }
    if (stuck.length === 0) return;
    const byReason: Partial<Record<UntakenReason, number[]>> = {};
    for (const { partition, reason } of stuck) (byReason[reason] ??= []).push(partition);
    log.error(
      { partitions: byReason, afterMs: stuckAfterMs },
      "partitions this node should own have gone unserved for --stuck-after-ms, by why they last waited; nobody serves their twins, and `twinmesh status` counts them stuck until they are served",
    );
  }

  /**
   * Claims each partition of `partitions` under its epoch in `epochs`: on this node's copy first,
   * then on its voters' (one ClaimPartitions call per peer; a copy that cannot count is not
   * asked). Returns each answering peer's states of the partitions it was asked for; a peer that
   * did not answer is left out.
   */
  private async claim(
    partitions: readonly { partition: PartitionId; voters: readonly NodeId[] }[],
    epochs: ReadonlyMap<PartitionId, number>,
  ): Promise<Map<NodeId, Map<number, PartitionState>>> {
    const { self, peers, replica } = this.config;
    const result = new Map<NodeId, Map<number, PartitionState>>();
    if (partitions.length === 0) return result;
    await replica.claim(
      partitions.map(({ partition }) => ({ partition, epoch: epochs.get(partition) as number })),
      self,
    );
    const ask = new Map<NodeId, { partition: number; epoch: bigint }[]>();
    for (const { partition, voters } of partitions) {
      for (const node of voters) {
        let list = ask.get(node);
        if (list === undefined) ask.set(node, (list = []));
        list.push({ partition, epoch: BigInt(epochs.get(partition) as number) });
      }
    }
    await Promise.all(
      [...ask].map(async ([node, claims]) => {
        try {
          const res = await callUnary(peers.channel(node), PeerService.method.claimPartitions, { nodeId: self, claims }, CLAIM_DEADLINE_MS);
          result.set(node, new Map(this.plausible(node, res.partitions).map((s) => [s.partition, s])));
        } catch (err) {
          this.config.log.debug({ peer: node, err }, "a peer did not answer a claim");
        }
      }),
    );
    return result;
  }

  /**
   * True when this node stalled since `stalls` was read, as it took `partitions`: other nodes may
   * have claimed and begun newer epochs meanwhile, which the states and promises read before do
   * not show. Those still being taken are let go, to be taken again from scratch.
   */
  private stalledSince(stalls: number, partitions: readonly PartitionId[]): boolean {
    this.checkStall();
    if (this.stalls === stalls) return false;
    for (const p of partitions) if (this.holds[p] === Hold.ACQUIRING) this.holds[p] = Hold.NONE;
    this.config.log.info({ partitions: partitions.length }, "this node stalled while taking partitions; taking them again");
    return true;
  }

  /**
   * Begins the claimed epoch of each of `partitions` (one durable write, while no claim or
   * replicated write runs here), then serves them. A partition whose copy promised a newer epoch
   * since (another node claims it), or moved past the claimed one, is not begun. A stall
   * since `stalls` was read (before the epoch's write, or before serving) begins or serves none.
   */
  private async begin(partitions: PartitionId[], epochs: ReadonlyMap<PartitionId, number>, stalls: number): Promise<void> {
    const { self, copies, log } = this.config;
    const ready: PartitionId[] = [];
    if (this.stalledSince(stalls, partitions)) return;
    await this.config.replica.serialized(async () => {
      const ops = [];
      const undo: { copy: PartitionCopy; restore: () => void }[] = [];
      for (const p of partitions) {
        const copy = copies.get(p);
        const epoch = epochs.get(p) ?? 0;
        // Not begun: the partition moved on, another node claimed a newer epoch, or a catch-up
        // still writes the copy (it would write an older history over the new epoch).
        if (
          this.ownerOfPartition(p) !== self ||
          this.holds[p] !== Hold.ACQUIRING ||
          copy.promised !== epoch ||
          copy.epoch >= epoch ||
          this.config.replica.isCatchingUp(p)
        ) {
          if (this.holds[p] === Hold.ACQUIRING) this.holds[p] = Hold.NONE;
          continue;
        }
        undo.push({ copy, restore: copy.save() });
        copy.beginEpoch(epoch);
        this.config.replicator.forget(p);
        ops.push(copy.op());
        ready.push(p);
      }
      if (ready.length === 0) return;
      try {
        await this.config.runtime.host.writeReplicated(ops);
      } catch (err) {
        // The new epochs are not durable: forget them, and try the partitions again later.
        for (const u of undo) {
          u.restore();
          this.holds[u.copy.partition] = Hold.NONE;
        }
        throw err;
      }
    });
    if (ready.length === 0) return;
    // Their numbering (alert log, outbox, dead letters) was written by another owner: read it
    // before serving, so the first watch or turn here continues it. Read again once owned, when
    // the outbox and timers of owned partitions are scanned.
    await this.config.runtime.partitionsChanged(ready);
    // A stall during the waits above (the epoch's write, the reads) is checked for again.
    if (this.stalledSince(stalls, ready)) return;
    let taken = 0;
    for (const p of ready) {
      if (this.holds[p] !== Hold.ACQUIRING) continue;
      // A claim of a newer epoch granted since the epoch began (before this node served it): not served.
      if (!copies.get(p).writing) {
        this.holds[p] = Hold.NONE;
        continue;
      }
      this.holds[p] = Hold.OWNED;
      taken++;
    }
    if (taken > 0) {
      log.info({ partitions: taken }, "took partitions");
      this.config.replicator.announce(ready.filter((p) => this.holds[p] === Hold.OWNED));
      // Their outbox, timers and numbering were written by another owner: read them now.
      await this.config.runtime.partitionsChanged(ready);
      this.notify();
    }
  }

  /**
   * True when `state` (a peer's copy of `partition`) names an epoch this node began (its low byte
   * is this node's index), newer than this node's copy, that this copy has no record of: this
   * node wrote it durably before it served under it, so it lost data since.
   */
  private lostData(partition: PartitionId, state: PartitionState | undefined): boolean {
    const index = this.config.ring().nodes.indexOf(this.config.self);
    const copy = this.config.copies.get(partition);
    for (const h of state?.history ?? []) {
      const epoch = Number(h.epoch);
      if (epochBeginner(epoch) === index && epoch > copy.epoch && copy.endOf(epoch) === undefined) return true;
    }
    return false;
  }

  /** Marks this node's copies of `partitions` rebuilding (durably, before anything else is written to them). */
  private async markRebuilding(partitions: readonly PartitionId[], why: string): Promise<void> {
    const ops = [];
    const marked: PartitionCopy[] = [];
    for (const p of partitions) {
      const copy = this.config.copies.get(p);
      if (copy.rebuilding) continue;
      copy.rebuilding = true;
      marked.push(copy);
      ops.push(copy.op());
    }
    if (ops.length === 0) return;
    try {
      await this.config.runtime.host.writeReplicated(ops);
    } catch (err) {
      for (const copy of marked) copy.rebuilding = false;
      throw err;
    }
    const wasCatchingUp = this.catchingUp;
    this.rebuilding += marked.length;
    this.config.log.warn(
      { partitions: marked.length, why },
      "this node lost data: its copies are rebuilt and count toward no majority until they hold what a majority of the other copies holds",
    );
    if (!wasCatchingUp) this.notify();
  }

  /**
   * Clears the mark of each rebuilding copy that now holds all that the most advanced copy of a
   * majority of the partition's copies (trusted ones, this one not counted) held when asked:
   * every write acknowledged before this node lost its data is on that copy, so this one may
   * count again. A partition no copy of a majority (this one included) holds anything of was
   * never written: its mark is cleared at once (a cluster starting on empty directories).
   */
  private async checkRebuilt(): Promise<void> {
    const { self, ring: currentRing, copies, replica, peers, log } = this.config;
    const ring = currentRing();
    const marked = this.config.runtime.partitioning.all().filter((p) => copies.get(p).rebuilding);
    const states = await this.peerStates(marked, ring);
    const cleared: PartitionCopy[] = [];
    const catchUps: { partition: PartitionId; source: NodeId }[] = [];
    for (const p of marked) {
      const copy = copies.get(p);
      if (replica.isCatchingUp(p)) continue;
      const list = ring.preferenceList(p).filter((n) => n !== self) as NodeId[];
      const answers = list.filter((n) => peers.isCurrent(n) && states.get(n)?.has(p));
      const majority = majorityOf(list.length + 1);
      const neverWritten = copy.empty && answers.length + 1 >= majority && answers.every((n) => isEmpty(states.get(n)?.get(p)));
      const trusted = answers.filter((n) => states.get(n)?.get(p)?.rebuilding !== true);
      if (!neverWritten && trusted.length >= majority) {
        const best = mostAdvanced(trusted, states, p);
        const target = this.rebuildTargets.get(p);
        if (best !== undefined && (target === undefined || ahead(best.point, target))) this.rebuildTargets.set(p, best.point);
        // A copy short of it is brought up to it now: its owner may have nothing new to ship.
        if (best !== undefined && !copy.extends(best.point)) catchUps.push({ partition: p, source: best.node });
      }
      const target = this.rebuildTargets.get(p);
      if (neverWritten || (target !== undefined && copy.extends(target))) cleared.push(copy);
    }
    await runLimited(catchUps, CATCH_UP_CONCURRENCY, async ({ partition, source }) => {
      await replica.catchUp(partition, source);
    });
    if (cleared.length === 0) return;
    for (const copy of cleared) copy.rebuilding = false;
    try {
      await this.config.runtime.host.writeReplicated(cleared.map((c) => c.op()));
    } catch (err) {
      for (const copy of cleared) copy.rebuilding = true;
      throw err;
    }
    for (const copy of cleared) this.rebuildTargets.delete(copy.partition);
    this.rebuilding -= cleared.length;
    log.info({ partitions: cleared.length, left: this.rebuilding }, "rebuilt copies hold what a majority of the other copies holds");
    if (this.rebuilding === 0) {
      log.warn("this node rebuilt its copies after it lost data; it counts toward majorities again");
      this.notify();
      this.reconcile();
    }
  }

  /**
   * Asks each peer that became current since the last reconcile where its copies of the
   * partitions this node owns stand: a peer that follows a newer epoch of one (another node took
   * it while this one was paused or cut off) has writes this node lacks, so this node lets the
   * partition go and takes it again, catching up from the most advanced copy first.
   */
  private checkReturnedPeers(): void {
    const { self, peers } = this.config;
    const ring = this.config.ring();
    for (const node of ring.nodes) {
      if (node === self) continue;
      const peer = node as NodeId;
      if (!peers.isCurrent(peer)) {
        this.currentPeers.delete(peer);
        continue;
      }
      if (this.currentPeers.has(peer)) continue;
      this.currentPeers.add(peer);
      const owned = this.config.runtime.partitioning.all().filter((p) => this.holds[p] === Hold.OWNED && ring.preferenceList(p).includes(peer));
      if (owned.length === 0) continue;
      void callUnary(peers.channel(peer), PeerService.method.getPartitionStates, { partitions: owned }, STATES_DEADLINE_MS).then(
        (res) => {
          let newer = 0;
          for (const state of this.plausible(peer, res.partitions)) {
            const p = state.partition as PartitionId;
            const epoch = Math.max(pointOf(state).epoch, Number(state.promised), ...historyEpochs(state));
            if (epoch <= this.config.copies.get(p).epoch || this.holds[p] !== Hold.OWNED) continue;
            newer++;
            this.superseded(p);
          }
          if (newer > 0)
            this.config.log.warn({ peer, partitions: newer }, "a returning peer follows newer epochs of partitions this node owned; taking them again");
        },
        (err: unknown) => this.config.log.debug({ peer, err }, "a returning peer did not say where its partitions stand"),
      );
    }
  }

  private aheadCatchingUp(partition: PartitionId, ring: RingSnapshot): boolean {
    for (const node of ring.preferenceList(partition)) {
      if (node === this.config.self) return false;
      if (this.config.peers.isUp(node as NodeId)) return true;
    }
    return false;
  }

  private handoffExpired(partition: number): boolean {
    const since = this.handoffSince.get(partition);
    const now = performance.now();
    if (since === undefined) {
      this.handoffSince.set(partition, now);
      return false;
    }
    if (now - since < (this.config.handoffTimeoutMs ?? 5000)) return false;
    this.config.log.warn({ partition }, "the previous owner did not let the partition go in time; taking it anyway");
    return true;
  }

  /** Where each live peer's copies of `partitions` stand. */
  private async peerStates(partitions: PartitionId[], ring: RingSnapshot): Promise<Map<NodeId, Map<number, PartitionState>>> {
    const { self, peers } = this.config;
    const ask = new Map<NodeId, number[]>();
    for (const p of partitions) {
      for (const node of ring.preferenceList(p)) {
        if (node === self || !peers.isUp(node as NodeId)) continue;
        let list = ask.get(node as NodeId);
        if (list === undefined) ask.set(node as NodeId, (list = []));
        list.push(p);
      }
    }
    const result = new Map<NodeId, Map<number, PartitionState>>();
    await Promise.all(
      [...ask].map(async ([node, list]) => {
        try {
          const res = await callUnary(peers.channel(node), PeerService.method.getPartitionStates, { partitions: list }, STATES_DEADLINE_MS);
          result.set(node, new Map(this.plausible(node, res.partitions).map((s) => [s.partition, s])));
        } catch (err) {
          this.config.log.debug({ peer: node, err }, "a peer did not say where its partitions stand");
        }
      }),
    );
    return result;
  }

  /**
   * The states of `list` whose epochs and positions a peer may name: one beyond (an epoch past
   * 2^48) is left out and logged, so it neither deposes this node nor lifts the next epoch
   * past what replicas take.
   */
  private plausible(peer: NodeId, list: readonly PartitionState[]): PartitionState[] {
    const kept = list.filter(plausibleState);
    if (kept.length < list.length)
      this.config.log.warn(
        { peer, ignored: list.length - kept.length },
        "a peer named partition epochs or positions beyond what any cluster reaches; ignored them",
      );
    return kept;
  }

  /** At start: catches up every partition this node holds a copy of from its current owner. */
  private async catchUpAll(waitForPeersMs: number): Promise<void> {
    const { self, ring: currentRing, peers, replica, log, runtime } = this.config;
    const ring = currentRing();
    const deadline = performance.now() + waitForPeersMs;
    const others = ring.nodes.filter((n) => n !== self) as NodeId[];
    while (performance.now() < deadline && others.some((n) => !peers.isUp(n))) await new Promise((r) => setTimeout(r, 50));
    const states = await this.checkLostData(ring);
    const work: { partition: PartitionId; source: NodeId }[] = [];
    let level = 0;
    for (const p of runtime.partitioning.all()) {
      if (!ring.preferenceList(p).includes(self)) continue;
      const owner = this.ownerOfPartition(p);
      if (owner === undefined || owner === self) continue;
      // A copy that stood where its owner's stood a moment ago has nothing to fetch (a new
      // cluster, or a restart that missed no write): a fetch would only confirm it. A write since
      // then reaches it as a shipment, and a gap there sets off a catch-up.
      if (sameCopy(this.config.copies.get(p), states.get(owner)?.get(p))) level++;
      else work.push({ partition: p, source: owner });
    }
    if (level > 0) log.debug({ partitions: level }, "copies already level with their owners' at start");
    if (work.length === 0) return;
    const started = performance.now();
    log.info({ partitions: work.length }, "catching up from the partitions' owners");
    let caught = 0;
    await runLimited(work, CATCH_UP_CONCURRENCY, async ({ partition, source }) => {
      if (await replica.catchUp(partition, source)) caught++;
    });
    const ms = Math.round(performance.now() - started);
    if (caught === work.length) log.info({ partitions: work.length, ms }, "caught up");
    // The others catch up at their owner's next shipment, and are never taken without catching up.
    else log.warn({ partitions: work.length, caughtUp: caught, ms }, "some partitions did not catch up at start; they do at their owners' next shipments");
  }

  /**
   * At start, before catching up: marks every copy of this node rebuilding when a peer's history
   * names an epoch this node began and has no record of (it lost its data directory, or got an
   * older one back), or when its data directory is empty and no peer answers (it cannot tell a
   * new cluster from a lost disk; a partition no majority ever wrote clears at once).
   */
  private async checkLostData(ring: RingSnapshot): Promise<Map<NodeId, Map<number, PartitionState>>> {
    const { self, copies, runtime } = this.config;
    const mine = runtime.partitioning.all().filter((p) => ring.preferenceList(p).includes(self));
    for (const p of runtime.partitioning.all()) if (copies.get(p).rebuilding) this.rebuilding++;
    if (ring.nodes.length < 2 || mine.length === 0) return new Map();
    const states = await this.peerStates(mine, ring);
    let why: string | undefined;
    for (const [peer, peerStates] of states) {
      for (const [p, state] of peerStates) {
        if (!this.lostData(p as PartitionId, state)) continue;
        why = `${peer}'s copy of partition ${p} names an epoch this node began and has no record of`;
        break;
      }
      if (why !== undefined) break;
    }
    if (why === undefined && states.size === 0 && mine.every((p) => copies.get(p).empty)) {
      why = "the data directory is empty and no peer answered: a new cluster cannot be told from a lost disk";
    }
    if (why !== undefined) await this.markRebuilding(mine, why);
    if (this.rebuilding > 0) this.notify();
    return states;
  }

  private notify(): void {
    for (const listener of this.listeners) listener();
  }
}

/** The node among `nodes` whose copy of `partition` is the most advanced (the first of equals), and its point. */
function mostAdvanced(
  nodes: readonly NodeId[],
  states: ReadonlyMap<NodeId, ReadonlyMap<number, PartitionState>>,
  partition: PartitionId,
): { node: NodeId; point: PartitionPoint } | undefined {
  let best: { node: NodeId; point: PartitionPoint } | undefined;
  for (const node of nodes) {
    const point = pointOf(states.get(node)?.get(partition));
    if (best === undefined || ahead(point, best.point)) best = { node, point };
  }
  return best;
}

/**
 * True when `copy` stands exactly where a peer's `state` of the partition stands: the same point
 * and the same history, neither of them rebuilding.
 */
function sameCopy(copy: PartitionCopy, state: PartitionState | undefined): boolean {
  if (state === undefined || state.rebuilding || copy.rebuilding) return false;
  const point = pointOf(state);
  if (point.epoch !== copy.epoch || point.position !== copy.position || state.history.length !== copy.history.length) return false;
  return state.history.every((h, i) => Number(h.epoch) === copy.history[i]?.epoch && Number(h.startPosition) === copy.history[i]?.start);
}

function plausibleState(state: PartitionState): boolean {
  return (
    plausiblePoint(state.last?.epoch ?? 0n, state.last?.position ?? 0n) &&
    plausiblePoint(state.promised, 0) &&
    state.history.every((h) => plausiblePoint(h.epoch, h.startPosition))
  );
}

function pointOf(state: PartitionState | undefined): PartitionPoint {
  return { epoch: Number(state?.last?.epoch ?? 0n), position: Number(state?.last?.position ?? 0n) };
}

function isEmpty(state: PartitionState | undefined): boolean {
  return state !== undefined && pointOf(state).position === 0 && state.history.length === 0;
}

function historyEpochs(state: PartitionState | undefined): number[] {
  return (state?.history ?? []).map((h) => Number(h.epoch));
}

async function runLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await work(items[next++] as T);
    }),
  );
}
