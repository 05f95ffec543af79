export { GrpcCallCounts } from "./grpc-call-counts.js";
export { MetricsEndpoint } from "./metrics-endpoint.js";
export { DEFAULT_METRICS_PORT, type MetricSources, type MetricsOptions, NodeMetrics } from "./node-metrics.js";
