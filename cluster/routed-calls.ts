import { create, type DescMethod, fromBinary, type MessageInitShape, type MessageShape, toBinary, toJson } from "@bufbuild/protobuf";
import { type Timestamp, timestampMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { AlertService, type Alert as PbAlert, AlertSeverity as PbSeverity, AlertState as PbState } from "../proto/gen/twinmesh/v1/alert_pb.js";
import { DeadLetterService, type DeadLetter as PbDeadLetter, type DeadLetterFilter as PbDeadLetterFilter } from "../proto/gen/twinmesh/v1/dead_letter_pb.js";
import { Consistency } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { TwinService, type TwinSnapshot } from "../proto/gen/twinmesh/v1/twin_pb.js";
import {
  type AggregateResult,
  type Alert,
  type AlertEvent,
  type AlertListing,
  type AlertPage,
  AlertState,
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterListing,
  type DeadLetterPage,
  type DeadLetterRetry,
  type DeadLetterSelection,
  type JsonObject,
  type PartitionId,
  parseDeadLetterId,
  type QuerySummary,
  StatusCode,
  type TwinAggregation,
  type TwinDeletion,
  TwinmeshError,
  type TwinQuery,
  type TwinView,
} from "../runtime/index.js";
import { consistencyLevel } from "../server/proto-convert.js";
import type { NodeId } from "./node-id.js";
import { callFailure, callUnary, methodPath } from "./peer-rpc.js";
import { majorityOf } from "./quorum.js";
import type { ConsistencyLevel } from "./twin-router.js";

/** Metadata that marks a call one node routed to another (the owner answers it itself). */
export const ROUTED_BY_HEADER = "twinmesh-routed-by";

/**
 * Metadata of a member's part of a cluster-wide read: the partitions the reading node counts on
 * it to cover (a bitmap, base64url). The member refuses the part, retryably, unless it serves
 * every one of them, so a partition whose new owner has not taken it yet is not silently missed.
 */
export const PARTITIONS_HEADER = "twinmesh-partitions";

/** The {@link PARTITIONS_HEADER} value naming `partitions`. */
export function encodePartitions(partitions: readonly number[]): string {
  const bits = Buffer.alloc(Math.ceil((Math.max(-1, ...partitions) + 1) / 8));
  for (const p of partitions) bits[p >> 3] = (bits[p >> 3] ?? 0) | (1 << (p & 7));
  return bits.toString("base64url");
}

/** The partitions a {@link PARTITIONS_HEADER} value names. */
export function decodePartitions(value: string): number[] {
  const bits = Buffer.from(value, "base64url");
  const partitions: number[] = [];
  for (let i = 0; i < bits.length * 8; i++) if (((bits[i >> 3] ?? 0) >> (i & 7)) & 1) partitions.push(i);
  return partitions;
}

/** Durable copies (the owner's included) a level asks for at replication factor `rf` (design §5). */
export function copiesFor(level: ConsistencyLevel, rf: number): number {
  switch (level) {
    case "all":
      return rf;
    case "quorum":
    case "default":
      // A cluster's default is QUORUM (design §5).
      return majorityOf(rf);
    default:
      return 1;
  }
}

const CONSISTENCY_OF: Readonly<Record<ConsistencyLevel, Consistency>> = {
  default: Consistency.UNSPECIFIED,
  local: Consistency.LOCAL,
  quorum: Consistency.QUORUM,
  all: Consistency.ALL,
};

/** The level of a wire `Consistency` (a checked one: PeerService refuses unknown values). */
export function consistencyOfLevel(value: Consistency): ConsistencyLevel;
/** The wire `Consistency` of a level. */
export function consistencyOfLevel(value: ConsistencyLevel): Consistency;
export function consistencyOfLevel(value: Consistency | ConsistencyLevel): ConsistencyLevel | Consistency {
  return typeof value === "string" ? CONSISTENCY_OF[value] : (consistencyLevel(value) ?? "default");
}

/**
 * An owner's answer to a call routed to it, failed: the owner's status code, reason and message,
 * passed on to the client as if this node had answered.
 */
export class RoutedCallError extends TwinmeshError {
  override readonly name = "RoutedCallError";
  constructor(
    readonly code: StatusCode,
    readonly reason: string,
    message: string,
    override readonly retryable: boolean,
  ) {
    super(message);
  }
}

const SEVERITY: Record<number, Alert["severity"]> = { [PbSeverity.INFO]: "info", [PbSeverity.WARNING]: "warning", [PbSeverity.CRITICAL]: "critical" };
const STATE: Record<number, Alert["state"]> = {
  [PbState.OPEN]: AlertState.OPEN,
  [PbState.ACKNOWLEDGED]: AlertState.ACKNOWLEDGED,
  [PbState.RESOLVED]: AlertState.RESOLVED,
};

/**
 * Single-twin operations sent to the twin's owner over the pool's channel to it, through the
 * owner's public services (the owner runs them as for any client), marked as routed.
 */
export class RoutedCalls {
  constructor(
    private readonly self: NodeId,
    private readonly channel: (peer: NodeId) => grpc.Client,
    /** Whether a peer is up now: a call to a down owner fails at once instead of waiting for it. */
    private readonly isUp: (peer: NodeId) => boolean,
    private readonly deadlineMs = 30_000,
  ) {}

  async getTwin(owner: NodeId, kind: string, id: string): Promise<TwinView> {
    const res = await this.call(owner, TwinService.method.getTwin, { kind, id });
    return viewOf(res.twin, kind, id, owner);
  }

  async sendToTwin(owner: NodeId, kind: string, id: string, message: JsonObject, idempotencyKey?: string): Promise<{ duplicate: boolean; version: number }> {
    const res = await this.call(owner, TwinService.method.sendToTwin, { kind, id, message, idempotencyKey: idempotencyKey ?? "" });
    return { duplicate: res.duplicate, version: Number(res.version) };
  }

  async deleteTwin(owner: NodeId, kind: string, id: string, options: { keepTombstone?: boolean }): Promise<TwinDeletion> {
    const res = await this.call(owner, TwinService.method.deleteTwin, { kind, id, keepTombstone: options.keepTombstone === true });
    return {
      existed: res.existed,
      timersCancelled: res.timersCancelled,
      resolvedAlertIds: [...res.resolvedAlertIds],
      tombstone: res.tombstone,
      tombstoneSeq: Number(res.tombstoneSeq),
    };
  }

  /** The aggregate of `owner`'s own twins (the call is marked routed: the owner does not scatter it again). */
  async aggregateTwins(owner: NodeId, aggregation: TwinAggregation, partitions?: readonly number[]): Promise<AggregateResult> {
    const res = await this.call(
      owner,
      TwinService.method.aggregateTwins,
      {
        kind: aggregation.kind,
        filter: aggregation.filter ?? "",
        field: aggregation.field,
        groupBy: aggregation.groupBy ?? "",
      },
      partitions,
    );
    return {
      groups: res.groups.map((g) => ({
        key: g.key === undefined ? null : toJson(ValueSchema, g.key),
        count: Number(g.count),
        sum: g.sum,
        avg: g.avg,
        min: g.min,
        max: g.max,
      })),
      scanned: Number(res.scanned),
      matched: Number(res.matched),
      evaluationErrors: Number(res.evaluationErrors),
    };
  }

  /**
   * `member`'s page of a cluster-wide query: the twins of the partitions it owns, read whole (at
   * most the query's limit) with its summary. Marked routed: the member does not scatter it again.
   */
  async queryTwins(
    member: NodeId,
    query: TwinQuery,
    partitions: readonly number[],
    signal?: AbortSignal,
  ): Promise<{ twins: TwinView[]; summary: QuerySummary }> {
    const method = TwinService.method.queryTwins;
    const request = { kind: query.kind, filter: query.filter ?? "", orderBy: query.orderBy ?? "", limit: query.limit ?? 0, pageToken: query.pageToken ?? "" };
    const twins: TwinView[] = [];
    let summary: QuerySummary | undefined;
    for await (const res of this.stream(member, method, request, signal, partitions)) {
      for (const s of res.twins) twins.push(viewOf(s, query.kind, "", member));
      if (res.summary !== undefined) {
        const m = res.summary;
        summary = {
          matched: Number(m.matched),
          scanned: Number(m.scanned),
          evaluationErrors: Number(m.evaluationErrors),
          firstEvaluationError: m.firstEvaluationError === "" ? undefined : m.firstEvaluationError,
          nextPageToken: m.nextPageToken,
        };
      }
    }
    if (summary === undefined) throw new RoutedCallError(StatusCode.INTERNAL, "BAD_PEER_ANSWER", `${member} ended QueryTwins without a summary`, false);
    return { twins, summary };
  }

  /** `member`'s page of a cluster-wide alert listing (the alerts of the partitions it owns, their log ends as its cursor). */
  async listAlerts(member: NodeId, listing: AlertListing, partitions: readonly number[]): Promise<AlertPage> {
    const res = await this.call(
      member,
      AlertService.method.listAlerts,
      {
        filter: listing.filter ?? "",
        pageSize: listing.pageSize ?? 0,
        pageToken: listing.pageToken ?? "",
      },
      partitions,
    );
    return { alerts: res.alerts.map((a) => alertOf(a)), nextPageToken: res.nextPageToken, cursor: res.cursor };
  }

  /**
   * `member`'s watch of the partitions it owns, from `cursor`, until `signal` aborts or the
   * member ends it (a failure is thrown as a {@link RoutedCallError}).
   */
  async *watchAlerts(
    member: NodeId,
    cursor: string,
    filter: string | undefined,
    partitions: readonly number[],
    signal: AbortSignal,
  ): AsyncGenerator<AlertEvent> {
    for await (const res of this.stream(member, AlertService.method.watchAlerts, { cursor, filter: filter ?? "" }, signal, partitions, false)) {
      yield { alert: alertOf(res.alert), cursor: res.cursor, partition: res.partition as PartitionId, seq: Number(res.change) };
    }
  }

  /** A server-streaming call to `member`, marked routed; ends quietly when `signal` aborts. */
  private async *stream<M extends DescMethod & { methodKind: "server_streaming" }>(
    member: NodeId,
    method: M,
    request: MessageInitShape<M["input"]>,
    signal: AbortSignal | undefined,
    partitions: readonly number[],
    deadline = true,
  ): AsyncGenerator<MessageShape<M["output"]>> {
    if (!this.isUp(member)) throw unavailable(member, "is down");
    const metadata = new grpc.Metadata();
    metadata.set(ROUTED_BY_HEADER, this.self);
    metadata.set(PARTITIONS_HEADER, encodePartitions(partitions));
    const raw = (bytes: Buffer): Buffer => bytes;
    const call = this.channel(member).makeServerStreamRequest<Buffer, Buffer>(
      methodPath(method),
      raw,
      raw,
      Buffer.from(toBinary(method.input, create(method.input, request))),
      metadata,
      deadline ? { deadline: Date.now() + this.deadlineMs } : {},
    );
    const cancel = (): void => call.cancel();
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      for await (const bytes of call as AsyncIterable<Buffer>) yield fromBinary(method.output, bytes) as MessageShape<M["output"]>;
    } catch (err) {
      if (signal?.aborted === true) return;
      throw routedError(member, err);
    } finally {
      signal?.removeEventListener("abort", cancel);
      call.cancel();
    }
  }

  async acknowledgeAlert(owner: NodeId, id: string): Promise<Alert> {
    return alertOf((await this.call(owner, AlertService.method.acknowledgeAlert, { id })).alert);
  }

  async resolveAlert(owner: NodeId, id: string): Promise<Alert> {
    return alertOf((await this.call(owner, AlertService.method.resolveAlert, { id })).alert);
  }

  /** `member`'s page of a cluster-wide dead letter listing (the dead letters of the partitions it owns). */
  async listDeadLetters(member: NodeId, listing: DeadLetterListing, partitions: readonly number[]): Promise<DeadLetterPage> {
    const res = await this.call(
      member,
      DeadLetterService.method.listDeadLetters,
      { filter: pbFilter(listing.filter), pageSize: listing.pageSize ?? 0, pageToken: listing.pageToken ?? "" },
      partitions,
    );
    return { deadLetters: res.deadLetters.map((d) => deadLetterOf(d, member)), nextPageToken: res.nextPageToken };
  }

  /** Dead letter `id`, read on `owner`, the owner of its partition. */
  async getDeadLetter(owner: NodeId, id: string): Promise<DeadLetter> {
    return deadLetterOf((await this.call(owner, DeadLetterService.method.getDeadLetter, { id })).deadLetter, owner);
  }

  /**
   * Retries dead letters on `member`: the named ones (of partitions it owns), or every matching
   * one of `partitions`, which it must serve.
   */
  async retryDeadLetters(member: NodeId, selection: DeadLetterSelection, partitions?: readonly number[], signal?: AbortSignal): Promise<DeadLetterRetry> {
    const res = await this.call(member, DeadLetterService.method.retryDeadLetters, selectionRequest(selection), partitions, bulkOptions(selection, signal));
    return { retried: Number(res.retriedCount), skipped: Number(res.skippedCount) };
  }

  /** Deletes dead letters on `member`, selected as for {@link retryDeadLetters}. */
  async deleteDeadLetters(member: NodeId, selection: DeadLetterSelection, partitions?: readonly number[], signal?: AbortSignal): Promise<{ deleted: number }> {
    const res = await this.call(member, DeadLetterService.method.deleteDeadLetters, selectionRequest(selection), partitions, bulkOptions(selection, signal));
    return { deleted: Number(res.deletedCount) };
  }

  private call<M extends DescMethod & { methodKind: "unary" }>(
    owner: NodeId,
    method: M,
    request: MessageInitShape<M["input"]>,
    partitions?: readonly number[],
    options: { readonly deadlineMs?: number; readonly signal?: AbortSignal } = {},
  ): Promise<MessageShape<M["output"]>> {
    if (!this.isUp(owner)) {
      return Promise.reject(
        new RoutedCallError(
          StatusCode.UNAVAILABLE,
          "OWNER_UNAVAILABLE",
          `this twin's owner ${owner} is down; retry in a moment (its partitions fail over to a replica)`,
          true,
        ),
      );
    }
    const metadata = new grpc.Metadata();
    metadata.set(ROUTED_BY_HEADER, this.self);
    if (partitions !== undefined) metadata.set(PARTITIONS_HEADER, encodePartitions(partitions));
    return callUnary(this.channel(owner), method, request, options.deadlineMs ?? this.deadlineMs, metadata, options.signal).catch((err: unknown) => {
      throw routedError(owner, err);
    });
  }
}

function unavailable(member: NodeId, why: string): RoutedCallError {
  return new RoutedCallError(StatusCode.UNAVAILABLE, "OWNER_UNAVAILABLE", `${member} ${why}; retry in a moment`, true);
}

function routedError(owner: NodeId, err: unknown): RoutedCallError {
  const failure = callFailure(err);
  if (failure.reason !== undefined) {
    return new RoutedCallError(failure.code as StatusCode, failure.reason, failure.message, failure.metadata.retryable === "true");
  }
  if (failure.code === grpc.status.UNAVAILABLE || failure.code === grpc.status.DEADLINE_EXCEEDED) {
    // No twinmesh reason: the owner did not answer (down, unreachable, timed out).
    return new RoutedCallError(
      StatusCode.UNAVAILABLE,
      "OWNER_UNAVAILABLE",
      `this twin's owner ${owner} did not answer (${failure.message}); retry in a moment (its partitions fail over to a replica)`,
      true,
    );
  }
  // Anything else (a transport limit, a bug on the owner) is passed on as it is, not to be retried blindly.
  const code = (Object.values(StatusCode) as number[]).includes(failure.code) ? (failure.code as StatusCode) : StatusCode.INTERNAL;
  return new RoutedCallError(code, "OWNER_CALL_FAILED", `${owner} answered ${grpc.status[failure.code] ?? failure.code}: ${failure.message}`, false);
}

function ms(t: Timestamp | undefined): number {
  return t === undefined ? 0 : timestampMs(t);
}

function viewOf(s: TwinSnapshot | undefined, kind: string, id: string, owner: NodeId): TwinView {
  if (s === undefined) throw new RoutedCallError(StatusCode.INTERNAL, "BAD_PEER_ANSWER", `${owner} answered GetTwin for ${kind}/${id} without a twin`, false);
  return {
    kind: s.kind,
    id: s.id,
    state: (s.state ?? {}) as JsonObject,
    version: Number(s.version),
    lastSeq: Number(s.lastSeq),
    lastEventTime: s.lastEventTime === undefined ? undefined : ms(s.lastEventTime),
    ownerNodeId: s.ownerNodeId,
  };
}

function pbFilter(f: DeadLetterFilter | undefined): Omit<PbDeadLetterFilter, "$typeName"> | undefined {
  if (f === undefined) return undefined;
  return { toKind: f.toKind ?? "", toId: f.toId ?? "", fromKind: f.fromKind ?? "", fromId: f.fromId ?? "", reason: f.reason ?? "" };
}

/**
 * A retry or delete of all matching dead letters runs as long as there are: it is bounded by the
 * caller's own deadline (its cancellation reaches the member), not by a routed call's.
 */
const BULK_DEADLINE_MS = 3_600_000;

function bulkOptions(selection: DeadLetterSelection, signal: AbortSignal | undefined): { deadlineMs?: number; signal?: AbortSignal } {
  return "all" in selection ? { deadlineMs: BULK_DEADLINE_MS, signal } : { signal };
}

function selectionRequest(selection: DeadLetterSelection): { ids: string[]; all: boolean; filter?: Omit<PbDeadLetterFilter, "$typeName"> } {
  return "ids" in selection ? { ids: [...selection.ids], all: false } : { ids: [], all: true, filter: pbFilter(selection.filter) };
}

function deadLetterOf(d: PbDeadLetter | undefined, owner: NodeId): DeadLetter {
  if (d === undefined) throw new RoutedCallError(StatusCode.INTERNAL, "BAD_PEER_ANSWER", `${owner} answered without a dead letter`, false);
  let partition: PartitionId;
  try {
    partition = parseDeadLetterId(d.id, "id").partition;
  } catch {
    throw new RoutedCallError(StatusCode.INTERNAL, "BAD_PEER_ANSWER", `${owner} answered a dead letter id ${JSON.stringify(d.id.slice(0, 40))}`, false);
  }
  return {
    id: d.id,
    partition,
    reason: d.reason,
    errorMessage: d.errorMessage,
    deadAtMs: ms(d.deadAt),
    fromKind: d.fromKind,
    fromId: d.fromId,
    toKind: d.toKind,
    toId: d.toId,
    message: (d.message ?? {}) as JsonObject,
    outboxSeq: Number(d.outboxSeq),
  };
}

function alertOf(a: PbAlert | undefined): Alert {
  if (a === undefined) throw new RoutedCallError(StatusCode.INTERNAL, "BAD_PEER_ANSWER", "the owner answered without an alert", false);
  return {
    id: a.id,
    kind: a.kind,
    twinId: a.twinId,
    code: a.code,
    severity: SEVERITY[a.severity] ?? "info",
    message: a.message,
    state: STATE[a.state] ?? AlertState.OPEN,
    raisedAt: ms(a.raisedAt),
    updatedAt: ms(a.updatedAt),
    count: Number(a.count),
  };
}
