/**
 * twinmesh: a runtime for real-time digital twins.
 *
 * Twin authors need {@link Twin}, {@link TwinContext} and {@link Telemetry}. To host a node in
 * one's own process, {@link TwinmeshNode.start} opens a data directory and serves it over gRPC,
 * or {@link TwinRuntime.open} opens a runtime to drive directly (no network) and
 * {@link TwinmeshNode.serve} attaches the gRPC server to it. The gRPC client is `twinmesh/client`;
 * the test kit is `twinmesh/testing`.
 * @packageDocumentation
 */
export {
  type Alert,
  AlertNotFoundError,
  AlertSeverity,
  AlertState,
  type AnyTwin,
  ConfigError,
  CursorExpiredError,
  DataDirectoryError,
  Durability,
  HandlerFailedError,
  type HostOptions,
  type IngestEvent,
  InvalidArgumentError,
  isTwinmeshError,
  type JsonObject,
  type JsonPrimitive,
  type JsonShape,
  type JsonValue,
  type MessageOf,
  OverloadedError,
  Placement,
  QueryLimitError,
  type RaiseOptions,
  type StateOf,
  type Telemetry,
  type TurnOutcome,
  Twin,
  type TwinClass,
  type TwinContext,
  type TwinLogger,
  TwinmeshError,
  TwinNotFoundError,
  TwinRuntime,
  type TwinRuntimeOptions,
  type TwinView,
  UnavailableError,
  UnknownKindError,
} from "./runtime/index.js";
export { DEFAULT_PORT, type NodeOptions, type ServeOptions, type TracingOptions, TwinmeshNode, tracingFromEnv } from "./server/index.js";
