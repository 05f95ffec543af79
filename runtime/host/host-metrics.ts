/**
 * Counters of one host. Plain numbers on the hot path; the metrics exporter (OpenTelemetry,
 * in a later issue) reads them as observable counters, so counting costs one increment.
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
}
