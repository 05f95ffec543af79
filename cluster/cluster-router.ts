import { type Event, type EventResult, EventStatus } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import {
  type AggregateResult,
  type Alert,
  type AlertEvent,
  type AlertListing,
  type AlertPage,
  type DeadLetter,
  type DeadLetterListing,
  type DeadLetterPage,
  type DeadLetterRetry,
  type DeadLetterSelection,
  isTwinmeshError,
  type JsonObject,
  type Logger,
  type OwnershipGate,
  type PartitionId,
  parseDeadLetterId,
  type QuerySummary,
  StatusCode,
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
import { MemberReads } from "./member-reads.js";
import type { NodeId } from "./node-id.js";
import type { PartitionOwnership } from "./partition-ownership.js";
import type { PeerPool } from "./peer-pool.js";
import type { RingSnapshot } from "./ring-snapshot.js";
import { consistencyOfLevel, copiesFor, decodePartitions, PARTITIONS_HEADER, RoutedCallError, type RoutedCalls } from "./routed-calls.js";
import { ScatterReads, settleChanges } from "./scatter-reads.js";
import type { CallMetadata, ConsistencyLevel, ReadScope, TwinRouter } from "./twin-router.js";

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
 * Which node runs a twin: made before the runtime opens (the host's admission consults it), it
 * refuses everything (retryable) until the node has joined, then answers from the node's
 * {@link PartitionOwnership}.
 */
export class ClusterOwnership implements OwnershipGate {
  private partitions: PartitionOwnership | undefined;

  /** Starts answering from `partitions`. */
  attach(partitions: PartitionOwnership): void {
    this.partitions = partitions;
  }

  /** The node that runs `kind`/`id` now, or undefined before the node joined or when no copy is live. */
  ownerOf(kind: string, id: string): NodeId | undefined {
    return this.partitions?.ownerOf(kind, id);
  }

  /** The node that serves `partition` now, or undefined before the node joined or when no copy is live. */
  ownerOfPartition(partition: PartitionId): NodeId | undefined {
    return this.partitions?.ownerOfPartition(partition);
  }

  /** Copies of the twin's partition that can be durable now (0 before the node joined). */
  liveCopies(partition: PartitionId): number {
    return this.partitions?.liveCopies(partition) ?? 0;
  }

  /**
   * True when this node serves `partition` now. Nothing is owned before the node joined: the
   * outbox and timers of a partition are read when the node takes it (`runtime.partitionsChanged`).
   */
  owns(partition: PartitionId): boolean {
    return this.partitions?.owns(partition) ?? false;
  }

  refusal(kind: string, id: string): TurnOutcome | undefined {
    if (this.partitions === undefined)
      return { status: "rejected", reason: "NOT_SERVING", message: "the node is joining its cluster; retry in a moment", retryable: true };
    return this.partitions.refusal(kind, id);
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
  private readonly reads: ScatterReads;

  constructor(
    private readonly config: ClusterRouterConfig,
    ownership: ClusterOwnership,
  ) {
    this.ownership = ownership;
    this.localOnly = new MemberReads(config.runtime, ownership);
    this.reads = new ScatterReads({
      self: config.self,
      localFor: (partitions) => new MemberReads(config.runtime, ownership, partitions),
      calls: config.calls,
      partitions: () => config.runtime.partitioning.all(),
      ownerOfPartition: (p) => ownership.ownerOfPartition(p),
      isUp: (peer) => config.pool.isUp(peer),
      shuttingDown: () => config.runtime.host.closing,
      log: config.log.child({ component: "cluster.scatter-reads" }),
    });
  }

  /** A peer's part of a cluster-wide read covers the partitions it names (or, naming none, what this node owns). */
  routed(metadata: CallMetadata): TwinRouter {
    const named = metadata.get(PARTITIONS_HEADER)[0];
    return typeof named === "string" ? new MemberReads(this.config.runtime, this.ownership, decodePartitions(named) as PartitionId[]) : this.localOnly;
  }

  ownerOf(kind: string, id: string): string {
    return this.ownership.ownerOf(kind, id) ?? this.config.self;
  }

  async publish(events: readonly Event[], consistency: ConsistencyLevel): Promise<EventResult[]> {
    const results = new Array<EventResult>(events.length);
    const ring = this.config.ring();
    const copies = copiesFor(consistency, ring.replicationFactor);
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
    return this.applyLocal(batch.events, copiesFor(level, this.config.ring().replicationFactor));
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

  /** Every twin of the cluster, merged from the owners' pages (see {@link ScatterReads.queryTwins}). */
  queryTwins(query: TwinQuery, signal?: AbortSignal): AsyncGenerator<TwinView, QuerySummary> {
    return this.reads.queryTwins(query, signal);
  }

  /**
   * Every owner aggregates the partitions it serves and the partial results are combined exactly
   * (see {@link ScatterReads.aggregateTwins}); with `scope` `"local"`, this node's own twins.
   */
  aggregateTwins(aggregation: TwinAggregation, signal?: AbortSignal, scope: ReadScope = "cluster"): Promise<AggregateResult> {
    return scope === "local" ? this.localOnly.aggregateTwins(aggregation, signal) : this.reads.aggregateTwins(aggregation, signal);
  }

  /** The alerts of every twin, merged from the owners' pages (see {@link ScatterReads.listAlerts}). */
  listAlerts(listing: AlertListing, signal?: AbortSignal): Promise<AlertPage> {
    return this.reads.listAlerts(listing, signal);
  }

  /** The alert changes of every twin, through failovers (see {@link ScatterReads.watchAlerts}). */
  watchAlerts(cursor: string | undefined, filter: string | undefined, signal: AbortSignal): AsyncGenerator<AlertEvent> {
    return this.reads.watchAlerts(cursor, filter, signal);
  }

  /** The dead letters of every partition, merged from the owners' pages (see {@link ScatterReads.listDeadLetters}). */
  listDeadLetters(listing: DeadLetterListing): Promise<DeadLetterPage> {
    return this.reads.listDeadLetters(listing);
  }

  /** A dead letter, read on the owner of its partition (named in its id). */
  async getDeadLetter(id: string): Promise<DeadLetter> {
    const owner = this.letterOwner(parseDeadLetterId(id, "id").partition);
    return owner === undefined ? this.localOnly.getDeadLetter(id) : this.config.calls.getDeadLetter(owner, id);
  }

  /**
   * Named dead letters are retried on their partitions' owners, all or nothing on each (not
   * across owners: one failing, the call fails saying what the others retried); all matching
   * ones, on every owner.
   */
  async retryDeadLetters(selection: DeadLetterSelection, signal?: AbortSignal): Promise<DeadLetterRetry> {
    if ("all" in selection) return this.reads.retryDeadLetters(selection, signal);
    const results = await Promise.allSettled(
      [...this.byOwner(selection.ids)].map(([owner, ids]) =>
        owner === undefined ? this.localOnly.retryDeadLetters({ ids }, signal) : this.config.calls.retryDeadLetters(owner, { ids }, undefined, signal),
      ),
    );
    const parts = settleChanges(results, (done) => `${done.reduce((n, p) => n + p.retried, 0)} dead letters were retried`);
    return { retried: parts.reduce((n, p) => n + p.retried, 0), skipped: parts.reduce((n, p) => n + p.skipped, 0) };
  }

  /** Deletes dead letters on their partitions' owners, selected as for {@link retryDeadLetters}. */
  async deleteDeadLetters(selection: DeadLetterSelection, signal?: AbortSignal): Promise<{ deleted: number }> {
    if ("all" in selection) return this.reads.deleteDeadLetters(selection, signal);
    const results = await Promise.allSettled(
      [...this.byOwner(selection.ids)].map(([owner, ids]) =>
        owner === undefined ? this.localOnly.deleteDeadLetters({ ids }, signal) : this.config.calls.deleteDeadLetters(owner, { ids }, undefined, signal),
      ),
    );
    const parts = settleChanges(results, (done) => `${done.reduce((n, p) => n + p.deleted, 0)} dead letters were deleted`);
    return { deleted: parts.reduce((n, p) => n + p.deleted, 0) };
  }

  /**
   * Dead letter ids by the owner of their partitions (undefined: this node, or a partition the
   * cluster does not have, which this node answers as not found). Every id is checked before any
   * owner is asked.
   * @throws InvalidArgumentError (BAD_FIELD) for a malformed id, RoutedCallError (PARTITION_UNAVAILABLE) for a partition with no live copy
   */
  private byOwner(ids: readonly string[]): Map<NodeId | undefined, string[]> {
    const owners = new Map<NodeId | undefined, string[]>();
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] as string;
      const owner = this.letterOwner(parseDeadLetterId(id, `ids[${i}]`).partition);
      const list = owners.get(owner);
      if (list === undefined) owners.set(owner, [id]);
      else list.push(id);
    }
    return owners;
  }

  /**
   * The owner of a dead letter's partition when it is another node; undefined when it is this
   * one, or the partition is beyond the cluster's (no such dead letter: this node's store says so).
   * @throws RoutedCallError (PARTITION_UNAVAILABLE) while the partition has no live copy
   */
  private letterOwner(partition: PartitionId): NodeId | undefined {
    if (partition >= this.config.runtime.partitioning.partitions) return undefined;
    const owner = this.ownership.ownerOfPartition(partition);
    if (owner === undefined) {
      throw new RoutedCallError(
        StatusCode.UNAVAILABLE,
        "PARTITION_UNAVAILABLE",
        `partition ${partition} has no live copy now (its owner is down and its replicas have not taken it yet); retry in a moment`,
        true,
      );
    }
    return owner === this.config.self ? undefined : owner;
  }

  /**
   * Applies events this node owns, each answered once `copies` copies are durable. An event
   * whose partition has fewer live copies than that is refused before it is applied (retryable):
   * nothing is half-applied for want of replicas.
   */
  private async applyLocal(events: readonly Event[], copies: number): Promise<EventResult[]> {
    if (copies <= 1) return (await this.config.runtime.host.publish(events.map(toIngestEvent), { copies })).map(toEventResult);
    const { partitioning } = this.config.runtime;
    const results = new Array<EventResult>(events.length);
    const admitted: number[] = [];
    for (let i = 0; i < events.length; i++) {
      const e = events[i] as Event;
      const partition = partitioning.partitionOf(e.kind, e.sourceId);
      const live = this.ownership.liveCopies(partition);
      if (live >= copies) admitted.push(i);
      else
        results[i] = rejectedResult(
          "NOT_ENOUGH_REPLICAS",
          `${copies} durable copies were asked for, and only ${live} of partition ${partition}'s are live (${this.config.ring().preferenceList(partition).join(", ")}); nothing was applied: retry with the same seq, or ask for fewer copies`,
          true,
        );
    }
    if (admitted.length === 0) return results;
    const outcomes = await this.config.runtime.host.publish(
      admitted.map((i) => toIngestEvent(events[i] as Event)),
      { copies },
    );
    for (let k = 0; k < admitted.length; k++) results[admitted[k] as number] = toEventResult(outcomes[k] as TurnOutcome);
    return results;
  }

  private async forwardTo(owner: NodeId, events: readonly Event[], consistency: ConsistencyLevel, epoch: bigint): Promise<EventResult[]> {
    const { pool, forwarding } = this.config;
    if (!pool.isUp(owner)) {
      const state = pool.state(owner);
      const refusal = rejectedResult(
        "OWNER_UNAVAILABLE",
        `these twins are owned by ${owner}, which is ${state.condition}${state.problem === undefined ? "" : ` (${state.problem})`}; retry with the same seqs`,
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
