import type { MessageInitShape } from "@bufbuild/protobuf";
import { type EventResult, type EventSchema, EventStatus } from "../../proto/gen/twinmesh/v1/telemetry_pb.js";

/** An Event as the typed client takes it. */
export type EventInit = MessageInitShape<typeof EventSchema>;

/** Builds one event; `seq` is a number for readability (or a bigint beyond 2^53). */
export function ev(kind: string, sourceId: string, seq: number | bigint, channels: Record<string, number> = {}, extra: Partial<EventInit> = {}): EventInit {
  return { kind, sourceId, seq: BigInt(seq), channels, ...extra };
}

/** An EventResult in a form `assert.deepEqual` prints readably. */
export interface Outcome {
  readonly status: "ACCEPTED" | "DUPLICATE" | "REJECTED" | "UNSPECIFIED";
  readonly reason: string;
  readonly message: string;
  readonly retryable: boolean;
}

const NAMES: Record<EventStatus, Outcome["status"]> = {
  [EventStatus.UNSPECIFIED]: "UNSPECIFIED",
  [EventStatus.ACCEPTED]: "ACCEPTED",
  [EventStatus.DUPLICATE]: "DUPLICATE",
  [EventStatus.REJECTED]: "REJECTED",
};

/** The results, readable. */
export function outcomes(results: readonly EventResult[]): Outcome[] {
  return results.map((r) => ({ status: NAMES[r.status], reason: r.reason, message: r.message, retryable: r.retryable }));
}

/** The expected outcome of an accepted event. */
export const ACCEPTED: Outcome = { status: "ACCEPTED", reason: "", message: "", retryable: false };
/** The expected outcome of a duplicate. */
export const DUPLICATE: Outcome = {
  status: "DUPLICATE",
  reason: "DUPLICATE",
  message: "this (source_id, seq) was already applied; it was not applied again",
  retryable: false,
};
/** The expected outcome of a rejection. */
export function rejected(reason: string, message: string, retryable = false): Outcome {
  return { status: "REJECTED", reason, message, retryable };
}
/** Just the statuses. */
export function statuses(results: readonly EventResult[]): Outcome["status"][] {
  return results.map((r) => NAMES[r.status]);
}

/** An outcome in one line: `ACCEPTED`, `DUPLICATE`, or the rejection with its reason, retryability and message. */
export function describeOutcome(o: Outcome): string {
  return o.status === "REJECTED" ? `REJECTED ${o.reason} (retryable: ${o.retryable}): ${o.message}` : o.status;
}
