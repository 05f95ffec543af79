import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { PublishPipeline } from "../../../cli/simulator/index.js";
import {
  type EventResult,
  EventResultSchema,
  EventStatus,
  type PublishStreamRequest,
  PublishStreamRequestSchema,
  type PublishStreamResponse,
  PublishStreamResponseSchema,
  TwinmeshClient,
} from "../../../client/index.js";
import { waitFor } from "../../harness/wait-for.js";

/** How a fake node answers one stream: results for a batch, or "fail" to end the stream with UNAVAILABLE. */
type Script = (req: PublishStreamRequest, stream: number) => EventResult[] | "fail";

const accepted = (): EventResult => create(EventResultSchema, { status: EventStatus.ACCEPTED });
const overloaded = (): EventResult =>
  create(EventResultSchema, { status: EventStatus.REJECTED, reason: "MAILBOX_FULL", message: "twin is busy; retry with backoff", retryable: true });

/** A TelemetryService with only PublishStream, answering as `script` says, on 127.0.0.1:0. */
async function fakeNode(script: Script): Promise<{ address: string; received: string[]; close: () => void }> {
  const received: string[] = [];
  let streams = 0;
  const server = new grpc.Server();
  server.addService(
    {
      publishStream: {
        path: "/twinmesh.v1.TelemetryService/PublishStream",
        requestStream: true,
        responseStream: true,
        requestSerialize: (m: PublishStreamRequest) => Buffer.from(toBinary(PublishStreamRequestSchema, m)),
        requestDeserialize: (b: Buffer) => fromBinary(PublishStreamRequestSchema, b),
        responseSerialize: (m: PublishStreamResponse) => Buffer.from(toBinary(PublishStreamResponseSchema, m)),
        responseDeserialize: (b: Buffer) => fromBinary(PublishStreamResponseSchema, b),
      },
    },
    {
      publishStream: (call: grpc.ServerDuplexStream<PublishStreamRequest, PublishStreamResponse>) => {
        const stream = ++streams;
        call.on("data", (req: PublishStreamRequest) => {
          const results = script(req, stream);
          if (results === "fail") {
            // grpc-js ends a server stream with the status of an "error" it emits.
            call.emit("error", { code: grpc.status.UNAVAILABLE, details: "node restarting" });
            return;
          }
          for (const [i, e] of req.events.entries()) if (results[i]?.status === EventStatus.ACCEPTED) received.push(`${e.sourceId}:${e.seq}`);
          call.write(create(PublishStreamResponseSchema, { batchId: req.batchId, results }));
        });
        call.on("end", () => call.end());
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, received, close: () => server.forceShutdown() };
}

describe("PublishPipeline (publish-pipeline)", () => {
  let node: { address: string; received: string[]; close: () => void } | undefined;
  let client: TwinmeshClient | undefined;

  afterEach(() => {
    client?.close();
    node?.close();
    client = undefined;
    node = undefined;
  });

  it("retries a retryable rejection with the same seq, ahead of the source's later events", async () => {
    let rejectedOnce = false;
    node = await fakeNode((req) => {
      // Like the node: a retryable rejection also rejects the source's later events in the batch.
      let blocked = false;
      return req.events.map((e) => {
        if (e.sourceId === "a" && e.seq === 2n && !rejectedOnce) {
          rejectedOnce = true;
          blocked = true;
        }
        return blocked && e.sourceId === "a" ? overloaded() : accepted();
      });
    });
    client = new TwinmeshClient(node.address);
    const pipeline = new PublishPipeline<string>(client, { retryDelayMs: 20 });
    for (const [source, seq] of [
      ["a", 1n],
      ["a", 2n],
      ["a", 3n],
      ["b", 1n],
    ] as const) {
      await pipeline.push({ kind: "patient", sourceId: source, seq, channels: { bpm: 70 } }, `${source}${seq}`);
    }
    await pipeline.flush();
    await waitFor(() => pipeline.totals.retried === 2, { timeoutMs: 5_000, what: "the rejection of a2 and a3" });
    // Pushed while a2 and a3 wait for their retry: it must not overtake them. (Events already in
    // flight when a rejection comes back can: only the node could hold them.)
    await pipeline.push({ kind: "patient", sourceId: "a", seq: 4n, channels: { bpm: 70 } }, "a4");
    const totals = await pipeline.close();

    assert.deepEqual(
      node.received.filter((r) => r.startsWith("a:")),
      ["a:1", "a:2", "a:3", "a:4"],
    );
    assert.deepEqual(
      node.received.filter((r) => r.startsWith("b:")),
      ["b:1"],
    );
    assert.deepEqual(
      {
        pushed: totals.pushed,
        accepted: totals.accepted,
        duplicate: totals.duplicate,
        rejected: totals.rejected,
        retried: totals.retried,
        pending: totals.pending,
      },
      { pushed: 5, accepted: 5, duplicate: 0, rejected: 0, retried: 2, pending: 0 },
    );
  });

  it("gives up on an event after maxAttempts retryable rejections and names the reason", async () => {
    node = await fakeNode((req) => req.events.map(() => overloaded()));
    client = new TwinmeshClient(node.address);
    const pipeline = new PublishPipeline<string>(client, { retryDelayMs: 1, maxAttempts: 3 });
    await pipeline.push({ kind: "patient", sourceId: "a", seq: 1n, channels: { bpm: 70 } }, "line 1");
    const totals = await pipeline.close();
    assert.equal(totals.rejected, 1);
    assert.equal(totals.retried, 2);
    assert.deepEqual(totals.rejections, [
      { reason: "MAILBOX_FULL", count: 1, message: "twin is busy; retry with backoff", kind: "patient", sourceId: "a", seq: 1n, tag: "line 1" },
    ]);
  });

  it("resends the unanswered batch on a new stream when the stream fails with UNAVAILABLE", async () => {
    node = await fakeNode((req, stream) => (stream === 1 ? "fail" : req.events.map(() => accepted())));
    client = new TwinmeshClient(node.address);
    const failures: string[] = [];
    const pipeline = new PublishPipeline<undefined>(client, { retryDelayMs: 10, onStreamError: (err) => failures.push(err.message) });
    await pipeline.push({ kind: "patient", sourceId: "a", seq: 1n, channels: { bpm: 70 } }, undefined);
    await pipeline.push({ kind: "patient", sourceId: "a", seq: 2n, channels: { bpm: 71 } }, undefined);
    const totals = await pipeline.close();
    assert.deepEqual(node.received, ["a:1", "a:2"]);
    assert.deepEqual(failures, ["node restarting"]);
    assert.deepEqual(
      { accepted: totals.accepted, rejected: totals.rejected, reopened: totals.reopened, retried: totals.retried },
      { accepted: 2, rejected: 0, reopened: 1, retried: 2 },
    );
  });
});
