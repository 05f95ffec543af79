import { setTimeout as delay } from "node:timers/promises";
import { create, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { status as GrpcStatus } from "@grpc/grpc-js";
import {
  Consistency,
  type Event,
  EventSchema,
  EventStatus,
  PublishStreamRequestSchema,
  type PublishStreamResponse,
  type PublishStreamSession,
  type TwinmeshClient,
  TwinmeshClientError,
} from "../../client/index.js";

/** An event as the pipeline takes it: the Event fields, in protobuf-es init form. */
export type EventInit = MessageInitShape<typeof EventSchema>;

/** Options of a {@link PublishPipeline}; every field is optional. */
export interface PublishPipelineOptions {
  /** Most events in one PublishStream request. @defaultValue 500 */
  readonly maxBatchEvents?: number;
  /** Batches sent and not yet answered before `push` waits for an answer. @defaultValue 16 */
  readonly maxInflightBatches?: number;
  /** @defaultValue the server's default */
  readonly consistency?: Consistency;
  /** Sends of one event (the first one included) before a retryable rejection counts as final. @defaultValue 8 */
  readonly maxAttempts?: number;
  /** First retry delay; it doubles per attempt up to `maxRetryDelayMs`. @defaultValue 100 */
  readonly retryDelayMs?: number;
  /** @defaultValue 5_000 */
  readonly maxRetryDelayMs?: number;
  /** Told when the stream fails and is about to be reopened. */
  readonly onStreamError?: (err: Error, reopenInMs: number) => void;
}

interface ResolvedOptions {
  readonly maxBatchEvents: number;
  readonly maxInflightBatches: number;
  readonly consistency: Consistency;
  readonly maxAttempts: number;
  readonly retryDelayMs: number;
  readonly maxRetryDelayMs: number;
  readonly onStreamError: (err: Error, reopenInMs: number) => void;
}

const MAX_BATCH_EVENTS = 500;
const MAX_INFLIGHT_BATCHES = 16;
const MAX_ATTEMPTS = 8;
const RETRY_DELAY_MS = 100;
const MAX_RETRY_DELAY_MS = 5_000;

function resolvePublishPipelineOptions(o: PublishPipelineOptions): ResolvedOptions {
  const resolved: ResolvedOptions = {
    maxBatchEvents: o.maxBatchEvents ?? MAX_BATCH_EVENTS,
    maxInflightBatches: o.maxInflightBatches ?? MAX_INFLIGHT_BATCHES,
    consistency: o.consistency ?? Consistency.UNSPECIFIED,
    maxAttempts: o.maxAttempts ?? MAX_ATTEMPTS,
    retryDelayMs: o.retryDelayMs ?? RETRY_DELAY_MS,
    maxRetryDelayMs: o.maxRetryDelayMs ?? MAX_RETRY_DELAY_MS,
    onStreamError: o.onStreamError ?? (() => undefined),
  };
  for (const name of ["maxBatchEvents", "maxInflightBatches", "maxAttempts"] as const) {
    if (!Number.isSafeInteger(resolved[name]) || resolved[name] < 1) throw new RangeError(`${name} is ${resolved[name]}; use a whole number >= 1`);
  }
  return resolved;
}

function sourceKey(p: Pending<unknown>): string {
  return `${p.event.kind}\u0000${p.event.sourceId}`;
}

/** The first rejection with a given reason, and how many had it. */
export interface RejectionSummary<Tag> {
  readonly reason: string;
  count: number;
  /** The first such rejection's message and event. */
  readonly message: string;
  readonly kind: string;
  readonly sourceId: string;
  readonly seq: bigint;
  readonly tag: Tag;
}

/** Outcomes so far. Each pushed event ends as exactly one of accepted, duplicate or rejected. */
export interface PublishTotals<Tag> {
  /** Events pushed. */
  readonly pushed: number;
  readonly accepted: number;
  /** Already applied (a retry after a lost answer, or a repeated seq). */
  readonly duplicate: number;
  /** Finally rejected: not retryable, or still retryable after `maxAttempts` sends. */
  readonly rejected: number;
  /** Sends beyond the first (retryable rejections and resends after a stream failure). */
  readonly retried: number;
  /** Times the stream was reopened. */
  readonly reopened: number;
  /** Pushed and not yet answered (in a batch, in flight, or waiting for a retry). */
  readonly pending: number;
  /** By reason, in order of first occurrence. */
  readonly rejections: readonly RejectionSummary<Tag>[];
}

interface Pending<Tag> {
  readonly event: Event;
  readonly tag: Tag;
  attempt: number;
  notBeforeMs: number;
}

/**
 * Publishes events over one PublishStream in batches: `push` adds an event and sends a batch
 * when it is full, `flush` sends a partial one, `close` waits for every answer and ends the
 * stream. At most `maxInflightBatches` batches are unanswered; `push` waits beyond that, which is
 * what paces a fast producer to the node.
 *
 * Retryable rejections are sent again with the same seq (the node deduplicates), after a delay
 * that doubles per attempt; the source's events pushed after the rejection came back wait behind
 * the retry, so they keep their order. (Its events already in flight by then may be applied
 * before the retried ones; the node's dedupe window still applies those late.) When
 * the stream itself fails with a retryable status (the node restarted, a connection dropped),
 * the unanswered batches are resent on a new stream. Any other stream failure is thrown from the
 * next `push`, `flush` or `close`.
 *
 * Not safe for concurrent `push` calls: one producer awaits each call.
 *
 * @example
 * const pipeline = new PublishPipeline<number>(client, { maxBatchEvents: 500 });
 * for (const [line, event] of events.entries()) await pipeline.push(event, line);
 * const totals = await pipeline.close();
 */
export class PublishPipeline<Tag = undefined> {
  private readonly options: ResolvedOptions;
  private session: PublishStreamSession | undefined;
  private batch: Pending<Tag>[] = [];
  private retries: Pending<Tag>[] = [];
  private readonly inflight = new Map<string, Promise<void>>();
  private nextBatchId = 1;
  private failure: Error | undefined;
  private reopenAttempt = 0;
  private readonly counts = { pushed: 0, accepted: 0, duplicate: 0, rejected: 0, retried: 0, reopened: 0 };
  private readonly rejections = new Map<string, RejectionSummary<Tag>>();
  private closed: Promise<PublishTotals<Tag>> | undefined;

  constructor(
    private readonly client: TwinmeshClient,
    options: PublishPipelineOptions = {},
  ) {
    this.options = resolvePublishPipelineOptions(options);
  }

  /** Outcomes so far. */
  get totals(): PublishTotals<Tag> {
    const c = this.counts;
    return { ...c, pending: c.pushed - c.accepted - c.duplicate - c.rejected, rejections: [...this.rejections.values()].map((r) => ({ ...r })) };
  }

  /** Adds an event; sends a batch when it is full, waiting while too many are unanswered. */
  async push(event: EventInit, tag: Tag): Promise<void> {
    this.throwIfFailed();
    this.counts.pushed++;
    this.batch.push({ event: create(EventSchema, event), tag, attempt: 0, notBeforeMs: 0 });
    if (this.batch.length >= this.options.maxBatchEvents) await this.flush();
  }

  /**
   * Sends what is batched, and the retries that are due, ahead of it. A source with a retry
   * pending is held back as a whole: its queued events go together once the last of them is
   * due, in seq order, and its new events wait behind them, so the node sees its events in order.
   */
  async flush(): Promise<void> {
    this.throwIfFailed();
    let events = this.batch;
    this.batch = [];
    if (this.retries.length > 0) {
      const now = Date.now();
      const readyAt = new Map<string, number>();
      for (const p of this.retries) readyAt.set(sourceKey(p), Math.max(readyAt.get(sourceKey(p)) ?? 0, p.notBeforeMs));
      const due: Pending<Tag>[] = [];
      const waiting: Pending<Tag>[] = [];
      for (const p of this.retries) ((readyAt.get(sourceKey(p)) ?? 0) <= now ? due : waiting).push(p);
      const fresh: Pending<Tag>[] = [];
      for (const p of events) {
        const at = readyAt.get(sourceKey(p));
        if (at === undefined || at <= now) {
          fresh.push(p);
        } else {
          p.notBeforeMs = at;
          waiting.push(p);
        }
      }
      this.retries = waiting;
      due.sort((a, b) => (a.event.seq < b.event.seq ? -1 : a.event.seq > b.event.seq ? 1 : 0));
      events = [...due, ...fresh];
    }
    for (let at = 0; at < events.length; at += this.options.maxBatchEvents) {
      await this.waitForSlot();
      await this.send(events.slice(at, at + this.options.maxBatchEvents));
    }
  }

  /**
   * Sends the rest, waits for every answer (and every retry), then ends the stream.
   * Idempotent. @throws the stream's failure when it was not retryable
   */
  close(): Promise<PublishTotals<Tag>> {
    this.closed ??= this.drain();
    return this.closed;
  }

  private async drain(): Promise<PublishTotals<Tag>> {
    try {
      for (;;) {
        await this.flush();
        if (this.inflight.size > 0) {
          await Promise.race(this.inflight.values());
        } else if (this.retries.length > 0) {
          const wakeAt = Math.min(...this.retries.map((p) => p.notBeforeMs));
          await delay(Math.max(0, wakeAt - Date.now()));
        } else {
          break;
        }
      }
      this.throwIfFailed();
      return this.totals;
    } finally {
      const session = this.session;
      this.session = undefined;
      if (session !== undefined) {
        if (this.failure === undefined) await session.end().catch(() => undefined);
        else session.cancel();
      }
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private async waitForSlot(): Promise<void> {
    while (this.inflight.size >= this.options.maxInflightBatches) await Promise.race(this.inflight.values());
    this.throwIfFailed();
  }

  private async send(events: Pending<Tag>[]): Promise<void> {
    const session = await this.openSession();
    const batchId = `b${this.nextBatchId++}`;
    const request = create(PublishStreamRequestSchema, { batchId, events: events.map((p) => p.event), consistency: this.options.consistency });
    // Answers settle here and never reject: the promise in `inflight` only says "this slot is free".
    const answered = session
      .sendEncoded(batchId, Buffer.from(toBinary(PublishStreamRequestSchema, request)))
      .then(
        (response) => this.settle(events, response),
        (err: unknown) => this.streamFailed(session, events, err),
      )
      .finally(() => this.inflight.delete(batchId));
    this.inflight.set(batchId, answered);
  }

  private async openSession(): Promise<PublishStreamSession> {
    if (this.session !== undefined) return this.session;
    if (this.reopenAttempt > 0) {
      // Waits here hold the producer too: nothing piles up while the node is away.
      await delay(this.backoffMs(this.reopenAttempt));
      this.counts.reopened++;
    }
    this.session = this.client.openPublishStream();
    return this.session;
  }

  private settle(events: Pending<Tag>[], response: PublishStreamResponse): void {
    this.reopenAttempt = 0;
    const now = Date.now();
    for (const [i, pending] of events.entries()) {
      const result = response.results[i];
      if (result === undefined) {
        this.reject(pending, "NO_RESULT", `the node answered batch ${response.batchId} with ${response.results.length} results for ${events.length} events`);
      } else if (result.status === EventStatus.ACCEPTED) {
        this.counts.accepted++;
      } else if (result.status === EventStatus.DUPLICATE) {
        this.counts.duplicate++;
      } else if (result.retryable && pending.attempt + 1 < this.options.maxAttempts) {
        this.retry(pending, now);
      } else {
        this.reject(pending, result.reason || "REJECTED", result.message);
      }
    }
  }

  private streamFailed(session: PublishStreamSession, events: Pending<Tag>[], err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    // A client-side "ended" error (the node closed the stream) is as retryable as UNAVAILABLE.
    const reason = (error instanceof TwinmeshClientError ? error.reason : undefined) ?? "STREAM_FAILED";
    // The node cancels open streams when it stops (this pipeline cancels a stream only after it
    // failed), so a cancelled stream is retried like an unavailable node.
    if (error instanceof TwinmeshClientError && !error.retryable && error.code !== GrpcStatus.CANCELLED) {
      this.failure ??= error;
      for (const pending of events) this.reject(pending, reason, error.message);
      return;
    }
    if (this.session === session) {
      this.session = undefined;
      this.reopenAttempt++;
      session.cancel();
      this.options.onStreamError(error, this.backoffMs(this.reopenAttempt));
    }
    const now = Date.now();
    for (const pending of events) {
      if (pending.attempt + 1 < this.options.maxAttempts) this.retry(pending, now);
      else this.reject(pending, reason, error.message);
    }
  }

  private retry(pending: Pending<Tag>, now: number): void {
    pending.attempt++;
    pending.notBeforeMs = now + this.backoffMs(pending.attempt);
    this.counts.retried++;
    this.retries.push(pending);
  }

  private reject(pending: Pending<Tag>, reason: string, message: string): void {
    this.counts.rejected++;
    const known = this.rejections.get(reason);
    if (known !== undefined) {
      known.count++;
      return;
    }
    const { kind, sourceId, seq } = pending.event;
    this.rejections.set(reason, { reason, count: 1, message, kind, sourceId, seq, tag: pending.tag });
  }

  /** Doubling delay with ±20 % jitter, so many clients do not retry in step. */
  private backoffMs(attempt: number): number {
    const base = Math.min(this.options.maxRetryDelayMs, this.options.retryDelayMs * 2 ** (attempt - 1));
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }
}
