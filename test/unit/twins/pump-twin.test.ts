import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Alert, type Telemetry, Twin, type TwinContext, TwinRuntime } from "twinmesh";
import { TwinTestKit, VirtualClock } from "twinmesh/testing";
import { PumpTwin } from "../../../twins/pump-twin.js";

const START_MS = Date.parse("2026-01-01T00:00:00Z");

/** The pump twin as it shipped with stateVersion 1, to write state in the old shape. */
interface PumpStateV1 {
  vibration: number[];
  samples: number;
  level: "ok" | "warning" | "critical";
}
class PumpTwinV1 extends Twin<PumpStateV1> {
  static readonly kind = "pump";
  initial(): PumpStateV1 {
    return { vibration: [], samples: 0, level: "ok" };
  }
  override onTelemetry(t: Telemetry, ctx: TwinContext<PumpStateV1>): void {
    const v = t.channels.vibration_mm_s;
    if (v === undefined) return;
    ctx.state.vibration = [...ctx.state.vibration, v].slice(-20);
    ctx.state.samples += 1;
    if (v > 4.5 && ctx.state.level === "ok") {
      ctx.state.level = "warning";
      ctx.raise("vibration", { severity: "warning", message: `vibration ${v} mm/s` });
    }
  }
}

describe("PumpTwin", () => {
  let kit: TwinTestKit;

  beforeEach(async () => {
    kit = await TwinTestKit.start({ twins: [PumpTwin], startTime: START_MS });
  });

  afterEach(async () => {
    await kit.close();
  });

  async function publishAll(id: string, samples: readonly Record<string, number>[]): Promise<void> {
    for (const channels of samples) assert.equal((await kit.publish(PumpTwin, id, channels)).status, "accepted");
  }
  const vibration = (values: readonly number[]): Record<string, number>[] => values.map((vibration_mm_s) => ({ vibration_mm_s }));

  describe("rolling window", () => {
    it("keeps min, max and mean of each channel over the window", async () => {
      await publishAll("p-1", [
        { pressure_bar: 5, flow_lpm: 100, vibration_mm_s: 1, temp_c: 40 },
        { pressure_bar: 6, flow_lpm: 110, vibration_mm_s: 2, temp_c: 42 },
        { pressure_bar: 7, flow_lpm: 120, vibration_mm_s: 3, temp_c: 44 },
      ]);
      const s = await kit.state(PumpTwin, "p-1");
      assert.deepEqual(s.stats, {
        pressure_bar: { min: 5, max: 7, mean: 6 },
        flow_lpm: { min: 100, max: 120, mean: 110 },
        vibration_mm_s: { min: 1, max: 3, mean: 2 },
        temp_c: { min: 40, max: 44, mean: 42 },
      });
      assert.equal(s.samples, 3);
    });

    it("keeps only the last 20 samples and leaves out channels an event lacked", async () => {
      await publishAll(
        "p-1",
        Array.from({ length: 25 }, (_, i) => ({ pressure_bar: i + 1 })),
      );
      await kit.publish(PumpTwin, "p-1", { other_channel: 1 }); // no pump channel: ignored
      const s = await kit.state(PumpTwin, "p-1");
      assert.equal(s.window.length, 20);
      assert.deepEqual(s.window[0], { pressure_bar: 6 });
      assert.deepEqual(s.stats, { pressure_bar: { min: 6, max: 25, mean: 15.5 } });
      assert.equal(s.samples, 25);
    });
  });

  describe("vibration", () => {
    it("raises vibration (warning) above 4.5 mm/s once while readings swing between 4.1 and 4.6", async () => {
      await publishAll("p-1", vibration([4.5]));
      assert.deepEqual(kit.allAlerts(PumpTwin, "p-1"), []);
      await publishAll("p-1", vibration([4.6, 4.1, 4.6, 4.2, 4.6, 4.0]));
      const alerts = kit.allAlerts(PumpTwin, "p-1");
      assert.deepEqual(
        alerts.map((a) => [a.code, a.severity, a.state, a.count, a.message]),
        [["vibration", "warning", "OPEN", 1, "vibration 4.6 mm/s RMS"]],
      );
      await publishAll("p-1", vibration([3.9]));
      assert.deepEqual(
        kit.allAlerts(PumpTwin, "p-1").map((a) => a.state),
        ["RESOLVED"],
      );
      assert.equal((await kit.state(PumpTwin, "p-1")).vibrationLevel, "ok");
    });

    it("escalates the same alert to critical above 7.1 mm/s and steps back to warning only below 6.4", async () => {
      await publishAll("p-1", vibration([5, 7.2]));
      let [alert] = kit.openAlerts(PumpTwin, "p-1");
      assert.deepEqual([alert?.code, alert?.severity, alert?.count], ["vibration", "critical", 2]);

      await publishAll("p-1", vibration([6.4, 7.0]));
      assert.equal((await kit.state(PumpTwin, "p-1")).vibrationLevel, "critical");

      await publishAll("p-1", vibration([6.3]));
      [alert] = kit.openAlerts(PumpTwin, "p-1");
      assert.deepEqual([alert?.severity, alert?.count, alert?.message], ["warning", 3, "vibration 6.3 mm/s RMS"]);
      assert.equal(kit.allAlerts(PumpTwin, "p-1").length, 1);
    });

    it("goes straight from ok to critical on one reading above 7.1 mm/s", async () => {
      await publishAll("p-1", vibration([2, 8]));
      assert.deepEqual(
        kit.openAlerts(PumpTwin, "p-1").map((a) => [a.code, a.severity, a.count]),
        [["vibration", "critical", 1]],
      );
    });
  });

  describe("cavitation", () => {
    const steady = Array.from({ length: 5 }, () => ({ pressure_bar: 5, vibration_mm_s: 2 }));

    it("raises cavitation (warning) when pressure falls below 80 % of the window mean while vibration exceeds 150 % of it", async () => {
      await publishAll("p-1", [...steady, { pressure_bar: 3.9, vibration_mm_s: 3.1 }]);
      const [alert] = kit.openAlerts(PumpTwin, "p-1");
      assert.deepEqual(
        [alert?.code, alert?.severity, alert?.message],
        ["cavitation", "warning", "pressure 3.9 bar (mean 5.00) with vibration 3.1 mm/s (mean 2.00)"],
      );
      assert.equal((await kit.state(PumpTwin, "p-1")).cavitationBaselineBar, 5);
    });

    it("resolves cavitation only when pressure is back to 95 % of the mean from before it began", async () => {
      await publishAll("p-1", [...steady, { pressure_bar: 3, vibration_mm_s: 4 }]);
      // The window mean falls with each low reading; the frozen baseline (5 bar) does not.
      await publishAll("p-1", [
        { pressure_bar: 3, vibration_mm_s: 2 },
        { pressure_bar: 3, vibration_mm_s: 2 },
        { pressure_bar: 4.7, vibration_mm_s: 2 },
      ]);
      assert.deepEqual(
        kit.openAlerts(PumpTwin, "p-1").map((a) => a.code),
        ["cavitation"],
      );
      await publishAll("p-1", [{ pressure_bar: 4.75, vibration_mm_s: 2 }]);
      assert.deepEqual(
        kit.allAlerts(PumpTwin, "p-1").map((a) => [a.code, a.state]),
        [["cavitation", "RESOLVED"]],
      );
      assert.equal((await kit.state(PumpTwin, "p-1")).cavitationBaselineBar, undefined);
    });

    it("does not raise cavitation on a pressure drop alone, a vibration spike alone, or before 5 samples", async () => {
      await publishAll("p-1", [...steady, { pressure_bar: 3.5, vibration_mm_s: 2.5 }]);
      await publishAll("p-2", [...steady, { pressure_bar: 5, vibration_mm_s: 4 }]);
      await publishAll("p-3", [...steady.slice(1), { pressure_bar: 3, vibration_mm_s: 4 }]);
      for (const id of ["p-1", "p-2", "p-3"]) assert.deepEqual(kit.allAlerts(PumpTwin, id), [], id);
    });
  });

  it("registers with stateVersion 2 and starts a new twin in the version 2 shape", async () => {
    assert.equal(kit.runtime.registry.get("pump").stateVersion, 2);
    await kit.publish(PumpTwin, "p-1", { temp_c: 41 });
    assert.deepEqual(await kit.state(PumpTwin, "p-1"), {
      window: [{ temp_c: 41 }],
      stats: { temp_c: { min: 41, max: 41, mean: 41 } },
      samples: 1,
      vibrationLevel: "ok",
    });
  });
});

describe("PumpTwin.migrate", () => {
  it("migrates version 1 state: vibration readings become window samples and level becomes vibrationLevel", () => {
    const migrated = new PumpTwin().migrate({ vibration: [1, 2, 3], samples: 40, level: "warning" }, 1);
    assert.deepEqual(migrated, {
      window: [{ vibration_mm_s: 1 }, { vibration_mm_s: 2 }, { vibration_mm_s: 3 }],
      stats: { vibration_mm_s: { min: 1, max: 3, mean: 2 } },
      samples: 40,
      vibrationLevel: "warning",
    });
  });

  it("keeps the last 20 readings and skips malformed fields of version 1 state", () => {
    const readings = Array.from({ length: 25 }, (_, i) => i + 1);
    assert.deepEqual(new PumpTwin().migrate({ vibration: readings, samples: 25, level: "ok" }, 1).window[0], { vibration_mm_s: 6 });
    assert.deepEqual(new PumpTwin().migrate({ vibration: [1, "x", null, 3], level: "loud" }, 1), {
      window: [{ vibration_mm_s: 1 }, { vibration_mm_s: 3 }],
      stats: { vibration_mm_s: { min: 1, max: 3, mean: 2 } },
      samples: 2,
      vibrationLevel: "ok",
    });
  });

  it("refuses state of a version it does not know", () => {
    assert.throws(() => new PumpTwin().migrate({}, 3), /pump state version 3 is unknown/);
  });
});

describe("PumpTwin upgrade from version 1", () => {
  let dir: string;
  let runtime: TwinRuntime | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "twinmesh-pump-"));
  });

  afterEach(async () => {
    await runtime?.host.whenIdle();
    await runtime?.close();
    runtime = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it("migrates state stored by the version 1 class on the next event and resolves the alert it left open", async () => {
    const alerts = new Map<string, Alert>();
    const open = (twins: [typeof PumpTwinV1] | [typeof PumpTwin]): Promise<TwinRuntime> =>
      TwinRuntime.open({ dataDir: dir, twins, clock: new VirtualClock(START_MS), observer: { alertChanged: (a) => alerts.set(a.id, a) } });

    runtime = await open([PumpTwinV1]);
    const [first] = await runtime.host.publish([{ kind: "pump", sourceId: "p-1", seq: 1, channels: { vibration_mm_s: 5 } }]);
    assert.equal(first?.status, "accepted");
    await runtime.host.whenIdle();
    await runtime.close();

    runtime = await open([PumpTwin]);
    const [second] = await runtime.host.publish([{ kind: "pump", sourceId: "p-1", seq: 2, channels: { vibration_mm_s: 3 } }]);
    assert.equal(second?.status, "accepted");
    assert.deepEqual((await runtime.host.getTwin("pump", "p-1")).state, {
      window: [{ vibration_mm_s: 5 }, { vibration_mm_s: 3 }],
      stats: { vibration_mm_s: { min: 3, max: 5, mean: 4 } },
      samples: 2,
      vibrationLevel: "ok",
    });
    assert.deepEqual(
      [...alerts.values()].map((a) => [a.code, a.state]),
      [["vibration", "RESOLVED"]],
    );
  });
});
