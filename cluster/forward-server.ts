import { create } from "@bufbuild/protobuf";
import { type ForwardRequest, type ForwardResponse, ForwardResponseSchema } from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { Consistency, type Event, type EventResult, EventResultSchema, EventStatus } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { InvalidArgumentError, isTwinmeshError, type Logger, SpanName, type Tracing } from "../runtime/index.js";
import type { BidiHandler, CallContext } from "../server/grpc/index.js";

/** One forwarded batch, as the owner's {@link ForwardHandler} receives it. */
export interface ForwardBatch {
  /** The ring epoch the sender routed by. */
  readonly epoch: bigint;
  /** The consistency the client asked for. */
  readonly consistency: Consistency;
  /** The events, in the sender's order (per-source order is the sender's to keep). */
  readonly events: readonly Event[];
}

/**
 * Applies forwarded batches on the owner. `results[i]` answers `events[i]`, after the owner's
 * commit at the batch's consistency; an event this node does not own (any more) is answered
 * `REJECTED`, retryable (`NOT_OWNER`), for the sender to route again. Batches of one stream are
 * handed over concurrently (up to the stream's in-flight bound) and may finish in any order.
 * Throwing answers every event of the batch `REJECTED` and retryable; it never breaks the stream.
 */
export interface ForwardHandler {
  forward(batch: ForwardBatch, signal: AbortSignal): Promise<EventResult[]>;
}

/** Limits of the Forward streams a node serves. */
export interface ForwardServerLimits {
  /** Batches of one stream being applied at once; the stream is not read further until one is answered. */
  readonly maxInflightBatches: number;
  /** Events in one forwarded batch; a bigger one ends the stream INVALID_ARGUMENT (`BATCH_TOO_LARGE`). */
  readonly maxBatchEvents: number;
}

/** Events in one forwarded batch, unless the node is configured otherwise (PeerService `maxForwardBatchEvents`). */
export const DEFAULT_MAX_FORWARD_BATCH_EVENTS = 10_000;

const KNOWN_CONSISTENCIES = new Set<number>(Object.values(Consistency).filter((v): v is number => typeof v === "number"));

/**
 * The bidi handler of PeerService.Forward over `handler`: each request is checked, handed to the
 * handler, and answered with its `batch_id` as soon as its results are in, in whatever order they
 * finish. A malformed request (a `batch_id` already in flight, an epoch of 0, an unknown
 * consistency, too many events) ends the stream INVALID_ARGUMENT after the batches in flight are
 * answered: the sender has a bug, and its other batches stay unambiguous.
 */
export function serveForward(
  node: string,
  handler: ForwardHandler,
  limits: ForwardServerLimits,
  log: Logger,
  tracing?: Tracing,
): BidiHandler<ForwardRequest, ForwardResponse> {
  return async (input, out, call) => {
    const inflight = new Map<bigint, Promise<void>>();
    try {
      for await (const req of input) {
        try {
          checkForwardRequest(req, inflight, limits);
        } catch (err) {
          // The sender has a bug; its batches in flight are still answered before the stream ends.
          log.warn({ err, batchId: req.batchId, inFlight: inflight.size, peer: call.peer }, "forward stream ends at a malformed batch");
          throw err;
        }
        // Back-pressure: while the bound is reached, the next request stays unread in the stream
        // (and, through HTTP/2 flow control, in the sender), rather than queued here.
        while (inflight.size >= limits.maxInflightBatches) await Promise.race(inflight.values());
        const id = req.batchId;
        inflight.set(
          id,
          answer(node, handler, req, out.write.bind(out), call, log, tracing).finally(() => inflight.delete(id)),
        );
      }
    } finally {
      // answer() never rejects; wait so no handler outlives its call unobserved.
      await Promise.all(inflight.values());
    }
  };
}

function checkForwardRequest(req: ForwardRequest, inflight: ReadonlyMap<bigint, unknown>, limits: ForwardServerLimits): void {
  const batch = `forwarded batch ${req.batchId}`;
  if (inflight.has(req.batchId)) {
    throw new InvalidArgumentError(
      "BATCH_ID_IN_FLIGHT",
      `${batch} reuses the batch_id of a batch still in flight on this stream; give every batch in flight its own batch_id`,
      [{ field: "batch_id", description: "unique among the batches in flight on the stream" }],
    );
  }
  if (req.epoch === 0n) {
    throw new InvalidArgumentError("BAD_FIELD", `${batch} has epoch 0; send the epoch of the ring the batch was routed by (1 or more)`, [
      { field: "epoch", description: "the sender's ring epoch, at least 1" },
    ]);
  }
  if (!KNOWN_CONSISTENCIES.has(req.consistency)) {
    throw new InvalidArgumentError(
      "BAD_FIELD",
      `${batch} has consistency ${req.consistency}, which this node does not know; send LOCAL, QUORUM, ALL or unspecified`,
      [{ field: "consistency", description: "a twinmesh.v1.Consistency value" }],
    );
  }
  if (req.events.length > limits.maxBatchEvents) {
    throw new InvalidArgumentError(
      "BATCH_TOO_LARGE",
      `${batch} has ${req.events.length} events, over this node's limit of ${limits.maxBatchEvents}; split it into smaller batches`,
      [{ field: "events", description: `at most ${limits.maxBatchEvents} events` }],
    );
  }
}

/** Applies one batch and writes its answer. Never rejects: a failure becomes the batch's answer, a write after the call ended is dropped. */
async function answer(
  node: string,
  handler: ForwardHandler,
  req: ForwardRequest,
  write: (msg: ForwardResponse) => Promise<void>,
  call: CallContext,
  log: Logger,
  tracing: Tracing | undefined,
): Promise<void> {
  let results: EventResult[];
  // A batch the sender traced continues its trace here: the apply span is active while the host
  // admits the events, so their turns are its children. An untraced one costs a string check.
  const span =
    tracing !== undefined && req.traceparent !== ""
      ? tracing.startRemote(SpanName.forwardApply, req.traceparent, {
          kind: "server",
          attributes: { "twinmesh.node": node, "twinmesh.batch.events": req.events.length },
        })
      : undefined;
  try {
    const batch: ForwardBatch = { epoch: req.epoch, consistency: req.consistency, events: req.events };
    results = await (span === undefined || tracing === undefined
      ? handler.forward(batch, call.signal)
      : tracing.run(span.ref, () => handler.forward(batch, call.signal)));
    if (results.length !== req.events.length) {
      throw new Error(`the forward handler answered ${results.length} results for ${req.events.length} events`);
    }
  } catch (err) {
    span?.fail(err);
    results = rejectBatch(node, req.events.length, err, log);
  }
  span?.end();
  try {
    await write(create(ForwardResponseSchema, { batchId: req.batchId, results }));
  } catch (err) {
    // The call ended (the sender cancelled, or the stream broke): the sender rejects the batch
    // retryable on its side, and a retry with the same seqs is deduplicated here.
    log.debug({ err, batchId: req.batchId }, "forward answer not delivered: the stream ended");
  }
}

/** Every event of a batch the handler could not apply, answered `REJECTED` and retryable. */
function rejectBatch(node: string, count: number, err: unknown, log: Logger): EventResult[] {
  let reason: string;
  let message: string;
  if (isTwinmeshError(err) && err.retryable) {
    ({ reason, message } = err);
  } else {
    // A handler is meant to answer each event itself; a throw is a bug or a fault of this node.
    log.error({ err }, "forward handler failed; the batch is rejected retryable");
    reason = "FORWARD_FAILED";
    message = `node ${node} failed to apply the forwarded batch (see its log); retry the events with the same seqs`;
  }
  return Array.from({ length: count }, () => create(EventResultSchema, { status: EventStatus.REJECTED, reason, message, retryable: true }));
}
