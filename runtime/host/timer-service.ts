import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { PartitionId, Partitioning } from "../partition/partitioning.js";
import type { Keys } from "../store/keys.js";
import type { RocksStore } from "../store/rocks-store.js";
import type { ResolvedHostOptions } from "./host-options.js";

/** Posts a due timer to its twin; false when the twin's kind is not loaded. */
export type TimerPoster = (kind: string, id: string, name: string, dueMs: number, indexKey: string) => boolean;

/** Which timers this node fires: those of twins in the partitions it owns. */
export interface TimerOwnership {
  readonly partitioning: Partitioning;
  readonly owns: (p: PartitionId) => boolean;
}

/** The latest due time the index can hold (12 hex digits). */
const LAST_DUE_MS = 0xffff_ffff_fffe;

/**
 * Fires durable timers from the time-ordered index in RocksDB (`x/<due>/<kind>/<id>/<name>`).
 *
 * The index is read forward from the earliest time not yet fired (not from its head, where
 * deleted entries pile up), at most `maxConcurrentTimers` fire at once, and an entry stays in
 * the index until its turn commits, so a timer fires at least once, also after a crash. Timers
 * that came due during downtime fire once, late, paced by that concurrency bound. Only timers of
 * twins in partitions this node owns fire here; the others are passed over (they do not hold the
 * scan back) until {@link partitionsChanged} says ownership moved.
 */
export class TimerService {
  private readonly inflight = new Set<string>();
  /** Everything due before this was fired (or is in flight); the scan starts here. */
  private floorMs = 0;
  private loop: NodeJS.Timeout | undefined;
  private scanning: Promise<number> | undefined;
  private closed = false;
  /** Kinds not loaded here whose due timers were passed over, not fired. */
  private readonly parked = new Set<string>();
  private armedDuringScan = Number.POSITIVE_INFINITY;

  constructor(
    private readonly store: RocksStore,
    private readonly keys: Keys,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly options: ResolvedHostOptions,
    private readonly post: TimerPoster,
    private readonly ownership?: TimerOwnership,
  ) {}

  /** Starts polling for due timers with the real clock. */
  start(): void {
    const tick = (): void => {
      if (this.closed) return;
      this.fireDue().then(
        () => this.rearm(tick),
        (err: unknown) => {
          this.log.warn({ err }, "timer scan failed; retrying");
          this.rearm(tick);
        },
      );
    };
    this.rearm(tick);
  }

  private rearm(tick: () => void): void {
    if (this.closed) return;
    this.loop = setTimeout(tick, this.options.timerPollMs);
    this.loop.unref();
  }

  /** A committed turn armed a timer due at `dueMs`: make sure the scan will reach it. */
  armedAt(dueMs: number): void {
    if (dueMs < this.floorMs) this.floorMs = dueMs;
    // A scan in progress reads a snapshot that may not hold this timer, and sets the floor when
    // it ends: remember the earliest such timer so the floor never passes it.
    if (this.scanning !== undefined && dueMs < this.armedDuringScan) this.armedDuringScan = dueMs;
  }

  /**
   * Partitions changed hands or had timers written underneath (replicated): the next scan reads
   * the index from its head, so a newly owned partition's due timers fire.
   */
  partitionsChanged(): void {
    this.floorMs = 0;
    if (this.scanning !== undefined) this.armedDuringScan = 0;
  }

  /** A timer's turn committed (or failed): its index entry may be read again. */
  released(indexKey: string): void {
    this.inflight.delete(indexKey);
  }

  /**
   * Posts every due timer (up to the concurrency bound) to its twin and returns how many it
   * posted. Concurrent calls share one scan.
   */
  fireDue(): Promise<number> {
    this.scanning ??= this.scan().finally(() => {
      this.scanning = undefined;
    });
    return this.scanning;
  }

  private async scan(): Promise<number> {
    const nowMs = this.clock.nowMs();
    let posted = 0;
    let newFloor: number | undefined;
    outer: for await (const chunk of this.store.scan(this.keys.timersDue(this.floorMs, nowMs), { values: false })) {
      for (const [key] of chunk) {
        if (this.closed) break outer;
        const timer = this.keys.parseTimer(key);
        if (this.inflight.has(key)) {
          newFloor ??= timer.dueMs;
          continue;
        }
        // Another node owns its twin: that node fires it.
        if (this.ownership !== undefined && !this.ownership.owns(this.ownership.partitioning.partitionOf(timer.kind, timer.id))) continue;
        if (this.inflight.size >= this.options.maxConcurrentTimers) {
          newFloor ??= timer.dueMs;
          break outer;
        }
        if (!this.post(timer.kind, timer.id, timer.name, timer.dueMs, key)) {
          // Its kind is not loaded on this node: it is parked, left in the index, and does not
          // hold the floor (which would make every poll read it again); it fires when the node
          // restarts with its kind (the first scan then starts from the index's head).
          if (!this.parked.has(timer.kind)) {
            this.parked.add(timer.kind);
            this.log.warn({ kind: timer.kind }, "timers of a twin kind that is not loaded are due; they fire when the node restarts with that kind");
          }
          continue;
        }
        this.inflight.add(key);
        newFloor ??= timer.dueMs;
        posted++;
      }
    }
    // Nothing before newFloor is pending; when nothing was found, everything up to now fired.
    this.floorMs = Math.min(newFloor ?? Math.max(this.floorMs, nowMs + 1), this.armedDuringScan);
    this.armedDuringScan = Number.POSITIVE_INFINITY;
    return posted;
  }

  /** Timers in flight, and the kinds whose due timers were passed over because they are not loaded. */
  get counts(): { inflight: number; parkedKinds: string[] } {
    return { inflight: this.inflight.size, parkedKinds: [...this.parked] };
  }

  /** The earliest pending timer's due time. */
  async nextDue(): Promise<number | undefined> {
    for await (const chunk of this.store.scan({ ...this.keys.timersDue(this.floorMs, LAST_DUE_MS), limit: 1 }, { values: false })) {
      const first = chunk[0];
      if (first !== undefined) return this.keys.parseTimer(first[0]).dueMs;
    }
    return undefined;
  }

  /** Stops the loop and waits for a scan in progress. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.loop);
    await this.scanning?.catch(() => undefined);
  }
}
