import { Worker } from "node:worker_threads";
import { QueryLimitError, UnavailableError } from "../errors.js";
import type { Logger } from "../log.js";
import type { FilterJob, FilterReply, FilterWorkerMessage, PostedFilterJob } from "./filter-job.js";

const WORKER_URL = new URL("./filter-worker.js", import.meta.url);

/** Options of a {@link FilterPool}; see {@link QueryOptions} for their meaning. */
export interface FilterPoolOptions {
  readonly workers: number;
  readonly maxQueued: number;
  readonly heapMb: number;
  readonly log: Logger;
}

/** What a pool has done, for tests and metrics. */
export interface FilterPoolStats {
  /** Jobs answered by a worker. */
  completed: number;
  /** Workers terminated because their job's query was cancelled or passed its deadline. */
  terminated: number;
  /** Workers started (the first ones and each replacement). */
  started: number;
}

interface Pending {
  readonly job: PostedFilterJob;
  readonly resolve: (reply: FilterReply) => void;
  readonly reject: (err: unknown) => void;
  readonly signal: AbortSignal | undefined;
  readonly onAbort: () => void;
}

interface Slot {
  worker: Worker | undefined;
  running: Pending | undefined;
}

/**
 * A small pool of worker threads that evaluate costly filters (see {@link CelFilter.costly}) over
 * chunks of records, so a runaway filter never holds the event loop that acknowledges telemetry.
 *
 * Guarantees: jobs run in the order they were queued, one per worker at a time; at most
 * `maxQueued` wait, and more are refused `QUERY_QUEUE_FULL` (retryable). A job whose signal
 * aborts is dropped from the queue, or, when running, its worker is terminated (a synchronous
 * evaluation cannot be interrupted any other way) and replaced on the next job. Workers start on
 * first use, so a node that never runs a costly filter has none.
 */
export class FilterPool {
  /** Counters of what the pool did. */
  readonly stats: FilterPoolStats = { completed: 0, terminated: 0, started: 0 };
  private readonly slots: Slot[];
  private readonly queue: Pending[] = [];
  private nextJobId = 1;
  private closed = false;
  /** Workers being terminated; close() waits for them. */
  private readonly terminating: Promise<number>[] = [];

  constructor(private readonly options: FilterPoolOptions) {
    this.slots = Array.from({ length: options.workers }, () => ({ worker: undefined, running: undefined }));
  }

  /**
   * Evaluates `job` on a worker.
   * @throws QueryLimitError `QUERY_QUEUE_FULL` when the queue is full, `FILTER_COST_EXCEEDED` when
   *   the filter overspent on an input, `FILTER_MEMORY_EXCEEDED` when the worker ran out of heap;
   *   the signal's reason when it aborts first; UnavailableError `SHUTTING_DOWN` when the pool is closed.
   */
  run(job: FilterJob, signal?: AbortSignal): Promise<FilterReply> {
    if (this.closed) return Promise.reject(poolClosed());
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.queue.length >= this.options.maxQueued && this.slots.every((s) => s.running !== undefined)) {
      return Promise.reject(
        new QueryLimitError(
          "QUERY_QUEUE_FULL",
          "maxQueuedFilterChunks",
          `${this.options.maxQueued} chunks of filter work are already waiting for the ${this.options.workers} filter workers; retry with backoff, or raise the query option maxQueuedFilterChunks`,
        ),
      );
    }
    return new Promise<FilterReply>((resolve, reject) => {
      const pending: Pending = {
        job: { ...job, jobId: this.nextJobId++ },
        resolve,
        reject,
        signal,
        onAbort: () => this.abort(pending),
      };
      signal?.addEventListener("abort", pending.onAbort, { once: true });
      this.queue.push(pending);
      this.dispatch();
    });
  }

  /** Jobs waiting for a worker and jobs running now. */
  get load(): { queued: number; running: number } {
    return { queued: this.queue.length, running: this.slots.filter((s) => s.running !== undefined).length };
  }

  /** Terminates every worker and fails what is queued or running. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const failure = poolClosed();
    for (const pending of this.queue.splice(0)) this.settle(pending, failure);
    const exits: Promise<number>[] = [];
    for (const slot of this.slots) {
      if (slot.running !== undefined) this.settle(slot.running, failure);
      slot.running = undefined;
      if (slot.worker !== undefined) exits.push(slot.worker.terminate());
      slot.worker = undefined;
    }
    exits.push(...this.terminating.splice(0));
    await Promise.all(exits);
  }

  private dispatch(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.running !== undefined) continue;
      const pending = this.queue.shift() as Pending;
      slot.running = pending;
      slot.worker ??= this.startWorker(slot);
      // A running job keeps the process alive (an embedder may await nothing else); an idle worker does not.
      slot.worker.ref();
      slot.worker.postMessage(pending.job);
    }
  }

  private startWorker(slot: Slot): Worker {
    const worker = new Worker(WORKER_URL, { resourceLimits: { maxOldGenerationSizeMb: this.options.heapMb } });
    // An idle worker must not keep the process alive; a running job is awaited by its query.
    worker.unref();
    this.stats.started++;
    worker.on("message", (message: FilterWorkerMessage) => {
      const pending = slot.running;
      if (slot.worker !== worker || pending === undefined || pending.job.jobId !== message.jobId) return;
      slot.running = undefined;
      worker.unref();
      this.stats.completed++;
      if ("failure" in message) this.settle(pending, new Error(`filter worker failed: ${message.failure}`));
      else if ("exceeded" in message) this.settle(pending, new QueryLimitError("FILTER_COST_EXCEEDED", "maxFilterCost", message.exceeded));
      else this.settle(pending, undefined, message);
      this.dispatch();
    });
    worker.on("error", (err: Error & { code?: string }) => {
      if (slot.worker !== worker) return;
      slot.worker = undefined;
      const pending = slot.running;
      slot.running = undefined;
      if (pending !== undefined) {
        this.settle(
          pending,
          err.code === "ERR_WORKER_OUT_OF_MEMORY"
            ? new QueryLimitError(
                "FILTER_MEMORY_EXCEEDED",
                "filterWorkerHeapMb",
                `filter ${JSON.stringify(pending.job.expression.slice(0, 120))} needed more than the ${this.options.heapMb} MiB heap of a filter worker; simplify it, or raise the query option filterWorkerHeapMb`,
              )
            : err,
        );
      }
      this.options.log.warn({ err }, "filter worker failed; it is replaced on the next job");
      this.dispatch();
    });
    return worker;
  }

  private abort(pending: Pending): void {
    const queued = this.queue.indexOf(pending);
    if (queued !== -1) {
      this.queue.splice(queued, 1);
      this.settle(pending, pending.signal?.reason);
      return;
    }
    const slot = this.slots.find((s) => s.running === pending);
    if (slot === undefined) return;
    // A synchronous evaluation cannot be interrupted: the worker goes, a new one takes the next job.
    const worker = slot.worker;
    slot.worker = undefined;
    slot.running = undefined;
    this.stats.terminated++;
    this.options.log.debug({ jobId: pending.job.jobId }, "filter worker terminated: its query was cancelled or passed its deadline");
    if (worker !== undefined) {
      const exit = worker.terminate();
      this.terminating.push(exit);
      void exit.finally(() => {
        const i = this.terminating.indexOf(exit);
        if (i !== -1) void this.terminating.splice(i, 1);
      });
    }
    this.settle(pending, pending.signal?.reason);
    this.dispatch();
  }

  private settle(pending: Pending, err: unknown, reply?: FilterReply): void {
    pending.signal?.removeEventListener("abort", pending.onAbort);
    if (reply !== undefined) pending.resolve(reply);
    else pending.reject(err);
  }
}

function poolClosed(): UnavailableError {
  return new UnavailableError("SHUTTING_DOWN", "the node is shutting down and stopped evaluating filters; retry on another node or after it restarts");
}
