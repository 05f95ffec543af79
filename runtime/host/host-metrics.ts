import type { AlertSeverity } from "../twin/twin.js";
import { EventCounts } from "./event-counts.js";

/**
 * Told how long the host's work took: each group written to disk (in commit order) and each
 * turn. Must be cheap and must not throw: it runs on the commit path and the turn loop.
 */
export interface HostTimings {
  /** A group of `events` telemetry events (and other changes) took `seconds` to write. */
  committed(seconds: number, events: number): void;
  /** One turn (a handler run, or the check that found a duplicate) took `seconds`, up to its async handler settling. */
  turned(seconds: number): void;
  /**
   * A group written here was acknowledged `seconds` after its write: the time its answers waited
   * for its replication stage (its copies on replicas, or the shortfall), and for the groups
   * written before it, since answers leave in commit order; 0 for a group answered at once.
   * Told for every group of a host with a replication stage (a cluster node), never on a single
   * node.
   */
  replicated?(seconds: number): void;
}

/**
 * Counters of one host. Plain numbers on the hot path; the metrics exporter (server/metrics)
 * reads them as observable counters, so counting costs one increment. Durations, which need
 * histograms, go to the {@link timings} when one is set.
 */
export class HostMetrics {
  received = 0;
  applied = 0;
  duplicates = 0;
  rejected = 0;
  handlerErrors = 0;
  timeouts = 0;
  activations = 0;
  passivations = 0;
  migrations = 0;
  alertChanges = 0;
  timersFired = 0;
  deadLetters = 0;
  commitFailures = 0;
  /** Turns whose bookkeeping threw (twinmesh bugs, contained). */
  internalErrors = 0;
  /** Telemetry events by kind and outcome, counted as they are answered. */
  readonly events = new EventCounts();
  /** Handler failures (thrown, timed out, bad state) by twin kind. */
  readonly handlerErrorsByKind = new Map<string, number>();
  /** Alerts opened by twins' turns, by severity (a raise of an open alert is not counted again). */
  readonly alertsRaised: Record<AlertSeverity, number> = { info: 0, warning: 0, critical: 0 };
  /** Where commit and turn durations go; none by default, and then nothing is timed. */
  timings: HostTimings | undefined;
}
