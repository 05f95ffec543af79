import assert from "node:assert/strict";
import { AlarmTwin } from "../../fixtures/index.js";
import { TripTwin } from "../../fixtures/recovery-twins.js";
import { keysIn, openRuntime, publishOne, START_MS } from "../../harness/open-runtime.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

describe("durable timers across failures (recovery/timers)", () => {
  const t = useTestScope();

  it("spends a timer whose onTimer throws: it fires once, its state change is rolled back, and it leaves the index", async () => {
    const { runtime, clock } = await openRuntime(t, { twins: [TripTwin] });
    const { host } = runtime;
    assert.equal((await publishOne(runtime, "trip", "t-1", 1, { arm: -1_000 })).status, "accepted");
    const index = host.keys.timersDue(0, START_MS + 3_600_000);
    assert.equal((await keysIn(runtime, index)).length, 1);
    clock.set(START_MS + 1_000);
    assert.equal(await host.fireDueTimers(), 1);
    await host.whenIdle();
    assert.equal(host.metrics.timersFired, 1);
    assert.equal(host.metrics.handlerErrors, 1);
    assert.deepEqual(await keysIn(runtime, index), []);
    // Polled again, it does not fire again.
    clock.set(START_MS + 2_000);
    assert.equal(await host.fireDueTimers(), 0);
    await host.whenIdle();
    assert.equal(host.metrics.timersFired, 1);
    assert.deepEqual((await host.getTwin("trip", "t-1")).state, { count: 0, fired: [] });
  });

  it("fires each timer that came due while the runtime was closed once when it opens again, with the concurrency bound", async () => {
    const first = await openRuntime(t, { twins: [AlarmTwin] });
    const ids = ["a-1", "a-2", "a-3", "a-4", "a-5"];
    for (const id of ids) assert.equal((await publishOne(first.runtime, "alarm", id, 1, { timerMs: 1_000 })).status, "accepted");
    // Closed before any came due; they come due (and more) while it is down.
    const second = await first.reopen({ host: { maxConcurrentTimers: 2 } }, () => first.clock.set(START_MS + 60_000));
    const { host } = second.runtime;
    await waitFor(
      async () => {
        await host.fireDueTimers();
        await host.whenIdle();
        return host.metrics.timersFired === ids.length;
      },
      { timeoutMs: 5_000, what: "the five timers to fire after the reopen" },
    );
    assert.deepEqual(await keysIn(second.runtime, host.keys.timersDue(0, START_MS + 3_600_000)), []);
    for (const id of ids) {
      const state = (await host.getTwin("alarm", id)).state as { fired: number; firedNames: string[]; lastFiredAt: number };
      assert.deepEqual([state.fired, state.firedNames, state.lastFiredAt], [1, ["ping"], START_MS + 60_000], id);
    }
  });
});
