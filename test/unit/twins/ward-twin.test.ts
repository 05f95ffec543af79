import assert from "node:assert/strict";
import { TwinTestKit } from "twinmesh/testing";
import { type BedReport, WardTwin } from "../../../twins/ward-twin.js";

const START_MS = Date.parse("2026-01-01T00:00:00Z");

function report(bed: string, ewma: number, alerts: string[] = [], critical = false, atMs = START_MS): BedReport {
  return { bed, ewma, spo2: null, alerts, critical, atMs };
}

describe("WardTwin", () => {
  let kit: TwinTestKit;

  beforeEach(async () => {
    kit = await TwinTestKit.start({ twins: [WardTwin], startTime: START_MS });
  });

  afterEach(async () => {
    await kit.close();
  });

  it("keeps each bed's latest report and counts beds in alert, critical beds and the mean EWMA", async () => {
    await kit.send(WardTwin, "ward-3", report("bed-1", 80));
    await kit.send(WardTwin, "ward-3", report("bed-2", 100, ["bradycardia"]));
    await kit.send(WardTwin, "ward-3", report("bed-3", 132, ["tachycardia"], true));
    assert.deepEqual(await kit.state(WardTwin, "ward-3"), {
      beds: {
        "bed-1": { ewma: 80, spo2: null, alerts: [], critical: false, atMs: START_MS },
        "bed-2": { ewma: 100, spo2: null, alerts: ["bradycardia"], critical: false, atMs: START_MS },
        "bed-3": { ewma: 132, spo2: null, alerts: ["tachycardia"], critical: true, atMs: START_MS },
      },
      bedsInAlert: 2,
      criticalBeds: 1,
      averageEwma: 104,
      overloaded: false,
    });
  });

  it("replaces a bed's report with a newer one and ignores one older than it has", async () => {
    await kit.send(WardTwin, "ward-3", report("bed-1", 90, [], false, START_MS + 2_000));
    await kit.send(WardTwin, "ward-3", report("bed-1", 125, ["tachycardia"], true, START_MS + 1_000));
    let ward = await kit.state(WardTwin, "ward-3");
    assert.deepEqual([ward.beds["bed-1"]?.ewma, ward.criticalBeds], [90, 0]);

    await kit.send(WardTwin, "ward-3", report("bed-1", 60, [], false, START_MS + 3_000));
    ward = await kit.state(WardTwin, "ward-3");
    assert.deepEqual([ward.beds["bed-1"]?.ewma, ward.averageEwma], [60, 60]);
  });

  it("raises ward-overloaded (warning) at 3 critical beds, keeps it at 2 and resolves it at 1", async () => {
    for (const bed of ["bed-1", "bed-2"]) await kit.send(WardTwin, "ward-3", report(bed, 130, ["tachycardia"], true));
    assert.deepEqual(kit.allAlerts(WardTwin, "ward-3"), []);

    await kit.send(WardTwin, "ward-3", report("bed-3", 130, ["low-oxygen"], true));
    const [alert] = kit.openAlerts(WardTwin, "ward-3");
    assert.deepEqual([alert?.code, alert?.severity, alert?.message], ["ward-overloaded", "warning", "3 beds have critical alerts"]);

    // A 4th critical bed does not raise it again.
    await kit.send(WardTwin, "ward-3", report("bed-4", 130, ["tachycardia"], true));
    await kit.send(WardTwin, "ward-3", report("bed-4", 100, [], false, START_MS + 1));
    await kit.send(WardTwin, "ward-3", report("bed-3", 100, [], false, START_MS + 1));
    assert.equal((await kit.state(WardTwin, "ward-3")).criticalBeds, 2);
    assert.deepEqual(
      kit.openAlerts(WardTwin, "ward-3").map((a) => [a.code, a.count]),
      [["ward-overloaded", 1]],
    );

    await kit.send(WardTwin, "ward-3", report("bed-2", 100, [], false, START_MS + 1));
    assert.deepEqual(
      kit.allAlerts(WardTwin, "ward-3").map((a) => [a.code, a.state]),
      [["ward-overloaded", "RESOLVED"]],
    );
    assert.equal((await kit.state(WardTwin, "ward-3")).overloaded, false);
  });

  it("rejects a message that is not a BedReport and leaves its state unchanged", async () => {
    await kit.send(WardTwin, "ward-3", report("bed-1", 80));
    const bad = { bed: 7 } as unknown as BedReport;
    await assert.rejects(kit.send(WardTwin, "ward-3", bad), { name: "HandlerFailedError", reason: "HANDLER_FAILED" });
    assert.deepEqual(Object.keys((await kit.state(WardTwin, "ward-3")).beds), ["bed-1"]);
  });
});
