import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ForwardRequestSchema, ForwardResponseSchema, PeerService } from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import type { Consistency, EventResult } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { type Logger, SpanName, type Tracing } from "../runtime/index.js";
import type { ForwardBatch } from "./forward-server.js";
import { LogLimiter } from "./log-limiter.js";
import type { NodeId } from "./node-id.js";
import { PeerUnavailableError } from "./peer-errors.js";
import { callFailure, methodPath } from "./peer-rpc.js";

interface InFlight {
  readonly events: number;
  /** Breaks the stream when the answer is overdue. */
  readonly timer: NodeJS.Timeout;
  readonly resolve: (results: EventResult[]) => void;
  readonly reject: (err: PeerUnavailableError) => void;
}

interface SlotWaiter {
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/** One caller's batch, waiting for the end of the event loop's turn to be sent. */
interface Part {
  readonly eventCount: number;
  /** Its events, encoded as a ForwardRequest's `events` field (encodings of a repeated field concatenate). */
  readonly encoded: Uint8Array;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (results: EventResult[]) => void;
  readonly reject: (err: unknown) => void;
}

/** The request the batches of a turn become: consecutive ones that can share it do. */
interface Outgoing {
  readonly epoch: bigint;
  readonly consistency: Consistency;
  readonly traceparent: string;
  /** False for a traced batch or one that may be withdrawn: it goes alone. */
  readonly mergeable: boolean;
  eventCount: number;
  byteCount: number;
  readonly parts: Part[];
}

/**
 * Most bytes of events in a merged request: well under the owners' message limit (4 MiB unless
 * configured lower). A single batch over it goes alone, as it came from a client request the
 * receiving node's own limit already admitted.
 */
const MAX_MERGED_BYTES = 1024 * 1024;

/** Limits of one Forward stream. */
export interface ForwardStreamLimits {
  /** Batches sent and unanswered at once. */
  readonly maxInflightBatches: number;
  /** How long a sent batch may wait for its answer before the stream is given up as stuck. */
  readonly answerTimeoutMs: number;
  /** Most events in a merged request (the owners' limit); a single batch is never split. */
  readonly maxBatchEvents: number;
}

/**
 * The Forward stream to one peer: opened at the first batch, opened again at the first batch
 * after a break. Each batch gets a `batch_id` unique on the stream (a counter that never goes
 * back, so also unique across reopens) and is answered by the response with that id, in
 * whatever order responses come.
 *
 * At most `maxInflightBatches` batches are sent and unanswered at once; further senders wait in
 * FIFO order for a slot (back-pressure: nothing is dropped, and grpc-js's send buffer holds at
 * most that many batches). When the stream breaks (the peer went away, the connection dropped,
 * {@link breakStream} was called), every batch in flight on it is rejected at once with a
 * retryable {@link PeerUnavailableError}: its events may or may not have been applied, and a
 * retry with the same seqs is deduplicated by the owner. A batch unanswered after
 * `answerTimeoutMs` breaks the stream the same way: an owner that keeps the connection but
 * stopped answering must not hold its senders forever.
 *
 * Batches handed over in one turn of the event loop go out at its end, and consecutive ones of
 * the same epoch and consistency share one request (up to `maxBatchEvents` and
 * {@link MAX_MERGED_BYTES}), in the order they came: per-source order holds, and the owner gets
 * fewer, larger batches. That matters more than it looks: an owner's commit groups follow the
 * messages it reads, and with one forwarded request per client batch its groups were a quarter of
 * the size (every group pays for its write, its shipments and their answers). A traced batch, and
 * one that may be withdrawn (a `signal`), go alone. Merged batches are one batch to the owner:
 * each caller's answer comes when the whole request is committed, and a retryable rejection of a
 * source's event in one caller's share refuses that source's later events in the next share too
 * (`PRECEDING_EVENT_REJECTED`), as within one client batch. The in-flight bound and
 * `answerTimeoutMs` count requests.
 */
export class ForwardStream {
  private call: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
  private readonly inFlight = new Map<bigint, InFlight>();
  private nextBatchId = 1n;
  private active = 0;
  private readonly slotWaiters: SlotWaiter[] = [];
  private closedBy: PeerUnavailableError | undefined;
  /** Batches of this turn of the event loop, sent at its end. */
  private queued: Outgoing[] = [];
  private flushScheduled = false;
  /** Log lines a broken or misbehaving peer repeats at every batch. */
  private readonly breaks = new LogLimiter();
  private readonly wrongAnswers = new LogLimiter();

  constructor(
    readonly peer: NodeId,
    private readonly client: grpc.Client,
    private readonly limits: ForwardStreamLimits,
    private readonly log: Logger,
    /** Spans for the batches of traced requests; absent: tracing off. */
    private readonly tracing?: Tracing,
  ) {}

  /** Batches sent and not answered yet. */
  get inFlightBatches(): number {
    return this.inFlight.size;
  }

  /** Senders waiting for a slot. */
  get waitingBatches(): number {
    return this.slotWaiters.length;
  }

  /**
   * Sends `batch` at the end of this turn of the event loop, with the batches handed over after
   * it in the same turn when they can share a request, and resolves with its results
   * (`results[i]` answers `events[i]`). `signal` withdraws a batch still waiting for a slot; once
   * sent, a batch waits for its answer or the stream's break. A traced batch's span covers its
   * wait for the end of the turn too.
   * @throws PeerUnavailableError (retryable) when the stream broke before the answer came, or the stream is closed.
   */
  async send(batch: ForwardBatch, signal?: AbortSignal): Promise<EventResult[]> {
    // Traced only when the request that brought the batch is (its span is active here).
    const parent = this.tracing?.active();
    if (this.tracing === undefined || parent === undefined) return this.enqueue(batch, signal, "");
    const span = this.tracing.start(SpanName.forward, parent, {
      kind: "client",
      attributes: { "twinmesh.peer": this.peer, "twinmesh.batch.events": batch.events.length },
    });
    try {
      return await this.enqueue(batch, signal, this.tracing.traceparent(span.ref));
    } catch (err) {
      span.fail(err);
      throw err;
    } finally {
      span.end();
    }
  }

  /** Queues `batch` for the end of this turn, joining the request before it when they can share one. */
  private enqueue(batch: ForwardBatch, signal: AbortSignal | undefined, traceparent: string): Promise<EventResult[]> {
    signal?.throwIfAborted();
    if (this.closedBy !== undefined) return Promise.reject(this.closedBy);
    const encoded = toBinary(ForwardRequestSchema, create(ForwardRequestSchema, { events: [...batch.events] }));
    return new Promise((resolve, reject) => {
      const part: Part = { eventCount: batch.events.length, encoded, signal, resolve, reject };
      const mergeable = signal === undefined && traceparent === "";
      const last = this.queued[this.queued.length - 1];
      if (
        mergeable &&
        last?.mergeable === true &&
        last.epoch === batch.epoch &&
        last.consistency === batch.consistency &&
        last.eventCount + part.eventCount <= this.limits.maxBatchEvents &&
        last.byteCount + encoded.byteLength <= MAX_MERGED_BYTES
      ) {
        last.parts.push(part);
        last.eventCount += part.eventCount;
        last.byteCount += encoded.byteLength;
      } else {
        const { epoch, consistency } = batch;
        this.queued.push({ epoch, consistency, traceparent, mergeable, eventCount: part.eventCount, byteCount: encoded.byteLength, parts: [part] });
      }
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Sends this turn's requests, in order; each part gets its own share of the answer. */
  private flush(): void {
    this.flushScheduled = false;
    const queued = this.queued;
    this.queued = [];
    for (const out of queued) {
      const first = out.parts[0] as Part;
      if (out.parts.length === 1) {
        this.sendRequest(out, first.signal).then(first.resolve, first.reject);
        continue;
      }
      this.sendRequest(out, undefined).then(
        (results) => {
          let at = 0;
          for (const part of out.parts) {
            part.resolve(results.slice(at, at + part.eventCount));
            at += part.eventCount;
          }
        },
        (err: unknown) => {
          for (const part of out.parts) part.reject(err);
        },
      );
    }
  }

  /** Rejects the batches queued for the end of this turn: they will not be sent on this stream. */
  private dropQueued(err: PeerUnavailableError): void {
    const queued = this.queued;
    this.queued = [];
    for (const out of queued) for (const part of out.parts) part.reject(err);
  }

  /** Sends one request (its `traceparent` empty when untraced) once a slot is free. */
  private async sendRequest(out: Outgoing, signal: AbortSignal | undefined): Promise<EventResult[]> {
    await this.acquire(signal);
    try {
      if (this.closedBy !== undefined) throw this.closedBy;
      let call: grpc.ClientDuplexStream<Buffer, Buffer>;
      try {
        call = this.open();
      } catch (err) {
        // grpc-js refuses calls on a closed channel: the pool is closing.
        throw new PeerUnavailableError(
          "PEER_UNAVAILABLE",
          this.peer,
          `cannot open a forward stream to ${this.peer} (${err instanceof Error ? err.message : String(err)}); retry the events with the same seqs`,
          { cause: err },
        );
      }
      const batchId = this.nextBatchId++;
      const answer = new Promise<EventResult[]>((resolve, reject) => {
        const timer = setTimeout(
          () => this.breakStream(`${this.peer} did not answer forwarded batch ${batchId} within ${this.limits.answerTimeoutMs} ms`),
          this.limits.answerTimeoutMs,
        );
        this.inFlight.set(batchId, { events: out.eventCount, timer, resolve, reject });
      });
      const header = toBinary(
        ForwardRequestSchema,
        create(ForwardRequestSchema, { batchId, epoch: out.epoch, consistency: out.consistency, traceparent: out.traceparent }),
      );
      // No wait for "drain": the in-flight bound already limits what grpc-js buffers to
      // maxInflightBatches requests.
      call.write(Buffer.concat([header, ...out.parts.map((p) => p.encoded)]));
      return await answer;
    } finally {
      this.release();
    }
  }

  /** Ends the current stream (if any): its batches in flight are rejected retryable with `why`. The next batch opens a new one. */
  breakStream(why: string): void {
    this.dropQueued(new PeerUnavailableError("PEER_UNAVAILABLE", this.peer, `${why}; the batch was not sent: retry its events with the same seqs`));
    const call = this.call;
    if (call === undefined) return;
    this.broke(
      call,
      new PeerUnavailableError("PEER_UNAVAILABLE", this.peer, `${why}; the batch may or may not have been applied: retry its events with the same seqs`),
    );
    call.cancel();
  }

  /** Rejects everything in flight or waiting with `reason` and every later batch too. Idempotent. */
  close(reason: PeerUnavailableError): void {
    this.closedBy ??= reason;
    this.dropQueued(reason);
    for (const waiter of this.slotWaiters.splice(0)) waiter.reject(reason);
    const call = this.call;
    if (call !== undefined) {
      this.broke(call, reason);
      call.cancel();
    }
  }

  private open(): grpc.ClientDuplexStream<Buffer, Buffer> {
    if (this.call !== undefined) return this.call;
    const raw = (bytes: Buffer): Buffer => bytes;
    const call = this.client.makeBidiStreamRequest<Buffer, Buffer>(methodPath(PeerService.method.forward), raw, raw);
    this.call = call;
    call.on("data", (bytes: Buffer) => this.onAnswer(call, bytes));
    call.on("error", (err: unknown) => {
      const failure = callFailure(err);
      this.broke(
        call,
        new PeerUnavailableError(
          "PEER_UNAVAILABLE",
          this.peer,
          `the forward stream to ${this.peer} broke (${grpc.status[failure.code] ?? failure.code}: ${failure.message}) before the batch was answered; it may or may not have been applied: retry its events with the same seqs`,
          { cause: err },
        ),
      );
    });
    // An owner ends a stream this node still writes to only when it stops (drained, at shutdown):
    // an end is a break like any other.
    call.on("end", () =>
      this.broke(
        call,
        new PeerUnavailableError(
          "PEER_UNAVAILABLE",
          this.peer,
          `${this.peer} ended the forward stream before the batch was answered; retry its events with the same seqs`,
        ),
      ),
    );
    return call;
  }

  private onAnswer(call: grpc.ClientDuplexStream<Buffer, Buffer>, bytes: Buffer): void {
    if (call !== this.call) return;
    let problem: string | undefined;
    try {
      const res = fromBinary(ForwardResponseSchema, bytes);
      const pending = this.inFlight.get(res.batchId);
      if (pending === undefined) problem = `${this.peer} answered batch ${res.batchId}, which is not in flight`;
      else if (res.results.length !== pending.events)
        problem = `${this.peer} answered batch ${res.batchId} with ${res.results.length} results for ${pending.events} events`;
      else {
        this.inFlight.delete(res.batchId);
        clearTimeout(pending.timer);
        pending.resolve(res.results);
        return;
      }
    } catch (err) {
      problem = `${this.peer} sent an unreadable forward answer (${err instanceof Error ? err.message : String(err)})`;
    }
    // The answers can no longer be trusted to match their batches: give up the stream.
    const held = this.wrongAnswers.admit();
    if (held !== undefined) this.log.error({ peer: this.peer, problem, held }, "forward stream answered wrongly; reopening it");
    this.breakStream(problem);
  }

  /** Forgets `call` and rejects every batch in flight on it. Only the current call's break counts. */
  private broke(call: grpc.ClientDuplexStream<Buffer, Buffer>, err: PeerUnavailableError): void {
    if (call !== this.call) return;
    this.call = undefined;
    const pending = [...this.inFlight.values()];
    this.inFlight.clear();
    // Until its peer is seen down, a stream to a dead node breaks again at every batch.
    const held = pending.length > 0 ? this.breaks.admit() : undefined;
    if (held !== undefined) this.log.warn({ peer: this.peer, batches: pending.length, err: err.message, held }, "forward stream broke with batches in flight");
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  private acquire(signal: AbortSignal | undefined): Promise<void> {
    signal?.throwIfAborted();
    if (this.active < this.limits.maxInflightBatches && this.slotWaiters.length === 0) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.slotWaiters.indexOf(waiter);
        if (i >= 0) this.slotWaiters.splice(i, 1);
        reject(signal?.reason);
      };
      const waiter: SlotWaiter = {
        // release() hands its slot straight to this waiter: active stays counted.
        resolve: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (err) => {
          signal?.removeEventListener("abort", onAbort);
          reject(err);
        },
      };
      this.slotWaiters.push(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  private release(): void {
    const next = this.slotWaiters.shift();
    if (next !== undefined) next.resolve();
    else this.active--;
  }
}
