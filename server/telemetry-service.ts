import type { TwinRouter } from "../cluster/index.js";
import type { EventResult, PublishResponse, PublishStreamRequest, TelemetryService } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { InvalidArgumentError, type Logger, quoteInput, SpanName, type Tracing } from "../runtime/index.js";
import type { ServiceImpl } from "./grpc/grpc-adapter.js";
import { badConsistencyMessage, consistencyLevel, rejectedResult } from "./proto-convert.js";
import { traceparentOf } from "./telemetry/index.js";

/** Limits of the telemetry service. */
export interface TelemetryServiceLimits {
  /** Most events in one Publish or PublishStream request. */
  readonly maxBatchEvents: number;
  /** Most batches of one PublishStream in flight; beyond it the stream stops reading (back-pressure). */
  readonly maxInflightBatches: number;
}

/** Batch ids remembered per stream to detect reuse after a batch completed. */
const RECENT_BATCH_IDS = 4_096;
const MAX_BATCH_ID = 128;

/**
 * `twinmesh.v1.TelemetryService` over a {@link TwinRouter}. Publish answers after every event's
 * outcome is durable. PublishStream runs up to `maxInflightBatches` batches concurrently and
 * answers each as it completes (out of order); a slow reader slows the stream down instead of
 * growing memory, because the stream is only read while a batch slot is free.
 */
export function telemetryService(router: TwinRouter, limits: TelemetryServiceLimits, log: Logger, tracing?: Tracing): ServiceImpl<typeof TelemetryService> {
  return {
    async publish(req, call): Promise<PublishResponse> {
      if (req.events.length > limits.maxBatchEvents) {
        throw new InvalidArgumentError(
          "BATCH_TOO_LARGE",
          `the request has ${req.events.length} events; the limit is ${limits.maxBatchEvents}; split it into smaller batches`,
          [{ field: "events", description: `at most ${limits.maxBatchEvents} events` }],
        );
      }
      const consistency = consistencyLevel(req.consistency);
      if (consistency === undefined) {
        throw new InvalidArgumentError("BAD_FIELD", badConsistencyMessage(req.consistency), [
          { field: "consistency", description: "CONSISTENCY_LOCAL, CONSISTENCY_QUORUM, CONSISTENCY_ALL or unset" },
        ]);
      }
      const results =
        tracing === undefined
          ? await router.publish(req.events, consistency)
          : await traced(tracing, traceparentOf(call.metadata), "Publish", req.events.length, () => router.publish(req.events, consistency));
      return { $typeName: "twinmesh.v1.PublishResponse", results };
    },

    async publishStream(input, out, call): Promise<void> {
      // Read once per stream, and only with tracing on: each batch is a child of the stream's caller.
      const traceparent = tracing === undefined ? undefined : traceparentOf(call.metadata);
      // Batches being applied, by id, each with the promise of its answer being written.
      const inflight = new Map<string, Promise<void>>();
      const recent = new Set<string>();
      // Every answer not yet written: applied batches and refusals waiting for an earlier
      // answer with the same id. Its size bounds the slots, so refusals queue no more than batches.
      const writes = new Set<Promise<void>>();
      let slotFreed: (() => void) | undefined;
      const answer = (batchId: string, results: EventResult[], batchReason = ""): Promise<void> =>
        out.write({ $typeName: "twinmesh.v1.PublishStreamResponse", batchId, results, batchReason });
      const track = (write: Promise<void>, batchId: string): Promise<void> => {
        const done: Promise<void> = write
          .catch((err: unknown) => {
            // The events' outcomes are durable either way; only the answer could not be sent.
            if (!call.signal.aborted) log.warn({ err, batchId }, "could not answer a batch");
          })
          .finally(() => {
            writes.delete(done);
            slotFreed?.();
            slotFreed = undefined;
          });
        writes.add(done);
        return done;
      };

      // A request that cannot be read ends the stream, but only after every batch read before it
      // is answered: one of them may be applied already, and its answer must not be lost.
      let unreadable: unknown;
      try {
        await readBatches();
      } catch (err) {
        unreadable = err;
      }
      await Promise.all(writes);
      if (unreadable !== undefined) throw unreadable;

      async function readBatches(): Promise<void> {
        for await (const req of input) {
          while (writes.size >= limits.maxInflightBatches) {
            await new Promise<void>((resolve) => {
              slotFreed = resolve;
            });
          }
          const batchId = req.batchId;
          const problem = checkBatch(req, inflight, recent, limits);
          if (problem !== undefined) {
            // The batch_id as sent, even an over-long one: the client matches answers by it. A
            // refusal of an id still in flight waits for that batch's answer, so the first
            // answer with an id is always the first request's.
            const results = req.events.map(() => problem);
            const earlier = inflight.get(batchId);
            const refusal = earlier === undefined ? answer(batchId, results, problem.reason) : earlier.then(() => answer(batchId, results, problem.reason));
            void track(refusal, batchId); // awaited through `writes`
            continue;
          }
          const done = track(
            (tracing === undefined
              ? publishBatch(router, req)
              : traced(tracing, traceparent, "PublishStream", req.events.length, () => publishBatch(router, req))
            )
              .catch((err: unknown): EventResult[] => {
                // A twinmesh bug, not the client's: nothing of the batch was applied if it threw
                // before posting (every event is validated first). The stream goes on.
                log.error({ err, batchId }, "could not apply a batch");
                return req.events.map(() => INTERNAL_RESULT);
              })
              .then((results) => answer(batchId, results))
              .finally(() => {
                inflight.delete(batchId);
                remember(recent, batchId);
              }),
            batchId,
          );
          inflight.set(batchId, done);
        }
      }
    },
  };
}

/**
 * Runs `apply` under a publish span (a child of the caller's `traceparent`, or a root the
 * sampler decides on): the span is active while the router admits the batch, so the host ties
 * the batch's turns to it and a forward carries it on. An unsampled batch runs as it is.
 */
async function traced<T>(tracing: Tracing, traceparent: string | undefined, method: string, events: number, apply: () => Promise<T>): Promise<T> {
  const span = tracing.startRemote(SpanName.publish, traceparent, {
    kind: "server",
    attributes: { "rpc.system": "grpc", "rpc.service": "twinmesh.v1.TelemetryService", "rpc.method": method, "twinmesh.batch.events": events },
  });
  if (span === undefined) return apply();
  try {
    return await tracing.run(span.ref, apply);
  } catch (err) {
    span.fail(err);
    throw err;
  } finally {
    span.end();
  }
}

const INTERNAL_RESULT = rejectedResult("INTERNAL", "the node failed to handle this batch; see its log; retry with the same seqs", true);

/** Applies one stream batch; a synchronous throw becomes a rejection, so it cannot end the stream. */
async function publishBatch(router: TwinRouter, req: PublishStreamRequest): Promise<EventResult[]> {
  // checkBatch refused a consistency that is not a level.
  return router.publish(req.events, consistencyLevel(req.consistency) ?? "default");
}

function checkBatch(
  req: PublishStreamRequest,
  inflight: ReadonlyMap<string, unknown>,
  recent: ReadonlySet<string>,
  limits: TelemetryServiceLimits,
): EventResult | undefined {
  if (req.batchId.length === 0)
    return rejectedResult("MISSING_BATCH_ID", "batch_id is required on every PublishStream request; set a value unique within the stream");
  if (req.batchId.length > MAX_BATCH_ID) return rejectedResult("BAD_BATCH_ID", `batch_id is ${req.batchId.length} characters; the limit is ${MAX_BATCH_ID}`);
  if (inflight.has(req.batchId)) {
    return rejectedResult(
      "BATCH_ID_IN_FLIGHT",
      `batch_id ${quoteInput(req.batchId)} belongs to a batch still being applied on this stream; this request's events were not applied: resend them under a new batch_id`,
    );
  }
  if (recent.has(req.batchId)) {
    return rejectedResult(
      "DUPLICATE_BATCH_ID",
      `batch_id ${quoteInput(req.batchId)} was already used on this stream; this request's events were not applied: resend them under a new batch_id`,
    );
  }
  if (req.events.length > limits.maxBatchEvents) {
    return rejectedResult("BATCH_TOO_LARGE", `the batch has ${req.events.length} events; the limit is ${limits.maxBatchEvents}; split it into smaller batches`);
  }
  if (consistencyLevel(req.consistency) === undefined) return rejectedResult("BAD_CONSISTENCY", badConsistencyMessage(req.consistency));
  return undefined;
}

function remember(recent: Set<string>, batchId: string): void {
  recent.add(batchId);
  if (recent.size > RECENT_BATCH_IDS) {
    const oldest = recent.values().next().value;
    if (oldest !== undefined) recent.delete(oldest);
  }
}
