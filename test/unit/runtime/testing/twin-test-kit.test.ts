import assert from "node:assert/strict";
import { type Telemetry, Twin, type TwinContext } from "twinmesh";
import { TwinTestKit } from "twinmesh/testing";

interface TickState {
  /** `ctx.now()` of every onTimer, epoch ms. */
  ticks: number[];
}

/** Arms `tick` every `periodMs` (a channel) and re-arms it in onTimer: periodic work. */
class TickTwin extends Twin<TickState> {
  static readonly kind = "tick";
  initial(): TickState {
    return { ticks: [] };
  }
  override onTelemetry(t: Telemetry, ctx: TwinContext<TickState>): void {
    ctx.setTimer("tick", t.channels.periodMs ?? 10_000);
  }
  override onTimer(_name: string, ctx: TwinContext<TickState>): void {
    ctx.state.ticks.push(ctx.now().getTime());
    ctx.setTimer("tick", 10_000);
  }
}

const START = Date.parse("2026-01-01T00:00:00Z");

describe("TwinTestKit", () => {
  let kit: TwinTestKit | undefined;
  afterEach(async () => {
    await kit?.close();
    kit = undefined;
  });

  it("reports the earliest pending timer as the next one due", async () => {
    kit = await TwinTestKit.start({ twins: [TickTwin], startTime: START });
    await kit.publish(TickTwin, "t-1", { periodMs: 10_000 });
    // nextDue once scanned up to `Number.MAX_SAFE_INTEGER >> 8`, which is -1 in JavaScript's
    // 32-bit shift, so it never found a timer.
    assert.equal(await kit.runtime.host.nextTimerDue(), START + 10_000);
  });

  it("fires a timer re-armed in onTimer each time it comes due within one advance(), at its due time", async () => {
    kit = await TwinTestKit.start({ twins: [TickTwin], startTime: START });
    await kit.publish(TickTwin, "t-1", { periodMs: 10_000 });
    await kit.advance(60_000);
    // Without the next due time, advance() would jump to the end and fire the due timer once, at
    // the end time, and the re-armed one would not be due.
    assert.deepEqual(
      (await kit.state(TickTwin, "t-1")).ticks,
      [1, 2, 3, 4, 5, 6].map((n) => START + n * 10_000),
    );
  });
});
