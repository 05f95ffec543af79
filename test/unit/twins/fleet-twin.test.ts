import assert from "node:assert/strict";
import { TwinTestKit } from "twinmesh/testing";
import { FleetTwin, type VehicleReport } from "../../../twins/fleet-twin.js";

const START_MS = Date.parse("2026-01-01T00:00:00Z");

function report(vehicle: string, fields: Partial<Omit<VehicleReport, "vehicle">> = {}): VehicleReport {
  return { vehicle, speedKmh: 0, moving: false, overheating: false, odometerKm: 0, alerts: [], atMs: START_MS, ...fields };
}

describe("FleetTwin", () => {
  let kit: TwinTestKit;

  beforeEach(async () => {
    kit = await TwinTestKit.start({ twins: [FleetTwin], startTime: START_MS });
  });

  afterEach(async () => {
    await kit.close();
  });

  it("counts moving and overheating vehicles and sums their odometers", async () => {
    await kit.send(FleetTwin, "north", report("truck-1", { speedKmh: 80, moving: true, odometerKm: 120.5 }));
    await kit.send(FleetTwin, "north", report("truck-2", { speedKmh: 40, moving: true, overheating: true, odometerKm: 30.25, alerts: ["engine-overheat"] }));
    await kit.send(FleetTwin, "north", report("van-7", { odometerKm: 4 }));
    assert.deepEqual(await kit.state(FleetTwin, "north"), {
      vehicles: {
        "truck-1": { speedKmh: 80, moving: true, overheating: false, odometerKm: 120.5, alerts: [], atMs: START_MS },
        "truck-2": { speedKmh: 40, moving: true, overheating: true, odometerKm: 30.25, alerts: ["engine-overheat"], atMs: START_MS },
        "van-7": { speedKmh: 0, moving: false, overheating: false, odometerKm: 4, alerts: [], atMs: START_MS },
      },
      moving: 2,
      overheating: 1,
      totalDistanceKm: 154.75,
    });
  });

  it("replaces a vehicle's report with a newer one and ignores one older than it has", async () => {
    await kit.send(FleetTwin, "north", report("truck-1", { moving: true, odometerKm: 10, atMs: START_MS + 2_000 }));
    await kit.send(FleetTwin, "north", report("truck-1", { moving: false, odometerKm: 9, atMs: START_MS + 1_000 }));
    let fleet = await kit.state(FleetTwin, "north");
    assert.deepEqual([fleet.moving, fleet.totalDistanceKm], [1, 10]);

    await kit.send(FleetTwin, "north", report("truck-1", { moving: false, odometerKm: 12, atMs: START_MS + 3_000 }));
    fleet = await kit.state(FleetTwin, "north");
    assert.deepEqual([fleet.moving, fleet.totalDistanceKm], [0, 12]);
  });

  it("rejects a message that is not a VehicleReport and leaves its state unchanged", async () => {
    await kit.send(FleetTwin, "north", report("truck-1", { odometerKm: 3 }));
    const bad = { vehicle: "truck-2", odometerKm: "lots" } as unknown as VehicleReport;
    await assert.rejects(kit.send(FleetTwin, "north", bad), { name: "HandlerFailedError", reason: "HANDLER_FAILED" });
    assert.deepEqual(Object.keys((await kit.state(FleetTwin, "north")).vehicles), ["truck-1"]);
  });
});
