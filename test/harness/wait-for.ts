import { setTimeout as delay } from "node:timers/promises";
import { inspect } from "node:util";

/** How long {@link waitFor} waits, and what it waits for (used in the timeout message). */
export interface WaitForOptions {
  /** Give up after this long. */
  readonly timeoutMs: number;
  /** What the condition means, e.g. "the server to block on drain". */
  readonly what: string;
}

const POLL_MS = 5;

/**
 * Polls `cond` until it returns a truthy value, and returns that value. A test's barrier instead
 * of a sleep: it ends as soon as the condition holds.
 *
 * Polls on a timer, so a value that is truthy only between two microtasks is not seen; a truthy
 * value means the condition held across a turn of the event loop.
 *
 * @throws Error after `timeoutMs`, naming `what` and the last value `cond` returned (or threw).
 */
export async function waitFor<T>(cond: () => T | Promise<T>, options: WaitForOptions): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await cond();
      if (value) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.what}; last value seen: ${inspect(last, { depth: 3 })}`);
    }
    await delay(POLL_MS);
  }
}
