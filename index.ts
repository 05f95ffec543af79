/**
 * twinmesh: a runtime for real-time digital twins.
 *
 * Twin authors need {@link Twin}, {@link TwinContext} and {@link Telemetry}; embedders start a
 * node with {@link TwinRuntime}. The gRPC client is `twinmesh/client`; the test kit is
 * `twinmesh/testing`.
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
