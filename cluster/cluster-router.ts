import { type Event, type EventResult, EventStatus } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import {
  type AggregateResult,
  type Alert,
  type AlertEvent,
  type AlertListing,
  type AlertPage,
  isTwinmeshError,
  type JsonObject,
  type Logger,
  type OwnershipGate,
  type PartitionId,
  type QuerySummary,
  type TurnOutcome,
  type TwinAggregation,
  type TwinDeletion,
  type TwinQuery,
  type TwinRuntime,
  type TwinView,
} from "../runtime/index.js";
import { rejectedResult, toEventResult, toIngestEvent } from "../server/proto-convert.js";
import type { ForwardClient } from "./forward-client.js";
import type { ForwardBatch, ForwardHandler } from "./forward-server.js";
import type { NodeId } from "./node-id.js";
import type { PeerPool } from "./peer-pool.js";
import type { RingSnapshot } from "./ring-snapshot.js";
import { consistencyOfLevel, copiesFor, RoutedCallError, type RoutedCalls } from "./routed-calls.js";
import { type ConsistencyLevel, LocalRouter, type ReadScope, type TwinRouter } from "./twin-router.js";

/** What a {@link ClusterRouter} routes by. */
export interface ClusterRouterConfig {
  readonly self: NodeId;
  readonly runtime: TwinRuntime;
  /** The ring now. */
  readonly ring: () => RingSnapshot;
  readonly pool: PeerPool;
  readonly forwarding: ForwardClient;
  readonly calls: RoutedCalls;
  readonly log: Logger;
}

/**
 * Which node runs a twin now: the first node of its partition's preference list. Until replicas
 * hold copies (replication is the next step of the cluster), a partition does not move when its
 * owner is down: its twins are unavailable (retryable) rather than started afresh elsewhere,
 * which would lose their state and diverge from the owner's when it returns.
 */
export class ClusterOwnership implements OwnershipGate {
  constructor(
    private readonly self: NodeId,
    private readonly runtime: () => TwinRuntime | undefined,
    private readonly ring: () => RingSnapshot | undefined,
  ) {}

  /** The node that owns `kind`/`id`, or undefined before the ring is known. */
  ownerOf(kind: string, id: string): NodeId | undefined {
    const ring = this.ring();
    const runtime = this.runtime();
    if (ring === undefined || runtime === undefined) return undefined;
    return ring.preferenceList(runtime.partitioning.partitionOf(kind, id))[0] as NodeId | undefined;
  }

  /**
   * True when this node owns partition `p` now (the first node of its preference list). Before
   * the ring is known (the runtime starts before the node joins), every partition counts as
   * owned, so the start-up reads of the outbox and the timer index miss nothing; once the ring
   * is known or changes, `runtime.partitionsChanged` makes them follow it.
   */
  owns(p: PartitionId): boolean {
    const ring = this.ring();
    return ring === undefined || ring.preferenceList(p)[0] === this.self;
  }

  refusal(kind: string, id: string): TurnOutcome | undefined {
    const owner = this.ownerOf(kind, id);
    if (owner === undefined) {
      return { status: "rejected", reason: "NOT_SERVING", message: "the node is joining its cluster; retry in a moment", retryable: true };
    }
    if (owner === this.self) return undefined;
    return {
      status: "rejected",
      reason: "NOT_OWNER",
      message: `twin ${kind}/${id} is owned by ${owner}, not by this node (${this.self}); send it to ${owner}, or to any node, which forwards it`,
      retryable: true,
    };
  }
}

/**
 * Routes every RPC of a node in a static cluster: events are split by owner, the local ones
 * applied here and the others forwarded over the pooled Forward streams, each answered after the
 * owner's commit; single-twin operations go to the owner. Per-source order holds: all events of
 * one source go to one owner, in one sub-batch, in their order.
 */
export class ClusterRouter implements TwinRouter, ForwardHandler {
  readonly ownership: ClusterOwnership;
  readonly localOnly: TwinRouter;

  constructor(
    private readonly config: ClusterRouterConfig,
    ownership: ClusterOwnership,
  ) {
    this.ownership = ownership;
    this.localOnly = new LocalRouter(config.runtime, ownership);
  }

  ownerOf(kind: string, id: string): string {
    return this.ownership.ownerOf(kind, id) ?? this.config.self;
  }

  async publish(events: readonly Event[], consistency: ConsistencyLevel): Promise<EventResult[]> {
    const results = new Array<EventResult>(events.length);
    const ring = this.config.ring();
    const copies = copiesFor(consistency, ring.replicationFactor);
    const refusal = unsupportedCopies(consistency, copies);
    if (refusal !== undefined) return events.map(() => refusal);
    // Sub-batches by owner, keeping each event's index and the events' order.
    const byOwner = new Map<NodeId, number[]>();
    for (let i = 0; i < events.length; i++) {
      const e = events[i] as Event;
      const owner = (this.ownership.ownerOf(e.kind, e.sourceId) ?? this.config.self) as NodeId;
      let indexes = byOwner.get(owner);
      if (indexes === undefined) {
        indexes = [];
        byOwner.set(owner, indexes);
      }
      indexes.push(i);
    }
    await Promise.all(
      [...byOwner].map(async ([owner, indexes]) => {
        const part = indexes.map((i) => events[i] as Event);
        const answered = owner === this.config.self ? await this.applyLocal(part, copies) : await this.forwardTo(owner, part, consistency, ring.epoch);
        for (let k = 0; k < indexes.length; k++) results[indexes[k] as number] = answered[k] as EventResult;
      }),
    );
    return results;
  }

  /** PeerService.Forward on the owner: applies what this node owns, answers the rest NOT_OWNER. */
  async forward(batch: ForwardBatch): Promise<EventResult[]> {
    const level = consistencyOfLevel(batch.consistency);
    const copies = copiesFor(level, this.config.ring().replicationFactor);
    const refusal = unsupportedCopies(level, copies);
    if (refusal !== undefined) return batch.events.map(() => refusal);
    return this.applyLocal(batch.events, copies);
  }

  getTwin(kind: string, id: string): Promise<TwinView> {
    const owner = this.remoteOwner(kind, id);
    return owner === undefined ? this.localOnly.getTwin(kind, id) : this.config.calls.getTwin(owner, kind, id);
  }

  sendToTwin(kind: string, id: string, message: JsonObject, idempotencyKey?: string): Promise<{ duplicate: boolean; version: number }> {
    const owner = this.remoteOwner(kind, id);
    return owner === undefined
      ? this.localOnly.sendToTwin(kind, id, message, idempotencyKey)
      : this.config.calls.sendToTwin(owner, kind, id, message, idempotencyKey);
  }

  deleteTwin(kind: string, id: string, options: { keepTombstone?: boolean }): Promise<TwinDeletion> {
    const owner = this.remoteOwner(kind, id);
    return owner === undefined ? this.localOnly.deleteTwin(kind, id, options) : this.config.calls.deleteTwin(owner, kind, id, options);
  }

  async acknowledgeAlert(id: string): Promise<Alert> {
    const owner = this.alertOwner(id);
    return owner === undefined ? this.localOnly.acknowledgeAlert(id) : this.config.calls.acknowledgeAlert(owner, id);
  }

  async resolveAlert(id: string): Promise<Alert> {
    const owner = this.alertOwner(id);
    return owner === undefined ? this.localOnly.resolveAlert(id) : this.config.calls.resolveAlert(owner, id);
  }

  // Reads cover this node's twins and alerts; the cluster-wide scatter-gather is a later step.
  queryTwins(query: TwinQuery, signal?: AbortSignal): AsyncGenerator<TwinView, QuerySummary> {
    return this.localOnly.queryTwins(query, signal);
  }

  /**
   * Every node aggregates its own twins (each twin has one owner, so none is counted twice) and
   * the partial results are combined exactly: counts, sums, minima and maxima per group, the
   * average from the combined sum and count. A member that is down fails the call, retryably:
   * an aggregate without its twins would be wrong without saying so.
   */
  async aggregateTwins(aggregation: TwinAggregation, signal?: AbortSignal, scope: ReadScope = "cluster"): Promise<AggregateResult> {
    const local = this.localOnly.aggregateTwins(aggregation, signal);
    if (scope === "local") return local;
    const peers = this.config.ring().nodes.filter((n) => n !== this.config.self) as NodeId[];
    const remote = peers.map((peer) =>
      this.config.calls.aggregateTwins(peer, aggregation).catch((err: unknown) => {
        if (isTwinmeshError(err) && err.reason === "OWNER_UNAVAILABLE") {
          throw new RoutedCallError(
            err.code,
            "MEMBER_UNAVAILABLE",
            `${peer} is not answering, so the twins it owns cannot be aggregated; retry when it is back (this cluster does not fail over yet)`,
            true,
          );
        }
        throw err;
      }),
    );
    return mergeAggregates(await Promise.all([local, ...remote]));
  }

  listAlerts(listing: AlertListing, signal?: AbortSignal): Promise<AlertPage> {
    return this.localOnly.listAlerts(listing, signal);
  }

  watchAlerts(cursor: string | undefined, filter: string | undefined, signal: AbortSignal): AsyncGenerator<AlertEvent> {
    return this.localOnly.watchAlerts(cursor, filter, signal);
  }

  private async applyLocal(events: readonly Event[], copies: number): Promise<EventResult[]> {
    const outcomes = await this.config.runtime.host.publish(events.map(toIngestEvent), { copies });
    return outcomes.map(toEventResult);
  }

  private async forwardTo(owner: NodeId, events: readonly Event[], consistency: ConsistencyLevel, epoch: bigint): Promise<EventResult[]> {
    const { pool, forwarding } = this.config;
    if (!pool.isUp(owner)) {
      const state = pool.state(owner);
      const refusal = rejectedResult(
        "OWNER_UNAVAILABLE",
        `these twins are owned by ${owner}, which is ${state.condition}${state.problem === undefined ? "" : ` (${state.problem})`}; retry with the same seqs (this cluster does not fail over yet)`,
        true,
      );
      return events.map(() => refusal);
    }
    try {
      return await forwarding.forward(owner, { epoch, consistency: consistencyOfLevel(consistency), events });
    } catch (err) {
      const reason = isTwinmeshError(err) ? err.reason : "PEER_UNAVAILABLE";
      const refusal = rejectedResult(reason, `${(err as Error).message}`, !isTwinmeshError(err) || err.retryable);
      return events.map(() => refusal);
    }
  }

  /** The owner of a twin when it is another node; undefined when it is this one. */
  private remoteOwner(kind: string, id: string): NodeId | undefined {
    const owner = this.ownership.ownerOf(kind, id);
    return owner === undefined || owner === this.config.self ? undefined : owner;
  }

  /** The owner of an alert's twin (its id is `kind/twin/code@n`) when it is another node. */
  private alertOwner(alertId: string): NodeId | undefined {
    const [kind, encodedTwinId] = alertId.split("/");
    if (kind === undefined || encodedTwinId === undefined) return undefined; // answered NOT_FOUND locally
    let twinId: string;
    try {
      twinId = decodeURIComponent(encodedTwinId);
    } catch {
      return undefined;
    }
    return this.remoteOwner(kind, twinId);
  }
}

/** True when a result is a retryable rejection (for callers that retry elsewhere). */
export function retryableRejection(result: EventResult): boolean {
  return result.status === EventStatus.REJECTED && result.retryable;
}

/** Combines the partial aggregates of disjoint sets of twins into the aggregate of their union. */
export function mergeAggregates(parts: readonly AggregateResult[]): AggregateResult {
  const groups = new Map<string, { key: unknown; count: number; sum: number; min: number; max: number }>();
  let scanned = 0;
  let matched = 0;
  let evaluationErrors = 0;
  for (const part of parts) {
    scanned += part.scanned;
    matched += part.matched;
    evaluationErrors += part.evaluationErrors;
    for (const g of part.groups) {
      const id = typeof g.key === "string" ? `s${g.key}` : JSON.stringify(g.key);
      const merged = groups.get(id);
      if (merged === undefined) groups.set(id, { key: g.key, count: g.count, sum: g.sum, min: g.min, max: g.max });
      else {
        merged.count += g.count;
        merged.sum += g.sum;
        merged.min = Math.min(merged.min, g.min);
        merged.max = Math.max(merged.max, g.max);
      }
    }
  }
  return {
    groups: [...groups.values()].map((g) => ({ key: g.key, count: g.count, sum: g.sum, avg: g.sum / g.count, min: g.min, max: g.max })),
    scanned,
    matched,
    evaluationErrors,
  };
}

/**
 * The refusal of a consistency level that asks for more than the one copy this cluster keeps
 * (replication is not built yet): answering "durable on a quorum" after one copy would be a lie.
 * Not retryable: the same request fails the same way until the cluster replicates.
 */
function unsupportedCopies(level: ConsistencyLevel, copies: number): EventResult | undefined {
  if (copies <= 1) return undefined;
  return rejectedResult(
    "CONSISTENCY_UNAVAILABLE",
    `${level} consistency asks for ${copies} durable copies, and this cluster keeps one copy of each twin for now (replication to ring successors is not built yet); publish with CONSISTENCY_LOCAL, or start the cluster with --replication-factor 1`,
    false,
  );
}
