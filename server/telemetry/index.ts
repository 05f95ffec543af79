export { NodeTracing, SERVICE_NAME, samplerFromEnv, type TracingOptions, tracingFromEnv } from "./node-tracing.js";
export { OtelTracing, traceparentOf } from "./otel-tracing.js";
