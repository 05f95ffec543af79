import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type ClaimPartitionsRequest,
  type ClaimPartitionsResponse,
  ClaimPartitionsResponseSchema,
  type FetchPartitionRequest,
  FetchPartitionRequestSchema,
  type FetchPartitionResponse,
  FetchPartitionResponseSchema,
  type GetPartitionStatesRequest,
  type GetPartitionStatesResponse,
  GetPartitionStatesResponseSchema,
  type PartitionPosition,
  PartitionPositionSchema,
  PartitionRangeSchema,
  type PartitionState,
  PartitionStateSchema,
  PeerService,
  type ReplicateRequest,
  type ReplicateResponse,
  ReplicateResponseSchema,
  type Shipment,
} from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { type BatchOp, type Logger, type PartitionId, SpanName, type TraceSpan, type Tracing, type TwinRuntime } from "../runtime/index.js";
import type { CallContext, StreamSink } from "../server/grpc/index.js";
import { LogLimiter } from "./log-limiter.js";
import type { NodeId } from "./node-id.js";
import {
  ahead,
  EPOCH_LIMIT,
  type EpochStart,
  epochBeginner,
  type PartitionCopies,
  type PartitionCopy,
  type PartitionPoint,
  plausiblePoint,
} from "./partition-copies.js";
import { methodPath } from "./peer-rpc.js";
import type { ClaimPartitionsHandler, FetchPartitionHandler, PartitionStatesHandler, ReplicateHandler } from "./peer-service.js";
import { PartitionKeyScans, RangeScans } from "./range-scans.js";
import type { Replicator } from "./replicator.js";
import type { RingSnapshot } from "./ring-snapshot.js";
import { shipmentOps } from "./shipment-changes.js";

/** What a {@link PartitionReplica} works with. */
export interface PartitionReplicaConfig {
  readonly self: NodeId;
  readonly runtime: TwinRuntime;
  readonly copies: PartitionCopies;
  readonly replicator: Replicator;
  /** The members and each partition's copies: a claim counts only from a copy's node, on a copy. */
  readonly ring: () => RingSnapshot;
  /** The channel to a peer. */
  readonly channel: (peer: NodeId) => grpc.Client;
  /** True while this node serves `partition` as its owner, or still finishes writes it took as one. */
  readonly holds: (partition: PartitionId) => boolean;
  /** Another node owns `partition` under a newer epoch than this one's: this node stops serving it. */
  readonly superseded: (partition: PartitionId) => void;
  readonly log: Logger;
  /** Continues the traces of traced shipments. @defaultValue none (tracing off) */
  readonly tracing?: Tracing;
  /**
   * Told, for each Replicate request answered, the `seconds` from reading it off its owner's
   * stream to its answer: its wait in the queue and its write (not the time it spent in transport
   * buffers while the queue was full and the stream was not read). Must be cheap and must not throw. @defaultValue none
   */
  readonly applied?: (seconds: number) => void;
}

/** A partition catching up. */
interface CatchUp {
  readonly source: NodeId;
  readonly buffered: Shipment[];
  readonly done: Promise<boolean>;
  /** Cancels the fetch (its source went down, or the copy catches up from another source now). */
  readonly abort: AbortController;
  /** When the fetch last started or received a message (performance.now()); -Infinity before it starts. */
  readonly progress: { at: number };
}

/** A node's claim of a partition: the epoch it will begin (see {@link PartitionReplica.claim}). */
export interface PartitionClaim {
  readonly partition: PartitionId;
  readonly epoch: number;
}

/** One owner's Replicate request, waiting for the replica's next write. */
interface QueuedRequest {
  readonly from: NodeId;
  readonly shipments: readonly Shipment[];
  /** The owner's stream, answered after the write. */
  readonly out: StreamSink<ReplicateResponse>;
  readonly bytes: number;
  /** The request's span when the owner traced it: from arrival until its write is done. */
  readonly span: TraceSpan | undefined;
  /** When it was read off its owner's stream (performance.now()). */
  readonly arrived: number;
}

/** Bytes of replicate requests queued behind the write in flight before the streams stop being read. */
const MAX_QUEUED_BYTES = 16 * 1024 * 1024;
/** Shipments held per partition while it catches up; beyond it they are dropped, and the next shipment finds the gap and fetches again. */
const MAX_BUFFERED = 10_000;
/**
 * Catch-ups that fetch at once. The whole-range copies among them share their source's scans
 * (see {@link RangeScans}), so more at once means fewer reads of the source's store.
 */
const MAX_FETCHES = 16;
/** How long one catch-up may take before it is given up (and tried again at the next gap). */
const FETCH_DEADLINE_MS = 120_000;
/**
 * A catch-up from a source marked down is given up once it has received nothing for this long:
 * one still receiving goes on (a busy source is not a dead one, and a whole-range copy given up
 * midway starts over), one stalled would wait for keepalive.
 */
const STALLED_MS = 1000;

/**
 * The replica's side of replication, and catch-up. Shipments are applied in one RocksDB batch
 * per request, without running handlers, only on top of the position before them and only from
 * the epoch the copy follows: a replayed shipment is acknowledged and skipped, one from an older
 * epoch (a deposed owner) is ignored, and a gap or a newer epoch makes the copy catch up from
 * the sender first (FetchPartition), holding the shipments that arrive meanwhile. A partition's
 * copy thus never moves backwards, and takes another history only as a whole.
 *
 * Catch-up asks for the shipments after the copy's position; the source sends them when it still
 * keeps them all and the copy's history is a prefix of its own, and otherwise its whole key
 * range, which replaces the copy (it may hold writes the source never saw). A source whose copy
 * is behind the caller's (an older epoch, or the same one at an earlier position) sends nothing:
 * the caller stays as it is, so a stale owner's older history never replaces a newer one.
 *
 * A node about to take a partition claims it on its copies first ({@link claim}): a copy that
 * promised an epoch confirms no shipment of an older one from then on, and answers the owner of
 * an older one with its promise, which tells that owner it lost the partition.
 */
export class PartitionReplica implements ReplicateHandler, FetchPartitionHandler, PartitionStatesHandler, ClaimPartitionsHandler {
  /** Replica writes, one at a time: a partition's position is read and written under it. */
  private lock: Promise<void> = Promise.resolve();
  /** Partitions catching up: from where, the shipments that arrived meanwhile, and how to give up. */
  private readonly catching = new Map<number, CatchUp>();
  /** The stream each owner ships on, to report a catch-up's result. */
  private readonly owners = new Map<NodeId, StreamSink<ReplicateResponse>>();
  private closed = false;
  /** Replicate requests waiting for the next write, from every owner's stream. */
  private queue: QueuedRequest[] = [];
  private queuedBytes = 0;
  private draining = false;
  private readonly roomWaiters: (() => void)[] = [];
  private readonly drainedWaiters: (() => void)[] = [];
  /** Claims refused as malformed, logged at most once per 10 s. */
  private readonly invalidClaims = new LogLimiter();
  private fetching = 0;
  private readonly fetchQueue: (() => void)[] = [];
  /** Peers seen going down and not up since: a catch-up does not fetch from them (it would hang on a frozen one). */
  private readonly downSources = new Set<NodeId>();
  /**
   * Partitions whose shipments this node could not write (its disk refused them), with the owner
   * that sent them: caught up from it once the disk takes writes again. Bounded by the partition count.
   */
  private readonly stale = new Map<number, NodeId>();
  private readonly stopDiskWatch: () => void;
  /** Whole-range copies this node sends its peers, several partitions a scan. */
  private readonly ranges: RangeScans;
  /** This node's own keys of partitions whose copies take whole ranges (deleted first). */
  private readonly ownKeys: PartitionKeyScans;
  /** Counters for `twinmesh ring` and tests. */
  readonly stats = { applied: 0, catchUps: 0, rangeCopies: 0 };

  constructor(private readonly config: PartitionReplicaConfig) {
    this.ranges = new RangeScans(config.runtime);
    this.ownKeys = new PartitionKeyScans(config.runtime);
    this.stopDiskWatch = config.runtime.host.onServingChange((serving) => {
      if (serving) this.catchUpStale();
    });
  }

  /** True while some partition catches up. */
  get catchingUp(): boolean {
    return this.catching.size > 0;
  }

  /** True while `partition`'s copy catches up (it is partial). */
  isCatchingUp(partition: PartitionId): boolean {
    return this.catching.has(partition);
  }

  async replicate(requests: AsyncIterable<ReplicateRequest>, out: StreamSink<ReplicateResponse>): Promise<void> {
    for await (const req of requests) {
      const from = req.nodeId as NodeId;
      this.owners.set(from, out);
      const { tracing } = this.config;
      const span =
        tracing !== undefined && req.traceparent !== ""
          ? tracing.startRemote(SpanName.replicaApply, req.traceparent, {
              kind: "server",
              attributes: { "twinmesh.node": this.config.self, "twinmesh.peer": from, "twinmesh.replicate.shipments": req.shipments.length },
            })
          : undefined;
      await this.enqueue({ from, shipments: req.shipments, out, bytes: bytesOf(req.shipments), span, arrived: performance.now() });
    }
    // The owner ended its stream: what it sent is still answered before the call ends.
    if (this.draining) await new Promise<void>((resolve) => this.drainedWaiters.push(resolve));
  }

  /**
   * Queues a request for the next write. Resolves when the queue has room for another: a replica
   * that cannot keep up stops reading its owners' streams, and their own bounds take over.
   */
  private enqueue(request: QueuedRequest): Promise<void> {
    this.queue.push(request);
    this.queuedBytes += request.bytes;
    void this.drain();
    if (this.queuedBytes <= MAX_QUEUED_BYTES) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /**
   * Writes what is queued, one batch at a time: the requests that arrive while a write is in
   * flight (from every owner) go into the next one, as the host's group commit does. Each
   * stream is then answered with where its partitions stand.
   */
  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const requests = this.queue;
        this.queue = [];
        this.queuedBytes = 0;
        for (const wake of this.roomWaiters.splice(0)) wake();
        let answers: Map<StreamSink<ReplicateResponse>, Set<number>>;
        try {
          answers = await this.locked(() => this.applyRequests(requests));
          for (const r of requests) r.span?.end();
        } catch (err) {
          for (const r of requests) {
            r.span?.fail(err);
            r.span?.end();
          }
          // A bug, not a write failure (those are handled inside): the owners' answers time out.
          this.config.log.error({ err }, "applying replicated shipments failed");
          continue;
        }
        for (const [out, partitions] of answers) {
          // A stream that ended meanwhile is the owner's to notice.
          out.write(this.answer(partitions)).catch(() => undefined);
        }
        const { applied } = this.config;
        if (applied !== undefined) {
          const now = performance.now();
          for (const r of requests) applied((now - r.arrived) / 1000);
        }
      }
    } finally {
      this.draining = false;
      for (const wake of this.drainedWaiters.splice(0)) wake();
    }
  }

  async fetchPartition(req: FetchPartitionRequest, out: StreamSink<FetchPartitionResponse>, call: CallContext): Promise<void> {
    const partition = req.partition as PartitionId;
    const copy = this.config.copies.get(partition);
    const after: PartitionPoint = { epoch: Number(req.after?.epoch ?? 0n), position: Number(req.after?.position ?? 0n) };
    if (ahead(after, copy.point)) {
      // The caller is ahead of this copy: in the same epoch it holds writes of the same owner that
      // this one has not seen yet (such as its own acknowledged at LOCAL); at a newer epoch it
      // follows an owner that took the partition after this copy's (this node is a stale owner,
      // paused or cut off meanwhile). Nothing here may replace them: the answer says "stay". (A
      // caller behind, at another epoch, is not known to extend this history: it takes this one.)
      await out.write(this.completion(copy, after, [], false));
      return;
    }
    const kept = copy.extends(after) ? this.config.replicator.shipmentsAfter(partition, after.position) : undefined;
    if (kept !== undefined) {
      for (const shipment of kept) await out.write(create(FetchPartitionResponseSchema, { body: { case: "shipment", value: shipment } }));
      const end = kept.length === 0 ? after.position : Number((kept[kept.length - 1] as Shipment).position);
      await out.write(this.completion(copy, { epoch: copy.epoch, position: Math.max(end, after.position) }, copy.history, false));
      return;
    }
    this.config.log.info({ partition, peer: req.nodeId, after }, "copying a partition's whole key range to a peer");
    await this.ranges.copy(req.nodeId, {
      partition,
      signal: call.signal,
      chunk: (puts, first) =>
        out.write(create(FetchPartitionResponseSchema, { body: { case: "range", value: create(PartitionRangeSchema, { puts, first }) } })),
      end: (state, puts, first) => {
        const last = this.completion(copy, state?.point ?? { epoch: 0, position: 0 }, state?.history ?? [], first);
        if (last.body.case === "range") last.body.value.puts = puts;
        return out.write(last);
      },
    });
  }

  async getPartitionStates(req: GetPartitionStatesRequest): Promise<GetPartitionStatesResponse> {
    const partitions = req.partitions.length > 0 ? req.partitions : Array.from({ length: this.config.runtime.partitioning.partitions }, (_, p) => p);
    return create(GetPartitionStatesResponseSchema, { partitions: partitions.map((p) => this.stateOf(p as PartitionId)) });
  }

  async claimPartitions(req: ClaimPartitionsRequest): Promise<ClaimPartitionsResponse> {
    const claims = req.claims.map((c) => ({ partition: c.partition as PartitionId, epoch: Number(c.epoch) }));
    return create(ClaimPartitionsResponseSchema, { partitions: await this.claim(claims, req.nodeId) });
  }

  /**
   * Grants each claim this copy may grant: from now on it confirms no shipment of an epoch older
   * than the claim's (written durably before the answer; a failed write grants nothing and
   * throws). A claim no newer than the epoch the copy follows or promised is refused, and so is
   * one while this node still holds the partition (it serves it, or finishes writes it took as
   * its owner: the claimant waits for the handoff, or takes the partition with the other
   * copies' promises), while the copy catches up, and while the disk refuses writes; a claim no
   * member makes (an epoch out of range or begun by another node, a partition the claimant or this
   * node holds no copy of) is refused and logged, its neighbours answered as usual. Granted,
   * this node writes the partition no more under an epoch it began. Answers where each claimed
   * copy stands, in the claims' order; a granted claim's `promised` is its epoch.
   */
  claim(claims: readonly PartitionClaim[], claimant: string): Promise<PartitionState[]> {
    return this.locked(async () => {
      const granted: PartitionCopy[] = [];
      const restores: (() => void)[] = [];
      // A disk that refuses writes cannot store a promise: nothing is granted (and nothing fails).
      const refusing = this.config.runtime.host.diskProblem !== undefined;
      const invalid: { partition: number; epoch: number; why: string }[] = [];
      for (const { partition, epoch } of claims) {
        const why = this.invalidClaim(partition, epoch, claimant);
        if (why !== undefined) {
          invalid.push({ partition, epoch, why });
          continue;
        }
        const copy = this.config.copies.get(partition);
        // A copy catching up is partial (it reports no point) and may still apply an older
        // owner's history: it vouches for nothing until it is done.
        if (refusing || epoch <= copy.epoch || epoch <= copy.promised || this.config.holds(partition) || this.catching.has(partition)) continue;
        const promised = copy.promised;
        // Only the promise is put back if it cannot be written: an owner's writer cleared
        // meanwhile (it was deposed) stays cleared, and so does the one cleared below.
        restores.push(() => {
          copy.promised = promised;
        });
        copy.promised = epoch;
        // This node let the partition go, but still numbered writes under the epoch it began (a
        // turn that outlived the release grace, or an epoch begun a moment before it would have
        // served it): it writes under it no more, so none of its writes counts on this copy.
        if (copy.writing) copy.writer = 0;
        granted.push(copy);
      }
      if (granted.length > 0) {
        try {
          await this.config.runtime.host.writeReplicated(granted.map((copy) => copy.op()));
        } catch (err) {
          for (const restore of restores) restore();
          throw err;
        }
        // Answers still waiting for this copy's older epoch are refused: it confirms none of it now.
        for (const copy of granted) this.config.replicator.endEpoch(copy.partition, copy.promised, `promised to ${claimant}`);
        this.config.log.debug({ claimant, partitions: granted.map((c) => c.partition) }, "promised partitions to a claimant");
      }
      if (invalid.length > 0) {
        const held = this.invalidClaims.admit();
        if (held !== undefined) {
          this.config.log.warn(
            { claimant, claims: invalid.slice(0, 8), invalidClaims: invalid.length, heldBack: held },
            "refused claims no member of this cluster makes (a forged claim, or a node running another release); the other claims of the request are answered as usual",
          );
        }
      }
      return claims.map((c) => this.stateOf(c.partition));
    });
  }

  /**
   * Why this copy must not promise `epoch` of `partition` to `claimant` whatever its state: the
   * epoch is out of range or not one the claimant begins, or the claimant or this node holds no
   * copy of the partition. Undefined when the claim is well formed.
   */
  private invalidClaim(partition: PartitionId, epoch: number, claimant: string): string | undefined {
    if (!Number.isSafeInteger(epoch) || epoch < 1 || epoch >= EPOCH_LIMIT) return `epoch ${epoch} is not 1 to 2^48 - 1`;
    const ring = this.config.ring();
    const index = ring.nodes.indexOf(claimant);
    if (index < 0) return `${claimant} is not a member`;
    if (epochBeginner(epoch) !== index) return `epoch ${epoch} is begun by member ${epochBeginner(epoch)}, not by ${claimant} (member ${index})`;
    const list = ring.preferenceList(partition);
    if (!list.includes(claimant)) return `${claimant} holds no copy of partition ${partition} (${list.join(", ")})`;
    if (!list.includes(this.config.self)) return `this node holds no copy of partition ${partition} (${list.join(", ")})`;
    return undefined;
  }

  /** Runs `work` while no replicated write or claim runs on this node (a new owner begins its epoch under it). */
  serialized<T>(work: () => Promise<T>): Promise<T> {
    return this.locked(work);
  }

  private stateOf(partition: PartitionId): PartitionState {
    const copy = this.config.copies.get(partition);
    // A partition catching up is a partial copy: never the most advanced one.
    const point = this.catching.has(partition) ? { epoch: 0, position: 0 } : copy.point;
    return create(PartitionStateSchema, {
      partition,
      last: create(PartitionPositionSchema, { partition, epoch: BigInt(point.epoch), position: BigInt(point.position) }),
      history: copy.history.map((h) => ({ epoch: BigInt(h.epoch), startPosition: BigInt(h.start) })),
      owned: this.config.holds(partition),
      rebuilding: copy.rebuilding,
      promised: BigInt(copy.fenced ? copy.promised : 0),
    });
  }

  /**
   * Brings `partition`'s copy up to `source`'s: the shipments after its position, or the whole
   * range. Resolves true when the copy caught up. A catch-up from the same source already running
   * is joined; one from another source is given up first (that source went down, or a new owner
   * takes the partition from the most advanced copy), and its held shipments are kept.
   */
  catchUp(partition: PartitionId, source: NodeId): Promise<boolean> {
    const running = this.catching.get(partition);
    if (running?.source === source && !running.abort.signal.aborted) return running.done;
    running?.abort.abort();
    const abort = new AbortController();
    const buffered: Shipment[] = running?.buffered ?? [];
    // The entry leaves `catching` under the lock, in the same step that applies what it held: a
    // shipment that arrives after that step is applied (or fetched) like any other.
    const finish = (): void => {
      if (this.catching.get(partition) === entry) this.catching.delete(partition);
    };
    // Set from the fetch, which may start before `entry` below exists.
    const progressed = { at: Number.NEGATIVE_INFINITY };
    const progress = (): void => {
      progressed.at = performance.now();
    };
    const fetched =
      running === undefined
        ? this.fetch(partition, source, abort.signal, progress)
        : running.done.then(() => this.fetch(partition, source, abort.signal, progress));
    const done = fetched.then(
      async (caught) =>
        this.locked(async () => {
          try {
            if (caught) await this.applyBuffered(partition, buffered);
          } finally {
            finish();
          }
          return caught;
        }),
      (err: unknown) => {
        finish();
        if (this.closed) return false;
        if (!this.config.runtime.host.serving) this.stale.set(partition, source);
        else if (abort.signal.aborted) this.config.log.debug({ partition, source }, "catch-up given up: its source went down, or another source took over");
        else this.config.log.warn({ partition, source, err }, "catch-up failed; the next shipment retries it");
        return false;
      },
    );
    const entry: CatchUp = { source, buffered, done, abort, progress: progressed };
    this.catching.set(partition, entry);
    void done.finally(() => {
      // Tell the owner how far the copy got: its waiting answers may be satisfied now.
      this.owners
        .get(source)
        ?.write(this.answer([partition]))
        .catch(() => undefined);
    });
    return done;
  }

  /**
   * `peer` went down: the catch-ups that fetch from it and have received nothing for
   * {@link STALLED_MS} are given up (those still receiving, once they stall), so a partition's
   * new owner (or the next shipment) catches it up from a live copy instead of waiting for a
   * stream to a dead or frozen node to time out.
   */
  sourceDown(peer: NodeId): void {
    this.downSources.add(peer);
    this.giveUpStalled(peer);
  }

  private giveUpStalled(peer: NodeId): void {
    if (this.closed || !this.downSources.has(peer)) return;
    const now = performance.now();
    let given = 0;
    let receiving = 0;
    for (const entry of this.catching.values()) {
      if (entry.source !== peer || entry.abort.signal.aborted) continue;
      if (now - entry.progress.at < STALLED_MS) receiving++;
      else {
        entry.abort.abort();
        given++;
      }
    }
    if (given > 0) this.config.log.warn({ peer, partitions: given }, "a peer went down: gave up catching up from it");
    if (receiving > 0) setTimeout(() => this.giveUpStalled(peer), STALLED_MS).unref();
  }

  /** `peer` is up again: catch-ups may fetch from it. */
  sourceUp(peer: NodeId): void {
    this.downSources.delete(peer);
  }

  /** Stops catching up, cancelling the catch-ups' calls; writes in flight finish. */
  close(): void {
    this.closed = true;
    this.stopDiskWatch();
    // Their calls would hold the process until their sources finished streaming (or the 120 s
    // deadline): a node stopped while it catches up exits now, and catches up when it is back.
    for (const entry of this.catching.values()) entry.abort.abort();
  }

  /**
   * The disk takes writes again: each partition whose shipments it refused meanwhile catches up
   * from the owner that sent them (no further shipment may come to show the gap).
   */
  private catchUpStale(): void {
    if (this.closed || this.stale.size === 0) return;
    this.config.log.info({ partitions: this.stale.size }, "disk takes writes again; catching up the partitions whose shipments it refused");
    const stale = [...this.stale];
    this.stale.clear();
    for (const [partition, source] of stale) void this.catchUp(partition as PartitionId, source);
  }

  /** At most {@link MAX_FETCHES} catch-ups fetch at once (a broken stream may set off one per partition); the others queue. */
  private async fetch(partition: PartitionId, source: NodeId, signal: AbortSignal, progress: () => void): Promise<boolean> {
    if (signal.aborted || this.downSources.has(source)) return false;
    if (this.fetching >= MAX_FETCHES) {
      // A waiter given up leaves the queue: the slot it would have taken goes to the next.
      const admitted = await new Promise<boolean>((resolve) => {
        const admit = (): void => {
          signal.removeEventListener("abort", giveUp);
          resolve(true);
        };
        const giveUp = (): void => {
          this.fetchQueue.splice(this.fetchQueue.indexOf(admit), 1);
          resolve(false);
        };
        this.fetchQueue.push(admit);
        signal.addEventListener("abort", giveUp, { once: true });
      });
      if (!admitted) return false;
    } else this.fetching++;
    try {
      if (signal.aborted || this.downSources.has(source)) return false;
      return await this.fetchNow(partition, source, signal, progress);
    } finally {
      const next = this.fetchQueue.shift();
      if (next !== undefined) next();
      else this.fetching--;
    }
  }

  private async fetchNow(partition: PartitionId, source: NodeId, signal: AbortSignal, progress: () => void): Promise<boolean> {
    this.stats.catchUps++;
    const copy = this.config.copies.get(partition);
    // Where the copy stands once the writes before this catch-up are done: a catch-up set off
    // while a batch is planned asks from after that batch's shipments of the partition (another
    // owner's, say), not from before them, so what it fetches follows what the copy holds.
    const after = await this.locked(async () => copy.point);
    const request = create(FetchPartitionRequestSchema, {
      partition,
      after: create(PartitionPositionSchema, { partition, epoch: BigInt(after.epoch), position: BigInt(after.position) }),
      nodeId: this.config.self,
    });
    const raw = (bytes: Buffer): Buffer => bytes;
    const call = this.config
      .channel(source)
      .makeServerStreamRequest<Buffer, Buffer>(
        methodPath(PeerService.method.fetchPartition),
        raw,
        raw,
        Buffer.from(toBinary(FetchPartitionRequestSchema, request)),
        new grpc.Metadata(),
        { deadline: Date.now() + FETCH_DEADLINE_MS },
      );
    if (signal.aborted) call.cancel();
    else signal.addEventListener("abort", () => call.cancel(), { once: true });
    progress();
    let complete = false;
    // Where this catch-up left the copy. Nothing else writes a partition while it catches up (its
    // shipments are held), except a new owner beginning its epoch: a copy that moved otherwise
    // is not this catch-up's any more, and it stops rather than write an older history over it.
    let left: PartitionPoint = after;
    let moved = false;
    const movedSince = (): boolean => {
      moved = copy.epoch !== left.epoch || copy.position !== left.position;
      return moved;
    };
    for await (const bytes of call as AsyncIterable<Buffer>) {
      if (this.closed || signal.aborted || moved) {
        call.cancel();
        if (moved) break;
        return false;
      }
      progress();
      const res = fromBinary(FetchPartitionResponseSchema, bytes);
      if (res.body.case === "shipment") {
        const shipment = res.body.value;
        await this.locked(async () => {
          if (movedSince() || Number(shipment.position) !== copy.position + 1) return;
          await this.write(copy, { epoch: Number(shipment.epoch), position: Number(shipment.position) }, changesOf([shipment]));
          left = copy.point;
        });
      } else if (res.body.case === "range") {
        const range = res.body.value;
        // Read before the lock, in one scan with the other copies starting now: nothing else
        // writes this partition while it catches up (its shipments are held).
        const stale = range.first ? await this.ownKeys.keysOf(partition) : [];
        await this.locked(async () => {
          if (movedSince()) return;
          const at = range.completeAt;
          if (at !== undefined && !(plausiblePoint(at.epoch, at.position) && range.history.every((h) => plausiblePoint(h.epoch, h.startPosition)))) {
            this.config.log.warn({ partition, source }, "catch-up source named an epoch or position beyond what any cluster reaches; not adopted");
            return;
          }
          const ops: BatchOp[] = [];
          if (range.first) {
            this.stats.rangeCopies++;
            for (const key of stale) ops.push({ type: "del", key });
            copy.clear();
          }
          for (const put of range.puts) ops.push({ type: "put", key: utf8.decode(put.key), value: put.value ?? new Uint8Array() });
          // The source is behind this copy: it stays as it is.
          if (
            at !== undefined &&
            !range.first &&
            range.puts.length === 0 &&
            range.history.length === 0 &&
            Number(at.epoch) === copy.epoch &&
            Number(at.position) === copy.position
          ) {
            complete = true;
            return;
          }
          // The end of a stream of shipments: the copy must have reached it, or it missed one.
          if (at !== undefined && !range.first && range.puts.length === 0 && copy.position !== Number(at.position) && copy.epoch !== 0) {
            this.config.log.warn(
              { partition, source, at: Number(at.position), position: copy.position },
              "catch-up ended short of its source; tried again later",
            );
            return;
          }
          if (at !== undefined) {
            copy.adopt(
              { epoch: Number(at.epoch), position: Number(at.position) },
              range.history.map((h) => ({ epoch: Number(h.epoch), start: Number(h.startPosition) })),
            );
            complete = true;
          }
          ops.push(copy.op());
          await this.config.runtime.host.writeReplicated(ops);
          left = copy.point;
        });
      }
    }
    if (moved) {
      this.config.log.warn({ partition, source }, "a catch-up's copy was written by something else meanwhile; the catch-up stops");
      return false;
    }
    if (complete) this.config.log.debug({ partition, source, position: copy.position }, "partition caught up");
    return complete;
  }

  /** Applies what arrived during a catch-up, from where the copy now stands. */
  private async applyBuffered(partition: PartitionId, buffered: Shipment[]): Promise<void> {
    const copy = this.config.copies.get(partition);
    const next = buffered
      .filter((s) => Number(s.epoch) === copy.epoch && Number(s.epoch) >= copy.promised && Number(s.position) > copy.position)
      .sort((a, b) => Number(a.position - b.position));
    const apply: Shipment[] = [];
    let at = copy.position;
    for (const s of next) {
      if (Number(s.position) !== at + 1) break;
      apply.push(s);
      at++;
    }
    if (apply.length > 0) await this.write(copy, { epoch: copy.epoch, position: at }, changesOf(apply));
  }

  /**
   * Applies queued requests in one batch (under the lock), in arrival order; returns, for each
   * stream, the partitions its requests named.
   */
  private async applyRequests(requests: readonly QueuedRequest[]): Promise<Map<StreamSink<ReplicateResponse>, Set<number>>> {
    const answers = new Map<StreamSink<ReplicateResponse>, Set<number>>();
    const runs = new Map<number, Shipment[]>();
    /** The owner that sent each run. */
    const sources = new Map<number, NodeId>();
    for (const request of requests) {
      let touched = answers.get(request.out);
      if (touched === undefined) answers.set(request.out, (touched = new Set()));
      this.planShipments(request.from, request.shipments, runs, touched, sources);
    }
    if (runs.size > 0) await this.writeRuns(runs, sources);
    return answers;
  }

  /** Sorts an owner's shipments: the next ones of each partition join its run; the others are skipped, held, or set off a catch-up. */
  private planShipments(from: NodeId, shipments: readonly Shipment[], runs: Map<number, Shipment[]>, touched: Set<number>, sources: Map<number, NodeId>): void {
    // While the disk refuses writes nothing is applied or fetched (it would only fail): the owner's
    // answers show where the copy stands, and the partition catches up once the disk takes writes.
    const refusing = this.config.runtime.host.diskProblem !== undefined;
    for (const s of shipments) {
      touched.add(s.partition);
      const partition = s.partition as PartitionId;
      if (refusing && !this.catching.has(partition)) {
        this.stale.set(partition, from);
        continue;
      }
      const copy = this.config.copies.get(partition);
      const epoch = Number(s.epoch);
      // The copy promised a newer epoch to a node taking the partition: an older owner's shipment
      // is not confirmed (the answer names the promise, and that owner lets the partition go).
      if (epoch < copy.promised) continue;
      const catching = this.catching.get(partition);
      if (catching !== undefined) {
        if (catching.buffered.length < MAX_BUFFERED) catching.buffered.push(s);
        continue;
      }
      // This node serves the partition: only an owner of a newer epoch may replace it (below).
      if (this.config.holds(partition) && epoch <= copy.epoch) continue;
      const run = runs.get(partition) ?? [];
      // Where the copy stands once the run planned so far is applied.
      const at = copy.position + run.length;
      const atEpoch = run.length === 0 ? copy.epoch : Number((run[run.length - 1] as Shipment).epoch);
      if (epoch < atEpoch) continue; // a deposed owner's: ignored, the answer shows where the copy stands
      if (epoch === atEpoch && Number(s.position) <= at) continue; // already applied
      const next = Number(s.position) === at + 1;
      // The next shipment, or a newer owner's announcement of its epoch made from exactly where
      // this copy stands: that owner's history up to here is this copy's (a point names one
      // history: only its epoch's owner wrote there), so it applies without a fetch.
      // (Not while this node serves the partition: its turns in flight would be written under an
      // epoch it no longer writes. It fetches first, as before any newer epoch.)
      if (next && (epoch === atEpoch || (!copy.rebuilding && !this.config.holds(partition) && begunAt(s, atEpoch, at)))) {
        if (epoch > copy.epoch) this.config.superseded(partition);
        run.push(s);
        runs.set(partition, run);
        // The sender of the run's last shipment: the owner of its newest epoch.
        sources.set(partition, from);
        continue;
      }
      // A gap, or an owner of a newer epoch: first make sure the copy follows its history (and
      // stop serving the partition, if this node still did: the sender took it since).
      if (epoch > copy.epoch) this.config.superseded(partition);
      void this.catchUp(partition, from);
      this.catching.get(partition)?.buffered.push(s);
    }
  }

  /** Writes the runs and the copies' new positions in one batch; a failed write leaves the copies where they were. */
  private async writeRuns(runs: Map<number, Shipment[]>, sources: ReadonlyMap<number, NodeId>): Promise<void> {
    const ops: BatchOp[] = [];
    const restores: (() => void)[] = [];
    for (const [partition, run] of runs) {
      const copy = this.config.copies.get(partition as PartitionId);
      pushChanges(ops, run);
      restores.push(copy.save());
      for (const shipment of run) {
        const epoch = Number(shipment.epoch);
        // An announced epoch begins at its first shipment (planShipments checked it may).
        if (epoch !== copy.epoch && copy.endOf(epoch) === undefined) copy.history = [...copy.history, { epoch, start: copy.position + 1 }];
        copy.epoch = epoch;
        copy.position++;
      }
      copy.written = copy.position;
      ops.push(copy.op());
    }
    try {
      await this.config.runtime.host.writeReplicated(ops);
      this.stats.applied += ops.length;
    } catch (err) {
      for (const restore of restores) restore();
      // The disk refuses writes (the host is read-only now): these partitions catch up from their
      // owners once it takes writes again. Another failure: the next shipment finds the gap.
      if (this.config.runtime.host.diskProblem !== undefined) for (const [partition, source] of sources) this.stale.set(partition, source);
      this.config.log.error(
        { err, from: [...new Set(sources.values())] },
        "writing replicated changes failed; the owner's answers wait, and the copy catches up later",
      );
    }
  }

  /** Writes `changes` and the copy's new point (under the lock). */
  private async write(copy: PartitionCopy, point: PartitionPoint, changes: BatchOp[]): Promise<void> {
    const restore = copy.save();
    const start = copy.position + 1;
    copy.epoch = point.epoch;
    copy.position = point.position;
    copy.written = point.position;
    if (copy.endOf(point.epoch) === undefined) copy.history = [...copy.history, { epoch: point.epoch, start }];
    try {
      await this.config.runtime.host.writeReplicated([...changes, copy.op()]);
    } catch (err) {
      restore();
      throw err;
    }
  }

  private completion(copy: PartitionCopy, point: PartitionPoint, history: readonly EpochStart[], first: boolean): FetchPartitionResponse {
    return create(FetchPartitionResponseSchema, {
      body: {
        case: "range",
        value: create(PartitionRangeSchema, {
          first,
          completeAt: create(PartitionPositionSchema, { partition: copy.partition, epoch: BigInt(point.epoch), position: BigInt(point.position) }),
          history: history.map((h) => ({ epoch: BigInt(h.epoch), startPosition: BigInt(h.start) })),
        }),
      },
    });
  }

  /**
   * Where `partitions` stand, as an owner's stream is answered: the durable position of each, or,
   * for a copy that promised a newer epoch than it follows, that promise (it confirms nothing of
   * the epoch it follows: an owner still writing under it has lost the partition).
   */
  private answer(partitions: Iterable<number>): ReplicateResponse {
    const durable: PartitionPosition[] = [];
    const promised: PartitionPosition[] = [];
    for (const p of partitions) {
      const copy = this.config.copies.get(p as PartitionId);
      if (copy.fenced) promised.push(create(PartitionPositionSchema, { partition: p, epoch: BigInt(copy.promised), position: 0n }));
      else durable.push(this.positionOf(p));
    }
    return create(ReplicateResponseSchema, { durable, promised });
  }

  private positionOf(partition: number): PartitionPosition {
    const copy = this.config.copies.get(partition as PartitionId);
    return create(PartitionPositionSchema, { partition, epoch: BigInt(copy.epoch), position: BigInt(copy.position) });
  }

  private locked<T>(work: () => Promise<T>): Promise<T> {
    const run = this.lock.then(work);
    this.lock = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }
}

function changesOf(shipments: readonly Shipment[]): BatchOp[] {
  const ops: BatchOp[] = [];
  pushChanges(ops, shipments);
  return ops;
}

const utf8 = new TextDecoder();

/** Appends the shipments' changes to `ops`; values stay the bytes received (views into the request), written as they are. */
function pushChanges(ops: BatchOp[], shipments: readonly Shipment[]): void {
  for (const s of shipments) for (const op of shipmentOps(s)) ops.push(op);
}

/** About how many bytes a request's shipments hold while queued: their packed changes, and per write the op, key string and value view unpacked from them. */
function bytesOf(shipments: readonly Shipment[]): number {
  let bytes = 0;
  for (const s of shipments) bytes += s.changes.byteLength + 16 + 96 * shipmentOps(s).length;
  return bytes;
}

/** True when `shipment` announces an epoch its owner began from exactly `epoch` at `position`. */
function begunAt(shipment: Shipment, epoch: number, position: number): boolean {
  const from = shipment.begunFrom;
  return from !== undefined && Number(from.epoch) === epoch && Number(from.position) === position;
}
