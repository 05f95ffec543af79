import assert from "node:assert/strict";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { DUPLICATE, ev, outcomes, statuses } from "../harness/events.js";
import { clientError } from "../harness/grpc-status.js";
import { startNode, twinState } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

describe("TwinService (twins-api)", () => {
  const t = useTestScope();

  it("answers GetTwin with NOT_FOUND for a twin that never received anything, and with its snapshot once it has", async () => {
    const { client } = await startNode(t, { nodeId: "node-a" });
    const missing = await clientError(client.getTwin({ kind: "counter", id: "c-1" }));
    assert.equal(missing.code, grpc.status.NOT_FOUND);
    assert.equal(missing.reason, "TWIN_NOT_FOUND");
    assert.equal(missing.message, "twin counter/c-1 has no state: it never received an event, or it was deleted");

    const time = timestampFromMs(Date.parse("2024-05-01T10:00:00.250Z"));
    await client.publish([ev("counter", "c-1", 7, { v: 2 }, { time })]);
    const { twin } = await client.getTwin({ kind: "counter", id: "c-1" });
    assert.equal(twin?.kind, "counter");
    assert.equal(twin?.id, "c-1");
    assert.deepEqual(twin?.state, { count: 1, lastSeq: 7, total: 2, messages: 0 });
    assert.equal(twin?.version, 1n);
    assert.equal(twin?.lastSeq, 7n);
    assert.deepEqual([twin?.lastEventTime?.seconds, twin?.lastEventTime?.nanos], [time.seconds, time.nanos]);
    assert.equal(twin?.ownerNodeId, "node-a");
  });

  it("delivers SendToTwin once per idempotency_key and every time without one", async () => {
    const { client } = await startNode(t);
    const first = await client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-1" });
    assert.deepEqual([first.duplicate, first.version], [false, 1n]);
    const again = await client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-1" });
    assert.deepEqual([again.duplicate, again.version], [true, 1n]);
    const other = await client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 1 }, idempotencyKey: "k-2" });
    assert.deepEqual([other.duplicate, other.version], [false, 2n]);
    for (const version of [3n, 4n]) {
      const plain = await client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 10 } });
      assert.deepEqual([plain.duplicate, plain.version], [false, version]);
    }
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 0, lastSeq: 0, total: 26, messages: 4 });
  });

  it("remembers idempotency keys across a restart", async () => {
    let node = await startNode(t);
    assert.equal((await node.client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-1" })).duplicate, false);
    node = await node.restart();
    const again = await node.client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-1" });
    assert.deepEqual([again.duplicate, again.version], [true, 1n]);
    assert.deepEqual(await twinState(node.client, "counter", "c-1"), { count: 0, lastSeq: 0, total: 5, messages: 1 });
  });

  it("passivates twins beyond maxActive and loads them back with their state and dedupe marks", async () => {
    const { client, node } = await startNode(t, { hostOptions: { maxActive: 2 } });
    const ids = Array.from({ length: 12 }, (_, i) => `c-${i}`);
    for (const seq of [1, 2, 3]) {
      for (const id of ids) assert.deepEqual(statuses((await client.publish([ev("counter", id, seq, { v: 1 })])).results), ["ACCEPTED"]);
    }
    assert.ok(node.runtime.host.metrics.passivations >= 10, `only ${node.runtime.host.metrics.passivations} passivations`);
    for (const id of ids) {
      assert.deepEqual(outcomes((await client.publish([ev("counter", id, 2)])).results), [DUPLICATE]);
      assert.deepEqual(await twinState(client, "counter", id), { count: 3, lastSeq: 3, total: 3, messages: 0 });
    }
  });

  it("delivers messages a twin sends with ctx.send to the target twin after the turn commits, each exactly once", async () => {
    const { client, node } = await startNode(t);
    const events = ["r-1", "r-2", "r-3"].flatMap((id) => [1, 2, 3, 4].map((seq) => ev("relay", id, seq)));
    assert.deepEqual(new Set(statuses((await client.publish(events)).results)), new Set(["ACCEPTED"]));
    // A retried batch is deduplicated at the relay, so it sends nothing again.
    assert.deepEqual(new Set(statuses((await client.publish(events)).results)), new Set(["DUPLICATE"]));
    await waitFor(async () => (await twinState(client, "sink", "sink-1").catch(() => ({ received: 0 }))).received === 12, {
      timeoutMs: 10_000,
      what: "sink-1 to receive the 12 relayed messages",
    });
    await waitFor(() => node.runtime.host.idle, { timeoutMs: 5_000, what: "the outbox to drain" });
    const sink = await twinState(client, "sink", "sink-1");
    assert.equal(sink.received, 12);
    const seen = [...(sink.seen as string[])].sort();
    assert.deepEqual(
      seen,
      ["r-1", "r-2", "r-3"].flatMap((id) => [1, 2, 3, 4].map((seq) => `${id}#${seq}`)),
    );
    for (const id of ["r-1", "r-2", "r-3"]) assert.deepEqual(await twinState(client, "relay", id), { sent: 4 });
  });

  it("delivers messages sent after a restart, although every earlier outbox entry was delivered and deleted", async () => {
    const first = await startNode(t);
    await first.client.publish([1, 2, 3].map((seq) => ev("relay", "r-1", seq)));
    await waitFor(async () => (await twinState(first.client, "sink", "sink-1").catch(() => ({ received: 0 }))).received === 3, {
      timeoutMs: 10_000,
      what: "sink-1 to receive the 3 messages sent before the restart",
    });
    await waitFor(() => first.node.runtime.host.idle, { timeoutMs: 5_000, what: "the outbox to drain" });
    const second = await first.restart();
    await second.client.publish([4, 5].map((seq) => ev("relay", "r-1", seq)));
    await waitFor(async () => (await twinState(second.client, "sink", "sink-1")).received === 5, {
      timeoutMs: 10_000,
      what: "sink-1 to receive the 2 messages sent after the restart (new message ids, not taken for duplicates)",
    });
    assert.deepEqual((await twinState(second.client, "sink", "sink-1")).seen, ["r-1#1", "r-1#2", "r-1#3", "r-1#4", "r-1#5"]);
  });

  it("keeps a twin's state when an operator acknowledges or resolves its alert while the twin is not in memory", async () => {
    const first = await startNode(t);
    await first.client.publish([ev("alarm", "a-1", 1, { level: 130 }), ev("alarm", "a-2", 1, { level: 140 })]);
    const second = await first.restart();
    const [ackId, resolveId] = (await second.client.listAlerts()).alerts.map((a) => a.id);
    await second.client.acknowledgeAlert(ackId as string);
    await second.client.resolveAlert(resolveId as string);
    assert.deepEqual(await twinState(second.client, "alarm", "a-1"), { level: 130, fired: 0, firedNames: [] });
    assert.deepEqual(await twinState(second.client, "alarm", "a-2"), { level: 140, fired: 0, firedNames: [] });
    const third = await second.restart();
    assert.deepEqual(await twinState(third.client, "alarm", "a-1"), { level: 130, fired: 0, firedNames: [] });
  });

  it("fires a timer with the real clock once it is due", async () => {
    const { client } = await startNode(t, { hostOptions: { timerPollMs: 10 } });
    const before = Date.now();
    await client.publish([ev("alarm", "a-1", 1, { timerMs: 50 })]);
    const state = (await waitFor(
      async () => {
        const s = await twinState(client, "alarm", "a-1");
        return s.fired === 1 ? s : undefined;
      },
      { timeoutMs: 5_000, what: "timer ping of alarm/a-1 to fire" },
    )) as Record<string, unknown>;
    assert.deepEqual(state.firedNames, ["ping"]);
    assert.ok((state.lastFiredAt as number) >= before + 50, `fired at ${state.lastFiredAt as number}, before it was due (${before} + 50)`);
  });

  it("does not fire a cancelled timer", async () => {
    const { client } = await startNode(t, { hostOptions: { timerPollMs: 10 } });
    await client.publish([ev("alarm", "a-1", 1, { timerMs: 30 }), ev("alarm", "a-1", 2, { cancel: 1 }), ev("alarm", "a-2", 1, { timerMs: 60 })]);
    await waitFor(async () => (await twinState(client, "alarm", "a-2")).fired === 1, { timeoutMs: 5_000, what: "the later timer of alarm/a-2 to fire" });
    assert.equal((await twinState(client, "alarm", "a-1")).fired, 0);
  });

  it("fires a timer set before a restart after the node restarts", async () => {
    // The first node never polls for due timers, so the timer can only fire after the restart.
    let node = await startNode(t, { hostOptions: { timerPollMs: 600_000 } });
    await node.client.publish([ev("alarm", "a-1", 1, { timerMs: 50 })]);
    assert.equal((await twinState(node.client, "alarm", "a-1")).fired, 0);
    node = await node.restart({ hostOptions: { timerPollMs: 10 } });
    await waitFor(async () => (await twinState(node.client, "alarm", "a-1")).fired === 1, { timeoutMs: 5_000, what: "the timer to fire after the restart" });
    await waitFor(() => node.node.runtime.host.idle, { timeoutMs: 5_000, what: "the timer turn to commit" });
    assert.deepEqual((await twinState(node.client, "alarm", "a-1")).firedNames, ["ping"]);
    assert.equal(await node.node.runtime.host.nextTimerDue(), undefined);
  });
});
