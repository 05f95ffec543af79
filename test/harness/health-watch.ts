import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  Health,
  type HealthCheckRequest,
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  type HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../../proto/gen/grpc/health/v1/health_pb.js";
import { methodPath } from "./grpc-status.js";

/** A grpc.health.v1 Watch in progress: every status it streamed so far, in order, and how it ended. */
export interface HealthWatch {
  readonly service: string;
  readonly seen: HealthCheckResponse_ServingStatus[];
  /** The call's final status code. */
  readonly ended: Promise<grpc.status>;
  cancel(): void;
}

/** Opens a grpc.health.v1 Watch of `service` (`""`: the whole node) on a raw client. */
export function healthWatch(raw: grpc.Client, service: string): HealthWatch {
  const call = raw.makeServerStreamRequest(
    methodPath(Health.method.watch),
    (req: HealthCheckRequest) => Buffer.from(toBinary(HealthCheckRequestSchema, req)),
    (bytes: Buffer) => fromBinary(HealthCheckResponseSchema, bytes),
    create(HealthCheckRequestSchema, { service }),
  );
  const seen: HealthCheckResponse_ServingStatus[] = [];
  call.on("data", (res: HealthCheckResponse) => seen.push(res.status));
  call.on("error", () => undefined); // reported through "status"
  const ended = new Promise<grpc.status>((resolve) => call.on("status", (s: grpc.StatusObject) => resolve(s.code)));
  return { service, seen, ended, cancel: () => call.cancel() };
}
