import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { TwinmeshClient } from "../../client/index.js";
import { HealthCheckResponse_ServingStatus as Serving } from "../../proto/gen/grpc/health/v1/health_pb.js";
import {
  PublishStreamRequestSchema,
  type PublishStreamResponse,
  PublishStreamResponseSchema,
  TelemetryService,
} from "../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { TwinService } from "../../proto/gen/twinmesh/v1/twin_pb.js";
import { gate } from "../fixtures/index.js";
import { ACCEPTED, type EventInit, ev, outcomes, rejected, statuses } from "../harness/events.js";
import { clientError, methodPath, rawClient } from "../harness/grpc-status.js";
import { healthWatch } from "../harness/health-watch.js";
import { startNode, twinState } from "../harness/start-node.js";
import { assertRecovered, StreamLoad } from "../harness/stream-load.js";
import { SupervisedNode } from "../harness/supervised-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

/** The whole node's name in grpc.health.v1. */
const HEALTH_NODE = "";

function streamRequest(batchId: string, events: EventInit[]): Buffer {
  return Buffer.from(toBinary(PublishStreamRequestSchema, create(PublishStreamRequestSchema, { batchId, events })));
}

describe("stopping a node (shutdown)", () => {
  const t = useTestScope();
  const processes: SupervisedNode[] = [];
  beforeEach(() => gate.reset());
  afterEach(function () {
    gate.reset();
    const failed = this.currentTest?.state === "failed";
    for (const p of processes.splice(0)) if (failed) process.stderr.write(`\n----- node ${p.address} -----\n${p.output()}\n-----\n`);
  });

  async function spawnNode(dataDir: string): Promise<{ node: SupervisedNode; client: TwinmeshClient }> {
    const node = await SupervisedNode.start(t, FIXTURES, dataDir);
    processes.push(node);
    const client = new TwinmeshClient(node.address, { deadlineMs: 20_000 });
    t.defer(() => client.close());
    return { node, client };
  }

  /** Sends SIGTERM and waits (at most 15 s) for the exit. */
  async function terminate(node: SupervisedNode): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    node.signal("SIGTERM");
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    void node.exited.then((e) => {
      exit = e;
    });
    return (await waitFor(() => exit, { timeoutMs: 15_000, what: "the node to exit after SIGTERM" })) as { code: number | null; signal: NodeJS.Signals | null };
  }

  it("answers the batch in flight when it closes, rejects later events SHUTTING_DOWN, and keeps every ACCEPTED event across a restart", async () => {
    const started = await startNode(t);
    const raw = rawClient(started.address);
    t.defer(() => raw.close());
    const call = raw.makeBidiStreamRequest(
      methodPath(TelemetryService.method.publishStream),
      (b: Buffer) => b,
      (b: Buffer) => fromBinary(PublishStreamResponseSchema, b),
    );
    call.on("error", () => undefined); // reported through "status"
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    const answers = new Map<string, PublishStreamResponse>();
    call.on("data", (res: PublishStreamResponse) => answers.set(res.batchId, res));

    gate.close();
    call.write(streamRequest("b-1", [...[1, 2, 3].map((s) => ev("gate", "g-1", s)), ...[1, 2, 3].map((s) => ev("counter", "c-1", s))]));
    await waitFor(() => gate.entered === 1, { timeoutMs: 5_000, what: "g-1's first turn to start" });
    const closing = started.node.close(10_000);
    assert.equal((await started.client.health()).status, Serving.NOT_SERVING);
    call.write(streamRequest("b-2", [ev("counter", "c-1", 4), ev("counter", "c-1", 5), ev("counter", "c-2", 1)]));
    await waitFor(() => answers.has("b-2"), { timeoutMs: 5_000, what: "the answer to b-2" });
    assert.equal(answers.has("b-1"), false, "b-1 was answered before its turns finished");
    gate.open();
    await waitFor(() => answers.has("b-1"), { timeoutMs: 5_000, what: "the answer to b-1" });
    call.end();
    assert.equal((await status).code, grpc.status.OK);
    await closing;

    assert.deepEqual(outcomes(answers.get("b-1")?.results ?? []), Array(6).fill(ACCEPTED));
    const shuttingDown = rejected("SHUTTING_DOWN", "the node is shutting down; retry on another node or after it restarts", true);
    assert.deepEqual(outcomes(answers.get("b-2")?.results ?? []), [
      shuttingDown,
      rejected(
        "PRECEDING_EVENT_REJECTED",
        "an earlier event of this source in the same batch was rejected with a retryable error; retry this one after it, with the same seq",
        true,
      ),
      shuttingDown,
    ]);
    const restarted = await started.restart();
    assert.deepEqual(await twinState(restarted.client, "gate", "g-1"), { count: 3, lastSeq: 3 });
    assert.deepEqual(await twinState(restarted.client, "counter", "c-1"), { count: 3, lastSeq: 3, total: 0, messages: 0 });
    await assert.rejects(restarted.client.getTwin({ kind: "counter", id: "c-2" }), { code: grpc.status.NOT_FOUND });
  });

  it("says NOT_SERVING to Check, Watch and GetNodeStatus, for the node and each service, from the moment it starts draining while a queued turn still runs", async () => {
    const started = await startNode(t);
    const raw = rawClient(started.address);
    t.defer(() => raw.close());
    const watches = [HEALTH_NODE, TelemetryService.typeName].map((service) => healthWatch(raw, service));
    for (const w of watches)
      await waitFor(() => w.seen.at(-1) === Serving.SERVING || undefined, { timeoutMs: 5_000, what: `the watch of "${w.service}" to say SERVING` });

    gate.close();
    const held = started.client.publish([ev("gate", "g-1", 1), ev("gate", "g-1", 2)]);
    await waitFor(() => gate.entered === 1, { timeoutMs: 5_000, what: "g-1's first turn to start" });
    const closing = started.node.close(10_000);
    // The drain cannot end while the gate holds g-1's turn: everything below happens during it.
    for (const w of watches)
      await waitFor(() => w.seen.at(-1) === Serving.NOT_SERVING || undefined, { timeoutMs: 5_000, what: `the watch of "${w.service}" to say NOT_SERVING` });
    for (const service of [HEALTH_NODE, TelemetryService.typeName, TwinService.typeName]) {
      assert.equal((await started.client.health(service)).status, Serving.NOT_SERVING, `Check of "${service}" while draining`);
    }
    const status = await started.client.getNodeStatus();
    assert.equal(status.serving, false);
    assert.match(status.problem, /^draining/, "what GetNodeStatus says of a draining node");
    assert.deepEqual(
      status.services.filter((x) => x.serving).map((x) => x.service),
      [],
    );
    assert.equal(gate.entered, 1, "the held turn finished before the drain was observed");
    assert.deepEqual(
      watches.map((w) => w.seen),
      [
        [Serving.SERVING, Serving.NOT_SERVING],
        [Serving.SERVING, Serving.NOT_SERVING],
      ],
    );

    gate.open();
    assert.deepEqual(statuses((await held).results), ["ACCEPTED", "ACCEPTED"]);
    await closing;
    // Closing ended the watches without another status.
    for (const w of watches) assert.equal(await w.ended, grpc.status.OK);
    assert.deepEqual(
      watches.map((w) => w.seen),
      [
        [Serving.SERVING, Serving.NOT_SERVING],
        [Serving.SERVING, Serving.NOT_SERVING],
      ],
    );
  });

  it("ends an open WatchAlerts with UNAVAILABLE and the cursor to resume from when it closes", async () => {
    const started = await startNode(t);
    await started.client.publish([ev("alarm", "a-1", 1, { level: 120 })]);
    const { cursor } = await started.client.listAlerts();
    const watch = started.client.watchAlerts({ cursor })[Symbol.asyncIterator]();
    await started.client.publish([ev("alarm", "a-1", 2, { level: 10 })]);
    const change = await watch.next();
    assert.equal(change.done, false);
    const closing = started.node.close();
    const err = await clientError(watch.next());
    assert.equal(err.code, grpc.status.UNAVAILABLE);
    assert.equal(err.reason, "SHUTTING_DOWN");
    assert.equal(err.message, `the node is shutting down; reconnect with cursor ${change.value?.cursor} to continue where this watch stopped`);
    await closing;
  });

  it("drains on SIGTERM under a PublishStream load, exits 0, and every ACCEPTED event's effect is there after a restart", async () => {
    const dataDir = t.tempDir("sigterm");
    const first = await spawnNode(dataDir);
    const load = new StreamLoad(first.client);
    const running = load.run();
    await waitFor(() => load.ackedCount >= 2_000 || load.stoppedBy, { timeoutMs: 20_000, what: "2,000 events to be acknowledged" });
    assert.equal(load.stoppedBy, undefined, `the load stopped early: ${load.failure?.message}`);
    const exit = terminate(first.node);
    await running;
    assert.deepEqual(await exit, { code: 0, signal: null });
    assert.equal(load.stoppedBy, "retryable rejection");
    assert.ok(load.answers.has("SHUTTING_DOWN"), `answers: ${JSON.stringify([...load.answers])}`);
    assert.deepEqual(
      [...load.answers.keys()].filter((k) => !["ACCEPTED", "SHUTTING_DOWN", "PRECEDING_EVENT_REJECTED"].includes(k)),
      [],
    );
    first.client.close();

    const second = await spawnNode(dataDir);
    const recovery = await assertRecovered(second.client, load);
    // A graceful stop answers every event it read: nothing applied went unacknowledged.
    assert.equal(recovery.appliedUnacknowledged, 0);
    assert.ok(recovery.acknowledged >= 2_000);
    assert.deepEqual(await terminate(second.node), { code: 0, signal: null });
  });
});
