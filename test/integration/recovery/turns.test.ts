import assert from "node:assert/strict";
import { GateTwin, gate, SinkTwin } from "../../fixtures/index.js";
import { LateTwin, lateWakeups, TripTwin } from "../../fixtures/recovery-twins.js";
import { keysIn, openRuntime, publishOne, START_MS } from "../../harness/open-runtime.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

describe("failed and abandoned turns (recovery/turns)", () => {
  const t = useTestScope();
  beforeEach(() => gate.reset());
  afterEach(() => gate.reset());

  it("keeps nothing of a turn that raised an alert, set a timer and sent a message before it threw", async () => {
    const { runtime, clock } = await openRuntime(t, { twins: [TripTwin, SinkTwin] });
    const { host } = runtime;
    assert.equal((await publishOne(runtime, "trip", "t-1", 1)).status, "accepted");
    const failed = await publishOne(runtime, "trip", "t-1", 2, { trip: 1 });
    assert.deepEqual(failed, { status: "rejected", reason: "HANDLER_FAILED", message: "trip/t-1 onTelemetry failed: tripped at seq 2", retryable: false });
    await host.whenIdle();
    assert.deepEqual((await host.getTwin("trip", "t-1")).state, { count: 1, fired: [] });
    assert.deepEqual(await keysIn(runtime, host.keys.alerts()), []);
    assert.deepEqual(await keysIn(runtime, host.keys.alertLogs()), []);
    assert.deepEqual(await keysIn(runtime, host.keys.timersDue(0, START_MS + 3_600_000)), []);
    assert.deepEqual(await keysIn(runtime, host.keys.outboxRange()), []);
    await assert.rejects(host.getTwin("sink", "sink-1"), { reason: "TWIN_NOT_FOUND" });
    // Nothing fires later either, and the twin goes on from its last good state.
    clock.set(START_MS + 60_000);
    assert.equal(await host.fireDueTimers(), 0);
    assert.equal((await publishOne(runtime, "trip", "t-1", 3)).status, "accepted");
    assert.deepEqual((await host.getTwin("trip", "t-1")).state, { count: 2, fired: [] });
  });

  it("drops what a timed-out handler writes into its state after the deadline", async () => {
    const { runtime } = await openRuntime(t, { twins: [LateTwin], host: { turnTimeoutMs: 50 } });
    const { host } = runtime;
    const wakeups = lateWakeups.count;
    assert.equal((await publishOne(runtime, "late", "l-1", 1)).status, "accepted");
    gate.close();
    const timedOut = await publishOne(runtime, "late", "l-1", 2, { late: 1 });
    assert.deepEqual(timedOut, {
      status: "rejected",
      reason: "TURN_TIMEOUT",
      message: "late/l-1 onTelemetry timed out: handler did not finish within 50 ms",
      retryable: false,
    });
    gate.open();
    await waitFor(() => lateWakeups.count === wakeups + 1, { timeoutMs: 5_000, what: "the abandoned handler to wake up and write into its state" });
    assert.equal((await publishOne(runtime, "late", "l-1", 3)).status, "accepted");
    assert.deepEqual((await host.getTwin("late", "l-1")).state, { count: 2 });
  });

  it("answers the work queued on a twin whose record a replica write replaced: it runs on the written record", async () => {
    const { runtime } = await openRuntime(t, { twins: [GateTwin] });
    const { host } = runtime;
    assert.equal((await publishOne(runtime, "gate", "g-1", 1)).status, "accepted");
    const key = host.keys.twin("gate", "g-1");
    const written = await runtime.store.get(key);
    assert.ok(written !== undefined);
    gate.close();
    const running = publishOne(runtime, "gate", "g-1", 2);
    await waitFor(() => gate.entered === 2, { timeoutMs: 5_000, what: "the second turn to wait at the gate" });
    const queued = publishOne(runtime, "gate", "g-1", 3);
    // Another node's copy of the twin (here: the record as seq 1 left it) is written underneath.
    await host.writeReplicated([{ type: "put", key, value: written }]);
    gate.open();
    // The turn that ran on the replaced record is not written; the queued one runs on the new record.
    assert.equal((await running).status, "rejected");
    assert.equal((await queued).status, "accepted");
    assert.deepEqual((await host.getTwin("gate", "g-1")).state, { count: 2, lastSeq: 3 });
  });

  it("runs a control message (delete) queued behind telemetry before that telemetry", async () => {
    const { runtime } = await openRuntime(t, { twins: [GateTwin] });
    const { host } = runtime;
    gate.close();
    const first = publishOne(runtime, "gate", "g-1", 1);
    await waitFor(() => gate.entered === 1, { timeoutMs: 5_000, what: "the first turn to wait at the gate" });
    const later = host.publish([
      { kind: "gate", sourceId: "g-1", seq: 2 },
      { kind: "gate", sourceId: "g-1", seq: 3 },
    ]);
    const deleting = host.deleteTwin("gate", "g-1");
    gate.open();
    assert.equal((await first).status, "accepted");
    assert.deepEqual(
      (await later).map((o) => o.status),
      ["accepted", "accepted"],
    );
    assert.equal((await deleting).existed, true);
    // Deleted after seq 1, before seqs 2 and 3: the twin starts again from initial() with those two.
    assert.deepEqual((await host.getTwin("gate", "g-1")).state, { count: 2, lastSeq: 3 });
  });
});
