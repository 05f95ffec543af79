import { CursorExpiredError, InvalidArgumentError } from "../errors.js";

/**
 * Tracks the alert change log's committed range and wakes watchers when it grows. Watchers read
 * the log itself from the store, so what they see is exactly what was committed, in order.
 */
export class AlertFeed {
  /** Highest committed change seq (0 when the log is empty). */
  lastSeq = 0;
  /** Highest change seq handed out (its commit may still be in flight). */
  allocated = 0;
  /** Lowest change seq still retained; changes below it were trimmed. */
  firstSeq = 1;
  /** True once the host closed: watchers end. */
  closed = false;
  private waiters = new Set<() => void>();

  /** Called after a commit that logged changes up to `seq`. */
  committed(seq: number): void {
    if (seq <= this.lastSeq) return;
    this.lastSeq = seq;
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** Resolves once a change after `seq` is committed, or when `signal` aborts. */
  waitBeyond(seq: number, signal: AbortSignal): Promise<void> {
    if (this.lastSeq > seq || signal.aborted || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        signal.removeEventListener("abort", wake);
        this.waiters.delete(wake);
        resolve();
      };
      this.waiters.add(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }

  /** Wakes every waiter (on shutdown). */
  close(): void {
    this.closed = true;
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** The opaque cursor for "after change `seq`". */
  static cursor(seq: number): string {
    return `c1.${seq.toString(36)}`;
  }

  /**
   * The change seq a cursor points after.
   * @throws InvalidArgumentError for a malformed cursor, CursorExpiredError when the changes
   * after it were trimmed from the log.
   */
  parseCursor(cursor: string): number {
    const match = /^c1\.([0-9a-z]{1,12})$/.exec(cursor);
    const seq = match?.[1] === undefined ? Number.NaN : Number.parseInt(match[1], 36);
    if (!Number.isSafeInteger(seq)) {
      throw new InvalidArgumentError(
        "BAD_CURSOR",
        `cursor "${cursor}" is not a cursor this node issued; pass one from ListAlerts or WatchAlerts, or none to start from now`,
        [{ field: "cursor", description: "must be a cursor returned by ListAlerts or WatchAlerts" }],
      );
    }
    if (seq > Math.max(this.lastSeq, this.allocated)) {
      throw new InvalidArgumentError(
        "BAD_CURSOR",
        `cursor "${cursor}" is ahead of this node's alert log (last change ${this.lastSeq}); was it issued by another data directory?`,
        [{ field: "cursor", description: "points past the end of the alert log" }],
      );
    }
    if (seq < this.firstSeq - 1) {
      throw new CursorExpiredError(
        `cursor "${cursor}" is older than the retained alert log (changes before ${this.firstSeq} were trimmed); list alerts again to get a fresh cursor`,
      );
    }
    return seq;
  }
}
