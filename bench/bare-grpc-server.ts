/**
 * Ceiling: a bare grpc-js server, in its own process, that does only what any server of these
 * calls must do. PublishStream: decode each PublishStreamRequest with protobuf-es and answer a
 * PublishStreamResponse with one ACCEPTED result per event. QueryTwins: stream `limit` copies of
 * one pre-encoded bench-twin snapshot, in pages packed as a node packs them, then a summary. No
 * runtime, no storage.
 * The load generator drives it exactly as it drives a node, so the ratio of our figures to its
 * figures is what the runtime (and durability) costs over the transport.
 *
 * Prints `bare-grpc serving on <host:port>` when ready; exits when its parent goes away.
 */
import { once } from "node:events";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type EventResult,
  EventStatus,
  PublishStreamRequestSchema,
  type PublishStreamResponse,
  PublishStreamResponseSchema,
} from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { QueryTwinsRequestSchema, QueryTwinsResponseSchema } from "../proto/gen/twinmesh/v1/twin_pb.js";
import type { TwinView } from "../runtime/index.js";
import { QueryTwinsPage } from "../server/snapshot-encoder.js";

const ACCEPTED: EventResult = { $typeName: "twinmesh.v1.EventResult", status: EventStatus.ACCEPTED, reason: "", message: "", retryable: false };

function passThrough(bytes: Buffer): Buffer {
  return bytes;
}

function encoded(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A bench twin's view, as a node's query finds it. */
const VIEW: TwinView = {
  kind: "bench",
  id: "t-123456",
  state: { value: 97.31, ewma: 50.12, count: 3, min: 1.52, max: 97.31, group: "g-56", lastMs: 1_795_462_404_082 },
  version: 3,
  lastSeq: 1_795_462_404_082_001,
  lastEventTime: 1_795_462_404_082,
  ownerNodeId: "local",
};

/**
 * `twins` copies of the bench twin as one page, with the node's own page encoder (grpc-js copies
 * each message as it frames it, so one buffer serves every write).
 */
function pageOf(twins: number): Buffer {
  const page = new QueryTwinsPage();
  for (let i = 0; i < twins; i++) page.add(VIEW);
  return encoded(page.take());
}

/** How many bench twins fill a page, by the node's bounds. */
const PAGE_TWINS = ((): number => {
  const page = new QueryTwinsPage();
  while (!page.full) page.add(VIEW);
  return page.twins;
})();
const FULL_PAGE = pageOf(PAGE_TWINS);

/** Streams `limit` snapshots in full pages as a node packs them (a partial page last), then a summary. */
async function streamSnapshots(call: grpc.ServerWritableStream<Buffer, Buffer>): Promise<void> {
  const cancelled = new AbortController();
  call.once("cancelled", () => cancelled.abort());
  const { limit } = fromBinary(QueryTwinsRequestSchema, call.request);
  try {
    for (let sent = 0; sent < limit; ) {
      const twins = Math.min(PAGE_TWINS, limit - sent);
      const page = twins === PAGE_TWINS ? FULL_PAGE : pageOf(twins);
      sent += twins;
      if (!call.write(page)) await once(call, "drain", { signal: cancelled.signal });
    }
    const summary = {
      $typeName: "twinmesh.v1.QuerySummary",
      matched: BigInt(limit),
      scanned: BigInt(limit),
      evaluationErrors: 0n,
      nextPageToken: "",
      firstEvaluationError: "",
    } as const;
    call.write(encoded(toBinary(QueryTwinsResponseSchema, { $typeName: "twinmesh.v1.QueryTwinsResponse", twins: [], summary })));
    call.end();
  } catch {
    // The client went away.
  }
}

// The same server options as a node, so connection-level settings match.
const server = new grpc.Server({
  "grpc.max_receive_message_length": 5 * 1024 * 1024,
  "grpc.max_send_message_length": 64 * 1024 * 1024,
  "grpc.keepalive_permit_without_calls": 1,
});
server.addService(
  {
    publishStream: {
      path: "/twinmesh.v1.TelemetryService/PublishStream",
      requestStream: true,
      responseStream: true,
      requestSerialize: passThrough,
      requestDeserialize: passThrough,
      responseSerialize: passThrough,
      responseDeserialize: passThrough,
      originalName: "publishStream",
    },
    queryTwins: {
      path: "/twinmesh.v1.TwinService/QueryTwins",
      requestStream: false,
      responseStream: true,
      requestSerialize: passThrough,
      requestDeserialize: passThrough,
      responseSerialize: passThrough,
      responseDeserialize: passThrough,
      originalName: "queryTwins",
    },
  },
  {
    publishStream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on("data", (bytes: Buffer) => {
        const req = fromBinary(PublishStreamRequestSchema, bytes);
        const res: PublishStreamResponse = {
          $typeName: "twinmesh.v1.PublishStreamResponse",
          batchId: req.batchId,
          batchReason: "",
          results: req.events.map(() => ACCEPTED),
        };
        const out = toBinary(PublishStreamResponseSchema, res);
        call.write(Buffer.from(out.buffer, out.byteOffset, out.byteLength));
      });
      call.on("end", () => call.end());
      call.on("error", () => undefined);
    },
    queryTwins: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      void streamSnapshots(call);
    },
  },
);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    process.stderr.write(`bare-grpc: cannot listen: ${err.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`bare-grpc serving on 127.0.0.1:${port}\n`);
});
process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
