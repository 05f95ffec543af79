import type { TraceRef } from "../tracing.js";
import type { JsonObject } from "../util/json.js";
import type { TelemetryEvent } from "./ingest-event.js";
import type { OutboxEntry } from "./outbox-entry.js";
import type { TwinDeletion } from "./twin-deletion.js";

/** The outcome of one event or message, as it is acknowledged. */
export interface TurnOutcome {
  readonly status: "accepted" | "duplicate" | "rejected";
  /** UPPER_SNAKE reason for rejections. */
  readonly reason?: string;
  readonly message?: string;
  readonly retryable?: boolean;
  /** The twin's version after the turn (accepted and duplicate outcomes). */
  readonly version?: number;
  /** What a delete did (delete control messages only). */
  readonly deletion?: TwinDeletion;
}

/**
 * Where an outcome goes. One object per request (a whole batch), indexed per event, so the
 * hot path allocates no closure per event.
 */
export interface OutcomeSink {
  complete(index: number, outcome: TurnOutcome): void;
  /** Durable copies (the owner's included) the answer waits for; absent: 1. */
  readonly copies?: number;
  /** The sampled context the request's turns are traced under; absent: not traced. */
  readonly trace?: TraceRef | undefined;
}

interface Base {
  readonly sink: OutcomeSink;
  readonly index: number;
}

/** A telemetry event for one twin. */
export interface TelemetryMessage extends Base {
  readonly type: "telemetry";
  readonly telemetry: TelemetryEvent;
}
/** A message to `onMessage`, from another twin's outbox or from `SendToTwin`. */
export interface UserMessage extends Base {
  readonly type: "message";
  readonly message: JsonObject;
  /** Dedupe id: `o:<partition>:<outbox seq>` (see outboxMessageId) or `k:<idempotency key>`. */
  readonly messageId?: string;
  /**
   * The outbox entry this delivers (sender, target, message), absent for `SendToTwin`: deleted
   * when the delivery commits, moved to the dead letters when it fails.
   */
  readonly outbox?: OutboxEntry;
}
/** A due timer. */
export interface TimerMessage extends Base {
  readonly type: "timer";
  readonly name: string;
  readonly dueMs: number;
  readonly indexKey: string;
}
/** Operator actions, handled ahead of telemetry. */
export interface ControlMessage extends Base {
  readonly type: "control";
  readonly op: "ack-alert" | "resolve-alert" | "delete";
  readonly alertId?: string;
  /** For `delete`: keep a tombstone that rejects late retries (see `forgetTwin`). */
  readonly keepTombstone?: boolean;
}

/** Anything a twin's mailbox holds. */
export type TwinMessage = TelemetryMessage | UserMessage | TimerMessage | ControlMessage;
