/**
 * The runtime's seam for distributed tracing. The runtime and the cluster make spans only
 * through this interface; the server implements it with the OpenTelemetry SDK
 * (server/telemetry/). With tracing off there is no implementation at all: every call site
 * checks for `undefined` first, so the hot path makes no span object, enters no context and
 * reads no header.
 */

/** The spans twinmesh makes, by name (the README lists their attributes). */
export const SpanName = {
  /** A Publish request or one PublishStream batch, on the node that received it. */
  publish: "twinmesh.publish",
  /** One twin turn (an event, message, timer or operator action) of a traced batch. */
  turn: "twinmesh.turn",
  /** One group commit (one RocksDB write batch) holding at least one traced turn. */
  commit: "twinmesh.commit",
  /** A batch forwarded to its owner, on the sending node. */
  forward: "twinmesh.forward",
  /** A forwarded batch applied on the owner. */
  forwardApply: "twinmesh.forward.apply",
  /** A committed group shipped to its replicas, on the owner. */
  replicate: "twinmesh.replicate",
  /** A shipment applied on a replica. */
  replicaApply: "twinmesh.replica.apply",
} as const;
/** One of {@link SpanName}'s values. */
export type SpanName = (typeof SpanName)[keyof typeof SpanName];

/** How a span relates to its peers: a call it makes (client), a call it serves (server), or neither. */
export type SpanKindName = "internal" | "client" | "server";

/** Span attribute values. */
export type TraceAttributes = Readonly<Record<string, string | number | boolean>>;

/**
 * A sampled trace context: the parent of the next span, or a link. Opaque: only the
 * {@link Tracing} that made it reads it.
 */
export interface TraceRef {
  readonly __traceRef: unique symbol;
}

/** A span in progress. */
export interface TraceSpan {
  /** This span as a parent or a link. */
  readonly ref: TraceRef;
  /** Marks the span failed (status ERROR, the exception recorded). */
  fail(err: unknown): void;
  /** Sets attributes learnt after the start. */
  set(attributes: TraceAttributes): void;
  /** Ends the span; later calls do nothing. */
  end(): void;
}

/** What a {@link Tracing.start} call may add. */
export interface StartOptions {
  readonly kind?: SpanKindName;
  readonly attributes?: TraceAttributes;
  /** Other contexts this span serves (a commit serves many batches). */
  readonly links?: readonly TraceRef[];
}

/**
 * Makes spans. Every span is a child of a {@link TraceRef} that was sampled: an unsampled batch
 * leaves no ref behind, so its turns, commits and hops make no span.
 */
export interface Tracing {
  /** The context active now (set by {@link run}) when it is sampled; undefined otherwise. */
  active(): TraceRef | undefined;
  /** Starts a span under `parent`. */
  start(name: SpanName, parent: TraceRef, options?: StartOptions): TraceSpan;
  /**
   * Starts a span under a W3C `traceparent` received from another process, or as a root when
   * `traceparent` is undefined or unreadable; the sampler decides. Undefined when not sampled.
   */
  startRemote(name: SpanName, traceparent: string | undefined, options?: StartOptions): TraceSpan | undefined;
  /** The W3C `traceparent` value of `ref`, to send to the next hop. */
  traceparent(ref: TraceRef): string;
  /** Runs `fn` with `ref` as the active context: what {@link active} returns during its synchronous part (read it before the first await). */
  run<T>(ref: TraceRef, fn: () => T): T;
}
