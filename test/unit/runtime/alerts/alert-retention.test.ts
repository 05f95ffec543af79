import assert from "node:assert/strict";
import { AlertState, type BatchOp, type PartitionId, TwinRuntime, VirtualClock } from "../../../../runtime/index.js";
import { CounterTwin } from "../../../fixtures/index.js";
import { useTestScope } from "../../../harness/test-scope.js";

describe("AlertRetention (resolved alerts)", () => {
  const t = useTestScope();

  it("reads another owner's expired entries once, not at every sweep, and all again once it takes their partition, then removes them", async () => {
    const owned = new Set<PartitionId>();
    const clock = new VirtualClock(Date.parse("2026-01-01T00:00:00Z"));
    const runtime = await TwinRuntime.open({
      dataDir: t.tempDir("retention"),
      twins: [CounterTwin],
      host: { timerPollMs: 3_600_000, resolvedAlertRetentionMs: 60_000 },
      ownership: { refusal: () => undefined, owns: (p) => owned.has(p) },
      clock,
    });
    t.defer(() => runtime.close());
    const { keys } = runtime.host;
    // 30 alerts resolved two minutes ago in partitions another node owns, as its shipments write them.
    const resolvedAt = clock.nowMs() - 120_000;
    const ids = Array.from({ length: 30 }, (_, i) => `counter/x-${i}/high@1`);
    const ops: BatchOp[] = ids.flatMap((id) => [
      { type: "put", key: keys.alert(id), value: JSON.stringify({ id, state: AlertState.RESOLVED, updatedAt: resolvedAt }) },
      { type: "put", key: keys.resolvedAlert(resolvedAt, id), value: "" },
    ]);
    await runtime.host.writeReplicated(ops);
    const retention = runtime.alertRetention;

    assert.equal(await retention.trim(), 0, "removed alerts of partitions this node does not own");
    assert.equal(retention.stats.scanned, 30);
    clock.set(clock.nowMs() + 1_000);
    assert.equal(await retention.trim(), 0);
    assert.equal(retention.stats.scanned, 30, "a second sweep read the same entries of another owner again");

    // This node takes their partitions: those entries are its to remove now.
    for (let i = 0; i < 30; i++) owned.add(runtime.partitioning.partitionOf("counter", `x-${i}`));
    clock.set(clock.nowMs() + 1_000);
    assert.equal(await retention.trim(), 30);
    assert.equal(retention.stats.scanned, 60);
    assert.deepEqual(
      (await runtime.store.getMany(ids.map((id) => keys.alert(id)))).filter((raw) => raw !== undefined),
      [],
    );
  });
});
