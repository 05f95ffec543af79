/**
 * twinmesh's errors. Every error the runtime raises on purpose is a {@link TwinmeshError}: it
 * carries a gRPC status `code` (numeric, so `runtime/` does not import grpc-js), a stable
 * `reason`, whether a retry can succeed, and a message that says what failed, for which input,
 * why, and what to do next. `server/` maps them to gRPC statuses in one place.
 */

import { quoteInput } from "./util/text.js";

/** gRPC status codes used by twinmesh errors (the numeric values of the gRPC spec). */
export const StatusCode = {
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  OUT_OF_RANGE: 11,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DEADLINE_EXCEEDED: 4,
} as const;
/** One of the {@link StatusCode} values. */
export type StatusCode = (typeof StatusCode)[keyof typeof StatusCode];

const BRAND = Symbol.for("twinmesh.error");

/** A field of a request that failed validation, reported as a `google.rpc.BadRequest` violation. */
export interface FieldViolation {
  /** The field path in the request, e.g. `events[3].channels.bpm`. */
  readonly field: string;
  /** What is wrong with it and what a valid value looks like. */
  readonly description: string;
}

/**
 * The base of every error twinmesh raises on purpose. Check with {@link isTwinmeshError}, not
 * `instanceof`, because two copies of the library may be loaded.
 */
export abstract class TwinmeshError extends Error {
  /** The gRPC status this error maps to at the boundary. */
  abstract readonly code: StatusCode;
  /** A stable UPPER_SNAKE code, e.g. `UNKNOWN_KIND`. */
  abstract readonly reason: string;
  /** True when the same request may succeed later. */
  readonly retryable: boolean = false;
  /** Field violations for `INVALID_ARGUMENT` errors. */
  readonly violations: readonly FieldViolation[] = [];
  readonly [BRAND] = true;
}

/** True for any {@link TwinmeshError}, from whichever copy of the library raised it. */
export function isTwinmeshError(err: unknown): err is TwinmeshError {
  return typeof err === "object" && err !== null && (err as { [BRAND]?: boolean })[BRAND] === true;
}

/** Bad input: a retry with the same input cannot succeed. */
export class InvalidArgumentError extends TwinmeshError {
  override readonly name = "InvalidArgumentError";
  readonly code = StatusCode.INVALID_ARGUMENT;
  override readonly violations: readonly FieldViolation[];
  constructor(
    readonly reason: string,
    message: string,
    violations: readonly FieldViolation[] = [],
  ) {
    super(message);
    this.violations = violations;
  }
}

/** A single-twin request named a twin kind no loaded module defines. */
export class UnknownKindError extends TwinmeshError {
  override readonly name = "UnknownKindError";
  readonly code = StatusCode.FAILED_PRECONDITION;
  readonly reason = "UNKNOWN_KIND";
  constructor(
    readonly kind: string,
    readonly knownKinds: readonly string[],
  ) {
    super(
      `unknown twin kind ${quoteInput(kind)}; this node knows ${knownKinds.length === 0 ? "no kinds" : knownKinds.map((k) => `"${k}"`).join(", ")}; start it with --twins <module> exporting that kind`,
    );
  }
}

/** The twin never received anything, or was deleted. */
export class TwinNotFoundError extends TwinmeshError {
  override readonly name = "TwinNotFoundError";
  readonly code = StatusCode.NOT_FOUND;
  readonly reason = "TWIN_NOT_FOUND";
  constructor(
    readonly kind: string,
    readonly id: string,
  ) {
    super(`twin ${kind}/${id} has no state: it never received an event, or it was deleted`);
  }
}

/** An alert id that does not exist. */
export class AlertNotFoundError extends TwinmeshError {
  override readonly name = "AlertNotFoundError";
  readonly code = StatusCode.NOT_FOUND;
  readonly reason = "ALERT_NOT_FOUND";
  constructor(readonly alertId: string) {
    super(`alert "${alertId}" does not exist; list alerts to find its id`);
  }
}

/** A dead letter id that does not exist (it was retried, deleted or trimmed by retention). */
export class DeadLetterNotFoundError extends TwinmeshError {
  override readonly name = "DeadLetterNotFoundError";
  readonly code = StatusCode.NOT_FOUND;
  readonly reason = "DEAD_LETTER_NOT_FOUND";
  constructor(readonly deadLetterId: string) {
    super(`dead letter "${deadLetterId}" does not exist: it was retried, deleted or trimmed by retention; list dead letters to find an id`);
  }
}

/** The node sheds load: a bounded queue is full. Retry with backoff. */
export class OverloadedError extends TwinmeshError {
  override readonly name = "OverloadedError";
  readonly code = StatusCode.RESOURCE_EXHAUSTED;
  override readonly retryable = true;
  constructor(
    readonly reason: "MAILBOX_FULL" | "INGEST_QUEUE_FULL" | "RATE_LIMITED",
    message: string,
  ) {
    super(message);
  }
}

/** The node cannot take writes right now (disk full, shutting down). Retry, with the same seq. */
export class UnavailableError extends TwinmeshError {
  override readonly name = "UnavailableError";
  readonly code = StatusCode.UNAVAILABLE;
  override readonly retryable = true;
  constructor(
    readonly reason:
      | "NOT_SERVING"
      | "COMMIT_FAILED"
      | "SHUTTING_DOWN"
      | "LOAD_FAILED"
      | "NOT_OWNER"
      | "PARTITION_MOVING"
      | "OWNER_UNAVAILABLE"
      | "STALE_EPOCH"
      | "NOT_ENOUGH_REPLICAS"
      | "REPLICATION_TIMEOUT"
      | "REPLICATION_FAILED",
    message: string,
  ) {
    super(message);
  }
}

/** User twin code threw (or produced state that cannot be stored). */
export class HandlerFailedError extends TwinmeshError {
  override readonly name = "HandlerFailedError";
  readonly code = StatusCode.UNKNOWN;
  constructor(
    readonly reason: "HANDLER_FAILED" | "TURN_TIMEOUT" | "BAD_STATE" | "STATE_TOO_LARGE" | "MIGRATION_FAILED" | "TWIN_CORRUPT",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The twin kind has no handler for what was sent to it (a `SendToTwin` to a kind without
 * `onMessage`). The request is well formed; the kind cannot take it until its class gets the handler.
 */
export class NoHandlerError extends TwinmeshError {
  override readonly name = "NoHandlerError";
  readonly code = StatusCode.FAILED_PRECONDITION;
  constructor(
    readonly reason: "NO_MESSAGE_HANDLER" | "NO_TELEMETRY_HANDLER",
    readonly kind: string,
  ) {
    const handler = reason === "NO_MESSAGE_HANDLER" ? "onMessage" : "onTelemetry";
    super(`twin kind "${kind}" has no ${handler} handler; add ${handler} to its class, or send to a kind that has one`);
  }
}

/** A cursor older than the retained change log. */
export class CursorExpiredError extends TwinmeshError {
  override readonly name = "CursorExpiredError";
  readonly code = StatusCode.OUT_OF_RANGE;
  readonly reason = "CURSOR_EXPIRED";
  constructor(message: string) {
    super(message);
  }
}

/** The data directory cannot be used (foreign, corrupt, locked, newer format). */
export class DataDirectoryError extends TwinmeshError {
  override readonly name = "DataDirectoryError";
  readonly code = StatusCode.FAILED_PRECONDITION;
  constructor(
    readonly reason: "DATA_DIR_FOREIGN" | "DATA_DIR_CORRUPT" | "DATA_DIR_LOCKED" | "DATA_DIR_FORMAT" | "DATA_DIR_UNREADABLE" | "DATA_DIR_PARTITIONS",
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A twin class or node option that cannot be used. */
export class ConfigError extends TwinmeshError {
  override readonly name = "ConfigError";
  readonly code = StatusCode.FAILED_PRECONDITION;
  constructor(
    readonly reason: "BAD_TWIN_CLASS" | "BAD_OPTION" | "DUPLICATE_KIND" | "BAD_TWIN_MODULE" | "LISTEN_FAILED",
    message: string,
  ) {
    super(message);
  }
}

/**
 * A request for a twin whose tombstone keeps it out: an idempotency key used before the twin
 * was deleted with `keepTombstone`. (Late events get a `REJECTED` result with this reason.)
 */
export class TwinDeletedError extends TwinmeshError {
  override readonly name = "TwinDeletedError";
  readonly code = StatusCode.FAILED_PRECONDITION;
  readonly reason = "TWIN_DELETED";
  constructor(message: string) {
    super(message);
  }
}

/**
 * A twinmesh bug that was contained: the runtime logged it once and recovered (for example a
 * turn whose bookkeeping threw; its twin was reloaded). Not retryable: the same input may meet
 * the same bug.
 */
export class InternalError extends TwinmeshError {
  override readonly name = "InternalError";
  readonly code = StatusCode.INTERNAL;
  readonly reason = "INTERNAL";
  constructor(message: string) {
    super(message);
  }
}

/**
 * A query asked more of the node than a configured limit allows: its filter's evaluation cost on
 * one input, the memory of the worker evaluating it, or a place in the bounded queue of filter
 * work. The message names the limit and the option that changes it.
 */
export class QueryLimitError extends TwinmeshError {
  override readonly name = "QueryLimitError";
  readonly code = StatusCode.RESOURCE_EXHAUSTED;
  override readonly retryable: boolean;
  constructor(
    readonly reason: "FILTER_COST_EXCEEDED" | "FILTER_MEMORY_EXCEEDED" | "QUERY_QUEUE_FULL",
    /** The option that sets the limit, e.g. `maxFilterCost`. */
    readonly limit: string,
    message: string,
  ) {
    super(message);
    // Only a full queue clears by itself; the same filter costs the same next time.
    this.retryable = reason === "QUERY_QUEUE_FULL";
  }
}
