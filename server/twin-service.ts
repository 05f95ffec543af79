import type { QueryTwinsResponse, TwinService } from "../proto/gen/twinmesh/v1/twin_pb.js";
import { InvalidArgumentError, type QuerySummary, type TwinRuntime, type TwinView } from "../runtime/index.js";
import type { ServiceImpl, StreamSink } from "./grpc/grpc-adapter.js";
import { requireField, toPbGroup, toSnapshot } from "./proto-convert.js";
import { encodeQueryTwinsSnapshot } from "./snapshot-encoder.js";

/** `twinmesh.v1.TwinService` over a {@link TwinRuntime}. */
export function twinService(runtime: TwinRuntime): ServiceImpl<typeof TwinService> {
  const { host, queries } = runtime;
  return {
    async getTwin(req) {
      const view = await host.getTwin(requireField(req.kind, "kind", '"patient"'), requireField(req.id, "id", '"bed-4"'));
      return { $typeName: "twinmesh.v1.GetTwinResponse", twin: toSnapshot(view) };
    },

    async queryTwins(req, out, call) {
      const results = queries.query(
        { kind: requireField(req.kind, "kind", '"patient"'), filter: req.filter, orderBy: req.orderBy, limit: req.limit, pageToken: req.pageToken },
        call.signal,
      );
      try {
        await streamQuery(results, out);
      } finally {
        // A write that failed (the client went away) leaves the scan suspended: end it, so its
        // RocksDB iterator and snapshot are released now rather than when the store closes.
        await results.return({ matched: 0, scanned: 0, evaluationErrors: 0, nextPageToken: "" });
      }
    },

    async aggregateTwins(req, call) {
      const result = await queries.aggregate(
        { kind: requireField(req.kind, "kind", '"patient"'), filter: req.filter, field: req.field, groupBy: req.groupBy },
        call.signal,
      );
      return {
        $typeName: "twinmesh.v1.AggregateTwinsResponse",
        groups: result.groups.map(toPbGroup),
        scanned: BigInt(result.scanned),
        matched: BigInt(result.matched),
        evaluationErrors: BigInt(result.evaluationErrors),
      };
    },

    async sendToTwin(req) {
      const kind = requireField(req.kind, "kind", '"ward"');
      const id = requireField(req.id, "id", '"ward-a"');
      // Keys are kept in the twin's record (its recent deliveries), so they must stay small.
      if (req.idempotencyKey.length > 256) {
        throw new InvalidArgumentError("BAD_FIELD", `idempotency_key is ${req.idempotencyKey.length} characters; the limit is 256`, [
          { field: "idempotency_key", description: "at most 256 characters" },
        ]);
      }
      const result = await host.sendToTwin(kind, id, req.message ?? {}, req.idempotencyKey || undefined);
      return { $typeName: "twinmesh.v1.SendToTwinResponse", duplicate: result.duplicate, version: BigInt(result.version) };
    },

    async deleteTwin(req) {
      const deletion = await host.deleteTwin(requireField(req.kind, "kind", '"patient"'), requireField(req.id, "id", '"bed-4"'), {
        keepTombstone: req.keepTombstone,
      });
      return {
        $typeName: "twinmesh.v1.DeleteTwinResponse",
        existed: deletion.existed,
        timersCancelled: deletion.timersCancelled,
        resolvedAlertIds: [...deletion.resolvedAlertIds],
        tombstone: deletion.tombstone,
        tombstoneSeq: BigInt(deletion.tombstoneSeq),
      };
    },
  };
}

/** Writes each twin of a query as it comes, then the summary. */
async function streamQuery(results: AsyncGenerator<TwinView, QuerySummary>, out: StreamSink<QueryTwinsResponse>): Promise<void> {
  for (;;) {
    const next = await results.next();
    if (next.done) {
      const s = next.value;
      await out.write({
        $typeName: "twinmesh.v1.QueryTwinsResponse",
        summary: {
          $typeName: "twinmesh.v1.QuerySummary",
          matched: BigInt(s.matched),
          scanned: BigInt(s.scanned),
          evaluationErrors: BigInt(s.evaluationErrors),
          nextPageToken: s.nextPageToken,
          firstEvaluationError: s.firstEvaluationError ?? "",
        },
      });
      return;
    }
    // One message per twin: encoded by hand, which costs a fraction of toBinary (see snapshot-encoder.ts).
    await out.write(encodeQueryTwinsSnapshot(next.value));
  }
}
