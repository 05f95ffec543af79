/**
 * server/: the gRPC adapters of the public twinmesh.v1 services over the runtime.
 */

export { DEFAULT_MAX_MESSAGE_BYTES } from "./grpc/grpc-adapter.js";
export { HeapBudget } from "./heap-budget.js";
export { DEFAULT_METRICS_PORT, type MetricsOptions } from "./metrics/index.js";
export { SERVICE_NAME, type TracingOptions, tracingFromEnv } from "./telemetry/index.js";
export { DEFAULT_PORT, type NodeOptions, type ServeOptions, TwinmeshNode } from "./twinmesh-server.js";
