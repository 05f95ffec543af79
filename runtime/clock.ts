/**
 * Twin-facing time. Handlers read time only through `ctx.now()`, which reads the host's Clock,
 * so tests can drive virtual time. Heartbeats, leases and timeouts use real time.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  nowMs(): number;
}

/** The wall clock. */
export const SYSTEM_CLOCK: Clock = { nowMs: () => Date.now() };

/**
 * A clock that only moves when told to. Used by `TwinTestKit`.
 * @example
 * const clock = new VirtualClock(Date.parse("2026-01-01T00:00:00Z"));
 * clock.set(clock.nowMs() + 60_000);
 */
export class VirtualClock implements Clock {
  constructor(private currentMs = 0) {}
  nowMs(): number {
    return this.currentMs;
  }
  /** Moves time to `ms`; time never moves backwards. */
  set(ms: number): void {
    if (ms < this.currentMs) throw new RangeError(`virtual time cannot move backwards (from ${this.currentMs} to ${ms})`);
    this.currentMs = ms;
  }
}
