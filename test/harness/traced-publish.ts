import { randomBytes } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { PublishRequestSchema, type PublishResponse, PublishResponseSchema, TelemetryService } from "../../proto/gen/twinmesh/v1/telemetry_pb.js";
import type { EventInit } from "./events.js";

/** A client span of the test's own: the ids a `traceparent` names. */
export interface ClientSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** The W3C header value, sampled or not. */
  readonly traceparent: string;
}

/** A new client span context with random ids. */
export function clientSpan(sampled = true): ClientSpan {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-${sampled ? "01" : "00"}` };
}

/** Publish to `address` with `traceparent` in the call's metadata (the typed client sends no trace context). */
export function tracedPublish(address: string, events: readonly EventInit[], traceparent: string): Promise<PublishResponse> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("traceparent", traceparent);
  return new Promise<PublishResponse>((resolve, reject) => {
    client.makeUnaryRequest<Buffer, PublishResponse>(
      `/${TelemetryService.typeName}/${TelemetryService.method.publish.name}`,
      () => Buffer.from(toBinary(PublishRequestSchema, create(PublishRequestSchema, { events: [...events] }))),
      (bytes: Buffer) => fromBinary(PublishResponseSchema, bytes),
      Buffer.alloc(0),
      metadata,
      { deadline: Date.now() + 20_000 },
      (err, res) => {
        client.close();
        if (err) reject(err);
        else resolve(res as PublishResponse);
      },
    );
  });
}
