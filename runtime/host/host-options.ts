import { ConfigError } from "../errors.js";

/**
 * Limits and tuning of one node's twin host. Every field is optional; see
 * {@link resolveHostOptions} for the defaults.
 */
export interface HostOptions {
  /** Most twins kept in memory; idle ones beyond it are passivated. @defaultValue 100_000 */
  readonly maxActive?: number;
  /** A twin idle this long leaves memory. @defaultValue 600_000 */
  readonly idleTimeoutMs?: number;
  /** Most messages queued for one twin; more are rejected `MAILBOX_FULL`. @defaultValue 1_000 */
  readonly mailboxDepth?: number;
  /** Most telemetry events in flight on the node; more are rejected `INGEST_QUEUE_FULL`. @defaultValue 200_000 */
  readonly maxInflightEvents?: number;
  /** A turn that runs longer is abandoned and rejected `TURN_TIMEOUT`. @defaultValue 5_000 */
  readonly turnTimeoutMs?: number;
  /** Largest serialised state of one twin. @defaultValue 65_536 */
  readonly maxStateBytes?: number;
  /** Largest message between twins (and via SendToTwin). @defaultValue 65_536 */
  readonly maxMessageBytes?: number;
  /** How many seqs below the high-water mark are remembered for late or retried events. @defaultValue 1_024 */
  readonly dedupeWindow?: number;
  /** A commit group closes at this many events (one write is in flight at a time). @defaultValue 5_000 */
  readonly maxGroupEvents?: number;
  /** Event times further in the future than this are rejected. @defaultValue 300_000 */
  readonly maxClockSkewMs?: number;
  /** Alert changes kept for watch cursors, at least, over the partitions this node owns (see `TurnEffects`). @defaultValue 100_000 */
  readonly alertLogRetention?: number;
  /** Timers fired concurrently. @defaultValue 256 */
  readonly maxConcurrentTimers?: number;
  /** How often due timers are looked for. @defaultValue 250 */
  readonly timerPollMs?: number;
  /** Most channels in one event. @defaultValue 256 */
  readonly maxChannels?: number;
  /** Largest serialised attributes of one event. @defaultValue 16_384 */
  readonly maxAttributesBytes?: number;
  /** Events per second one twin accepts (0 = unlimited). @defaultValue 0 */
  readonly maxEventsPerTwinPerSecond?: number;
  /** Dead letters older than this are trimmed. @defaultValue 604_800_000 (7 days) */
  readonly deadLetterRetentionMs?: number;
  /** Most dead letters kept; beyond it the oldest are trimmed. @defaultValue 100_000 */
  readonly maxDeadLetters?: number;
  /** Resolved alerts are trimmed this long after they resolved (open and acknowledged alerts are kept). @defaultValue 604_800_000 (7 days) */
  readonly resolvedAlertRetentionMs?: number;
  /** How often the dead letter and resolved alert retentions run at most apart (a shorter retention runs twice per its period; see {@link retentionSweepMs}). @defaultValue 60_000 */
  readonly retentionSweepMs?: number;
}

/** {@link HostOptions} with every default applied. */
export type ResolvedHostOptions = { readonly [K in keyof HostOptions]-?: number };

const DEFAULTS: ResolvedHostOptions = {
  maxActive: 100_000,
  idleTimeoutMs: 600_000,
  mailboxDepth: 1_000,
  maxInflightEvents: 200_000,
  turnTimeoutMs: 5_000,
  maxStateBytes: 65_536,
  maxMessageBytes: 65_536,
  dedupeWindow: 1_024,
  maxGroupEvents: 5_000,
  maxClockSkewMs: 300_000,
  alertLogRetention: 100_000,
  maxConcurrentTimers: 256,
  timerPollMs: 250,
  maxChannels: 256,
  maxAttributesBytes: 16_384,
  maxEventsPerTwinPerSecond: 0,
  deadLetterRetentionMs: 7 * 24 * 3_600_000,
  maxDeadLetters: 100_000,
  resolvedAlertRetentionMs: 7 * 24 * 3_600_000,
  retentionSweepMs: 60_000,
};

/**
 * Applies defaults and checks every limit is a whole number in range.
 * @throws ConfigError naming the bad option.
 */
export function resolveHostOptions(options: HostOptions = {}): ResolvedHostOptions {
  const resolved: Record<string, number> = { ...DEFAULTS };
  for (const [name, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (!(name in DEFAULTS)) throw new ConfigError("BAD_OPTION", `unknown host option "${name}"`);
    const min = name === "maxEventsPerTwinPerSecond" ? 0 : 1;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
      throw new ConfigError("BAD_OPTION", `host option ${name} is ${JSON.stringify(value)}; use a whole number >= ${min}`);
    }
    resolved[name] = value;
  }
  return resolved as ResolvedHostOptions;
}

/** Shortest interval between retention runs. */
const MIN_RETENTION_SWEEP_MS = 10;

/**
 * How often a retention of `retentionMs` runs: every `retentionSweepMs`, or twice per retention
 * period when that is shorter, so nothing outlives its retention by more than half of it.
 */
export function retentionSweepMs(options: ResolvedHostOptions, retentionMs: number): number {
  return Math.max(MIN_RETENTION_SWEEP_MS, Math.min(options.retentionSweepMs, Math.floor(retentionMs / 2)));
}
