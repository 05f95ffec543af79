import assert from "node:assert/strict";
import { type Telemetry, Twin, type TwinContext } from "twinmesh";
import { TwinTestKit } from "twinmesh/testing";

interface S {
  n: number;
  sum: number;
}
class Counter extends Twin<S> {
  static readonly kind = "counter";
  initial(): S {
    return { n: 0, sum: 0 };
  }
  override onTelemetry(t: Telemetry, ctx: TwinContext<S>): void {
    if (t.channels.boom !== undefined) {
      ctx.state.n = 999;
      throw new Error("boom");
    }
    ctx.state.n += 1;
    ctx.state.sum += t.channels.v ?? 0;
    if (ctx.state.sum > 10) ctx.raise("big", { severity: "warning", message: `sum ${ctx.state.sum}` });
    ctx.setTimer("quiet", 1000);
  }
  override onTimer(name: string, ctx: TwinContext<S>): void {
    ctx.raise(name, { severity: "info", message: "quiet" });
  }
}

describe("smoke", () => {
  it("runs turns, rolls back failures, fires timers", async () => {
    const kit = await TwinTestKit.start({ twins: [Counter] });
    try {
      assert.equal((await kit.publish(Counter, "a", { v: 5 })).status, "accepted");
      assert.equal((await kit.publish(Counter, "a", { v: 7 })).status, "accepted");
      const failed = await kit.publish(Counter, "a", { boom: 1 });
      assert.equal(failed.status, "rejected");
      assert.equal(failed.reason, "HANDLER_FAILED");
      assert.deepEqual(await kit.state(Counter, "a"), { n: 2, sum: 12 });
      assert.equal((await kit.publish(Counter, "a", { v: 1 }, { seq: 2 })).status, "duplicate");
      assert.deepEqual(
        kit.openAlerts(Counter, "a").map((a) => a.code),
        ["big"],
      );
      await kit.advance(1500);
      assert.deepEqual(
        kit.openAlerts(Counter, "a").map((a) => a.code),
        ["big", "quiet"],
      );
    } finally {
      await kit.close();
    }
  });
});
