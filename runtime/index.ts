/**
 * The runtime: one node, no network. Other folders import only this file.
 */

export { type Alert, type AlertChange, AlertState } from "./alerts/alert.js";
export type { AlertEvent, AlertListing, AlertPage } from "./alerts/alert-queries.js";
export { type Clock, SYSTEM_CLOCK, VirtualClock } from "./clock.js";
export type { DeadLetter, DeadLetterFilter, DeadLetterRetry, DeadLetterSelection } from "./deadletters/dead-letter.js";
export type { DeadLetterListing, DeadLetterPage } from "./deadletters/dead-letter-store.js";
/** @internal Dead letter ids, page sizes and listing tokens, for the cluster's routing and merging; not covered by semver. */
export {
  DEFAULT_DEAD_LETTER_PAGE,
  deadLetterListingIdentity,
  isLetterPosition,
  MAX_DEAD_LETTER_IDS,
  MAX_DEAD_LETTER_PAGE,
  parseDeadLetterId,
} from "./deadletters/dead-letter-store.js";
export {
  AlertNotFoundError,
  ConfigError,
  CursorExpiredError,
  DataDirectoryError,
  DeadLetterNotFoundError,
  type FieldViolation,
  HandlerFailedError,
  InternalError,
  InvalidArgumentError,
  isTwinmeshError,
  NoHandlerError,
  OverloadedError,
  QueryLimitError,
  StatusCode,
  TwinDeletedError,
  TwinmeshError,
  TwinNotFoundError,
  UnavailableError,
  UnknownKindError,
} from "./errors.js";
/** @internal The cluster's seams into the host, for cluster/ only; not covered by semver. */
export type { OwnershipGate, RemoteMessages } from "./host/admission.js";
/** @internal The cluster's seams into the host, for cluster/ only; not covered by semver. */
export type { HostObserver, ReplicationStage, StageFailure } from "./host/commit-completion.js";
export type { CommitGroup } from "./host/commit-group.js";
/** @internal What the host counts, read by server/metrics; not covered by semver. */
export { type KindEventCounts, OTHER_KIND } from "./host/event-counts.js";
/** @internal What the host counts, read by server/metrics; not covered by semver. */
export type { HostMetrics, HostTimings } from "./host/host-metrics.js";
export type { HostOptions } from "./host/host-options.js";
export { type IngestEvent, MAX_EVENT_TIME_MS, MIN_EVENT_TIME_MS } from "./host/ingest-event.js";
/** @internal The id a receiving twin dedupes an outbox message by; for cluster/ only. */
export { type OutboxEntry, outboxMessageId } from "./host/outbox-entry.js";
export type { TwinDeletion } from "./host/twin-deletion.js";
export type { TwinView } from "./host/twin-host.js";
/** @internal For server/ and cluster/ only; not covered by semver. */
export { type HostLoad, type PublishOptions, TwinHost } from "./host/twin-host.js";
export type { TurnOutcome } from "./host/twin-message.js";
export { KIND_PATTERN } from "./host/twin-registry.js";
export { createLogger, LOG_LEVELS, LogFormat, type Logger, type LoggerOptions, silentLogger, traceFields } from "./log.js";
/** @internal */
export {
  DEFAULT_PARTITIONS,
  MAX_PARTITIONS,
  type PartitionId,
  Partitioning,
  twinHash,
} from "./partition/partitioning.js";
/** @internal */
export { CelFilter, TWIN_FILTER_VARIABLES } from "./query/cel-filter.js";
/** @internal For cluster/ only: a merged query orders and resumes exactly as one node's does. */
export { compareTwins, type OrderBy, parseOrderBy, type TwinFields } from "./query/field-path.js";
/** @internal For cluster/ only. */
export { badToken, PageTokens, type PositionCheck, queryHash } from "./query/page-token.js";
export { DEFAULT_MAX_FILTER_COST, type QueryOptions } from "./query/query-options.js";
export type { AggregateGroup, AggregateResult, QuerySummary, TwinAggregation, TwinQuery } from "./query/twin-query.js";
export { Keys } from "./store/keys.js";
export { type BatchOp, Durability } from "./store/rocks-store.js";
/** @internal For server/ only: status and metrics read the counts kept only in the store. */
export type { AlertsBySeverity, StoredCounts, StoredCountsView } from "./stored-counts.js";
/** @internal The tracing seam the server implements with OpenTelemetry; for server/ and cluster/ only. */
export {
  type SpanKindName,
  SpanName,
  type StartOptions,
  type TraceAttributes,
  type TraceRef,
  type TraceSpan,
  type Tracing,
} from "./tracing.js";
export type { Telemetry } from "./twin/telemetry.js";
export {
  AlertSeverity,
  type AnyTwin,
  type MessageOf,
  Placement,
  type RaiseOptions,
  type StateOf,
  Twin,
  type TwinClass,
  type TwinContext,
  type TwinLogger,
} from "./twin/twin.js";
export { TwinRuntime, type TwinRuntimeOptions } from "./twin-runtime.js";
export type { JsonObject, JsonPrimitive, JsonShape, JsonValue } from "./util/json.js";
/** @internal */
export { MAX_JSON_INPUT_DEPTH } from "./util/json-input.js";
/** @internal */
export { capText, hasControlCharacter, MAX_ECHO_CHARS, quoteInput } from "./util/text.js";
