import assert from "node:assert/strict";
import { create, type DescMessage, type DescMethod, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import fc from "fast-check";
import { AlertService } from "../../proto/gen/twinmesh/v1/alert_pb.js";
import { EventStatus, TelemetryService } from "../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { TwinService } from "../../proto/gen/twinmesh/v1/twin_pb.js";
import { MAX_DECODE_DEPTH } from "../../server/grpc/grpc-adapter.js";
import { ev } from "../harness/events.js";
import { methodPath, rawClient, statusDetails } from "../harness/grpc-status.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

/**
 * Property: valid requests of all three public services, mutated byte by byte on the wire, never
 * get INTERNAL or UNKNOWN (no fixture twin used here throws), never take the node down, and a
 * Publish batch is either answered event by event or not applied at all. The seed is fixed so a
 * failure replays; fast-check prints it with the shrunk counterexample.
 */
const SEED = 20_261_202;
const RUNS = 1_500;
const CALL_DEADLINE_MS = 2_000;

/** One byte-level edit of an encoded request. */
interface Mutation {
  readonly op: "flip" | "set" | "insert" | "delete" | "truncate" | "repeat";
  readonly at: number;
  readonly bytes: Uint8Array;
  readonly len: number;
}

/** Byte strings that decode to edge values: huge and maximal varints, NaN and infinite doubles, NUL, a lone length prefix. */
const SPECIAL_BYTES = [
  [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40], // varint 2^62
  [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // varint 2^64-1
  [0xff, 0xff, 0xff, 0xff, 0x0f], // varint 2^32-1 (negative as int32)
  [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x7f], // double NaN
  [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x7f], // double Infinity
  [0x00],
  [0x7f],
].map((b) => Uint8Array.from(b));

const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  op: fc.constantFrom("flip", "set", "insert", "delete", "truncate", "repeat"),
  at: fc.nat(),
  bytes: fc.oneof(fc.uint8Array({ minLength: 1, maxLength: 8 }), fc.constantFrom(...SPECIAL_BYTES)),
  len: fc.integer({ min: 1, max: 16 }),
});

function mutate(original: Uint8Array, mutations: readonly Mutation[]): Buffer {
  let b = Buffer.from(original);
  for (const m of mutations) {
    const at = b.length === 0 ? 0 : m.at % (b.length + 1);
    switch (m.op) {
      case "flip":
        if (at < b.length) b[at] = (b[at] as number) ^ (m.bytes[0] as number);
        break;
      case "set":
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(Math.min(b.length, at + m.bytes.length))]);
        break;
      case "insert":
        b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
        break;
      case "delete":
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)]);
        break;
      case "truncate":
        b = b.subarray(0, at);
        break;
      case "repeat":
        b = Buffer.concat([b.subarray(0, at + m.len), b.subarray(at)]);
        break;
    }
  }
  return b;
}

function encode<M extends DescMethod>(method: M, init: MessageInitShape<M["input"]>): Uint8Array {
  return toBinary(method.input, create(method.input, init));
}

/** What a call ended with. */
interface Outcome {
  readonly code: grpc.status;
  readonly reason: string | undefined;
  readonly messages: Buffer[];
}

function reasonOf(err: grpc.ServiceError): string | undefined {
  try {
    return statusDetails(err).errorInfo?.reason;
  } catch {
    return undefined;
  }
}

function unary(client: grpc.Client, method: DescMethod, bytes: Buffer): Promise<Outcome> {
  const raw = (b: Buffer): Buffer => b;
  return new Promise((resolve) => {
    client.makeUnaryRequest(methodPath(method), raw, raw, bytes, { deadline: Date.now() + CALL_DEADLINE_MS }, (err, res) =>
      resolve(err ? { code: err.code, reason: reasonOf(err), messages: [] } : { code: grpc.status.OK, reason: undefined, messages: res ? [res] : [] }),
    );
  });
}

function stream(client: grpc.Client, method: DescMethod, bytes: Buffer): Promise<Outcome> {
  const raw = (b: Buffer): Buffer => b;
  const options = { deadline: Date.now() + (method.methodKind === "server_streaming" ? 300 : CALL_DEADLINE_MS) };
  const call =
    method.methodKind === "bidi_streaming"
      ? client.makeBidiStreamRequest(methodPath(method), raw, raw, options)
      : client.makeServerStreamRequest(methodPath(method), raw, raw, bytes, options);
  if (method.methodKind === "bidi_streaming") {
    (call as grpc.ClientDuplexStream<Buffer, Buffer>).write(bytes);
    (call as grpc.ClientDuplexStream<Buffer, Buffer>).end();
  }
  const messages: Buffer[] = [];
  call.on("data", (m: Buffer) => messages.push(m));
  return new Promise((resolve) => {
    call.on("error", (err: grpc.ServiceError) => resolve({ code: err.code, reason: reasonOf(err), messages }));
    call.on("status", (s: grpc.StatusObject) => {
      if (s.code === grpc.status.OK) resolve({ code: s.code, reason: undefined, messages });
    });
  });
}

/** The message the server decoded from `bytes`, or undefined when it cannot be decoded. */
function decoded<D extends DescMessage>(schema: D, bytes: Buffer) {
  try {
    return fromBinary(schema, bytes, { recursionLimit: MAX_DECODE_DEPTH });
  } catch {
    return undefined;
  }
}

describe("wire mutations of valid requests (wire-fuzz)", () => {
  const t = useTestScope();

  it("never answers INTERNAL or UNKNOWN, keeps the node up, and answers a Publish batch per event or applies none of it", async function () {
    this.timeout(60_000);
    const { node, address, client } = await startNode(t, { hostOptions: { maxClockSkewMs: 60_000 } });
    const raw = rawClient(address);
    t.defer(() => raw.close());
    await client.publish([ev("counter", "seed-1", 1), ev("alarm", "seed-1", 1, { level: 99 })]);
    const now = BigInt(Math.floor(Date.now() / 1000));

    const requests: { method: DescMethod; bytes: Uint8Array }[] = [
      {
        method: TelemetryService.method.publish,
        bytes: encode(TelemetryService.method.publish, {
          events: [
            ev("counter", "f-1", 1, { bpm: 72 }, { time: { seconds: now, nanos: 5 }, attributes: { ward: "north", n: [1, 2, { x: true }] } }),
            ev("counter", "f-2", 0, { a: 1, b: 2 }),
            ev("alarm", "f-3", 3, { level: 1 }),
          ],
        }),
      },
      {
        method: TelemetryService.method.publishStream,
        bytes: encode(TelemetryService.method.publishStream, {
          batchId: "b-1",
          events: [ev("counter", "s-1", 1, { v: 1 }, { time: { seconds: now, nanos: 0 } }), ev("counter", "s-2", 0, {}, { attributes: { k: "v" } })],
        }),
      },
      { method: TwinService.method.getTwin, bytes: encode(TwinService.method.getTwin, { kind: "counter", id: "seed-1" }) },
      {
        method: TwinService.method.sendToTwin,
        bytes: encode(TwinService.method.sendToTwin, { kind: "counter", id: "m-1", message: { add: 2, note: "x" }, idempotencyKey: "k-1" }),
      },
      {
        method: TwinService.method.queryTwins,
        bytes: encode(TwinService.method.queryTwins, {
          kind: "counter",
          filter: 'state.count > 0.0 && id.startsWith("s")',
          orderBy: "state.count desc",
          limit: 5,
        }),
      },
      {
        method: TwinService.method.aggregateTwins,
        bytes: encode(TwinService.method.aggregateTwins, { kind: "counter", filter: "state.count >= 1.0", field: "state.count", groupBy: "state.lastSeq" }),
      },
      { method: TwinService.method.deleteTwin, bytes: encode(TwinService.method.deleteTwin, { kind: "counter", id: "d-1" }) },
      { method: AlertService.method.listAlerts, bytes: encode(AlertService.method.listAlerts, { filter: 'severity == "critical"', pageSize: 10 }) },
      { method: AlertService.method.watchAlerts, bytes: encode(AlertService.method.watchAlerts, { cursor: "c1.1", filter: 'state == "OPEN"' }) },
      { method: AlertService.method.acknowledgeAlert, bytes: encode(AlertService.method.acknowledgeAlert, { id: "alarm/seed-1/high@1" }) },
      { method: AlertService.method.resolveAlert, bytes: encode(AlertService.method.resolveAlert, { id: "alarm/seed-1/high@1" }) },
    ];

    const property = fc.asyncProperty(fc.nat({ max: requests.length - 1 }), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), async (which, mutations) => {
      const { method, bytes: valid } = requests[which] as (typeof requests)[number];
      const bytes = mutate(valid, mutations);
      const receivedBefore = node.runtime.host.metrics.received;
      const out = method.methodKind === "unary" ? await unary(raw, method, bytes) : await stream(raw, method, bytes);
      const what = `${method.name} answered ${grpc.status[out.code]} (${out.reason ?? "no reason"}) to ${bytes.toString("hex")}`;
      assert.notEqual(out.code, grpc.status.INTERNAL, what);
      assert.notEqual(out.code, grpc.status.UNKNOWN, what);

      if (method === TelemetryService.method.publish || method === TelemetryService.method.publishStream) {
        const req = decoded(method.input, bytes) as { events?: unknown[] } | undefined;
        if (out.code !== grpc.status.OK || out.messages.length === 0) {
          // Refused whole: nothing of it reached a twin.
          assert.equal(node.runtime.host.metrics.received, receivedBefore, `${what}: events were applied behind an error`);
        } else {
          assert.ok(req !== undefined, `${what}: answered a request that does not decode`);
          for (const message of out.messages) {
            const res = fromBinary(method.output, message) as unknown as { results: { status: EventStatus }[] };
            assert.equal(res.results.length, req.events?.length, `${what}: not one result per event`);
            for (const r of res.results) assert.notEqual(r.status, EventStatus.UNSPECIFIED, what);
          }
        }
      }
    });
    await fc.assert(property, { seed: SEED, numRuns: RUNS, endOnFailure: true });

    // Still up and serving.
    const health = await client.health();
    assert.equal(health.status, 1);
    const res = await client.publish([ev("counter", "after-1", 1)]);
    assert.equal(res.results[0]?.status, EventStatus.ACCEPTED);
  });
});
