import assert from "node:assert/strict";
import { create, type DescMessage, type DescMethod, fromBinary, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { BadRequestSchema, ErrorInfoSchema } from "../../../../proto/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../../../proto/gen/google/rpc/status_pb.js";
import {
  EventStatus,
  type PublishStreamRequest,
  PublishStreamRequestSchema,
  PublishStreamResponseSchema,
  TelemetryService,
} from "../../../../proto/gen/twinmesh/v1/telemetry_pb.js";
import {
  GetTwinRequestSchema,
  GetTwinResponseSchema,
  QueryTwinsRequestSchema,
  QueryTwinsResponseSchema,
  TwinService,
  TwinSnapshotSchema,
} from "../../../../proto/gen/twinmesh/v1/twin_pb.js";
import { InvalidArgumentError, TwinNotFoundError, UnknownKindError } from "../../../../runtime/errors.js";
import { preEncoded } from "../../../../server/grpc/encoded.js";
import { addService } from "../../../../server/grpc/grpc-adapter.js";
import type { ErrorLog } from "../../../../server/grpc/to-status.js";
import { waitFor } from "../../../harness/wait-for.js";

const MAX_MESSAGE_BYTES = 1024;
const BIG_ID = "x".repeat(64 * 1024); // makes each streamed twin 64 KiB

class CaptureLog implements ErrorLog {
  readonly entries: { obj: Record<string, unknown>; msg: string }[] = [];
  error(obj: object, msg: string): void {
    this.entries.push({ obj: obj as Record<string, unknown>, msg });
  }
}

/** What the test handlers did, observed from the test. */
interface Probe {
  written: number;
  writing: boolean;
  handlerEnded: boolean;
  abortReason: unknown;
}

const unused = async (): Promise<never> => {
  throw new Error("not used by these tests");
};

function pathOf(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

function encoder<D extends DescMessage>(schema: D): (msg: MessageShape<D>) => Buffer {
  return (msg) => Buffer.from(toBinary(schema, msg));
}

function decoder<D extends DescMessage>(schema: D): (bytes: Buffer) => MessageShape<D> {
  return (bytes) => fromBinary(schema, bytes);
}

const raw = (bytes: Buffer): Buffer => bytes;

function unary<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: DescMethod & { input: I; output: O },
  req: MessageShape<I>,
  options: grpc.CallOptions = {},
): Promise<MessageShape<O>> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(pathOf(method), encoder(method.input), decoder(method.output), req, options, (err, res) =>
      err || res === undefined ? reject(err) : resolve(res),
    );
  });
}

function unaryRaw(client: grpc.Client, method: DescMethod, bytes: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(pathOf(method), raw, raw, bytes, (err, res) => (err || res === undefined ? reject(err) : resolve(res)));
  });
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as grpc.ServiceError).code === "number";
}

async function rejection(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (err) {
    if (isServiceError(err)) return err;
    throw err;
  }
  assert.fail("the call succeeded, but it should have failed");
}

/** Decodes the google.rpc.Status trailer and its ErrorInfo and BadRequest details. */
function richStatus(err: grpc.ServiceError) {
  const [bin] = err.metadata.get("grpc-status-details-bin");
  assert.ok(Buffer.isBuffer(bin), "grpc-status-details-bin trailer is missing");
  const status = fromBinary(StatusSchema, bin);
  const errorInfo = status.details.map((d) => anyUnpack(d, ErrorInfoSchema)).find((d) => d !== undefined);
  const badRequest = status.details.map((d) => anyUnpack(d, BadRequestSchema)).find((d) => d !== undefined);
  return { status, errorInfo, badRequest };
}

describe("addService (grpc-adapter)", () => {
  let server: grpc.Server | undefined;
  let client: grpc.Client;
  let log: CaptureLog;
  let probe: Probe;

  beforeEach(async () => {
    log = new CaptureLog();
    probe = { written: 0, writing: false, handlerEnded: false, abortReason: undefined };
    server = new grpc.Server({ "grpc.max_receive_message_length": 4 * MAX_MESSAGE_BYTES });
    const options = { maxMessageBytes: MAX_MESSAGE_BYTES, log };
    addService(
      server,
      TwinService,
      {
        async getTwin(req, call) {
          switch (req.kind) {
            case "bad-field":
              throw new InvalidArgumentError("BAD_FIELD", `twin id must not be empty (kind "${req.kind}"); send the source's id`, [
                { field: "id", description: "must not be empty" },
              ]);
            case "pump":
              throw new UnknownKindError("pump", ["patient", "vehicle"]);
            case "bug":
              // An integer `code` that grpc-js would read as NOT_FOUND if it saw the raw error.
              throw Object.assign(new Error("store handle is null"), { code: 5 });
            case "slow":
              await new Promise((resolve) => call.signal.addEventListener("abort", resolve));
              probe.abortReason = call.signal.reason;
              throw call.signal.reason;
          }
          return create(GetTwinResponseSchema, {
            twin: create(TwinSnapshotSchema, { kind: req.kind, id: req.id, ownerNodeId: call.peer }),
          });
        },
        async queryTwins(req, out) {
          if (req.kind === "pre-encoded") {
            // Encoded bytes between two messages the adapter encodes itself.
            const twin = (id: string) => create(QueryTwinsResponseSchema, { twins: [create(TwinSnapshotSchema, { kind: req.kind, id, state: { n: 1 } })] });
            await out.write(twin("twin-0"));
            await out.write(preEncoded(QueryTwinsResponseSchema, toBinary(QueryTwinsResponseSchema, twin("twin-1"))));
            await out.write(twin("twin-2"));
            return;
          }
          try {
            for (let i = 0; req.kind !== "endless" ? i < req.limit : true; i++) {
              const id = req.kind === "big" ? `${i}-${BIG_ID}` : `twin-${i}`;
              probe.writing = true;
              await out.write(create(QueryTwinsResponseSchema, { twins: [create(TwinSnapshotSchema, { kind: req.kind, id, version: BigInt(i) })] }));
              probe.writing = false;
              probe.written++;
            }
            if (req.kind === "fails-midway") throw new TwinNotFoundError("patient", "bed-9");
          } finally {
            probe.handlerEnded = true;
          }
        },
        aggregateTwins: unused,
        sendToTwin: unused,
        deleteTwin: unused,
      },
      options,
    );
    addService(
      server,
      TelemetryService,
      {
        publish: unused,
        async publishStream(input, out) {
          for await (const req of input) {
            const results = req.events.map(() => ({ status: EventStatus.ACCEPTED }));
            await out.write(create(PublishStreamResponseSchema, { batchId: req.batchId, results }));
          }
        },
      },
      options,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server?.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  });

  afterEach(() => {
    client.close();
    server?.forceShutdown();
    server = undefined;
  });

  it("answers a unary call with the handler's response", async () => {
    const res = await unary(client, TwinService.method.getTwin, create(GetTwinRequestSchema, { kind: "patient", id: "bed-4" }));
    assert.equal(res.twin?.kind, "patient");
    assert.equal(res.twin?.id, "bed-4");
    assert.match(res.twin?.ownerNodeId ?? "", /^127\.0\.0\.1:\d+$/); // the peer, as the handler saw it
    assert.deepEqual(log.entries, []);
  });

  it("maps a TwinmeshError to its code, message, ErrorInfo and BadRequest details", async () => {
    const err = await rejection(unary(client, TwinService.method.getTwin, create(GetTwinRequestSchema, { kind: "bad-field" })));
    const message = `twin id must not be empty (kind "bad-field"); send the source's id`;
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(err.details, message);
    const { status, errorInfo, badRequest } = richStatus(err);
    assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(status.message, message);
    assert.equal(errorInfo?.reason, "BAD_FIELD");
    assert.equal(errorInfo?.domain, "twinmesh.dev");
    assert.deepEqual({ ...errorInfo?.metadata }, { retryable: "false" });
    assert.deepEqual(
      badRequest?.fieldViolations.map((v) => ({ field: v.field, description: v.description })),
      [{ field: "id", description: "must not be empty" }],
    );
    assert.deepEqual(log.entries, []);
  });

  it("puts an error's own values in ErrorInfo metadata and sends no BadRequest without violations", async () => {
    const err = await rejection(unary(client, TwinService.method.getTwin, create(GetTwinRequestSchema, { kind: "pump" })));
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    const { errorInfo, badRequest } = richStatus(err);
    assert.equal(errorInfo?.reason, "UNKNOWN_KIND");
    assert.deepEqual({ ...errorInfo?.metadata }, { kind: "pump", knownKinds: "patient,vehicle", retryable: "false" });
    assert.equal(badRequest, undefined);
  });

  it("answers INTERNAL for a plain Error with an integer code, and logs it", async () => {
    const err = await rejection(unary(client, TwinService.method.getTwin, create(GetTwinRequestSchema, { kind: "bug" })));
    assert.equal(err.code, grpc.status.INTERNAL);
    assert.equal(err.details, "internal error; see the node's log");
    assert.deepEqual(err.metadata.get("grpc-status-details-bin"), []);
    assert.equal(log.entries.length, 1);
    const [entry] = log.entries;
    assert.ok(entry);
    assert.equal(entry.msg, "unexpected error in gRPC handler");
    assert.equal(entry.obj.method, "/twinmesh.v1.TwinService/GetTwin");
    assert.equal((entry.obj.err as Error).message, "store handle is null");
  });

  it("rejects a request over maxMessageBytes with RESOURCE_EXHAUSTED and advice to split the batch", async () => {
    const req = create(GetTwinRequestSchema, { kind: "patient", id: "y".repeat(2000) });
    const size = toBinary(GetTwinRequestSchema, req).byteLength;
    const err = await rejection(unary(client, TwinService.method.getTwin, req));
    assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.equal(
      err.details,
      `request to /twinmesh.v1.TwinService/GetTwin is ${size} bytes, over this node's limit of 1024 bytes; split the batch into smaller requests`,
    );
    assert.equal(richStatus(err).errorInfo?.reason, "MESSAGE_TOO_LARGE");
    assert.deepEqual(log.entries, []);
  });

  it("rejects bytes that are not the request message with INVALID_ARGUMENT", async () => {
    // Field 1 (kind) claims 5 bytes, but only 1 follows.
    const err = await rejection(unaryRaw(client, TwinService.method.getTwin, Buffer.from([0x0a, 0x05, 0x61])));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /^request to \/twinmesh\.v1\.TwinService\/GetTwin is not a valid twinmesh\.v1\.GetTwinRequest \(.+\); check that/);
    assert.equal(richStatus(err).errorInfo?.reason, "MALFORMED_MESSAGE");
  });

  it("aborts the handler's signal when the deadline passes", async () => {
    const err = await rejection(unary(client, TwinService.method.getTwin, create(GetTwinRequestSchema, { kind: "slow" }), { deadline: Date.now() + 100 }));
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    const reason = await waitFor(() => probe.abortReason, { timeoutMs: 5000, what: "the handler's signal to abort" });
    assert.equal((reason as Error).name, "AbortError");
    assert.deepEqual(log.entries, []); // the handler rethrew the abort reason: that is not a bug
  });

  it("streams every message in order, waiting for drain while the client does not read", async () => {
    const total = 400; // 400 x 64 KiB = 25 MiB, far more than HTTP/2 windows and socket buffers hold
    const call = client.makeServerStreamRequest(
      pathOf(TwinService.method.queryTwins),
      encoder(QueryTwinsRequestSchema),
      decoder(QueryTwinsResponseSchema),
      create(QueryTwinsRequestSchema, { kind: "big", limit: total }),
    );
    call.pause();
    // Seen by a timer poll, `writing` means out.write() stayed pending across an event-loop turn:
    // it is waiting for "drain", not buffering.
    await waitFor(() => probe.writing, { timeoutMs: 10_000, what: "the handler to wait in out.write()" });
    assert.ok(probe.written < total, `the handler wrote ${probe.written} of ${total} messages while the client read none`);
    const versions: bigint[] = [];
    for await (const res of call as AsyncIterable<MessageShape<typeof QueryTwinsResponseSchema>>) versions.push(res.twins[0]?.version ?? -1n);
    assert.deepEqual(
      versions,
      Array.from({ length: total }, (_, i) => BigInt(i)),
    );
    assert.equal(probe.written, total);
  });

  it("sends Encoded bytes as they are, in order with the messages it encodes", async () => {
    const call = client.makeServerStreamRequest(
      pathOf(TwinService.method.queryTwins),
      encoder(QueryTwinsRequestSchema),
      decoder(QueryTwinsResponseSchema),
      create(QueryTwinsRequestSchema, { kind: "pre-encoded" }),
    );
    const twins: unknown[] = [];
    for await (const res of call as AsyncIterable<MessageShape<typeof QueryTwinsResponseSchema>>) twins.push(...res.twins);
    assert.deepEqual(
      twins,
      ["twin-0", "twin-1", "twin-2"].map((id) => create(TwinSnapshotSchema, { kind: "pre-encoded", id, state: { n: 1 } })),
    );
    assert.deepEqual(log.entries, []);
  });

  it("ends a stream with the mapped status when the handler throws after writing", async () => {
    const call = client.makeServerStreamRequest(
      pathOf(TwinService.method.queryTwins),
      encoder(QueryTwinsRequestSchema),
      decoder(QueryTwinsResponseSchema),
      create(QueryTwinsRequestSchema, { kind: "fails-midway", limit: 2 }),
    );
    const ids: string[] = [];
    const err = await rejection(
      (async () => {
        for await (const res of call as AsyncIterable<MessageShape<typeof QueryTwinsResponseSchema>>) ids.push(...res.twins.map((t) => t.id));
      })(),
    );
    assert.deepEqual(ids, ["twin-0", "twin-1"]);
    assert.equal(err.code, grpc.status.NOT_FOUND);
    assert.equal(richStatus(err).errorInfo?.reason, "TWIN_NOT_FOUND");
  });

  it("aborts a streaming handler when the client cancels, without logging an error", async () => {
    const call = client.makeServerStreamRequest(
      pathOf(TwinService.method.queryTwins),
      encoder(QueryTwinsRequestSchema),
      decoder(QueryTwinsResponseSchema),
      create(QueryTwinsRequestSchema, { kind: "endless" }),
    );
    call.on("error", () => {}); // the client sees CANCELLED; not under test
    await waitFor(() => probe.written > 0, { timeoutMs: 5000, what: "the first message to be written" });
    call.cancel();
    await waitFor(() => probe.handlerEnded, { timeoutMs: 5000, what: "the handler to end after the cancel" });
    assert.deepEqual(log.entries, []);
  });

  it("answers each request of a bidi stream in order", async () => {
    const call = client.makeBidiStreamRequest(
      pathOf(TelemetryService.method.publishStream),
      encoder(PublishStreamRequestSchema),
      decoder(PublishStreamResponseSchema),
    );
    const batch = (batchId: string, n: number): PublishStreamRequest =>
      create(PublishStreamRequestSchema, { batchId, events: Array.from({ length: n }, (_, i) => ({ kind: "patient", sourceId: `bed-${i}` })) });
    call.write(batch("b-1", 2));
    call.write(batch("b-2", 1));
    call.end();
    const answers: [string, EventStatus[]][] = [];
    for await (const res of call as AsyncIterable<MessageShape<typeof PublishStreamResponseSchema>>) {
      answers.push([res.batchId, res.results.map((r) => r.status)]);
    }
    assert.deepEqual(answers, [
      ["b-1", [EventStatus.ACCEPTED, EventStatus.ACCEPTED]],
      ["b-2", [EventStatus.ACCEPTED]],
    ]);
  });

  it("ends a bidi stream with INVALID_ARGUMENT at a malformed request, after answering the ones before", async () => {
    const call = client.makeBidiStreamRequest(pathOf(TelemetryService.method.publishStream), raw, decoder(PublishStreamResponseSchema));
    call.write(Buffer.from(toBinary(PublishStreamRequestSchema, create(PublishStreamRequestSchema, { batchId: "b-1" }))));
    call.write(Buffer.from([0x0a, 0x05, 0x61]));
    const batchIds: string[] = [];
    const err = await rejection(
      (async () => {
        for await (const res of call as AsyncIterable<MessageShape<typeof PublishStreamResponseSchema>>) batchIds.push(res.batchId);
      })(),
    );
    assert.deepEqual(batchIds, ["b-1"]);
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(richStatus(err).errorInfo?.reason, "MALFORMED_MESSAGE");
    assert.deepEqual(log.entries, []);
  });
});
