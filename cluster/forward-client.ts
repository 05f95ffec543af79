import type { EventResult } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { type Logger, silentLogger, type Tracing } from "../runtime/index.js";
import { DEFAULT_MAX_FORWARD_BATCH_EVENTS, type ForwardBatch } from "./forward-server.js";
import { ForwardStream, type ForwardStreamLimits } from "./forward-stream.js";
import type { NodeId } from "./node-id.js";
import { PeerUnavailableError } from "./peer-errors.js";
import { PeerCondition, type PeerPool } from "./peer-pool.js";

/** How the {@link ForwardClient} sends. Every field is optional. */
export interface ForwardClientOptions {
  /**
   * Batches sent to one peer and not answered yet; further batches wait for a slot.
   * @defaultValue 64
   */
  readonly maxInflightBatches?: number;
  /**
   * How long a sent batch may wait for its answer (the owner's commit at the batch's
   * consistency) before the stream to that peer is given up as stuck and its batches in flight
   * are rejected retryable.
   * @defaultValue 30_000
   */
  readonly answerTimeoutMs?: number;
  /**
   * Most events in one forwarded request: batches to the same owner in one turn of the event
   * loop are merged up to it. Keep it at or under the owners' limit (PeerService
   * `maxForwardBatchEvents`).
   * @defaultValue 10_000
   */
  readonly maxBatchEvents?: number;
  /** @defaultValue a silent logger */
  readonly log?: Logger;
  /** Makes a span per batch of a traced request and sends its traceparent. @defaultValue none (tracing off) */
  readonly tracing?: Tracing;
}

const DEFAULT_MAX_INFLIGHT_BATCHES = 64;
const DEFAULT_ANSWER_TIMEOUT_MS = 30_000;

/**
 * Sends events to the nodes that own them, over one long-lived Forward stream per peer on the
 * {@link PeerPool}'s channels. A stream opens at its first batch and again after a break.
 *
 * Guarantees: `forward` never hangs on a lost peer. A batch in flight when its stream breaks —
 * the connection dropped, the peer's server stopped, the pool saw the peer go down or become
 * incompatible, or a batch went unanswered for `answerTimeoutMs` — is rejected with a retryable {@link PeerUnavailableError} (UNAVAILABLE), which a
 * router turns into a retryable `REJECTED` result for each event; the next batch opens a new
 * stream. At most `maxInflightBatches` batches per peer are unanswered at once: more wait, in
 * order, and are never dropped.
 *
 * @example
 * ```ts
 * const forwarding = new ForwardClient(pool, { log });
 * const results = await forwarding.forward(parseNodeId("n2"), { epoch: ring.epoch, consistency: Consistency.QUORUM, events });
 * ```
 */
export class ForwardClient {
  private readonly streams = new Map<NodeId, ForwardStream>();
  private readonly limits: ForwardStreamLimits;
  private readonly log: Logger;
  private readonly tracing: Tracing | undefined;
  private readonly unsubscribe: () => void;
  private closed = false;
  /** Batches and events handed to owners, for metrics. */
  readonly stats = { batches: 0, events: 0 };

  /** @throws RangeError when a limit is not a positive whole number. */
  constructor(
    private readonly pool: PeerPool,
    options: ForwardClientOptions = {},
  ) {
    this.limits = {
      maxInflightBatches: options.maxInflightBatches ?? DEFAULT_MAX_INFLIGHT_BATCHES,
      answerTimeoutMs: options.answerTimeoutMs ?? DEFAULT_ANSWER_TIMEOUT_MS,
      maxBatchEvents: options.maxBatchEvents ?? DEFAULT_MAX_FORWARD_BATCH_EVENTS,
    };
    for (const [name, value] of Object.entries(this.limits)) {
      if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} is ${value}; use a whole number above 0`);
    }
    this.log = (options.log ?? silentLogger()).child({ component: "cluster.forward" });
    this.tracing = options.tracing;
    // A peer that stopped answering may leave its stream open but silent (a cut link): waiting
    // for TCP keepalive would take seconds, the failure detector says so within downAfterMs.
    this.unsubscribe = pool.onChange((peer) => {
      if (peer.condition === PeerCondition.UP) return;
      this.streams.get(peer.id)?.breakStream(`${peer.id} is ${peer.condition}${peer.problem === undefined ? "" : ` (${peer.problem})`}`);
    });
  }

  /**
   * Forwards one batch to `peer` and resolves with its results after the owner's commit at
   * `batch.consistency`. `signal` withdraws a batch still waiting for a slot.
   * @throws PeerUnavailableError (retryable) when the stream broke before the answer, or the client is closed.
   * @throws RangeError when `peer` is not in the pool.
   */
  async forward(peer: NodeId, batch: ForwardBatch, signal?: AbortSignal): Promise<EventResult[]> {
    if (this.closed) throw this.closedError(peer);
    this.stats.batches++;
    this.stats.events += batch.events.length;
    return this.stream(peer).send(batch, signal);
  }

  /** Batches sent to `peer` and not answered yet. */
  inFlight(peer: NodeId): number {
    return this.streams.get(peer)?.inFlightBatches ?? 0;
  }

  /** Rejects every batch in flight or waiting (retryable, `FORWARD_CLOSED`) and ends the streams. Idempotent. Close it before its pool. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.unsubscribe();
    for (const stream of this.streams.values()) stream.close(this.closedError(stream.peer));
  }

  private stream(peer: NodeId): ForwardStream {
    let stream = this.streams.get(peer);
    if (stream === undefined) {
      stream = new ForwardStream(peer, this.pool.channel(peer), this.limits, this.log, this.tracing);
      this.streams.set(peer, stream);
    }
    return stream;
  }

  private closedError(peer: NodeId): PeerUnavailableError {
    return new PeerUnavailableError(
      "FORWARD_CLOSED",
      peer,
      `this node stopped forwarding to ${peer} (it is shutting down); retry the events on another node with the same seqs`,
    );
  }
}
