import type { LatencySummary } from "./stats.js";

/**
 * The JSON messages between the orchestrator (`run.ts`) and the load generator
 * (`load-generator.ts`) over the child's IPC channel. Every request carries an `id`; the load
 * generator answers each with exactly one {@link LoadReply} of the same id.
 */

/** How seqs are made fresh in every run. */
export const SeqMode = {
  /** Base = the run's start time in ms × 1000; each source counts up from there. */
  TIME: "time",
  /** Each source continues from the last seq it sent (1, 2, 3, … across runs). */
  CONTIGUOUS: "contiguous",
} as const;
export type SeqMode = (typeof SeqMode)[keyof typeof SeqMode];

/** Which twins of which data set a command addresses. */
export interface TwinSelection {
  /** Data set name; its seq book is created on first use with `twins` twins. */
  readonly dataset: string;
  /** Twins in the data set (ids `t-0…0` to `t-<twins-1>`). */
  readonly twins: number;
  /** Twins `[from, to)`; default the whole set. */
  readonly from?: number;
  readonly to?: number;
  /** Exactly these twins (indexes), instead of a range: a ring-aware client's share of one node. */
  readonly list?: readonly number[];
  readonly seqs: SeqMode;
}

/** Common settings of a PublishStream run. */
export interface StreamRun extends TwinSelection {
  readonly address: string;
  /** The batches' `Consistency` (wire value); absent: the server's default. */
  readonly consistency?: number;
  readonly streams: number;
  readonly batchEvents: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly seed: number;
  /**
   * Reuse the pool of batches when it runs out (only for servers that do not deduplicate, such as
   * the bare gRPC ceiling: reused batches carry old seqs).
   */
  readonly recycle?: boolean;
}

/** Saturation: `streams` streams, each keeping `window` batches in flight. */
export interface SaturateRequest extends StreamRun {
  readonly cmd: "saturate";
  readonly window: number;
  /** Events/s the pool is sized for (the pool holds this × (warmup + duration), at most `maxPoolEvents`). */
  readonly expectedRate: number;
  readonly maxPoolEvents: number;
}

/**
 * Full-scan queries (AggregateTwins, no filter) run back to back during an open-loop run: the
 * first third of the measured window has no scan (the baseline), then scans start and repeat
 * until the window ends. Ingest keeps being offered until the last scan has finished.
 */
export interface ScanDuringIngest {
  readonly kind: string;
  /** AggregateTwins field, e.g. `state.ewma`. */
  readonly field: string;
  /** Stop starting scans this long after the first one started (a running scan is waited for). */
  readonly maxMs: number;
}

/** One kind of query load during an open-loop run: the same QueryTwins call, repeated. */
export interface QueryLoad {
  /** Names the phase in the results, e.g. `scan`. */
  readonly name: string;
  readonly kind: string;
  readonly filter: string;
  readonly limit: number;
  /** A query starts at most this often (0: back to back); one that takes longer is followed at once by the next. */
  readonly everyMs: number;
}

/**
 * Query loads during an open-loop run, one phase each, after a quiet phase: every phase lasts
 * `phaseMs` (a load's last query is waited for, while ingest goes on) and is followed by `gapMs`
 * that no phase counts, so a phase's backlog does not land in the next. The run's warm-up comes
 * first; ingest is offered until the last phase ends.
 */
export interface QueryPhases {
  readonly phaseMs: number;
  readonly gapMs: number;
  readonly loads: readonly QueryLoad[];
  /** The pool of batches covers this much overrun of the phases (slow queries), beyond their planned length. */
  readonly maxOverrunMs: number;
}

/** Open loop: batches sent at a fixed rate whatever the answers; latency from the scheduled time. */
export interface OpenLoopRequest extends StreamRun {
  readonly cmd: "openLoop";
  readonly rate: number;
  /** Stop scheduling when this many batches are unanswered (the node cannot keep up). */
  readonly maxOutstandingBatches: number;
  readonly drainTimeoutMs: number;
  readonly scan?: ScanDuringIngest;
  readonly phases?: QueryPhases;
  /** Also answer the measured batches' schedule and latency ({@link OpenLoopResult.batches}). */
  readonly keepBatches?: boolean;
}

/** Publishes one unsequenced event to each twin named (a small data set of another kind). */
export interface SeedRequest {
  readonly cmd: "seed";
  readonly address: string;
  readonly kind: string;
  readonly ids: readonly string[];
  /** Events per twin, each with channel `value` = its index. */
  readonly events: number;
}

/** Sends one event to each twin of the selection (setup), retrying rejected events. */
export interface LoadRequest extends TwinSelection {
  readonly cmd: "load";
  readonly address: string;
  readonly streams: number;
  readonly window: number;
  readonly batchEvents: number;
  readonly timeoutMs: number;
}

/** Unary Publish of one event, one call at a time, to random twins of the selection. */
export interface UnaryRequest extends TwinSelection {
  readonly cmd: "unary";
  readonly address: string;
  readonly calls: number;
  readonly warmupCalls: number;
  readonly seed: number;
}

/** GetTwin of random stored twins, one call at a time. */
export interface GetTwinRequest extends TwinSelection {
  readonly cmd: "getTwin";
  readonly address: string;
  readonly calls: number;
  readonly warmupCalls: number;
  readonly seed: number;
}

/** QueryTwins, following page tokens to the end. */
export interface QueryRequest {
  readonly cmd: "query";
  readonly address: string;
  readonly kind: string;
  readonly filter: string;
  readonly limit: number;
  readonly maxPages: number;
}

/** One AggregateTwins call. */
export interface AggregateRequest {
  readonly cmd: "aggregate";
  readonly address: string;
  readonly kind: string;
  readonly field: string;
  readonly filter: string;
}

/** Polls a (re)starting node until GetTwin and then Publish of a stored twin succeed. */
export interface ProbeRequest extends TwinSelection {
  readonly cmd: "probe";
  readonly address: string;
  readonly twin: number;
  readonly timeoutMs: number;
}

/** Closes the gRPC clients of an address (the node behind it is gone). */
export interface ForgetRequest {
  readonly cmd: "forget";
  readonly address: string;
}

export type LoadCommand =
  | SaturateRequest
  | OpenLoopRequest
  | LoadRequest
  | UnaryRequest
  | GetTwinRequest
  | QueryRequest
  | AggregateRequest
  | ProbeRequest
  | SeedRequest
  | ForgetRequest;
/** A command with its correlation id. */
export type LoadMessage = LoadCommand & { readonly id: number };

/** Outcome counts of the events in the answered batches. */
export interface EventCounts {
  accepted: number;
  duplicate: number;
  rejected: number;
  /** Rejections by reason. */
  reasons: Record<string, number>;
}

/** Result of a saturation run. */
export interface SaturateResult {
  /** ACCEPTED events per second, answered inside the measured window. */
  readonly eventsPerSec: number;
  readonly measuredMs: number;
  /** Batch-ack latency (send → answer) of batches sent in the measured window. */
  readonly latencyMs: LatencySummary;
  readonly counts: EventCounts;
  /** ACCEPTED events over the whole run, warm-up and drain included (for CPU per event). */
  readonly totalAccepted: number;
  /** The pool ran out before the end (the window was cut at the last answer). */
  readonly exhausted: boolean;
  readonly unanswered: number;
  readonly poolEvents: number;
  readonly encodeMs: number;
  readonly bytesPerBatch: number;
}

/** Result of an open-loop run. */
export interface OpenLoopResult {
  readonly offeredPerSec: number;
  /** ACCEPTED events of the measured batches per second of the measured window. */
  readonly acceptedPerSec: number;
  readonly measuredMs: number;
  /** Latency from each batch's scheduled send time to its answer (unanswered count as infinite). */
  readonly latencyMs: LatencySummary;
  /** How late the generator actually sent, versus the schedule (its own lag). */
  readonly sendLagMs: LatencySummary;
  readonly counts: EventCounts;
  readonly unanswered: number;
  /** Scheduling stopped early because `maxOutstandingBatches` were unanswered. */
  readonly overloaded: boolean;
  readonly scan?: {
    readonly scans: number;
    /** Duration of each scan, ms. */
    readonly scanMs: number[];
    readonly scanned: number;
    /** Latency of batches scheduled while a scan ran. */
    readonly duringScanMs: LatencySummary;
    /** Latency of batches scheduled while no scan ran. */
    readonly outsideScanMs: LatencySummary;
    readonly error?: string;
  };
  /** One entry per phase of {@link QueryPhases}, the quiet phase first. */
  readonly phases?: readonly PhaseResult[];
  /** With `keepBatches`: each measured batch's scheduled time (ms into the window) and latency, in schedule order. */
  readonly batches?: { readonly atMs: Float64Array; readonly latencyMs: Float64Array };
}

/** Ingest latency during one phase of {@link QueryPhases}, and how its queries went. */
export interface PhaseResult {
  readonly name: string;
  /** When the phase started and ended, ms after the run's warm-up. */
  readonly fromMs: number;
  readonly toMs: number;
  /** Latency of the batches scheduled during the phase. */
  readonly latencyMs: LatencySummary;
  readonly queries: number;
  /** Duration of each query that completed, ms. */
  readonly queryMs: number[];
  /** Queries that failed (e.g. refused by the node), with the first error. */
  readonly failed: number;
  readonly firstError?: string;
  readonly scanned: number;
  readonly matched: number;
}

export interface LoadResult {
  readonly events: number;
  readonly ms: number;
  readonly counts: EventCounts;
  readonly passes: number;
  readonly encodeMs: number;
}

export interface CallsResult {
  readonly latencyMs: LatencySummary;
  readonly failures: number;
  readonly firstFailure?: string;
}

export interface QueryResult {
  readonly ms: number;
  /** ms until the first twin arrived. */
  readonly firstMs: number;
  readonly pages: number;
  readonly returned: number;
  readonly matched: number;
  readonly scanned: number;
}

export interface AggregateResult {
  readonly ms: number;
  readonly scanned: number;
  readonly matched: number;
  readonly avg: number;
}

export interface ProbeResult {
  /** Wall-clock time (epoch ms, fractional) of the first successful GetTwin. */
  readonly getOkAtMs: number;
  /** Wall-clock time of the first ACCEPTED Publish after it. */
  readonly publishOkAtMs: number;
  readonly attempts: number;
}

/** The load generator's answer to one command. */
export type LoadReply =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly id: number; readonly ok: false; readonly error: string };

/** Sent once by the load generator when it is ready for commands. */
export interface LoadReady {
  readonly ready: true;
  readonly pid: number;
}
