/**
 * twinmesh: a runtime for real-time digital twins.
 *
 * Twin authors need {@link Twin}, {@link TwinContext} and {@link Telemetry}; embedders start a
 * node with {@link TwinRuntime}. The gRPC client is `twinmesh/client`; the test kit is
 * `twinmesh/testing`.
 * @packageDocumentation
 */
export {
  Twin,
  type TwinContext,
  type TwinClass,
  type AnyTwin,
  type StateOf,
  type MessageOf,
  type RaiseOptions,
  type TwinLogger,
  AlertSeverity,
  Placement,
  type Telemetry,
  type JsonValue,
  type JsonObject,
  type JsonPrimitive,
  type JsonShape,
  type Alert,
  AlertState,
  TwinmeshError,
  isTwinmeshError,
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
  TwinRuntime,
  type TwinRuntimeOptions,
  type HostOptions,
  type TurnOutcome,
  type IngestEvent,
  type TwinView,
  Durability,
} from "./runtime/index.js";
