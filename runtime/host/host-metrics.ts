import type { AlertSeverity } from "../twin/twin.js";
import { EventCounts } from "./event-counts.js";

/**
 * Told of each group the host wrote to its disk, in commit order. Must be cheap and must not
 * throw: it runs on the commit path.
 */
export interface CommitObserver {
  /** A group of `events` telemetry events (and other changes) took `seconds` to write. */
  committed(seconds: number, events: number): void;
}

/**
 * Counters of one host. Plain numbers on the hot path; the metrics exporter (server/metrics)
 * reads them as observable counters, so counting costs one increment. Durations, which need
 * histograms, go to the {@link commitObserver} when one is set.
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
  /** Where commit durations go; none by default. */
  commitObserver: CommitObserver | undefined;
}
