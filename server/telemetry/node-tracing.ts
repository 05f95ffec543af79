import { context } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  type SpanProcessor,
  StackContextManager,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME } from "@opentelemetry/semantic-conventions";
import { ConfigError, type Logger, type Tracing } from "../../runtime/index.js";
import { OtelTracing } from "./otel-tracing.js";

/** The service name every twinmesh span carries (`service.name`). */
export const SERVICE_NAME = "twinmesh";

/** The samplers of the standard `OTEL_TRACES_SAMPLER` variable. */
const SAMPLERS = ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"] as const;
type SamplerName = (typeof SAMPLERS)[number];

/** How a node traces. Every field is optional; tracing is on when `exporter`/`spanProcessor` is given or an OTLP endpoint is set. */
export interface TracingOptions {
  /**
   * Where spans go instead of OTLP (tests and benches: an in-memory or dropping exporter, with
   * its own processor). @defaultValue a BatchSpanProcessor over OTLP/HTTP to
   * `OTEL_EXPORTER_OTLP_ENDPOINT`
   */
  readonly spanProcessor?: SpanProcessor;
  /**
   * Which root spans are kept. Spans with a parent follow its sampled flag unless the sampler
   * name says otherwise. @defaultValue from `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, else `parentbased_always_on`
   */
  readonly sampler?: Sampler;
}

/**
 * The tracing options the standard OpenTelemetry variables ask for, or undefined (tracing off)
 * when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is unset,
 * `OTEL_SDK_DISABLED` is `true` or `OTEL_TRACES_EXPORTER` is `none`.
 * @throws ConfigError (`BAD_OPTION`) for an unknown sampler or a ratio outside 0..1.
 */
export function tracingFromEnv(env: NodeJS.ProcessEnv = process.env): TracingOptions | undefined {
  const endpoint = env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT;
  if (endpoint === undefined || endpoint === "" || env.OTEL_SDK_DISABLED === "true" || env.OTEL_TRACES_EXPORTER === "none") return undefined;
  const delay = Number(env.OTEL_BSP_SCHEDULE_DELAY ?? 5000);
  return {
    sampler: samplerFromEnv(env),
    // The exporter reads the endpoint, headers and timeout from the same variables itself.
    spanProcessor: new BatchSpanProcessor({ exporter: new OTLPTraceExporter(), scheduledDelayMillis: Number.isFinite(delay) && delay >= 0 ? delay : 5000 }),
  };
}

/** The sampler `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` name (`parentbased_always_on` when unset). */
export function samplerFromEnv(env: NodeJS.ProcessEnv = process.env): Sampler {
  // The specification's values are lower case; environments are read case-insensitively.
  const name = (env.OTEL_TRACES_SAMPLER ?? "parentbased_always_on").trim().toLowerCase() as SamplerName;
  if (!SAMPLERS.includes(name)) {
    throw new ConfigError("BAD_OPTION", `OTEL_TRACES_SAMPLER is "${name}"; use one of ${SAMPLERS.join(", ")}`);
  }
  const arg = env.OTEL_TRACES_SAMPLER_ARG;
  const ratio = arg === undefined || arg === "" ? 1 : Number(arg);
  if (name.endsWith("traceidratio") && !(ratio >= 0 && ratio <= 1)) {
    throw new ConfigError("BAD_OPTION", `OTEL_TRACES_SAMPLER_ARG is "${arg}"; use a ratio from 0 to 1 (0.01 keeps 1 % of traces)`);
  }
  switch (name) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(ratio);
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
  }
}

/**
 * A node's OpenTelemetry tracing: the one place that builds the trace SDK (a tracer provider with
 * `service.name` = `twinmesh` and `service.instance.id` = the node id, its sampler and span
 * processor) and hands the runtime, the cluster and the services a {@link Tracing}.
 *
 * The global context manager is OpenTelemetry's StackContextManager (set once per process, unless
 * one is set already): a span is active for the synchronous part of the code it wraps, which is
 * where twinmesh reads it (admission, a forward's send, a traced turn). AsyncLocalStorage would
 * also follow awaits, but enabling it slows every promise of the process, traced or not: with it,
 * sampling 1 % cost a third of the node's throughput in the bench.
 *
 * @example
 * const tracing = NodeTracing.start("n1", tracingFromEnv(), log); // undefined when tracing is off
 * await TwinRuntime.open({ dataDir, twins, tracing: tracing?.tracing });
 * await tracing?.close(); // flushes the spans not yet exported
 */
export class NodeTracing {
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly provider: TracerProvider,
    /** The seam to give the runtime, the cluster and the services. */
    readonly tracing: Tracing,
  ) {}

  /** Starts tracing for node `nodeId` as `options` say; undefined when `options` is (tracing off). */
  static start(nodeId: string, options: TracingOptions | undefined, log: Logger): NodeTracing | undefined {
    if (options === undefined) return undefined;
    // A second node in the same process finds the manager set already: that one serves both.
    context.setGlobalContextManager(new StackContextManager().enable());
    const sampler = options.sampler ?? samplerFromEnv();
    const provider = new TracerProvider({
      resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: SERVICE_NAME, [ATTR_SERVICE_INSTANCE_ID]: nodeId }),
      sampler,
      spanProcessors: [options.spanProcessor ?? new BatchSpanProcessor({ exporter: new OTLPTraceExporter() })],
    });
    // Not registered as the global provider: a process may run several nodes, each with its own
    // resource; twinmesh's spans come from its own tracer.
    log.info({ sampler: sampler.toString() }, "tracing on");
    return new NodeTracing(provider, new OtelTracing(provider.getTracer(SERVICE_NAME)));
  }

  /** Exports the spans still buffered and stops. Idempotent. */
  close(): Promise<void> {
    this.closing ??= this.provider.shutdown();
    return this.closing;
  }

  /** Exports the spans still buffered (tests, before reading a collector). */
  flush(): Promise<void> {
    return this.provider.forceFlush();
  }
}
