import assert from "node:assert/strict";
import { TwinTestKit } from "twinmesh/testing";
import { FleetTwin } from "../../../twins/fleet-twin.js";
import { VehicleTwin } from "../../../twins/vehicle-twin.js";

const START_MS = Date.parse("2026-01-01T00:00:00Z");
/** 0.01° of latitude on the haversine sphere (R = 6371 km): 6_371_000 × 0.01 × π / 180 m. */
const HUNDREDTH_DEGREE_LAT_M = 1111.949;

describe("VehicleTwin", () => {
  let kit: TwinTestKit;

  beforeEach(async () => {
    kit = await TwinTestKit.start({ twins: [VehicleTwin, FleetTwin], startTime: START_MS });
  });

  afterEach(async () => {
    await kit.close();
  });

  const codes = (id: string): string[] => kit.openAlerts(VehicleTwin, id).map((a) => a.code);

  async function speeds(id: string, values: readonly number[]): Promise<void> {
    for (const speed_kmh of values) assert.equal((await kit.publish(VehicleTwin, id, { speed_kmh })).status, "accepted");
  }

  describe("overspeed", () => {
    it("raises overspeed (warning) on the 3rd consecutive reading above 130 km/h", async () => {
      await speeds("truck-1", [131, 135]);
      assert.deepEqual(codes("truck-1"), []);
      await speeds("truck-1", [140]);
      const [alert] = kit.openAlerts(VehicleTwin, "truck-1");
      assert.deepEqual([alert?.code, alert?.severity, alert?.message], ["overspeed", "warning", "140 km/h"]);
    });

    it("does not raise overspeed when a reading at or below 130 km/h breaks the run", async () => {
      await speeds("truck-1", [131, 135, 130, 131, 135]);
      assert.deepEqual(kit.allAlerts(VehicleTwin, "truck-1"), []);
      assert.equal((await kit.state(VehicleTwin, "truck-1")).overspeedEvents, 2);
    });

    it("keeps overspeed open between 120 and 130 km/h and resolves it below 120 km/h", async () => {
      await speeds("truck-1", [135, 135, 135, 125, 120, 131]);
      assert.deepEqual(codes("truck-1"), ["overspeed"]);
      await speeds("truck-1", [119]);
      assert.deepEqual(
        kit.allAlerts(VehicleTwin, "truck-1").map((a) => [a.code, a.state, a.count]),
        [["overspeed", "RESOLVED", 1]],
      );
    });
  });

  describe("engine overheat", () => {
    it("raises engine-overheat (critical) above 110 °C and resolves it only below 100 °C", async () => {
      await kit.publish(VehicleTwin, "truck-1", { engine_temp_c: 110 });
      assert.deepEqual(codes("truck-1"), []);
      await kit.publish(VehicleTwin, "truck-1", { engine_temp_c: 111 });
      const [alert] = kit.openAlerts(VehicleTwin, "truck-1");
      assert.deepEqual([alert?.code, alert?.severity, alert?.message], ["engine-overheat", "critical", "engine at 111 °C"]);
      await kit.publish(VehicleTwin, "truck-1", { engine_temp_c: 100 });
      assert.deepEqual(codes("truck-1"), ["engine-overheat"]);
      await kit.publish(VehicleTwin, "truck-1", { engine_temp_c: 99 });
      assert.deepEqual(codes("truck-1"), []);
      assert.equal((await kit.state(VehicleTwin, "truck-1")).engineTempC, 99);
    });
  });

  describe("harsh braking", () => {
    // The kit's clock never moves in these tests: only the events' own times differ, which shows
    // deceleration is measured with t.time.
    const at = (seconds: number): { time: Date } => ({ time: new Date(START_MS - 60_000 + seconds * 1000) });

    it("counts a drop from 90 to 50 km/h within 1 s (40 km/h/s) as harsh braking, with an info alert", async () => {
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 90 }, at(0));
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 50 }, at(1));
      const s = await kit.state(VehicleTwin, "truck-1");
      assert.deepEqual([s.harshBrakes, s.speedKmh, s.speedAtMs], [1, 50, START_MS - 59_000]);
      const [alert] = kit.openAlerts(VehicleTwin, "truck-1");
      assert.deepEqual([alert?.code, alert?.severity, alert?.message, alert?.count], ["harsh-braking", "info", "harsh braking #1: 90 to 50 km/h in 1.0 s", 1]);
    });

    it("does not count the same drop spread over 2 s (20 km/h/s)", async () => {
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 90 }, at(0));
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 50 }, at(2));
      assert.equal((await kit.state(VehicleTwin, "truck-1")).harshBrakes, 0);
      assert.deepEqual(kit.allAlerts(VehicleTwin, "truck-1"), []);
    });

    it("bumps the open harsh-braking alert's count on each harsh stop", async () => {
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 90 }, at(0));
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 50 }, at(1));
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 80 }, at(10));
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 20 }, at(12)); // 30 km/h/s
      assert.equal((await kit.state(VehicleTwin, "truck-1")).harshBrakes, 2);
      const alerts = kit.allAlerts(VehicleTwin, "truck-1");
      assert.deepEqual(
        alerts.map((a) => [a.code, a.state, a.count, a.message]),
        [["harsh-braking", "OPEN", 2, "harsh braking #2: 80 to 20 km/h in 2.0 s"]],
      );
    });

    it("ignores an event whose time is not after the previous reading's", async () => {
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 90 }, at(5));
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 10 }, at(5));
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 0 }, at(4));
      assert.equal((await kit.state(VehicleTwin, "truck-1")).harshBrakes, 0);
    });
  });

  describe("odometer and geofence", () => {
    it("adds the great-circle distance between position fixes while moving", async () => {
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 60, lat: 52, lon: 13 });
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 60, lat: 52.01, lon: 13 });
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 0, lat: 52.02, lon: 13 }); // stopped at the end of the leg: counted
      const s = await kit.state(VehicleTwin, "truck-1");
      assert.equal(Math.round(s.odometerKm * 1000), Math.round(2 * HUNDREDTH_DEGREE_LAT_M));
      assert.deepEqual([s.lat, s.lon], [52.02, 13]);
    });

    it("does not add GPS wander while parked", async () => {
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 0, lat: 52, lon: 13 });
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 1, lat: 52.0001, lon: 13.0001 });
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 0, lat: 52, lon: 13 });
      assert.equal((await kit.state(VehicleTwin, "truck-1")).odometerKm, 0);
    });

    it("raises geofence (warning) while outside the circle from the geofence attributes and resolves it back inside", async () => {
      const attributes = { geofence_lat: 52, geofence_lon: 13, geofence_radius_m: 500 };
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 30, lat: 52.001, lon: 13 }, { attributes }); // 111 m out
      assert.deepEqual((await kit.state(VehicleTwin, "truck-1")).geofence, { lat: 52, lon: 13, radiusM: 500 });
      assert.deepEqual(codes("truck-1"), []);

      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 30, lat: 52.01, lon: 13 }); // remembered fence
      const [alert] = kit.openAlerts(VehicleTwin, "truck-1");
      assert.deepEqual([alert?.code, alert?.severity, alert?.message], ["geofence", "warning", "1112 m from the geofence centre (radius 500 m)"]);

      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 30, lat: 52.004, lon: 13 });
      assert.deepEqual(codes("truck-1"), []);
    });

    it("ignores an incomplete geofence", async () => {
      await kit.publish(VehicleTwin, "truck-1", { lat: 60, lon: 13 }, { attributes: { geofence_lat: 52, geofence_lon: 13 } });
      assert.equal((await kit.state(VehicleTwin, "truck-1")).geofence, undefined);
      assert.deepEqual(kit.allAlerts(VehicleTwin, "truck-1"), []);
    });
  });

  it("records fuel_pct when present and keeps it when an event lacks it", async () => {
    await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 50, fuel_pct: 64.5 });
    await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 50 });
    assert.equal((await kit.state(VehicleTwin, "truck-1")).fuelPct, 64.5);
  });

  describe("fleet reports", () => {
    it("reports to the fleet named by the fleet attribute on the 1st event, on starting or stopping and on each alert change", async () => {
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 0, engine_temp_c: 80 }, { attributes: { fleet: "north" } });
      assert.deepEqual(kit.sent(VehicleTwin, "truck-1"), [
        {
          from: { kind: "vehicle", id: "truck-1" },
          to: { kind: "fleet", id: "north" },
          message: { vehicle: "truck-1", speedKmh: 0, moving: false, overheating: false, odometerKm: 0, alerts: [], atMs: START_MS },
        },
      ]);
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 2 }); // still parked: no report
      assert.equal(kit.sent(VehicleTwin, "truck-1").length, 1);
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 40 }); // starts moving
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 40, engine_temp_c: 115 }); // overheats
      assert.deepEqual(
        kit.sent(VehicleTwin, "truck-1").map((m) => [m.message.speedKmh, m.message.moving, m.message.overheating, m.message.alerts]),
        [
          [0, false, false, []],
          [40, true, false, []],
          [40, true, true, ["engine-overheat"]],
        ],
      );
    });

    it("reports every 10th event even when nothing changed", async () => {
      for (let i = 0; i < 11; i++) await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 50 }, { attributes: { fleet: "north" } });
      assert.equal(kit.sent(VehicleTwin, "truck-1").length, 2);
    });

    it("feeds the fleet's aggregate", async () => {
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 60, lat: 52, lon: 13 }, { attributes: { fleet: "north" } });
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 60, lat: 52.01, lon: 13, engine_temp_c: 120 });
      await kit.publish(VehicleTwin, "truck-2", { speed_kmh: 0 }, { attributes: { fleet: "north" } });
      const fleet = await kit.state(FleetTwin, "north");
      assert.deepEqual([fleet.moving, fleet.overheating, Math.round(fleet.totalDistanceKm * 1000)], [1, 1, Math.round(HUNDREDTH_DEGREE_LAT_M)]);
      assert.deepEqual(Object.keys(fleet.vehicles).sort(), ["truck-1", "truck-2"]);
    });
  });
});
