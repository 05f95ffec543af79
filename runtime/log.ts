import { context, trace } from "@opentelemetry/api";
import { type DestinationStream, type Logger, pino } from "pino";
import PinoPretty from "pino-pretty";

export type { Logger } from "pino";

/** How log lines look: one JSON object a line (for log shippers), or coloured text for a person. */
export const LogFormat = { json: "json", pretty: "pretty" } as const;
/** One of {@link LogFormat}'s values. */
export type LogFormat = (typeof LogFormat)[keyof typeof LogFormat];

/** The pino levels, and "silent". */
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

/** Options for {@link createLogger}. Every field is optional. */
export interface LoggerOptions {
  /** pino level, or "silent". @defaultValue `TWINMESH_LOG_LEVEL` or "info" */
  readonly level?: string;
  /** Where lines go. @defaultValue stdout (fd 1) */
  readonly destination?: number | string;
  /**
   * JSON lines, or pretty text. @defaultValue `TWINMESH_LOG_FORMAT`, else "pretty" when the
   * destination is stdout and stdout is a terminal, else "json"
   */
  readonly format?: LogFormat;
}

/**
 * The ids of the span active where a line is logged (`trace_id`, `span_id`, as OpenTelemetry's
 * log data model names them), so a log line and its trace find each other. With tracing off no
 * context manager is set and the active context is always the empty root: one lookup, no ids.
 * A new object each time: pino merges the line's own fields into it.
 */
export function traceFields(): Record<string, string> {
  const span = trace.getSpan(context.active());
  if (span === undefined) return {};
  const { traceId, spanId } = span.spanContext();
  return { trace_id: traceId, span_id: spanId };
}

/**
 * The root structured logger (pino). Each component takes one child with a `component` field
 * (`server`, `grpc`, `host`, `host.outbox`, `store`, `query`, `cluster`, `cluster.replica`, …);
 * twins get `log.child({ kind, twin })` lazily. Lines logged under an active span carry its
 * `trace_id` and `span_id`.
 *
 * @example
 * const log = createLogger({ level: "debug", format: "json" });
 * log.child({ component: "host" }).info({ twins: 12 }, "host started");
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.TWINMESH_LOG_LEVEL ?? "info";
  const dest = options.destination ?? 1;
  const format = options.format ?? envFormat() ?? (dest === 1 && process.stdout.isTTY ? LogFormat.pretty : LogFormat.json);
  const stream: DestinationStream =
    format === LogFormat.pretty
      ? PinoPretty({ destination: dest, colorize: dest === 1 && process.stdout.isTTY, sync: false, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" })
      : pino.destination({ dest, sync: false });
  return pino({ level, base: { pid: process.pid }, mixin: traceFields }, stream);
}

function envFormat(): LogFormat | undefined {
  const value = process.env.TWINMESH_LOG_FORMAT;
  return value === LogFormat.json || value === LogFormat.pretty ? value : undefined;
}

/** A logger that writes nothing (tests, the test kit). Honours TWINMESH_LOG_LEVEL when set. */
export function silentLogger(): Logger {
  const level = process.env.TWINMESH_LOG_LEVEL;
  return level ? pino({ level, mixin: traceFields }, pino.destination({ dest: 2, sync: true })) : pino({ level: "silent" });
}
