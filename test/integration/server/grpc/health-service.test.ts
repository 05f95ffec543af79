import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  Health,
  type HealthCheckRequest,
  HealthCheckRequestSchema,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  type HealthListRequest,
  HealthListRequestSchema,
  HealthListResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../../../proto/gen/grpc/health/v1/health_pb.js";
import { addHealthService, HealthState } from "../../../../server/grpc/health-service.js";
import type { ErrorLog } from "../../../../server/grpc/to-status.js";

const TELEMETRY = "twinmesh.v1.TelemetryService";

describe("addHealthService (health-service)", () => {
  let server: grpc.Server;
  let client: grpc.Client;
  let health: HealthState;
  let logged: string[];

  beforeEach(async () => {
    logged = [];
    const log: ErrorLog = { error: (_obj, msg) => logged.push(msg) };
    health = new HealthState();
    server = new grpc.Server();
    addHealthService(server, health, { log });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  afterEach(() => {
    health.close();
    client.close();
    server.forceShutdown();
  });

  function check(service: string): Promise<ServingStatus> {
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(
        `/${Health.typeName}/Check`,
        (req: HealthCheckRequest) => Buffer.from(toBinary(HealthCheckRequestSchema, req)),
        (bytes: Buffer) => fromBinary(HealthCheckResponseSchema, bytes),
        create(HealthCheckRequestSchema, { service }),
        (err, res) => (err || res === undefined ? reject(err) : resolve(res.status)),
      );
    });
  }

  function watch(service: string): { call: grpc.ClientReadableStream<HealthCheckResponse>; next: () => Promise<ServingStatus | "end"> } {
    const call = client.makeServerStreamRequest(
      `/${Health.typeName}/Watch`,
      (req: HealthCheckRequest) => Buffer.from(toBinary(HealthCheckRequestSchema, req)),
      (bytes: Buffer) => fromBinary(HealthCheckResponseSchema, bytes),
      create(HealthCheckRequestSchema, { service }),
    );
    const it = (call as AsyncIterable<HealthCheckResponse>)[Symbol.asyncIterator]();
    return { call, next: async () => ((r) => (r.done ? "end" : r.value.status))(await it.next()) };
  }

  it("answers Check with the node's status under the empty name", async () => {
    assert.equal(await check(""), ServingStatus.SERVING);
    health.set("", ServingStatus.NOT_SERVING);
    assert.equal(await check(""), ServingStatus.NOT_SERVING);
  });

  it("answers Check of a service that was never set with NOT_FOUND", async () => {
    await assert.rejects(check(TELEMETRY), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.equal(err.details, `no health status for service "${TELEMETRY}"; this node reports "" ("" is the whole node)`);
      return true;
    });
    assert.deepEqual(logged, []);
  });

  it("lists every service's status", async () => {
    health.set(TELEMETRY, ServingStatus.NOT_SERVING);
    const res = await new Promise<Record<string, ServingStatus>>((resolve, reject) => {
      client.makeUnaryRequest(
        `/${Health.typeName}/List`,
        (req: HealthListRequest) => Buffer.from(toBinary(HealthListRequestSchema, req)),
        (bytes: Buffer) => fromBinary(HealthListResponseSchema, bytes),
        create(HealthListRequestSchema),
        (err, r) => (err || r === undefined ? reject(err) : resolve(Object.fromEntries(Object.entries(r.statuses).map(([k, v]) => [k, v.status])))),
      );
    });
    assert.deepEqual(res, { "": ServingStatus.SERVING, [TELEMETRY]: ServingStatus.NOT_SERVING });
  });

  it("streams SERVICE_UNKNOWN for an unknown service, then each change, until close()", async () => {
    const { next } = watch(TELEMETRY);
    assert.equal(await next(), ServingStatus.SERVICE_UNKNOWN);
    health.set(TELEMETRY, ServingStatus.SERVING);
    assert.equal(await next(), ServingStatus.SERVING);
    health.set(TELEMETRY, ServingStatus.SERVING); // no change, nothing sent
    health.set(TELEMETRY, ServingStatus.NOT_SERVING);
    assert.equal(await next(), ServingStatus.NOT_SERVING);
    health.close();
    assert.equal(await next(), "end");
  });

  it("ends a watch the client cancels", async () => {
    const { call, next } = watch("");
    assert.equal(await next(), ServingStatus.SERVING);
    call.cancel();
    await assert.rejects(next(), (err: grpc.ServiceError) => err.code === grpc.status.CANCELLED);
    assert.deepEqual(logged, []);
  });
});
