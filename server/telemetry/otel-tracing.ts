import {
  type Context,
  context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  TraceFlags,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import type { SpanKindName, SpanName, StartOptions, TraceAttributes, TraceRef, TraceSpan, Tracing } from "../../runtime/index.js";

const KINDS: Readonly<Record<SpanKindName, SpanKind>> = { internal: SpanKind.INTERNAL, client: SpanKind.CLIENT, server: SpanKind.SERVER };

/** A carrier of one header, `traceparent`; `tracestate` is not carried (twinmesh sets none). */
interface Carrier {
  traceparent?: string;
}
const getter: TextMapGetter<Carrier> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => (key === "traceparent" ? carrier.traceparent : undefined),
};
const setter: TextMapSetter<Carrier> = {
  set: (carrier, key, value) => {
    if (key === "traceparent") carrier.traceparent = value;
  },
};

// A TraceRef is an OpenTelemetry Context holding a sampled span; only this file makes or reads one.
function toRef(ctx: Context): TraceRef {
  return ctx as unknown as TraceRef;
}
function fromRef(ref: TraceRef): Context {
  return ref as unknown as Context;
}

function sampled(span: Span | undefined): span is Span {
  return span !== undefined && (span.spanContext().traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED;
}

/**
 * {@link Tracing} over an OpenTelemetry tracer, with W3C trace context for the hops between
 * processes. The active context is OpenTelemetry's own (the global context manager), so a span
 * twinmesh starts is also the parent of spans a twin's own code starts, and log lines name it.
 */
export class OtelTracing implements Tracing {
  private readonly propagator = new W3CTraceContextPropagator();

  constructor(private readonly tracer: Tracer) {}

  active(): TraceRef | undefined {
    const ctx = context.active();
    return sampled(trace.getSpan(ctx)) ? toRef(ctx) : undefined;
  }

  start(name: SpanName, parent: TraceRef, options: StartOptions = {}): TraceSpan {
    return this.open(name, fromRef(parent), options);
  }

  startRemote(name: SpanName, traceparent: string | undefined, options: StartOptions = {}): TraceSpan | undefined {
    const parent = traceparent === undefined ? ROOT_CONTEXT : this.propagator.extract(ROOT_CONTEXT, { traceparent }, getter);
    const span = this.open(name, parent, options);
    if (sampled(span.span)) return span;
    span.end();
    return undefined;
  }

  traceparent(ref: TraceRef): string {
    const carrier: Carrier = {};
    this.propagator.inject(fromRef(ref), carrier, setter);
    return carrier.traceparent ?? "";
  }

  run<T>(ref: TraceRef, fn: () => T): T {
    return context.with(fromRef(ref), fn);
  }

  private open(name: SpanName, parent: Context, options: StartOptions): OtelSpan {
    const span = this.tracer.startSpan(
      name,
      {
        kind: KINDS[options.kind ?? "internal"],
        attributes: options.attributes,
        links: options.links?.map((link) => ({ context: (trace.getSpan(fromRef(link)) as Span).spanContext() })),
      },
      parent,
    );
    return new OtelSpan(span, trace.setSpan(parent, span));
  }
}

class OtelSpan implements TraceSpan {
  readonly ref: TraceRef;
  constructor(
    readonly span: Span,
    ctx: Context,
  ) {
    this.ref = toRef(ctx);
  }

  fail(err: unknown): void {
    if (err instanceof Error) this.span.recordException(err);
    this.span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
  }

  set(attributes: TraceAttributes): void {
    this.span.setAttributes(attributes);
  }

  end(): void {
    this.span.end();
  }
}

/** The W3C `traceparent` header of a call's metadata, when there is one. */
export function traceparentOf(metadata: { get(key: string): unknown[] }): string | undefined {
  const value = metadata.get("traceparent")[0];
  return typeof value === "string" ? value : undefined;
}
