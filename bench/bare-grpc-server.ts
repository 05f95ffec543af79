/**
 * Ceiling: a bare grpc-js bidi-stream server, in its own process, that does only what any
 * PublishStream server must do: decode each PublishStreamRequest with protobuf-es and answer a
 * PublishStreamResponse with one ACCEPTED result per event. No runtime, no storage. The load
 * generator drives it exactly as it drives a node, so the ratio of our events/s to its events/s
 * is what the runtime (and durability) costs over the transport.
 *
 * Prints `bare-grpc serving on <host:port>` when ready; exits when its parent goes away.
 */
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type EventResult,
  EventStatus,
  PublishStreamRequestSchema,
  type PublishStreamResponse,
  PublishStreamResponseSchema,
} from "../proto/gen/twinmesh/v1/telemetry_pb.js";

const ACCEPTED: EventResult = { $typeName: "twinmesh.v1.EventResult", status: EventStatus.ACCEPTED, reason: "", message: "", retryable: false };

function passThrough(bytes: Buffer): Buffer {
  return bytes;
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
  },
  {
    publishStream: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on("data", (bytes: Buffer) => {
        const req = fromBinary(PublishStreamRequestSchema, bytes);
        const res: PublishStreamResponse = {
          $typeName: "twinmesh.v1.PublishStreamResponse",
          batchId: req.batchId,
          results: req.events.map(() => ACCEPTED),
        };
        const out = toBinary(PublishStreamResponseSchema, res);
        call.write(Buffer.from(out.buffer, out.byteOffset, out.byteLength));
      });
      call.on("end", () => call.end());
      call.on("error", () => undefined);
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
