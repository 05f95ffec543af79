import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { type ReplicateResponse, type Shipment, ShipmentSchema } from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import {
  type BatchOp,
  type CommitGroup,
  Keys,
  type Logger,
  type PartitionId,
  type Partitioning,
  type ReplicationStage,
  SpanName,
  type StageFailure,
  type Tracing,
  type TwinRuntime,
} from "../runtime/index.js";
import type { NodeId } from "./node-id.js";
import { type PartitionCopies, plausiblePoint } from "./partition-copies.js";
import { ReplicateStream } from "./replicate-stream.js";
import type { RingSnapshot } from "./ring-snapshot.js";
import { packChanges } from "./shipment-changes.js";

/** Which peers may hold copies now. */
export interface ReplicaPeers {
  /** True when the peer answers heartbeats. */
  isUp(peer: NodeId): boolean;
  /** True when the peer answers and has caught up: its acknowledgements count toward a quorum. */
  isCurrent(peer: NodeId): boolean;
  channel(peer: NodeId): grpc.Client;
}

/** What a {@link Replicator} works with. */
export interface ReplicatorConfig {
  readonly self: NodeId;
  readonly runtime: TwinRuntime;
  readonly ring: () => RingSnapshot;
  readonly peers: ReplicaPeers;
  readonly copies: PartitionCopies;
  readonly log: Logger;
  /** How long an answer waits for its replicas before it is refused (retryable). @defaultValue 5000 */
  readonly ackTimeoutMs?: number;
  /** Shipments kept per partition for replicas that fall a little behind. @defaultValue 256 */
  readonly retainedPerPartition?: number;
  /** Spans for the shipping of groups that hold traced turns. @defaultValue none (tracing off) */
  readonly tracing?: Tracing;
  /** A replica follows a newer epoch of `partition`, which this node still writes: another node took it. */
  readonly superseded?: (partition: PartitionId) => void;
}

/**
 * A group's answers, waiting for its shipments to be durable on enough replicas. Its answers may
 * ask for different consistencies: it waits for the most any of them asks (`needed` replicas),
 * and when too few replicas are live for that, for the most that the live ones can still give
 * and one of its answers asks (`goal`), so those answers are not refused with the others.
 */
interface GroupWait {
  /** Replicas the group's strongest answer asks each shipment to be durable on. */
  readonly needed: number;
  /** Replica counts the group's answers ask for (bit n set: one asks for n). */
  readonly levels: number;
  /** Replicas each shipment is waited for on now: `needed`, or less once too few are live. */
  goal: number;
  /** Why the goal came down below `needed`. */
  lowered: string | undefined;
  /** Shipments not yet durable on `goal` replicas. */
  remaining: number;
  readonly waiters: Waiter[];
  settled: boolean;
  settle(failure: StageFailure | undefined): void;
}

/** A position of a partition a group waits for: the live replicas asked to confirm it, and how many already have. */
interface Wait {
  readonly partition: number;
  /** The epoch the position is of: a copy confirms it only under that epoch. */
  readonly epoch: number;
  readonly position: number;
  readonly targets: Set<NodeId>;
  readonly acked: number;
}

/** One shipment of a waiting group: the replicas that may still confirm it, and how many did. */
interface Waiter {
  readonly partition: number;
  readonly epoch: number;
  readonly position: number;
  acked: number;
  readonly pending: Set<NodeId>;
  readonly group: GroupWait;
}

/** A replication failure: the group is written on the owner but not on enough copies. */
class ReplicationShortfall extends Error implements StageFailure {
  constructor(
    readonly reason: string,
    message: string,
    /** Copies every shipment of the group is durable on (see {@link StageFailure.copies}); absent: the group's answers are all refused. */
    readonly copies?: number,
  ) {
    super(message);
  }
}

/**
 * The owner's side of replication (design §5), plugged into the host's commit stages. Before a
 * group is written, its key changes are split by partition into one shipment each, numbered by
 * the partition's next position and stamped with the owner's epoch; the new position is written
 * in the same batch, so the owner's copy and its position never disagree. After the write, each
 * shipment goes to the partition's other live copies over one ordered Replicate stream per
 * replica, and the group's answers wait until each shipment is durable on `copies - 1` replicas.
 *
 * Recent shipments are kept per partition, so a replica that missed a few (a broken stream, a
 * short restart) catches up from them; one further behind copies the partition's key range.
 */
export class Replicator implements ReplicationStage {
  private readonly streams = new Map<NodeId, ReplicateStream>();
  private readonly prepared = new WeakMap<CommitGroup, Shipment[]>();
  /** Shipments waiting for their replicas' confirmations, by partition, in position order (one epoch per list). */
  private readonly waiters = new Map<number, Waiter[]>();
  private readonly retained = new Map<number, Shipment[]>();
  private readonly ackTimeoutMs: number;
  private readonly retainedPerPartition: number;
  /**
   * Shipments sent, groups that waited for replicas, those that fell short, and of those the ones
   * whose weaker answers were still met (a shortfall with 2 copies or more), for metrics and benches.
   */
  readonly stats = { shipments: 0, waits: 0, shortfalls: 0, metInPart: 0 };
  /** Per replica: the last position sent and the last one it confirmed, by partition (the lag metric). */
  private readonly sentTo = new Map<NodeId, Float64Array>();
  private readonly ackedBy = new Map<NodeId, Float64Array>();

  constructor(private readonly config: ReplicatorConfig) {
    this.ackTimeoutMs = config.ackTimeoutMs ?? 5000;
    this.retainedPerPartition = config.retainedPerPartition ?? 256;
  }

  prepare(group: CommitGroup): void {
    const { runtime, copies } = this.config;
    let byPartition = splitByPartition(group.ops, runtime.partitioning);
    let withdrawn = false;
    for (const partition of byPartition.keys()) {
      const copy = copies.get(partition as PartitionId);
      if (copy.writing) continue;
      // Its turns ran as the owner, but another node took the partition since: nothing of them
      // may land outside that owner's history. They leave the group and are refused
      // (retryable, so the retry goes to the owner); its other turns go on.
      this.config.log.warn({ partition, epoch: copy.epoch }, "a commit touched a partition another node took; its turns are withdrawn and refused NOT_OWNER");
      group.withdraw(partition as PartitionId, runtime.host.keys, runtime.partitioning);
      withdrawn = true;
    }
    // A withdrawn turn may also have written another partition (a delivery's outbox delete in
    // its sender's): the shipments are split from what is left.
    if (withdrawn) byPartition = splitByPartition(group.ops, runtime.partitioning);
    if (byPartition.size === 0) return;
    const shipments: Shipment[] = [];
    for (const [partition, changes] of byPartition) {
      const copy = copies.get(partition as PartitionId);
      copy.position++;
      group.ops.push(copy.op());
      shipments.push(create(ShipmentSchema, { partition, epoch: BigInt(copy.epoch), position: BigInt(copy.position), changes: packChanges(changes) }));
    }
    this.prepared.set(group, shipments);
  }

  replicate(group: CommitGroup): Promise<void> | undefined {
    const shipments = this.prepared.get(group) ?? [];
    this.prepared.delete(group);
    if (shipments.length === 0 && group.duplicateKeys.length === 0) return undefined;
    const { ring: currentRing, copies } = this.config;
    const ring = currentRing();
    const needed = Math.min(group.copies, ring.replicationFactor) - 1;
    const perPeer = new Map<NodeId, Shipment[]>();
    const waiting: Wait[] = [];
    for (const shipment of shipments) {
      const partition = shipment.partition as PartitionId;
      const copy = copies.get(partition);
      copy.written = Math.max(copy.written, Number(shipment.position));
      this.retain(shipment);
      const targets = this.route(shipment, ring, perPeer);
      if (needed > 0) waiting.push({ partition, epoch: Number(shipment.epoch), position: Number(shipment.position), targets, acked: 0 });
    }
    // A partition let go after this group was prepared (a replica follows a newer owner): its
    // shipment went out under the old epoch, which no replica confirms any more.
    const strays = shipments.filter((shipment) => !copies.get(shipment.partition as PartitionId).writing).map((shipment) => shipment.partition);
    const refusal =
      strays.length > 0
        ? new ReplicationShortfall(
            "NOT_OWNER",
            `another node took partition${strays.length > 1 ? "s" : ""} ${strays.join(", ")} as this batch was written; retry, and it goes to the new owner`,
          )
        : needed > 0 && group.duplicateKeys.length > 0
          ? this.holdDuplicates(group.duplicateKeys, shipments, ring, needed, waiting)
          : undefined;
    const { tracing } = this.config;
    if (group.trace === undefined || tracing === undefined || shipments.length === 0) {
      if (shipments.length > 0) this.send(perPeer, shipments.length, "");
      if (refusal !== undefined) {
        this.stats.shortfalls++;
        return Promise.reject(refusal);
      }
      if (waiting.length === 0) return undefined;
      this.stats.waits++;
      return this.waitFor(waiting, needed, levelsAsked(group.copiesAsked, ring.replicationFactor));
    }
    // A traced group: one span, a child of its commit, covers the shipping and the wait for
    // acknowledgements; the replicas continue its trace from the request's traceparent.
    const span = tracing.start(SpanName.replicate, group.trace, {
      kind: "client",
      attributes: { "twinmesh.replicate.shipments": shipments.length, "twinmesh.replicate.peers": perPeer.size, "twinmesh.replicate.needed": needed },
    });
    this.send(perPeer, shipments.length, tracing.traceparent(span.ref));
    if (refusal !== undefined) {
      span.fail(refusal);
      span.end();
      this.stats.shortfalls++;
      return Promise.reject(refusal);
    }
    if (waiting.length === 0) {
      span.end();
      return undefined;
    }
    this.stats.waits++;
    return this.waitFor(waiting, needed, levelsAsked(group.copiesAsked, ring.replicationFactor)).then(
      () => span.end(),
      (err: unknown) => {
        span.fail(err);
        span.end();
        throw err;
      },
    );
  }

  /** Adds `shipment` to the list of each live replica of its partition; returns those replicas. */
  private route(shipment: Shipment, ring: RingSnapshot, perPeer: Map<NodeId, Shipment[]>): Set<NodeId> {
    const { self, peers } = this.config;
    const targets = new Set<NodeId>();
    for (const node of ring.preferenceList(shipment.partition as PartitionId)) {
      if (node === self || !peers.isUp(node as NodeId)) continue;
      targets.add(node as NodeId);
      let list = perPeer.get(node as NodeId);
      if (list === undefined) perPeer.set(node as NodeId, (list = []));
      list.push(shipment);
    }
    return targets;
  }

  /**
   * Adds to `waiting` what a group's duplicate answers need: the records they vouch for on
   * `needed` replicas. A partition the group ships is covered by its shipment (a replica that
   * confirms it holds everything before it); any other waits until enough live replicas have
   * confirmed the last position sent, and those short of it are sent that shipment again (one
   * that holds it confirms it again; one that missed something before it catches up). Returns
   * the refusal when this node no longer writes one of those partitions.
   */
  private holdDuplicates(
    keys: readonly string[],
    shipments: readonly Shipment[],
    ring: RingSnapshot,
    needed: number,
    waiting: Wait[],
  ): ReplicationShortfall | undefined {
    const { self, peers, copies, runtime } = this.config;
    const shipped = new Set(shipments.map((s) => s.partition));
    const partitions = new Set<PartitionId>();
    for (const key of keys) {
      const partition = Keys.partitionOfKey(key, runtime.partitioning);
      if (partition !== undefined && !shipped.has(partition)) partitions.add(partition);
    }
    for (const partition of partitions) {
      const copy = copies.get(partition);
      if (!copy.writing) return new ReplicationShortfall("NOT_OWNER", `partition ${partition} moved to another owner; retry, and it goes to the new owner`);
      const position = copy.written;
      const targets = new Set<NodeId>();
      let acked = 0;
      for (const node of ring.preferenceList(partition)) {
        if (node === self || !peers.isUp(node as NodeId)) continue;
        if ((this.ackedBy.get(node as NodeId)?.[partition] ?? 0) >= position) acked++;
        else targets.add(node as NodeId);
      }
      if (acked >= needed) continue;
      // Too few live replicas is refused by waitFor, as for a shipment.
      waiting.push({ partition, epoch: copy.epoch, position, targets, acked });
      const last = this.retained.get(partition)?.at(-1);
      if (last === undefined || Number(last.position) !== position) continue;
      const request = ReplicateStream.encode(self, [last]);
      for (const peer of targets) if (!this.stream(peer).send(request)) this.lost(peer, `cannot open a replicate stream to ${peer}`);
    }
    return undefined;
  }

  /**
   * Sends each peer its shipments. A peer that gets every shipment of the group (each peer, when
   * the ring has no more nodes than copies) shares one encoding of the request.
   */
  private send(perPeer: Map<NodeId, Shipment[]>, all: number, traceparent: string): void {
    let whole: Uint8Array | undefined;
    for (const [peer, list] of perPeer) {
      this.stats.shipments += list.length;
      const request =
        list.length === all
          ? (whole ??= ReplicateStream.encode(this.config.self, list, traceparent))
          : ReplicateStream.encode(this.config.self, list, traceparent);
      if (!this.stream(peer).send(request)) this.lost(peer, `cannot open a replicate stream to ${peer}`);
      const sent = this.positions(this.sentTo, peer);
      for (const shipment of list) sent[shipment.partition] = Number(shipment.position);
    }
  }

  /**
   * Shipments each replica has been sent and has not confirmed yet, summed over the partitions
   * this node ships: how far behind it is (a metric; 0 for a replica that keeps up).
   */
  lag(): Map<NodeId, number> {
    const lag = new Map<NodeId, number>();
    for (const [peer, sent] of this.sentTo) {
      const acked = this.positions(this.ackedBy, peer);
      let behind = 0;
      for (let p = 0; p < sent.length; p++) {
        // Only partitions this node still writes: another owner's shipments are not its to wait for.
        const copy = this.config.copies.get(p as PartitionId);
        if (copy.writing) behind += Math.max(0, (sent[p] as number) - (acked[p] as number));
      }
      lag.set(peer, behind);
    }
    return lag;
  }

  private positions(table: Map<NodeId, Float64Array>, peer: NodeId): Float64Array {
    let positions = table.get(peer);
    if (positions === undefined) table.set(peer, (positions = new Float64Array(this.config.runtime.partitioning.partitions)));
    return positions;
  }

  /** The write of a prepared group failed: its positions are handed out again. */
  aborted(group: CommitGroup): void {
    const shipments = this.prepared.get(group);
    if (shipments === undefined) return;
    this.prepared.delete(group);
    for (const shipment of shipments) {
      const copy = this.config.copies.get(shipment.partition as PartitionId);
      copy.position = Math.min(copy.position, Number(shipment.position) - 1);
    }
  }

  /** The shipments of `partition` after `position` up to what is written, when every one of them is still kept. */
  shipmentsAfter(partition: PartitionId, position: number): Shipment[] | undefined {
    const copy = this.config.copies.get(partition);
    // Nothing after `position` is written yet: only when the copy really stands there (writes in
    // flight are sent by the stream); anything else is answered with the whole range.
    if (position >= copy.written) return position >= copy.position || copy.written === copy.position ? [] : undefined;
    const wanted = (this.retained.get(partition) ?? []).filter((s) => Number(s.position) > position && Number(s.position) <= copy.written);
    // Only an unbroken run reaches the copy's position: a hole (a write that failed and was
    // numbered again) means the whole range instead.
    for (let i = 0; i < wanted.length; i++) if (Number((wanted[i] as Shipment).position) !== position + 1 + i) return undefined;
    return wanted.length === copy.written - position ? wanted : undefined;
  }

  /** Forgets the shipments kept for `partition` (its history changed under them). */
  forget(partition: PartitionId): void {
    this.retained.delete(partition);
  }

  /**
   * This node began a new epoch of `partitions` (durably): sends each epoch's first, empty
   * shipment to the partition's live replicas, so they learn the epoch (and catch up to it) now,
   * not at the next write. A later owner then begins an epoch above it.
   */
  announce(partitions: readonly PartitionId[]): void {
    const { self, ring: currentRing, copies } = this.config;
    const ring = currentRing();
    const perPeer = new Map<NodeId, Shipment[]>();
    for (const partition of partitions) {
      const copy = copies.get(partition);
      this.endEpoch(partition, copy.epoch, "this node took it again");
      const from = copy.begunFrom;
      const shipment = create(ShipmentSchema, {
        partition,
        epoch: BigInt(copy.epoch),
        position: BigInt(copy.position),
        begunFrom: from === undefined ? undefined : { partition, epoch: BigInt(from.epoch), position: BigInt(from.position) },
      });
      this.retain(shipment);
      this.route(shipment, ring, perPeer);
    }
    for (const [peer, list] of perPeer)
      if (!this.stream(peer).send(ReplicateStream.encode(self, list))) this.lost(peer, `cannot open a replicate stream to ${peer}`);
  }

  /** The replica `peer` reports what is durable on it, and the partitions it promised to a newer owner. */
  durable(peer: NodeId, response: ReplicateResponse): void {
    for (const point of response.promised) {
      if (point.partition >= this.config.runtime.partitioning.partitions || !plausiblePoint(point.epoch, 0)) continue;
      const partition = point.partition as PartitionId;
      const epoch = Number(point.epoch);
      const copy = this.config.copies.get(partition);
      // Another node claims the partition under a newer epoch: this copy confirms nothing older.
      if (epoch > copy.epoch && copy.writing) this.deposed(partition, epoch, `${peer} promised its epoch ${epoch} to another node`);
      this.endEpoch(partition, epoch, `${peer} promised it to a node taking the partition`);
    }
    for (const point of response.durable) {
      if (point.partition >= this.config.runtime.partitioning.partitions || !plausiblePoint(point.epoch, point.position)) continue;
      const position = Number(point.position);
      const epoch = Number(point.epoch);
      // A copy at another epoch holds another history: it does not count (yet).
      const copy = this.config.copies.get(point.partition as PartitionId);
      const current = copy.epoch === epoch;
      if (epoch > copy.epoch && copy.writing) this.deposed(point.partition as PartitionId, epoch, `${peer} follows its epoch ${epoch}`);
      if (current) {
        const acked = this.positions(this.ackedBy, peer);
        if (position > (acked[point.partition] ?? 0)) acked[point.partition] = position;
      }
      this.endEpoch(point.partition as PartitionId, epoch, `${peer} follows it`);
      const waiters = this.waiters.get(point.partition);
      if (waiters === undefined) continue;
      let done = 0;
      for (const w of waiters) {
        if (w.position > position) break;
        if (!current || w.epoch !== epoch || !w.pending.delete(peer)) continue;
        w.acked++;
        if (w.acked === w.group.goal && --w.group.remaining === 0) this.reached(w.group);
      }
      // Confirmed waiters, and those of groups that gave up, leave from the front (positions ascend).
      while (done < waiters.length && finished(waiters[done] as Waiter)) done++;
      if (done > 0) waiters.splice(0, done);
      if (waiters.length === 0) this.waiters.delete(point.partition);
    }
  }

  /**
   * A replica follows, or promised to another node, a newer epoch of `partition` than the one
   * this node writes it under (`evidence` says which): another node took the partition, or is
   * taking it (this one was paused, or restarted before its peers saw it go), and no replica will
   * confirm this node's shipments of it again. Its waiting answers are refused at once, and
   * ownership lets it go, to take it again from the most advanced copy.
   */
  private deposed(partition: PartitionId, epoch: number, evidence: string): void {
    this.config.log.warn({ partition, epoch, evidence }, "a replica follows or promised a newer owner of a partition this node writes");
    // Written no more: later groups withdraw its writes, and this runs once per new owner.
    this.config.copies.get(partition).writer = 0;
    const failure = new ReplicationShortfall("NOT_OWNER", `partition ${partition} was taken by another node (${evidence}); retry, and it goes to the owner`);
    for (const w of this.waiters.get(partition) ?? []) w.group.settle(failure);
    this.sweep();
    this.config.superseded?.(partition);
  }

  /**
   * The stream to `peer` broke: nothing in flight on it will be acknowledged, and what it
   * confirmed before is not counted on (it may have restarted on an empty directory).
   */
  lost(peer: NodeId, why: string): void {
    this.ackedBy.delete(peer);
    this.sentTo.delete(peer);
    this.notCountingOn(peer, why);
  }

  /**
   * `peer` is not counted on for what it was sent and has not confirmed (its stream broke, or the
   * failure detector says it is down): a waiting group that now cannot have the copies it waits
   * for waits for the most the others can give that one of its answers asks, and is answered
   * with the shortfall for the rest, instead of at its timeout.
   */
  notCountingOn(peer: NodeId, why: string): void {
    const lowered = new Set<GroupWait>();
    for (const waiters of this.waiters.values()) {
      for (const w of waiters) {
        if (w.group.settled || !w.pending.delete(peer)) continue;
        if (w.acked + w.pending.size < w.group.goal) lowered.add(w.group);
      }
    }
    for (const group of lowered) this.lower(group, why);
    this.sweep();
  }

  /** Closes every stream; answers still waiting are refused. */
  close(): void {
    for (const stream of this.streams.values()) stream.close();
    for (const waiters of this.waiters.values())
      for (const w of waiters) w.group.settle(new ReplicationShortfall("SHUTTING_DOWN", "the node is shutting down"));
    this.waiters.clear();
  }

  /**
   * Waits until each shipment is durable on `needed` of its targets (or on fewer: see
   * {@link GroupWait}): one promise and one timer for the whole group, however many partitions
   * it touched.
   */
  private waitFor(waits: readonly Wait[], needed: number, levels: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const group: GroupWait = {
        needed,
        levels,
        goal: needed,
        lowered: undefined,
        remaining: 0,
        waiters: [],
        settled: false,
        settle: (failure) => {
          if (group.settled) return;
          group.settled = true;
          clearTimeout(timer);
          if (failure === undefined) resolve();
          else {
            this.stats.shortfalls++;
            reject(failure);
          }
        },
      };
      for (const { partition, epoch, position, targets, acked } of waits) {
        // A newer epoch's shipments wait already: this node took the partition again since this
        // one was numbered, and no replica confirms it now.
        const newer = this.waiters.get(partition)?.[0]?.epoch ?? epoch;
        if (newer > epoch) {
          group.settle(
            new ReplicationShortfall(
              "NOT_OWNER",
              `partition ${partition} changed owner (epoch ${newer}) before its replicas confirmed this batch; retry, and it goes to the owner`,
            ),
          );
          return;
        }
        group.waiters.push({ partition, epoch, position, acked, pending: new Set(targets), group });
      }
      const short = group.waiters.find((w) => w.acked + w.pending.size < needed);
      if (short !== undefined)
        this.lower(group, `only ${short.acked + short.pending.size + 1} of the ${needed + 1} copies asked for are live for partition ${short.partition}`);
      else {
        group.remaining = countBelow(group.waiters, needed);
        if (group.remaining === 0) this.reached(group);
      }
      // Answered already (too few replicas for any of its answers, or all confirmed before): nothing to register.
      if (group.settled) return;
      for (const waiter of group.waiters) {
        // One epoch per list, so positions ascend along it.
        this.endEpoch(waiter.partition as PartitionId, waiter.epoch, "this node took it again");
        let list = this.waiters.get(waiter.partition);
        if (list === undefined) this.waiters.set(waiter.partition, (list = []));
        list.push(waiter);
      }
      timer = setTimeout(() => {
        const late = group.waiters.find((w) => w.acked < group.goal) ?? group.waiters[0];
        group.settle(
          new ReplicationShortfall(
            "REPLICATION_TIMEOUT",
            `partition ${late?.partition}'s replicas did not confirm within ${this.ackTimeoutMs} ms (${(late?.acked ?? 0) + 1} of ${needed + 1} copies durable)`,
            copiesOf(group),
          ),
        );
        this.sweep();
      }, this.ackTimeoutMs);
    });
  }

  /**
   * Too few replicas are left for `group`'s goal (`why`): it waits for the most that one of its
   * answers asks and the live replicas can still give, or, when none, is answered now.
   */
  private lower(group: GroupWait, why: string): void {
    let live = group.goal;
    for (const w of group.waiters) live = Math.min(live, w.acked + w.pending.size);
    group.goal = highestLevel(group.levels, live);
    group.lowered = why;
    group.remaining = countBelow(group.waiters, group.goal);
    if (group.goal === 0 || group.remaining === 0) this.reached(group);
  }

  /** Every shipment of `group` is durable on its goal: it is answered, with the shortfall for answers that asked for more. */
  private reached(group: GroupWait): void {
    if (group.goal >= group.needed) {
      group.settle(undefined);
      return;
    }
    const copies = copiesOf(group);
    if (copies > 1) this.stats.metInPart++;
    const durable = `${copies} of the ${group.needed + 1} copies asked for ${copies === 1 ? "is" : "are"} durable`;
    group.settle(new ReplicationShortfall("NOT_ENOUGH_REPLICAS", `${group.lowered}; ${durable}`, copies));
  }

  /**
   * A newer epoch of `partition` than its waiters' began or was promised (`why`): no copy
   * confirms their positions any more (this node's own promised it away too), so their groups
   * are refused now, not at their timeout, and the list is left to the new epoch's positions.
   */
  endEpoch(partition: PartitionId, epoch: number, why: string): void {
    // Each list holds one epoch's positions: its first waiter's epoch is every waiter's.
    const waiters = this.waiters.get(partition);
    if (waiters === undefined || (waiters[0] as Waiter).epoch >= epoch) return;
    const failure = new ReplicationShortfall(
      "NOT_OWNER",
      `partition ${partition} changed owner (epoch ${epoch}: ${why}) before its replicas confirmed this batch; retry, and it goes to the owner`,
    );
    for (const w of waiters) w.group.settle(failure);
    this.sweep();
  }

  /** Drops the waiters of groups that gave up. */
  private sweep(): void {
    for (const [partition, waiters] of this.waiters) {
      const left = waiters.filter((w) => !w.group.settled);
      if (left.length === 0) this.waiters.delete(partition);
      else if (left.length !== waiters.length) this.waiters.set(partition, left);
    }
  }

  private retain(shipment: Shipment): void {
    let kept = this.retained.get(shipment.partition);
    if (kept === undefined) this.retained.set(shipment.partition, (kept = []));
    kept.push(shipment);
    if (kept.length > this.retainedPerPartition) kept.splice(0, kept.length - this.retainedPerPartition);
  }

  private stream(peer: NodeId): ReplicateStream {
    let stream = this.streams.get(peer);
    if (stream === undefined) {
      stream = new ReplicateStream(
        this.config.self,
        peer,
        () => this.config.peers.channel(peer),
        { durable: (p, res) => this.durable(p, res), lost: (p, why) => this.lost(p, why) },
        this.config.log,
      );
      this.streams.set(peer, stream);
    }
    return stream;
  }
}

/**
 * The writes of `ops` by the partition their key names (keys of none, this node's own
 * bookkeeping, are left out). A put's string value is encoded here, once: the same bytes go to
 * the local batch and into the shipments.
 */
function splitByPartition(ops: BatchOp[], partitioning: Partitioning): Map<number, BatchOp[]> {
  const byPartition = new Map<number, BatchOp[]>();
  for (let i = 0; i < ops.length; i++) {
    let op = ops[i] as BatchOp;
    const partition = Keys.partitionOfKey(op.key, partitioning);
    if (partition === undefined) continue;
    let changes = byPartition.get(partition);
    if (changes === undefined) byPartition.set(partition, (changes = []));
    if (op.type === "put" && typeof op.value === "string") {
      op = { type: "put", key: op.key, value: Buffer.from(op.value) };
      ops[i] = op;
    }
    changes.push(op);
  }
  return byPartition;
}

/** True when a waiter needs nothing more: its shipment is confirmed, or its group gave up. */
function finished(w: Waiter): boolean {
  return w.acked >= w.group.goal || w.group.settled;
}

/** Waiters confirmed by fewer than `goal` replicas. */
function countBelow(waiters: readonly Waiter[], goal: number): number {
  let below = 0;
  for (const w of waiters) if (w.acked < goal) below++;
  return below;
}

/** Copies (this node's included) every shipment of `group` is durable on. */
function copiesOf(group: GroupWait): number {
  let acked = Number.POSITIVE_INFINITY;
  for (const w of group.waiters) acked = Math.min(acked, w.acked);
  return acked === Number.POSITIVE_INFINITY ? 1 : acked + 1;
}

/** The replica counts that answers asking for `copiesAsked` (bit c: c copies, this node's included) wait for, on a ring of `replicationFactor`. */
function levelsAsked(copiesAsked: number, replicationFactor: number): number {
  let levels = 0;
  for (let copies = 1; copies < 31; copies++) if ((copiesAsked & (1 << copies)) !== 0) levels |= 1 << (Math.min(copies, replicationFactor) - 1);
  return levels;
}

/** The highest replica count in `levels` that is at most `most` (0: none but this node's copy). */
function highestLevel(levels: number, most: number): number {
  for (let n = Math.min(most, 30); n > 0; n--) if ((levels & (1 << n)) !== 0) return n;
  return 0;
}
