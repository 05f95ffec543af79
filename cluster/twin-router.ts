import type { Event, EventResult } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import type {
  AggregateResult,
  Alert,
  AlertEvent,
  AlertListing,
  AlertPage,
  DeadLetter,
  DeadLetterListing,
  DeadLetterPage,
  DeadLetterSelection,
  JsonObject,
  OwnershipGate,
  QuerySummary,
  TwinAggregation,
  TwinDeletion,
  TwinQuery,
  TwinRuntime,
  TwinView,
} from "../runtime/index.js";
import { UnavailableError } from "../runtime/index.js";
import { toEventResult, toIngestEvent } from "../server/proto-convert.js";
import { ROUTED_BY_HEADER } from "./routed-calls.js";

/**
 * How many durable copies an answer waits for (design §5): `local` is the owner's, `quorum` a
 * majority of the replication factor, `all` every replica; `default` is the node's setting.
 */
export type ConsistencyLevel = "default" | "local" | "quorum" | "all";

/** Whose twins a read covers: the whole cluster's (a client's call), or this node's (a peer's part of a cluster-wide read). */
export type ReadScope = "cluster" | "local";

/**
 * Where the gRPC services send work. Every RPC goes through it: the single-node router hands
 * everything to the local runtime; the cluster router forwards each twin's work to its owner
 * and scatters reads to the owners of every partition. Services depend on this seam, not on
 * the host.
 */
export interface TwinRouter {
  /**
   * The router for a call another node routed here (it carries `twinmesh-routed-by`): this node
   * answers it itself, never routes it on, so nodes that disagree about an owner cannot bounce
   * a call between them. Absent: this router routes nothing (a single node).
   */
  readonly localOnly?: TwinRouter;
  /**
   * The router for a routed call, given its metadata (a member's part of a cluster-wide read
   * names the partitions it must cover). Absent: {@link localOnly}.
   */
  routed?(metadata: CallMetadata): TwinRouter;
  /** Applies a batch; `results[i]` answers `events[i]`, each after the copies `consistency` asks for. */
  publish(events: readonly Event[], consistency: ConsistencyLevel): Promise<EventResult[]>;
  /** The node that owns a twin now. */
  ownerOf(kind: string, id: string): string;
  getTwin(kind: string, id: string): Promise<TwinView>;
  sendToTwin(kind: string, id: string, message: JsonObject, idempotencyKey?: string): Promise<{ duplicate: boolean; version: number }>;
  deleteTwin(kind: string, id: string, options: { keepTombstone?: boolean }): Promise<TwinDeletion>;
  acknowledgeAlert(id: string): Promise<Alert>;
  resolveAlert(id: string): Promise<Alert>;
  queryTwins(query: TwinQuery, signal?: AbortSignal): AsyncGenerator<TwinView, QuerySummary>;
  /**
   * Aggregates over every twin of the cluster; with `scope` `"local"` (a peer's routed call), over
   * this node's twins only.
   */
  aggregateTwins(aggregation: TwinAggregation, signal?: AbortSignal, scope?: ReadScope): Promise<AggregateResult>;
  listAlerts(listing: AlertListing, signal?: AbortSignal): Promise<AlertPage>;
  watchAlerts(cursor: string | undefined, filter: string | undefined, signal: AbortSignal): AsyncGenerator<AlertEvent>;
  /** A page of the dead letters of every partition, by partition, oldest first within one. */
  listDeadLetters(listing: DeadLetterListing): Promise<DeadLetterPage>;
  getDeadLetter(id: string): Promise<DeadLetter>;
  /** Puts the selected dead letters back into their outboxes, each on its partition's owner. */
  retryDeadLetters(selection: DeadLetterSelection, signal?: AbortSignal): Promise<DeadLetterRetry>;
  deleteDeadLetters(selection: DeadLetterSelection, signal?: AbortSignal): Promise<{ deleted: number }>;
}

/** What a retry of dead letters did: how many it put back, and how many it left (their target kind is not loaded). */
export interface DeadLetterRetry {
  readonly retried: number;
  readonly skipped: number;
}

/** Routes everything to this node's runtime: a single node owns every partition and keeps one copy. */
export class LocalRouter implements TwinRouter {
  constructor(
    private readonly runtime: TwinRuntime,
    /** In a cluster, which twins this node owns: a read of another node's twin is refused, not answered "not found". */
    private readonly ownership?: OwnershipGate,
  ) {}

  async publish(events: readonly Event[]): Promise<EventResult[]> {
    const outcomes = await this.runtime.host.publish(events.map(toIngestEvent));
    return outcomes.map(toEventResult);
  }

  ownerOf(): string {
    return this.runtime.host.nodeId;
  }

  getTwin(kind: string, id: string): Promise<TwinView> {
    const refusal = this.ownership?.refusal(kind, id);
    if (refusal !== undefined) {
      const reason =
        refusal.reason === "PARTITION_MOVING" || refusal.reason === "OWNER_UNAVAILABLE" || refusal.reason === "NOT_SERVING" ? refusal.reason : "NOT_OWNER";
      return Promise.reject(new UnavailableError(reason, refusal.message ?? `twin ${kind}/${id} is not owned by this node`));
    }
    return this.runtime.host.getTwin(kind, id);
  }

  sendToTwin(kind: string, id: string, message: JsonObject, idempotencyKey?: string): Promise<{ duplicate: boolean; version: number }> {
    return this.runtime.host.sendToTwin(kind, id, message, idempotencyKey);
  }

  deleteTwin(kind: string, id: string, options: { keepTombstone?: boolean }): Promise<TwinDeletion> {
    return this.runtime.host.deleteTwin(kind, id, options);
  }

  acknowledgeAlert(id: string): Promise<Alert> {
    return this.runtime.host.acknowledgeAlert(id);
  }

  resolveAlert(id: string): Promise<Alert> {
    return this.runtime.host.resolveAlert(id);
  }

  queryTwins(query: TwinQuery, signal?: AbortSignal): AsyncGenerator<TwinView, QuerySummary> {
    return this.runtime.queries.query(query, signal);
  }

  aggregateTwins(aggregation: TwinAggregation, signal?: AbortSignal): Promise<AggregateResult> {
    return this.runtime.queries.aggregate(aggregation, signal);
  }

  listAlerts(listing: AlertListing, signal?: AbortSignal): Promise<AlertPage> {
    return this.runtime.alerts.list(listing, signal);
  }

  watchAlerts(cursor: string | undefined, filter: string | undefined, signal: AbortSignal): AsyncGenerator<AlertEvent> {
    return this.runtime.alerts.watch(cursor, filter, signal);
  }

  listDeadLetters(listing: DeadLetterListing): Promise<DeadLetterPage> {
    return this.runtime.host.deadLetters.list(listing);
  }

  getDeadLetter(id: string): Promise<DeadLetter> {
    return this.runtime.host.deadLetters.get(id);
  }

  retryDeadLetters(selection: DeadLetterSelection, signal?: AbortSignal): Promise<DeadLetterRetry> {
    return this.runtime.host.deadLetters.retry(selection, signal);
  }

  deleteDeadLetters(selection: DeadLetterSelection, signal?: AbortSignal): Promise<{ deleted: number }> {
    return this.runtime.host.deadLetters.delete(selection, signal);
  }
}

/** A call's metadata, as the router reads it. */
export interface CallMetadata {
  get(key: string): unknown[];
}

/** The router a service uses for a call: {@link TwinRouter.routed} or {@link TwinRouter.localOnly} when another node routed it here. */
export function routerFor(router: TwinRouter, call: { readonly metadata: CallMetadata }): TwinRouter {
  if (call.metadata.get(ROUTED_BY_HEADER).length === 0) return router;
  return router.routed?.(call.metadata) ?? router.localOnly ?? router;
}
