import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { HealthCheckResponse_ServingStatus as Serving } from "../../proto/gen/grpc/health/v1/health_pb.js";
import {
  PublishStreamRequestSchema,
  type PublishStreamResponse,
  PublishStreamResponseSchema,
  TelemetryService,
} from "../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { gate } from "../fixtures/index.js";
import { ACCEPTED, DUPLICATE, type EventInit, ev, outcomes, rejected, statuses } from "../harness/events.js";
import { methodPath, rawClient, serviceError, statusDetails, unaryBytes } from "../harness/grpc-status.js";
import { startNode, twinState } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const PRECEDING = rejected(
  "PRECEDING_EVENT_REJECTED",
  "an earlier event of this source in the same batch was rejected with a retryable error; retry this one after it, with the same seq",
  true,
);

describe("TelemetryService.Publish (publish)", () => {
  const t = useTestScope();

  it("applies every event of a batch and answers results[i] for events[i]", async () => {
    const { client } = await startNode(t);
    const res = await client.publish([
      ev("counter", "c-1", 1, { v: 10 }),
      ev("counter", "c-1", 2, { v: 5 }),
      ev("counter", "c-2", 1),
      ev("counter", "c-1", 3, { v: 1 }),
    ]);
    assert.deepEqual(outcomes(res.results), [ACCEPTED, ACCEPTED, ACCEPTED, ACCEPTED]);
    const { twin } = await client.getTwin({ kind: "counter", id: "c-1" });
    assert.deepEqual(twin?.state, { count: 3, lastSeq: 3, total: 16, messages: 0 });
    assert.equal(twin?.version, 3n);
    assert.equal(twin?.lastSeq, 3n);
    assert.deepEqual(await twinState(client, "counter", "c-2"), { count: 1, lastSeq: 1, total: 0, messages: 0 });
  });

  it("answers DUPLICATE for a retried seq, also inside one batch, and does not apply it again", async () => {
    const { client } = await startNode(t);
    await client.publish([ev("counter", "c-1", 1), ev("counter", "c-1", 2), ev("counter", "c-1", 3)]);
    const retry = await client.publish([ev("counter", "c-1", 2), ev("counter", "c-1", 3), ev("counter", "c-1", 4), ev("counter", "c-1", 4)]);
    assert.deepEqual(outcomes(retry.results), [DUPLICATE, DUPLICATE, ACCEPTED, DUPLICATE]);
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 4, lastSeq: 4, total: 0, messages: 0 });
  });

  it("applies late seqs inside the dedupe window once and recognises their retries", async () => {
    const { client } = await startNode(t);
    assert.deepEqual(statuses((await client.publish([ev("counter", "c-1", 1), ev("counter", "c-1", 5)])).results), ["ACCEPTED", "ACCEPTED"]);
    const late = await client.publish([
      ev("counter", "c-1", 3),
      ev("counter", "c-1", 3),
      ev("counter", "c-1", 2),
      ev("counter", "c-1", 5),
      ev("counter", "c-1", 1),
    ]);
    assert.deepEqual(outcomes(late.results), [ACCEPTED, DUPLICATE, ACCEPTED, DUPLICATE, DUPLICATE]);
    const { twin } = await client.getTwin({ kind: "counter", id: "c-1" });
    assert.deepEqual(twin?.state, { count: 4, lastSeq: 2, total: 0, messages: 0 }); // lastSeq: the last applied, seq 2
    assert.equal(twin?.lastSeq, 5n); // the high-water mark
  });

  it("rejects a seq older than the dedupe window with SEQ_TOO_OLD and applies nothing", async () => {
    const { client } = await startNode(t, { hostOptions: { dedupeWindow: 4 } });
    await client.publish([ev("counter", "c-1", 10)]);
    const res = await client.publish([ev("counter", "c-1", 6), ev("counter", "c-1", 7)]);
    assert.deepEqual(outcomes(res.results), [
      rejected("SEQ_TOO_OLD", "seq 6 is more than 4 below the source's highest seq 10; it cannot be checked for duplicates, so it is not applied"),
      ACCEPTED,
    ]);
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 2, lastSeq: 7, total: 0, messages: 0 });
  });

  it("applies unsequenced events (seq 0) every time they arrive", async () => {
    const { client } = await startNode(t);
    const first = await client.publish([ev("counter", "c-1", 0), ev("counter", "c-1", 0)]);
    const second = await client.publish([ev("counter", "c-1", 0)]);
    assert.deepEqual(outcomes([...first.results, ...second.results]), [ACCEPTED, ACCEPTED, ACCEPTED]);
    const { twin } = await client.getTwin({ kind: "counter", id: "c-1" });
    assert.deepEqual(twin?.state, { count: 3, lastSeq: 0, total: 0, messages: 0 });
    assert.equal(twin?.lastSeq, 0n);
  });

  it("rejects the bad events of a mixed batch on their own and applies the good ones", async () => {
    const { client } = await startNode(t);
    const res = await client.publish([
      ev("counter", "c-1", 1, { v: 1 }),
      ev("counter", "c-1", 2, { v: Number.NaN }),
      ev("pump", "p-1", 1),
      ev("counter", "c-2", 1, { v: 2 }),
      ev("counter", "", 1),
      ev("counter", "c-2", 2, { v: Number.POSITIVE_INFINITY }),
      ev("counter", "c-1", 3, { v: 4 }),
    ]);
    assert.deepEqual(outcomes(res.results), [
      ACCEPTED,
      rejected("BAD_CHANNEL", 'channel "v" is NaN; channel values must be finite numbers'),
      rejected("UNKNOWN_KIND", 'unknown twin kind "pump"; this node knows "alarm", "counter", "faulty", "gate", "relay", "sink"'),
      ACCEPTED,
      rejected("BAD_FIELD", "event has an empty source_id; set it to the data source's id (it is the twin's id)"),
      rejected("BAD_CHANNEL", 'channel "v" is Infinity; channel values must be finite numbers'),
      ACCEPTED,
    ]);
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 2, lastSeq: 3, total: 5, messages: 0 });
    assert.deepEqual(await twinState(client, "counter", "c-2"), { count: 1, lastSeq: 1, total: 2, messages: 0 });
    // The rejected seq 2 was never applied, so a corrected retry is taken.
    assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 2, { v: 8 })])).results), [ACCEPTED]);
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 3, lastSeq: 2, total: 13, messages: 0 });
  });

  it("rejects a source's later events in the batch after a retryable MAILBOX_FULL, and leaves other sources alone", async () => {
    const { client } = await startNode(t, { hostOptions: { mailboxDepth: 1 } });
    const res = await client.publish([ev("counter", "a", 1), ev("counter", "a", 2), ev("counter", "a", 3), ev("counter", "b", 1)]);
    assert.deepEqual(outcomes(res.results), [
      ACCEPTED,
      rejected("MAILBOX_FULL", "twin counter/a has 1 messages queued (limit 1); retry with backoff", true),
      PRECEDING,
      ACCEPTED,
    ]);
    assert.deepEqual(await twinState(client, "counter", "a"), { count: 1, lastSeq: 1, total: 0, messages: 0 });
    // Retried in order, one at a time, they apply in order.
    assert.deepEqual(outcomes((await client.publish([ev("counter", "a", 2)])).results), [ACCEPTED]);
    assert.deepEqual(outcomes((await client.publish([ev("counter", "a", 3)])).results), [ACCEPTED]);
    assert.deepEqual(await twinState(client, "counter", "a"), { count: 3, lastSeq: 3, total: 0, messages: 0 });
    assert.deepEqual(await twinState(client, "counter", "b"), { count: 1, lastSeq: 1, total: 0, messages: 0 });
  });

  it("rejects a twin's events beyond maxEventsPerTwinPerSecond with a retryable RATE_LIMITED, and leaves other twins alone", async () => {
    const { client } = await startNode(t, { hostOptions: { maxEventsPerTwinPerSecond: 3 } });
    const res = await client.publish([1, 2, 3, 4, 5].map((seq) => ev("counter", "a", seq)).concat([ev("counter", "b", 1)]));
    assert.deepEqual(outcomes(res.results), [
      ACCEPTED,
      ACCEPTED,
      ACCEPTED,
      rejected("RATE_LIMITED", "twin counter/a receives more than 3 events per second; retry with backoff", true),
      PRECEDING,
      ACCEPTED,
    ]);
    assert.deepEqual(await twinState(client, "counter", "a"), { count: 3, lastSeq: 3, total: 0, messages: 0 });
    // The bucket refills at the configured rate: a retry after a third of a second is taken.
    await waitFor(async () => outcomes((await client.publish([ev("counter", "a", 4)])).results)[0]?.status === "ACCEPTED", {
      timeoutMs: 5_000,
      what: "the rate limit to let seq 4 through",
    });
  });

  it("rejects events beyond maxInflightEvents with a retryable INGEST_QUEUE_FULL", async () => {
    const { client } = await startNode(t, { hostOptions: { maxInflightEvents: 2 } });
    const res = await client.publish([ev("counter", "a", 1), ev("counter", "a", 2), ev("counter", "a", 3), ev("counter", "a", 4), ev("counter", "b", 1)]);
    const full = rejected("INGEST_QUEUE_FULL", "the node has 2 events in flight (limit 2); retry with backoff", true);
    assert.deepEqual(outcomes(res.results), [ACCEPTED, ACCEPTED, full, PRECEDING, full]);
    assert.deepEqual(await twinState(client, "counter", "a"), { count: 2, lastSeq: 2, total: 0, messages: 0 });
    await assert.rejects(client.getTwin({ kind: "counter", id: "b" }), { code: grpc.status.NOT_FOUND });
  });

  it("fails a Publish over maxBatchEvents with INVALID_ARGUMENT BATCH_TOO_LARGE and a BadRequest violation, applying nothing", async () => {
    const { address, client } = await startNode(t, { maxBatchEvents: 3 });
    const raw = rawClient(address);
    t.defer(() => raw.close());
    const bytes = toBinary(
      TelemetryService.method.publish.input,
      create(TelemetryService.method.publish.input, { events: [1, 2, 3, 4].map((s) => ev("counter", "c-1", s)) }),
    );
    const err = await serviceError(unaryBytes(raw, TelemetryService.method.publish, Buffer.from(bytes)));
    const message = "the request has 4 events; the limit is 3; split it into smaller batches";
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(err.details, message);
    const details = statusDetails(err);
    assert.equal(details.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(details.message, message);
    assert.equal(details.errorInfo?.reason, "BATCH_TOO_LARGE");
    assert.equal(details.errorInfo?.domain, "twinmesh.dev");
    assert.deepEqual(
      details.badRequest?.fieldViolations.map((v) => ({ field: v.field, description: v.description })),
      [{ field: "events", description: "at most 3 events" }],
    );
    await assert.rejects(client.getTwin({ kind: "counter", id: "c-1" }), { code: grpc.status.NOT_FOUND });
    // Exactly at the limit is fine.
    assert.deepEqual(statuses((await client.publish([1, 2, 3].map((s) => ev("counter", "c-1", s)))).results), ["ACCEPTED", "ACCEPTED", "ACCEPTED"]);
  });
});

/** Opens a raw PublishStream whose responses the test reads (or does not) itself. */
function rawStream(client: grpc.Client): grpc.ClientDuplexStream<Buffer, PublishStreamResponse> {
  return client.makeBidiStreamRequest(
    methodPath(TelemetryService.method.publishStream),
    (b: Buffer) => b,
    (b: Buffer) => fromBinary(PublishStreamResponseSchema, b),
  );
}

function streamRequest(batchId: string, events: EventInit[]): Buffer {
  return Buffer.from(toBinary(PublishStreamRequestSchema, create(PublishStreamRequestSchema, { batchId, events })));
}

describe("TelemetryService.PublishStream (publish)", () => {
  const t = useTestScope();
  beforeEach(() => gate.reset());
  afterEach(() => gate.reset());

  it("answers each batch under its batch_id, rejects a batch over maxBatchEvents event by event, and keeps the stream going", async () => {
    const { client } = await startNode(t, { maxBatchEvents: 3 });
    const stream = client.openPublishStream();
    t.defer(() => stream.cancel());
    const first = await stream.send("b-1", [ev("counter", "c-1", 1), ev("counter", "c-1", 2)]);
    const tooBig = await stream.send(
      "b-2",
      [3, 4, 5, 6].map((s) => ev("counter", "c-1", s)),
    );
    const third = await stream.send("b-3", [ev("counter", "c-1", 3)]);
    assert.deepEqual([first.batchId, tooBig.batchId, third.batchId], ["b-1", "b-2", "b-3"]);
    assert.deepEqual(outcomes(first.results), [ACCEPTED, ACCEPTED]);
    const tooLarge = rejected("BATCH_TOO_LARGE", "the batch has 4 events; the limit is 3; split it into smaller batches");
    assert.deepEqual(outcomes(tooBig.results), [tooLarge, tooLarge, tooLarge, tooLarge]);
    assert.deepEqual(outcomes(third.results), [ACCEPTED]);
    await stream.end();
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 3, lastSeq: 3, total: 0, messages: 0 });
  });

  it("answers a request without batch_id with MISSING_BATCH_ID, applies none of its events, and keeps the stream open", async () => {
    const { client } = await startNode(t);
    const stream = client.openPublishStream();
    t.defer(() => stream.cancel());
    const missing = await stream.send("", [ev("counter", "c-1", 1), ev("counter", "c-1", 2)]);
    const noId = rejected("MISSING_BATCH_ID", "batch_id is required on every PublishStream request; set a value unique within the stream");
    assert.equal(missing.batchId, "");
    assert.equal(missing.batchReason, "MISSING_BATCH_ID");
    assert.deepEqual(outcomes(missing.results), [noId, noId]);
    const next = await stream.send("b-1", [ev("counter", "c-1", 1)]);
    assert.deepEqual(outcomes(next.results), [ACCEPTED]);
    assert.equal(next.batchReason, "");
    await stream.end();
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 1, lastSeq: 1, total: 0, messages: 0 });
  });

  it("answers a batch_id over 128 characters with BAD_BATCH_ID under that same batch_id, so the client can match the answer", async () => {
    const { client } = await startNode(t);
    const stream = client.openPublishStream();
    t.defer(() => stream.cancel());
    const long = "b".repeat(200);
    const answer = await stream.send(long, [ev("counter", "c-1", 1)]);
    assert.equal(answer.batchId, long);
    assert.equal(answer.batchReason, "BAD_BATCH_ID");
    assert.deepEqual(outcomes(answer.results), [rejected("BAD_BATCH_ID", "batch_id is 200 characters; the limit is 128")]);
    assert.deepEqual(outcomes((await stream.send("b-1", [ev("counter", "c-1", 1)])).results), [ACCEPTED]);
    await stream.end();
  });

  it("answers a reused batch_id with DUPLICATE_BATCH_ID when done and BATCH_ID_IN_FLIGHT after the original's answer when in flight, applying none of its events", async () => {
    const { client, address } = await startNode(t);
    const raw = rawClient(address);
    t.defer(() => raw.close());
    const call = rawStream(raw);
    t.defer(() => call.cancel());
    call.on("error", () => undefined); // reported through "status"
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    const answers: PublishStreamResponse[] = [];
    call.on("data", (res: PublishStreamResponse) => answers.push(res));
    const dup = (id: string) =>
      rejected(
        "DUPLICATE_BATCH_ID",
        `batch_id "${id}" was already used on this stream; this request's events were not applied: resend them under a new batch_id`,
      );
    const inFlight = (id: string) =>
      rejected(
        "BATCH_ID_IN_FLIGHT",
        `batch_id "${id}" belongs to a batch still being applied on this stream; this request's events were not applied: resend them under a new batch_id`,
      );

    call.write(streamRequest("b-1", [ev("counter", "c-1", 1)]));
    await waitFor(() => answers.length === 1, { timeoutMs: 5_000, what: "the answer to b-1" });
    call.write(streamRequest("b-1", [ev("counter", "c-1", 2)])); // b-1 is done
    await waitFor(() => answers.length === 2, { timeoutMs: 5_000, what: "the answer to the reused b-1" });

    gate.close();
    call.write(streamRequest("b-2", [ev("gate", "g-1", 1)]));
    await waitFor(() => gate.entered === 1, { timeoutMs: 5_000, what: "b-2's turn to start" });
    call.write(streamRequest("b-2", [ev("counter", "c-1", 3)])); // b-2 is still in flight
    call.write(streamRequest("b-3", [ev("counter", "c-3", 1)])); // the stream goes on meanwhile
    await waitFor(() => answers.length === 3, { timeoutMs: 5_000, what: "the answer to b-3" });
    gate.open();
    await waitFor(() => answers.length === 5, { timeoutMs: 5_000, what: "the answers to b-2 and to the reused b-2" });
    call.end();
    assert.equal((await status).code, grpc.status.OK);

    // The first answer with an id is the first request's; a refusal of a reused id says so in batch_reason.
    assert.deepEqual(
      answers.map((a) => [a.batchId, a.batchReason, outcomes(a.results)]),
      [
        ["b-1", "", [ACCEPTED]],
        ["b-1", "DUPLICATE_BATCH_ID", [dup("b-1")]],
        ["b-3", "", [ACCEPTED]],
        ["b-2", "", [ACCEPTED]],
        ["b-2", "BATCH_ID_IN_FLIGHT", [inFlight("b-2")]],
      ],
    );
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 1, lastSeq: 1, total: 0, messages: 0 });
  });

  it("stays healthy when a stream is cancelled mid-batch, and a retry of its events applies each exactly once", async () => {
    const started = await startNode(t);
    const { client, node, address } = started;
    const raw = rawClient(address);
    t.defer(() => raw.close());
    const events = [
      ...[1, 2, 3, 4, 5].map((s) => ev("gate", "g-1", s)),
      ...[1, 2, 3, 4, 5].map((s) => ev("counter", "c-1", s)),
      ...[1, 2, 3, 4, 5].map((s) => ev("gate", "g-2", s)),
    ];
    gate.close();
    const call = rawStream(raw);
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => undefined); // the cancellation, checked through "status"
    call.on("data", () => assert.fail("a cancelled stream's batch must not be answered"));
    call.write(streamRequest("b-1", events));
    await waitFor(() => gate.entered === 2, { timeoutMs: 5_000, what: "both gate twins to be mid-turn" });
    call.cancel();
    assert.equal((await ended).code, grpc.status.CANCELLED);
    gate.open();
    await waitFor(() => node.runtime.host.idle, { timeoutMs: 5_000, what: "the cancelled batch's turns to finish" });

    assert.equal((await client.health()).status, Serving.SERVING);
    const retry = await client.publish(events);
    assert.deepEqual(
      statuses(retry.results),
      events.map(() => "DUPLICATE"),
    );
    for (const [kind, id] of [
      ["gate", "g-1"],
      ["gate", "g-2"],
    ] as const) {
      assert.deepEqual(await twinState(client, kind, id), { count: 5, lastSeq: 5 });
    }
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 5, lastSeq: 5, total: 0, messages: 0 });
    // The node still takes new work on a new stream.
    const stream = client.openPublishStream();
    assert.deepEqual(outcomes((await stream.send("b-1", [ev("gate", "g-1", 6)])).results), [ACCEPTED]);
    await stream.end();
    assert.deepEqual(
      started.logs.filter((e) => (e.level as number) >= 50),
      [],
    );
  });

  it("stops reading a stream whose client stops reading answers, then delivers every answer once the client reads again", async () => {
    // Each answer is about 10 KB (90 rejections with their messages), so the transport's buffers
    // (HTTP/2 windows, stream buffers) hold a few dozen answers at most.
    const BATCHES = 300;
    const SOURCES = 10;
    const UNKNOWN = 90;
    const { client, node, address } = await startNode(t, { maxInflightBatches: 2 });
    const raw = rawClient(address);
    t.defer(() => raw.close());
    const call = rawStream(raw);
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => undefined); // reported through "status"
    // The client reads the first answer, then stops reading. (A grpc-js client that never reads
    // at all keeps draining the transport into an unbounded buffer of its own, so the server would
    // see no back-pressure; one that read and paused stops the HTTP/2 stream.)
    const answers = new Map<string, number>();
    const firstAnswer = new Promise<void>((resolve) =>
      call.once("data", (res: PublishStreamResponse) => {
        call.pause();
        answers.set(res.batchId, 1);
        resolve();
      }),
    );
    for (let b = 0; b < BATCHES; b++) {
      const events: EventInit[] = [];
      for (let s = 0; s < SOURCES; s++) events.push(ev("counter", `s-${s}`, b + 1));
      for (let u = 0; u < UNKNOWN; u++) events.push(ev("pump", `p-${u}`, b + 1));
      call.write(streamRequest(`b-${b}`, events));
    }
    await firstAnswer;
    // Wait until the node has stopped taking events from the stream.
    let last = -1;
    let since = Date.now();
    await waitFor(
      () => {
        const now = node.runtime.host.metrics.received;
        if (now !== last) {
          last = now;
          since = Date.now();
          return false;
        }
        return Date.now() - since >= 300;
      },
      { timeoutMs: 20_000, what: "the node to stop reading the unread stream (no new event for 300 ms)" },
    );
    const received = last;
    const total = BATCHES * SOURCES;
    assert.ok(received > 0, "the node read nothing at all");
    assert.ok(received <= total / 3, `the node read ${received} of ${total} events although the client read only one answer`);

    const unexpected: string[] = [];
    call.on("data", (res: PublishStreamResponse) => {
      answers.set(res.batchId, (answers.get(res.batchId) ?? 0) + 1);
      const got = statuses(res.results);
      const want = [...Array<string>(SOURCES).fill("ACCEPTED"), ...Array<string>(UNKNOWN).fill("REJECTED")];
      if (JSON.stringify(got) !== JSON.stringify(want)) unexpected.push(res.batchId);
    });
    call.resume();
    call.end();
    assert.equal((await status).code, grpc.status.OK);
    assert.equal(answers.size, BATCHES);
    assert.deepEqual(
      [...answers.values()].filter((n) => n !== 1),
      [],
    );
    assert.deepEqual(unexpected, []);
    assert.equal(node.runtime.host.metrics.received, total);
    for (let s = 0; s < SOURCES; s++) {
      assert.deepEqual(await twinState(client, "counter", `s-${s}`), { count: BATCHES, lastSeq: BATCHES, total: 0, messages: 0 });
    }
  });
});
