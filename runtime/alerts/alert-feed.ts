import { CursorExpiredError, InvalidArgumentError } from "../errors.js";
import type { PartitionId } from "../partition/partitioning.js";
import { quoteInput } from "../util/text.js";

/** Where a watcher is: per partition, the last change it has seen (absent: none of that partition). */
export type AlertCursor = ReadonlyMap<PartitionId, number>;

/** One partition's alert log positions. */
interface LogPositions {
  /** Lowest change seq still retained; changes below it were trimmed. */
  first: number;
  /** Highest committed change seq (0 when the partition logged none). */
  last: number;
  /** Highest change seq handed out (its commit may still be in flight). */
  allocated: number;
}

/** The largest partition number a cursor may name (four hex digits in keys). */
const MAX_PARTITION = 0xffff;

/**
 * Tracks each partition's alert change log (its committed range and the numbers handed out) and
 * wakes watchers when any grows. Each partition numbers its changes 1, 2, 3, … (a number is never
 * reused in its partition); watchers read the logs themselves from the store, so what they see
 * is exactly what was committed, in commit order per partition.
 */
export class AlertFeed {
  /** True once the host closed: watchers end. */
  closed = false;
  private readonly logs = new Map<PartitionId, LogPositions>();
  private waiters = new Set<() => void>();
  /** Bumped by every commit that logged changes, so a watcher can wait for the next one. */
  private generation = 0;

  /** The partitions with a log, and their positions (read-only view). */
  partitions(): IterableIterator<[PartitionId, Readonly<LogPositions>]> {
    return this.logs.entries();
  }

  /** Partition `p`'s log positions; a partition that logged nothing has `{ first: 1, last: 0, allocated: 0 }`. */
  positions(p: PartitionId): Readonly<LogPositions> {
    return this.logs.get(p) ?? { first: 1, last: 0, allocated: 0 };
  }

  /**
   * Sets partition `p`'s positions from its log in the store (at start, and after keys of the
   * partition were written underneath, e.g. replicated). Numbers only move forward, so a number
   * handed out here is never handed out again.
   */
  resync(p: PartitionId, stored: { first: number; last: number } | undefined): void {
    const now = this.logs.get(p);
    const last = Math.max(stored?.last ?? 0, now?.last ?? 0);
    const allocated = Math.max(last, now?.allocated ?? 0);
    const first = stored === undefined ? last + 1 : stored.first;
    this.logs.set(p, { first, last, allocated });
    if (last > (now?.last ?? 0)) this.wake();
  }

  /** Hands out partition `p`'s next change seq. */
  allocate(p: PartitionId): number {
    let log = this.logs.get(p);
    if (log === undefined) {
      log = { first: 1, last: 0, allocated: 0 };
      this.logs.set(p, log);
    }
    return ++log.allocated;
  }

  /** Called after a commit that logged partition `p`'s changes up to `seq`. */
  committed(p: PartitionId, seq: number): void {
    const log = this.logs.get(p);
    if (log === undefined || seq <= log.last) return;
    log.last = seq;
    this.wake();
  }

  /** Partition `p`'s changes before `first` are (being) trimmed. */
  trimmedTo(p: PartitionId, first: number): void {
    const log = this.logs.get(p);
    if (log !== undefined) log.first = first;
  }

  /** The number of committed changes so far, as a token for {@link waitBeyond}. */
  get changes(): number {
    return this.generation;
  }

  /** Resolves once a change commits after {@link changes} was `generation`, or when `signal` aborts. */
  waitBeyond(generation: number, signal: AbortSignal): Promise<void> {
    if (this.generation !== generation || signal.aborted || this.closed) return Promise.resolve();
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
    this.wake();
  }

  private wake(): void {
    this.generation++;
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** The committed end of every partition `owns` accepts that logged a change: "now" as a cursor. */
  now(owns: (p: PartitionId) => boolean): Map<PartitionId, number> {
    const at = new Map<PartitionId, number>();
    for (const [p, log] of this.logs) if (log.last > 0 && owns(p)) at.set(p, log.last);
    return at;
  }

  /**
   * The opaque cursor for "after these changes": `c2.` and, for each partition with a change
   * (ascending), `<partition>-<seq>` in base 36, joined by `.`. Partitions it does not name
   * are read from their first change.
   */
  static cursor(at: AlertCursor): string {
    const parts: string[] = [];
    for (const p of [...at.keys()].sort((a, b) => a - b)) {
      const seq = at.get(p) ?? 0;
      if (seq > 0) parts.push(`${p.toString(36)}-${seq.toString(36)}`);
    }
    return `c2.${parts.join(".")}`;
  }

  /**
   * The per-partition positions a cursor points after. Only the partitions `owns` accepts are
   * checked against their logs (the others are read elsewhere).
   * @throws InvalidArgumentError (BAD_CURSOR) for a malformed cursor or one ahead of a log,
   * CursorExpiredError for a cursor of an older data format (`c1.`) or one whose next changes
   * were trimmed from a log.
   */
  parseCursor(cursor: string, owns: (p: PartitionId) => boolean): Map<PartitionId, number> {
    if (/^c1\.[0-9a-z]{1,12}$/.test(cursor)) {
      throw new CursorExpiredError(
        `cursor ${quoteInput(cursor)} was issued before this node numbered alert changes per partition (data format 3); list alerts again to get a fresh cursor`,
      );
    }
    const at = parseC2(cursor);
    if (at === undefined) {
      throw new InvalidArgumentError(
        "BAD_CURSOR",
        `cursor ${quoteInput(cursor)} is not a cursor this node issued; pass one from ListAlerts or WatchAlerts, or none to start from now`,
        [{ field: "cursor", description: "must be a cursor returned by ListAlerts or WatchAlerts" }],
      );
    }
    for (const [p, log] of this.logs) {
      if (!owns(p)) continue;
      const seq = at.get(p) ?? 0;
      if (seq > Math.max(log.last, log.allocated)) {
        throw new InvalidArgumentError(
          "BAD_CURSOR",
          `cursor ${quoteInput(cursor)} is ahead of partition ${p}'s alert log (last change ${log.last}); was it issued by another data directory?`,
          [{ field: "cursor", description: "points past the end of the alert log" }],
        );
      }
      if (seq < log.first - 1) {
        throw new CursorExpiredError(
          `cursor ${quoteInput(cursor)} is older than partition ${p}'s retained alert log (its changes before ${log.first} were trimmed); list alerts again to get a fresh cursor`,
        );
      }
    }
    for (const [p, seq] of at) {
      if (owns(p) && !this.logs.has(p) && seq > 0) {
        throw new InvalidArgumentError(
          "BAD_CURSOR",
          `cursor ${quoteInput(cursor)} names changes of partition ${p}, which has logged none here; was it issued by another data directory?`,
          [{ field: "cursor", description: "points past the end of the alert log" }],
        );
      }
    }
    return at;
  }
}

function parseC2(cursor: string): Map<PartitionId, number> | undefined {
  if (!cursor.startsWith("c2.")) return undefined;
  const at = new Map<PartitionId, number>();
  const body = cursor.slice(3);
  if (body === "") return at;
  for (const part of body.split(".")) {
    const match = /^([0-9a-z]{1,4})-([0-9a-z]{1,11})$/.exec(part);
    if (match?.[1] === undefined || match[2] === undefined) return undefined;
    const p = Number.parseInt(match[1], 36);
    const seq = Number.parseInt(match[2], 36);
    if (p > MAX_PARTITION || !Number.isSafeInteger(seq) || at.has(p as PartitionId)) return undefined;
    at.set(p as PartitionId, seq);
  }
  return at;
}
