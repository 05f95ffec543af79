import type { Logger } from "pino";
import type { Keys } from "../store/keys.js";
import type { RocksStore } from "../store/rocks-store.js";
import type { OutboxEntry } from "./outbox-entry.js";

/** Hands a message to its target twin; false when it cannot be taken now (mailbox full, kind unknown). */
export type Deliverer = (entry: OutboxEntry) => boolean;

const MAX_QUEUED = 10_000;
const RETRY_MS = 200;

/**
 * Delivers durable outbox messages after the sending turn committed. Each message stays in the
 * outbox until the receiving turn commits (which deletes it in the same batch), so delivery is
 * at least once; the receiver's inbox marks make it effectively once. At start-up, and whenever
 * the in-memory queue overflowed, the outbox is rescanned from RocksDB.
 */
export class OutboxDispatcher {
  private queue: OutboxEntry[] = [];
  private readonly inflight = new Set<number>();
  private rescanNeeded = false;
  private timer: NodeJS.Timeout | undefined;
  private rescanning: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly store: RocksStore,
    private readonly keys: Keys,
    private readonly log: Logger,
    private readonly deliver: Deliverer,
    /** Called when the dispatcher may have become idle. */
    private readonly settled: () => void,
  ) {}

  /** Redelivers what the outbox held at start-up. */
  start(): void {
    this.rescanNeeded = true;
    this.kick();
  }

  /** A committed turn sent this message. */
  enqueue(entry: OutboxEntry): void {
    if (this.closed) return;
    if (this.queue.length >= MAX_QUEUED) {
      this.rescanNeeded = true; // it is durable; the rescan finds it
      return;
    }
    this.queue.push(entry);
    this.pump();
  }

  /** The delivery of `seq` committed or failed. */
  released(seq: number): void {
    this.inflight.delete(seq);
  }

  /** Nothing waiting to be handed over. */
  get idle(): boolean {
    return this.queue.length === 0 && !this.rescanNeeded && this.rescanning === undefined && this.inflight.size === 0;
  }

  private pump(): void {
    const waiting: OutboxEntry[] = [];
    for (const entry of this.queue) {
      if (this.inflight.has(entry.seq)) continue;
      if (this.deliver(entry)) this.inflight.add(entry.seq);
      else waiting.push(entry);
    }
    this.queue = waiting;
    if (waiting.length > 0) this.kick();
  }

  private kick(): void {
    if (this.closed || this.timer !== undefined) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        if (this.rescanNeeded) {
          this.rescanning ??= this.rescan().finally(() => {
            this.rescanning = undefined;
          });
        } else this.pump();
      },
      this.rescanNeeded && this.queue.length === 0 ? 0 : RETRY_MS,
    );
    this.timer.unref();
  }

  private async rescan(): Promise<void> {
    this.rescanNeeded = false;
    try {
      for await (const chunk of this.store.scan(this.keys.outboxRange())) {
        for (const [, value] of chunk) {
          if (this.closed) return;
          const entry = JSON.parse(value) as OutboxEntry;
          if (this.inflight.has(entry.seq) || this.queue.some((q) => q.seq === entry.seq)) continue;
          if (this.queue.length >= MAX_QUEUED) {
            this.rescanNeeded = true;
            break;
          }
          this.queue.push(entry);
        }
      }
    } catch (err) {
      this.log.warn({ err }, "outbox scan failed; retrying");
      this.rescanNeeded = true;
    }
    this.pump();
    this.settled();
  }

  /** Stops delivering. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    // What is still queued is durable and redelivered at the next start.
    this.rescanNeeded = false;
    this.queue = [];
    await this.rescanning;
    this.settled();
  }
}
