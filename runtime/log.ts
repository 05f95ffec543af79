import { type Logger, pino } from "pino";

export type { Logger } from "pino";

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  /** pino level, or "silent". @defaultValue `TWINMESH_LOG_LEVEL` or "info" */
  readonly level?: string;
  /** Where JSON lines go. @defaultValue stdout (fd 1) */
  readonly destination?: number | string;
}

/**
 * The root structured logger (pino, JSON lines). Components take `log.child({ component })`;
 * twins get `log.child({ kind, twin })` lazily.
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? process.env.TWINMESH_LOG_LEVEL ?? "info";
  return pino({ level, base: { pid: process.pid } }, pino.destination({ dest: options.destination ?? 1, sync: false }));
}

/** A logger that writes nothing (tests, the test kit). Honours TWINMESH_LOG_LEVEL when set. */
export function silentLogger(): Logger {
  const level = process.env.TWINMESH_LOG_LEVEL;
  return level ? pino({ level }, pino.destination({ dest: 2, sync: true })) : pino({ level: "silent" });
}
