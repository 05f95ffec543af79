import { ROUTED_BY_HEADER, routerFor, type TwinRouter } from "../cluster/index.js";
import type { QueryTwinsResponse, TwinService } from "../proto/gen/twinmesh/v1/twin_pb.js";
import { InvalidArgumentError, type QuerySummary, type TwinView } from "../runtime/index.js";
import type { ServiceImpl, StreamSink } from "./grpc/grpc-adapter.js";
import { requireField, toPbGroup, toSnapshot } from "./proto-convert.js";
import { QueryTwinsPage } from "./snapshot-encoder.js";

/** `twinmesh.v1.TwinService` over a {@link TwinRouter}. */
export function twinService(router: TwinRouter): ServiceImpl<typeof TwinService> {
  return {
    async getTwin(req, call) {
      const view = await routerFor(router, call).getTwin(requireField(req.kind, "kind", '"patient"'), requireField(req.id, "id", '"bed-4"'));
      return { $typeName: "twinmesh.v1.GetTwinResponse", twin: toSnapshot(view) };
    },

    async queryTwins(req, out, call) {
      const results = routerFor(router, call).queryTwins(
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
      const result = await routerFor(router, call).aggregateTwins(
        { kind: requireField(req.kind, "kind", '"patient"'), filter: req.filter, field: req.field, groupBy: req.groupBy },
        call.signal,
        // A peer's part of a cluster-wide aggregate covers this node's own twins only.
        call.metadata.get(ROUTED_BY_HEADER).length > 0 ? "local" : "cluster",
      );
      return {
        $typeName: "twinmesh.v1.AggregateTwinsResponse",
        groups: result.groups.map(toPbGroup),
        scanned: BigInt(result.scanned),
        matched: BigInt(result.matched),
        evaluationErrors: BigInt(result.evaluationErrors),
      };
    },

    async sendToTwin(req, call) {
      const kind = requireField(req.kind, "kind", '"ward"');
      const id = requireField(req.id, "id", '"ward-a"');
      // Keys are kept in the twin's record (its recent deliveries), so they must stay small.
      if (req.idempotencyKey.length > 256) {
        throw new InvalidArgumentError("BAD_FIELD", `idempotency_key is ${req.idempotencyKey.length} characters; the limit is 256`, [
          { field: "idempotency_key", description: "at most 256 characters" },
        ]);
      }
      const result = await routerFor(router, call).sendToTwin(kind, id, req.message ?? {}, req.idempotencyKey || undefined);
      return { $typeName: "twinmesh.v1.SendToTwinResponse", duplicate: result.duplicate, version: BigInt(result.version) };
    },

    async deleteTwin(req, call) {
      const deletion = await routerFor(router, call).deleteTwin(requireField(req.kind, "kind", '"patient"'), requireField(req.id, "id", '"bed-4"'), {
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

/** What {@link nextTurn} resolves with. */
const TURN = Symbol("turn");

/** Resolves once the event loop has run a turn: everything already queued as microtasks ran first. */
function nextTurn(): Promise<typeof TURN> {
  return new Promise((resolve) => setImmediate(resolve, TURN));
}

/**
 * Writes a query's twins in pages (see {@link QueryTwinsPage} for the bounds), then the summary.
 *
 * A full page is written at once. A page that is not full is written as soon as the scan pauses:
 * the twins of one chunk of the scan come as microtasks, so when a turn of the event loop passes
 * before the next twin (the scan waits for RocksDB, or yields to ingest between chunks), what has
 * been found so far goes out. A slow, selective scan therefore still streams its twins as it finds
 * them, and a fast one sends full pages.
 */
async function streamQuery(results: AsyncGenerator<TwinView, QuerySummary>, out: StreamSink<QueryTwinsResponse>): Promise<void> {
  const page = new QueryTwinsPage();
  // One pending turn at a time, made when a page starts waiting; dropped after every write.
  let turn: Promise<typeof TURN> | undefined;
  for (;;) {
    const pending = results.next();
    let next: IteratorResult<TwinView, QuerySummary> | typeof TURN;
    if (page.twins === 0) next = await pending;
    else {
      turn ??= nextTurn();
      next = await Promise.race([pending, turn]);
      if (next === TURN) {
        // The scan paused with a partial page: send it, then wait for the twin still coming.
        turn = undefined;
        await out.write(page.take());
        next = await pending;
      }
    }
    if (next.done) {
      if (page.twins > 0) await out.write(page.take());
      const s = next.value;
      await out.write({
        $typeName: "twinmesh.v1.QueryTwinsResponse",
        twins: [],
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
    // Encoded by hand at once, which costs a fraction of toBinary (see snapshot-encoder.ts).
    page.add(next.value);
    if (page.full) {
      turn = undefined;
      await out.write(page.take());
    }
  }
}
