import assert from "node:assert/strict";
import { TwinTestKit } from "twinmesh/testing";
import { PatientTwin } from "../../../twins/patient-twin.js";
import { WardTwin } from "../../../twins/ward-twin.js";

const START_MS = Date.parse("2026-01-01T00:00:00Z");

describe("PatientTwin", () => {
  let kit: TwinTestKit;

  beforeEach(async () => {
    kit = await TwinTestKit.start({ twins: [PatientTwin, WardTwin], startTime: START_MS });
  });

  afterEach(async () => {
    await kit.close();
  });

  async function publishAll(id: string, bpms: readonly number[]): Promise<number[]> {
    const ewmas: number[] = [];
    for (const bpm of bpms) {
      assert.equal((await kit.publish(PatientTwin, id, { bpm })).status, "accepted");
      ewmas.push((await kit.state(PatientTwin, id)).ewma);
    }
    return ewmas;
  }

  const codes = (id: string): string[] => kit.openAlerts(PatientTwin, id).map((a) => a.code);

  describe("heart-rate EWMA", () => {
    it("seeds the EWMA with the first reading and then moves it 10 % towards each reading", async () => {
      assert.deepEqual(await publishAll("bed-1", [100, 110, 120]), [100, 101, 102.9]);
      assert.deepEqual(await kit.state(PatientTwin, "bed-1"), { ewma: 102.9, samples: 3, lastBpm: 120, lastSeenMs: START_MS, alerts: [] });
    });

    it("leaves the EWMA alone when an event has no bpm channel and still records its SpO2", async () => {
      await kit.publish(PatientTwin, "bed-1", { bpm: 60 });
      await kit.publish(PatientTwin, "bed-1", { spo2: 97 });
      const s = await kit.state(PatientTwin, "bed-1");
      assert.deepEqual([s.ewma, s.samples, s.lastBpm, s.spo2], [60, 1, 60, 97]);
    });
  });

  describe("tachycardia and bradycardia", () => {
    it("raises tachycardia (critical) when the EWMA rises above 120 and resolves it only below 110", async () => {
      // 100, 110, 119, 127.1: the EWMA crosses 120 on the 4th reading.
      const up = await publishAll("bed-1", [100, 200, 200]);
      assert.deepEqual(up, [100, 110, 119]);
      assert.deepEqual(codes("bed-1"), []);
      await publishAll("bed-1", [200]);
      const [alert] = kit.openAlerts(PatientTwin, "bed-1");
      assert.deepEqual([alert?.code, alert?.severity, alert?.message], ["tachycardia", "critical", "heart-rate EWMA 127 bpm"]);

      // 127.1 → 120.39 → 114.35 → 108.92: stays open at 120 and 114, resolves at 108.
      const down = await publishAll("bed-1", [60, 60]);
      assert.deepEqual(
        down.map((e) => e.toFixed(2)),
        ["120.39", "114.35"],
      );
      assert.deepEqual(codes("bed-1"), ["tachycardia"]);
      await publishAll("bed-1", [60]);
      assert.deepEqual(codes("bed-1"), []);
      assert.deepEqual(
        kit.allAlerts(PatientTwin, "bed-1").map((a) => [a.code, a.state]),
        [["tachycardia", "RESOLVED"]],
      );
    });

    it("raises tachycardia once while the EWMA swings between 111 and 125 across the threshold", async () => {
      const ewmas = await publishAll("bed-1", [125, 90, 90, 90, 90, 90, 150, 150, 150, 150, 150, 90, 90, 90, 90, 90, 150, 150, 150, 150]);
      assert.deepEqual(
        ewmas.map((e) => Number(e.toFixed(1))),
        [125, 121.5, 118.4, 115.5, 113, 110.7, 114.6, 118.1, 121.3, 124.2, 126.8, 123.1, 119.8, 116.8, 114.1, 111.7, 115.5, 119, 122.1, 124.9],
      );
      const alerts = kit.allAlerts(PatientTwin, "bed-1");
      assert.deepEqual(
        alerts.map((a) => [a.code, a.state, a.count]),
        [["tachycardia", "OPEN", 1]],
      );
    });

    it("raises bradycardia (warning) when the EWMA falls below 45 and resolves it only above 50", async () => {
      // 40, 40, 46, 51.4
      await publishAll("bed-1", [40]);
      const [alert] = kit.openAlerts(PatientTwin, "bed-1");
      assert.deepEqual([alert?.code, alert?.severity, alert?.message], ["bradycardia", "warning", "heart-rate EWMA 40 bpm"]);
      await publishAll("bed-1", [40, 100]);
      assert.equal((await kit.state(PatientTwin, "bed-1")).ewma, 46);
      assert.deepEqual(codes("bed-1"), ["bradycardia"]);
      await publishAll("bed-1", [100]);
      assert.equal((await kit.state(PatientTwin, "bed-1")).ewma, 51.4);
      assert.deepEqual(codes("bed-1"), []);
    });

    it("raises no alert for an EWMA of exactly 120 or exactly 45", async () => {
      await publishAll("bed-1", [120]);
      await publishAll("bed-2", [45]);
      assert.deepEqual([...kit.allAlerts(PatientTwin, "bed-1"), ...kit.allAlerts(PatientTwin, "bed-2")], []);
    });
  });

  describe("low oxygen", () => {
    it("raises low-oxygen (critical) below 90 % and resolves it only at 93 % or more", async () => {
      await kit.publish(PatientTwin, "bed-1", { bpm: 70, spo2: 91 });
      assert.deepEqual(codes("bed-1"), []);
      await kit.publish(PatientTwin, "bed-1", { bpm: 70, spo2: 89 });
      const [alert] = kit.openAlerts(PatientTwin, "bed-1");
      assert.deepEqual([alert?.code, alert?.severity, alert?.message], ["low-oxygen", "critical", "SpO2 89 %"]);
      await kit.publish(PatientTwin, "bed-1", { bpm: 70, spo2: 92 });
      assert.deepEqual(codes("bed-1"), ["low-oxygen"]);
      await kit.publish(PatientTwin, "bed-1", { bpm: 70, spo2: 93 });
      assert.deepEqual(codes("bed-1"), []);
      assert.equal((await kit.state(PatientTwin, "bed-1")).spo2, 93);
    });
  });

  describe("missing signal", () => {
    it("raises missing-signal (warning) after 60 s without an event and resolves it with the next event", async () => {
      await kit.publish(PatientTwin, "bed-1", { bpm: 72 });
      await kit.advance(59_999);
      assert.deepEqual(codes("bed-1"), []);
      await kit.advance(1);
      const [alert] = kit.openAlerts(PatientTwin, "bed-1");
      assert.deepEqual(
        [alert?.code, alert?.severity, alert?.message, alert?.raisedAt],
        ["missing-signal", "warning", "no reading from the monitor since 2026-01-01T00:00:00.000Z", START_MS + 60_000],
      );

      await kit.advance(600_000); // one-shot: a silent monitor raises once
      assert.equal(kit.openAlerts(PatientTwin, "bed-1")[0]?.count, 1);

      await kit.publish(PatientTwin, "bed-1", { bpm: 72 });
      assert.deepEqual(
        kit.allAlerts(PatientTwin, "bed-1").map((a) => [a.code, a.state]),
        [["missing-signal", "RESOLVED"]],
      );
    });

    it("does not raise missing-signal while events keep arriving less than 60 s apart", async () => {
      for (let i = 0; i < 5; i++) {
        await kit.publish(PatientTwin, "bed-1", { bpm: 72 });
        await kit.advance(59_000);
      }
      assert.deepEqual(kit.allAlerts(PatientTwin, "bed-1"), []);
    });

    it("counts an event without bpm as a sign of life", async () => {
      await kit.publish(PatientTwin, "bed-1", { bpm: 72 });
      await kit.advance(50_000);
      await kit.publish(PatientTwin, "bed-1", { spo2: 98 });
      await kit.advance(50_000);
      assert.deepEqual(kit.allAlerts(PatientTwin, "bed-1"), []);
    });
  });

  describe("ward reports", () => {
    it("sends no report when no event named a ward", async () => {
      await publishAll("bed-1", [130, 130]);
      assert.deepEqual(kit.sent(PatientTwin), []);
    });

    it("reports to the ward named by the ward attribute on the 1st and 11th reading and on each alert change", async () => {
      await kit.publish(PatientTwin, "bed-1", { bpm: 70, spo2: 97 }, { attributes: { ward: "ward-3" } });
      assert.deepEqual(kit.sent(PatientTwin, "bed-1"), [
        {
          from: { kind: "patient", id: "bed-1" },
          to: { kind: "ward", id: "ward-3" },
          message: { bed: "bed-1", ewma: 70, spo2: 97, alerts: [], critical: false, atMs: START_MS },
        },
      ]);

      // Readings 2..10 are not reported; the 11th is. The ward attribute is remembered.
      await publishAll("bed-1", [70, 70, 70, 70, 70, 70, 70, 70, 70]);
      assert.equal(kit.sent(PatientTwin, "bed-1").length, 1);
      await publishAll("bed-1", [70]);
      assert.equal(kit.sent(PatientTwin, "bed-1").length, 2);

      // An alert change is reported at once.
      await kit.publish(PatientTwin, "bed-1", { bpm: 70, spo2: 85 });
      const last = kit.sent(PatientTwin, "bed-1").at(-1);
      assert.deepEqual(last?.message, { bed: "bed-1", ewma: 70, spo2: 85, alerts: ["low-oxygen"], critical: true, atMs: START_MS });
    });

    it("reports a missing signal to the ward when the timer fires", async () => {
      await kit.publish(PatientTwin, "bed-1", { bpm: 70 }, { attributes: { ward: "ward-3" } });
      await kit.advance(60_000);
      const last = kit.sent(PatientTwin, "bed-1").at(-1);
      assert.deepEqual(last?.message, { bed: "bed-1", ewma: 70, spo2: null, alerts: ["missing-signal"], critical: false, atMs: START_MS + 60_000 });
      const ward = await kit.state(WardTwin, "ward-3");
      assert.deepEqual(ward.beds["bed-1"], { ewma: 70, spo2: null, alerts: ["missing-signal"], critical: false, atMs: START_MS + 60_000 });
      assert.equal(ward.bedsInAlert, 1);
    });

    it("feeds the ward's aggregate, which raises ward-overloaded when three beds are tachycardic", async () => {
      for (const bed of ["bed-1", "bed-2", "bed-3"]) await kit.publish(PatientTwin, bed, { bpm: 130 }, { attributes: { ward: "ward-3" } });
      await kit.publish(PatientTwin, "bed-4", { bpm: 70 }, { attributes: { ward: "ward-3" } });
      const ward = await kit.state(WardTwin, "ward-3");
      assert.deepEqual([ward.bedsInAlert, ward.criticalBeds, ward.averageEwma, ward.overloaded], [3, 3, 115, true]);
      assert.deepEqual(
        kit.openAlerts(WardTwin, "ward-3").map((a) => [a.code, a.severity]),
        [["ward-overloaded", "warning"]],
      );
    });
  });
});
