import assert from "node:assert/strict";
import { CounterTwin } from "../../fixtures/index.js";
import { openRuntime, publishOne } from "../../harness/open-runtime.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";
import { WriteSpy } from "../../harness/write-spy.js";

describe("passivation (recovery/passivation)", () => {
  const t = useTestScope();

  it("never passivates a twin whose turn waits for its commit, even beyond maxActive, so its acknowledged event is written", async () => {
    const writes = WriteSpy.install(t);
    const { runtime } = await openRuntime(t, { twins: [CounterTwin], host: { maxActive: 1 } });
    const { host } = runtime;
    writes.hold();
    // x's group is being written (held); a's turn then runs into the next, open group.
    const x = publishOne(runtime, "counter", "x", 1);
    await waitFor(() => writes.heldCount === 1, { timeoutMs: 5_000, what: "x's commit to be in flight" });
    const a = publishOne(runtime, "counter", "a", 1);
    await waitFor(() => host.metrics.applied === 2, { timeoutMs: 5_000, what: "a's turn to run" });
    // Two more twins: passivation looks for two twins to evict while x and a have uncommitted work.
    const more = host.publish([
      { kind: "counter", sourceId: "b", seq: 1 },
      { kind: "counter", sourceId: "c", seq: 1 },
    ]);
    writes.release();
    assert.deepEqual(
      [await x, await a, ...(await more)].map((o) => o.status),
      ["accepted", "accepted", "accepted", "accepted"],
    );
    await host.whenIdle();
    for (const id of ["x", "a", "b", "c"]) assert.deepEqual((await host.getTwin("counter", id)).state, { count: 1, lastSeq: 1, total: 0, messages: 0 }, id);
    assert.equal(host.activeCount, 1);
  });

  it("passivates a twin idle for idleTimeoutMs and loads it back with its state on its next event", async () => {
    const { runtime } = await openRuntime(t, { twins: [CounterTwin], host: { idleTimeoutMs: 100 } });
    const { host } = runtime;
    assert.equal((await publishOne(runtime, "counter", "c-1", 1, { v: 5 })).status, "accepted");
    assert.equal(host.activeCount, 1);
    await waitFor(() => host.activeCount === 0, { timeoutMs: 5_000, what: "the idle twin to be passivated" });
    assert.equal(host.metrics.passivations, 1);
    assert.equal((await publishOne(runtime, "counter", "c-1", 2, { v: 7 })).status, "accepted");
    assert.equal((await publishOne(runtime, "counter", "c-1", 2, { v: 7 })).status, "duplicate");
    assert.deepEqual((await host.getTwin("counter", "c-1")).state, { count: 2, lastSeq: 2, total: 12, messages: 0 });
    assert.equal(host.metrics.activations, 2);
  });
});
