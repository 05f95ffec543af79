/**
 * Lets a log line that a peer can repeat at the write rate through once per `everyMs`: the first
 * at once, each later one with how many were held back since. A peer that answers garbage on
 * every shipment, or a stream that breaks on every batch until its peer is seen down, then costs
 * one line per interval, not one per message.
 */
export class LogLimiter {
  private lastMs = Number.NEGATIVE_INFINITY;
  private held = 0;

  constructor(
    private readonly everyMs = 10_000,
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  /** How many occurrences were held back since the last one let through, when this one goes through; undefined when it is held back. */
  admit(): number | undefined {
    const now = this.nowMs();
    if (now - this.lastMs < this.everyMs) {
      this.held++;
      return undefined;
    }
    this.lastMs = now;
    const held = this.held;
    this.held = 0;
    return held;
  }
}
