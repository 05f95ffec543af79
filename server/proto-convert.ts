import { fromJson, type JsonValue as PbJsonValue } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromMs, ValueSchema } from "@bufbuild/protobuf/wkt";
import type { ConsistencyLevel } from "../cluster/index.js";
import { type Alert as PbAlert, AlertSeverity as PbSeverity, AlertState as PbState } from "../proto/gen/twinmesh/v1/alert_pb.js";
import { Consistency, type Event, type EventResult, EventStatus } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import type { AggregateGroup as PbGroup, TwinSnapshot } from "../proto/gen/twinmesh/v1/twin_pb.js";
import type { AggregateGroup, Alert, IngestEvent, TurnOutcome, TwinView } from "../runtime/index.js";
import { hasControlCharacter, InvalidArgumentError, quoteInput } from "../runtime/index.js";

/**
 * Conversions between the protobuf messages of twinmesh.v1 and the runtime's types. Results
 * are built as plain protobuf-es v2 message objects (with `$typeName`), which is what
 * `create()` returns, without its per-field work on the hot path.
 */

/** An event as the runtime takes it. The runtime validates every field. */
export function toIngestEvent(e: Event): IngestEvent {
  return {
    kind: e.kind,
    sourceId: e.sourceId,
    seq: e.seq,
    timeMs: e.time === undefined ? undefined : timestampMs(e.time),
    channels: e.channels,
    attributes: e.attributes,
  };
}

/**
 * Epoch ms of a Timestamp; NaN when its nanos lie outside 0..999,999,999, which makes it no
 * Timestamp at all. Seconds are not checked here: the runtime refuses a time outside
 * 0001..9999 (RFC 3339, the Timestamp's own range) with a message that says so.
 */
export function timestampMs(t: Timestamp): number {
  if (!Number.isInteger(t.nanos) || t.nanos < 0 || t.nanos > 999_999_999) return Number.NaN;
  return Number(t.seconds) * 1000 + Math.floor(t.nanos / 1_000_000);
}

const ACCEPTED: EventResult = { $typeName: "twinmesh.v1.EventResult", status: EventStatus.ACCEPTED, reason: "", message: "", retryable: false };
const DUPLICATE: EventResult = {
  $typeName: "twinmesh.v1.EventResult",
  status: EventStatus.DUPLICATE,
  reason: "DUPLICATE",
  message: "this (source_id, seq) was already applied; it was not applied again",
  retryable: false,
};

/** The EventResult of a runtime outcome (shared objects for the common outcomes). */
export function toEventResult(o: TurnOutcome): EventResult {
  if (o.status === "accepted") return ACCEPTED;
  if (o.status === "duplicate") return DUPLICATE;
  return {
    $typeName: "twinmesh.v1.EventResult",
    status: EventStatus.REJECTED,
    reason: o.reason ?? "REJECTED",
    message: o.message ?? "",
    retryable: o.retryable ?? false,
  };
}

/** A rejected result, for problems found before the runtime sees the event. */
export function rejectedResult(reason: string, message: string, retryable = false): EventResult {
  return { $typeName: "twinmesh.v1.EventResult", status: EventStatus.REJECTED, reason, message, retryable };
}

/** A twin's snapshot message. */
export function toSnapshot(v: TwinView): TwinSnapshot {
  return {
    $typeName: "twinmesh.v1.TwinSnapshot",
    kind: v.kind,
    id: v.id,
    state: v.state,
    version: BigInt(v.version),
    lastSeq: BigInt(v.lastSeq),
    lastEventTime: v.lastEventTime === undefined ? undefined : timestampFromMs(v.lastEventTime),
    ownerNodeId: v.ownerNodeId,
  };
}

const SEVERITY: Record<Alert["severity"], PbSeverity> = { info: PbSeverity.INFO, warning: PbSeverity.WARNING, critical: PbSeverity.CRITICAL };
const STATE: Record<Alert["state"], PbState> = { OPEN: PbState.OPEN, ACKNOWLEDGED: PbState.ACKNOWLEDGED, RESOLVED: PbState.RESOLVED };

/** An alert message. */
export function toPbAlert(a: Alert): PbAlert {
  return {
    $typeName: "twinmesh.v1.Alert",
    id: a.id,
    kind: a.kind,
    twinId: a.twinId,
    code: a.code,
    severity: SEVERITY[a.severity],
    message: a.message,
    state: STATE[a.state],
    raisedAt: timestampFromMs(a.raisedAt),
    updatedAt: timestampFromMs(a.updatedAt),
    count: BigInt(a.count),
  };
}

/** An aggregate group message. */
export function toPbGroup(g: AggregateGroup): PbGroup {
  return {
    $typeName: "twinmesh.v1.AggregateGroup",
    key: fromJson(ValueSchema, (g.key ?? null) as PbJsonValue),
    count: BigInt(g.count),
    sum: g.sum,
    avg: g.avg,
    min: g.min,
    max: g.max,
  };
}

/** Checks that a required string field is present. @throws InvalidArgumentError naming the field */
export function requireField(value: string, field: string, example: string): string {
  if (value.length === 0) {
    throw new InvalidArgumentError("BAD_FIELD", `${field} is required; for example ${example}`, [{ field, description: "required" }]);
  }
  if (value.length > 256) {
    throw new InvalidArgumentError("BAD_FIELD", `${field} is ${value.length} characters; the limit is 256`, [{ field, description: "at most 256 characters" }]);
  }
  // As for an event's source_id: control characters (NUL above all) would break key encoding.
  if (hasControlCharacter(value)) {
    throw new InvalidArgumentError("BAD_FIELD", `${field} ${quoteInput(value)} contains control characters; use printable characters`, [
      { field, description: "no control characters" },
    ]);
  }
  return value;
}

const LEVELS: Readonly<Record<number, ConsistencyLevel>> = {
  [Consistency.UNSPECIFIED]: "default",
  [Consistency.LOCAL]: "local",
  [Consistency.QUORUM]: "quorum",
  [Consistency.ALL]: "all",
};

/** The level of a request's `consistency`, or undefined for a value the enum does not have. */
export function consistencyLevel(value: Consistency): ConsistencyLevel | undefined {
  return LEVELS[value];
}

/** Why a request's `consistency` is not a level. */
export function badConsistencyMessage(value: number): string {
  return `consistency ${value} is not a level; use CONSISTENCY_LOCAL (1), CONSISTENCY_QUORUM (2), CONSISTENCY_ALL (3), or leave it unset for the node's default`;
}
