import type { TwinRouter } from "../cluster/index.js";
import type { EventResult, PublishResponse, PublishStreamRequest, TelemetryService } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { InvalidArgumentError, type Logger } from "../runtime/index.js";
import type { ServiceImpl } from "./grpc/grpc-adapter.js";
import { rejectedResult, toEventResult, toIngestEvent } from "./proto-convert.js";

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
export function telemetryService(router: TwinRouter, limits: TelemetryServiceLimits, log: Logger): ServiceImpl<typeof TelemetryService> {
  return {
    async publish(req): Promise<PublishResponse> {
      if (req.events.length > limits.maxBatchEvents) {
        throw new InvalidArgumentError(
          "BATCH_TOO_LARGE",
          `the request has ${req.events.length} events; the limit is ${limits.maxBatchEvents}; split it into smaller batches`,
          [{ field: "events", description: `at most ${limits.maxBatchEvents} events` }],
        );
      }
      const outcomes = await router.publish(req.events.map(toIngestEvent));
      return { $typeName: "twinmesh.v1.PublishResponse", results: outcomes.map(toEventResult) };
    },

    async publishStream(input, out, call): Promise<void> {
      const inflight = new Set<string>();
      const recent = new Set<string>();
      const writes = new Set<Promise<void>>();
      let slotFreed: (() => void) | undefined;
      const answer = (batchId: string, results: EventResult[]): Promise<void> =>
        out.write({ $typeName: "twinmesh.v1.PublishStreamResponse", batchId, results });

      for await (const req of input) {
        while (inflight.size >= limits.maxInflightBatches) {
          await new Promise<void>((resolve) => {
            slotFreed = resolve;
          });
        }
        const problem = checkBatch(req, inflight, recent, limits);
        if (problem !== undefined) {
          // The batch_id as sent, even an over-long one: the client matches answers by it.
          await answer(
            req.batchId,
            req.events.map(() => problem),
          );
          continue;
        }
        const batchId = req.batchId;
        inflight.add(batchId);
        const done: Promise<void> = router
          .publish(req.events.map(toIngestEvent))
          .then((outcomes) => answer(batchId, outcomes.map(toEventResult)))
          .catch((err: unknown) => {
            // The events' outcomes are durable either way; only the answer could not be sent.
            if (!call.signal.aborted) log.warn({ err, batchId }, "could not answer a batch");
          })
          .finally(() => {
            inflight.delete(batchId);
            remember(recent, batchId);
            writes.delete(done);
            slotFreed?.();
            slotFreed = undefined;
          });
        writes.add(done);
      }
      await Promise.all(writes);
    },
  };
}

function checkBatch(req: PublishStreamRequest, inflight: Set<string>, recent: Set<string>, limits: TelemetryServiceLimits): EventResult | undefined {
  if (req.batchId.length === 0)
    return rejectedResult("MISSING_BATCH_ID", "batch_id is required on every PublishStream request; set a value unique within the stream");
  if (req.batchId.length > MAX_BATCH_ID) return rejectedResult("BAD_BATCH_ID", `batch_id is ${req.batchId.length} characters; the limit is ${MAX_BATCH_ID}`);
  if (inflight.has(req.batchId) || recent.has(req.batchId)) {
    return rejectedResult(
      "DUPLICATE_BATCH_ID",
      `batch_id "${req.batchId}" was already used on this stream; use a new batch_id for every request (its events were not applied)`,
    );
  }
  if (req.events.length > limits.maxBatchEvents) {
    return rejectedResult("BATCH_TOO_LARGE", `the batch has ${req.events.length} events; the limit is ${limits.maxBatchEvents}; split it into smaller batches`);
  }
  return undefined;
}

function remember(recent: Set<string>, batchId: string): void {
  recent.add(batchId);
  if (recent.size > RECENT_BATCH_IDS) {
    const oldest = recent.values().next().value;
    if (oldest !== undefined) recent.delete(oldest);
  }
}
