/**
 * The runtime: one node, no network. Other folders import only this file.
 */
export { Twin, type TwinContext, type TwinClass, type AnyTwin, type StateOf, type MessageOf, type RaiseOptions, type TwinLogger, AlertSeverity, Placement } from "./twin/twin.js";
export type { Telemetry } from "./twin/telemetry.js";
export type { JsonValue, JsonObject, JsonPrimitive, JsonShape } from "./util/json.js";
export { type Clock, SYSTEM_CLOCK, VirtualClock } from "./clock.js";
export { type Alert, type AlertChange, AlertState } from "./alerts/alert.js";
export type { AlertEvent, AlertListing, AlertPage } from "./alerts/alert-queries.js";
export {
  TwinmeshError,
  isTwinmeshError,
  StatusCode,
  type FieldViolation,
  InvalidArgumentError,
  UnknownKindError,
  TwinNotFoundError,
  AlertNotFoundError,
  OverloadedError,
  UnavailableError,
  HandlerFailedError,
  CursorExpiredError,
  DataDirectoryError,
  ConfigError,
} from "./errors.js";
export { TwinRuntime, type TwinRuntimeOptions } from "./twin-runtime.js";
export type { HostOptions } from "./host/host-options.js";
export type { TurnOutcome } from "./host/twin-message.js";
export type { IngestEvent } from "./host/ingest-event.js";
export type { TwinView } from "./host/twin-host.js";
export type { TwinQuery, QuerySummary, TwinAggregation, AggregateGroup, AggregateResult } from "./query/twin-query.js";
export { Durability } from "./store/rocks-store.js";
export { createLogger, silentLogger, type Logger, type LoggerOptions } from "./log.js";
export { KIND_PATTERN } from "./host/twin-registry.js";
/** @internal For server/ and cluster/ only; not covered by semver. */
export { TwinHost, type HostObserver } from "./host/twin-host.js";
/** @internal */
export { CelFilter, TWIN_FILTER_VARIABLES } from "./query/cel-filter.js";
