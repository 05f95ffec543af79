import assert from "node:assert/strict";
import { TwinTestKit } from "twinmesh/testing";
import { exampleTwins, PatientTwin, PumpTwin, VehicleTwin } from "../../../twins/index.js";

describe("exampleTwins", () => {
  let kit: TwinTestKit | undefined;

  afterEach(async () => {
    await kit?.close();
    kit = undefined;
  });

  it("registers every example kind with its placement and routes the edge kinds' reports to the aggregates", async () => {
    kit = await TwinTestKit.start({ twins: exampleTwins });
    const registry = kit.runtime.registry;
    assert.deepEqual(
      registry.kindNames().map((kind) => [kind, registry.get(kind).placement]),
      [
        ["fleet", "cloud"],
        ["patient", "edge"],
        ["pump", "edge"],
        ["vehicle", "edge"],
        ["ward", "cloud"],
      ],
    );
    const outcomes = [
      await kit.publish(PatientTwin, "bed-1", { bpm: 72, spo2: 98 }, { attributes: { ward: "ward-3" } }),
      await kit.publish(VehicleTwin, "truck-1", { speed_kmh: 50, engine_temp_c: 90, lat: 52, lon: 13 }, { attributes: { fleet: "north" } }),
      await kit.publish(PumpTwin, "pump-1", { pressure_bar: 5, flow_lpm: 100, vibration_mm_s: 2, temp_c: 40 }),
    ];
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ["accepted", "accepted", "accepted"],
    );
    assert.deepEqual(
      kit.sent().map((m) => `${m.from.kind}/${m.from.id} -> ${m.to.kind}/${m.to.id}`),
      ["patient/bed-1 -> ward/ward-3", "vehicle/truck-1 -> fleet/north"],
    );
  });
});
