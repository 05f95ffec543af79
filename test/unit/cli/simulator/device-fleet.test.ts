import assert from "node:assert/strict";
import { allocateSources, createDevices, Prng, type SimulatedDevice } from "../../../../cli/simulator/index.js";

const T0_MS = Date.parse("2025-01-31T12:00:00Z");

/** Reads every device `rounds` times, `intervalS` apart, as the simulator does. */
function readAll(devices: readonly SimulatedDevice[], rounds: number, intervalS: number): { id: string; channels: Record<string, number> }[] {
  const out: { id: string; channels: Record<string, number> }[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const device of devices) out.push({ id: device.id, channels: device.read(T0_MS + r * intervalS * 1000).channels });
  }
  return out;
}

describe("Prng", () => {
  it("gives the same sequence for the same seed and a different one for another seed", () => {
    const take = (rng: Prng): number[] => Array.from({ length: 5 }, () => rng.int(0, 1_000_000));
    assert.deepEqual(take(Prng.from(7)), take(Prng.from("7")));
    assert.notDeepEqual(take(Prng.from(7)), take(Prng.from(8)));
    assert.deepEqual(take(Prng.from(7).fork("a")), take(Prng.from(7).fork("a")));
    assert.notDeepEqual(take(Prng.from(7).fork("a")), take(Prng.from(7).fork("b")));
  });

  it("stays within its ranges", () => {
    const rng = Prng.from(1);
    for (let i = 0; i < 10_000; i++) {
      const x = rng.next();
      assert.ok(x >= 0 && x < 1);
      const n = rng.int(3, 5);
      assert.ok(n === 3 || n === 4 || n === 5);
    }
  });
});

describe("allocateSources", () => {
  it("splits sources 60/30/10 over patients, vehicles and pumps, with at least one of each", () => {
    const all = ["patient", "vehicle", "pump"] as const;
    assert.deepEqual(Object.fromEntries(allocateSources(20, all)), { patient: 12, vehicle: 6, pump: 2 });
    assert.deepEqual(Object.fromEntries(allocateSources(50, all)), { patient: 30, vehicle: 15, pump: 5 });
    assert.deepEqual(Object.fromEntries(allocateSources(3, all)), { patient: 1, vehicle: 1, pump: 1 });
    assert.deepEqual(Object.fromEntries(allocateSources(1, all)), { patient: 1, vehicle: 0, pump: 0 });
    assert.deepEqual(Object.fromEntries(allocateSources(10, ["vehicle", "pump"])), { vehicle: 8, pump: 2 });
  });
});

describe("createDevices", () => {
  it("names devices by kind and number, interleaved by kind", () => {
    const ids = createDevices(10, ["patient", "vehicle", "pump"], 1, 0.25).map((d) => d.id);
    assert.deepEqual(ids, ["patient-1", "vehicle-1", "patient-2", "patient-3", "vehicle-2", "pump-1", "patient-4", "patient-5", "vehicle-3", "patient-6"]);
  });

  it("reads the same values for the same seed, whatever other devices run", () => {
    const a = readAll(createDevices(10, ["patient", "vehicle", "pump"], 9, 0.25), 50, 0.25);
    const b = readAll(createDevices(10, ["patient", "vehicle", "pump"], 9, 0.25), 50, 0.25);
    assert.deepEqual(a, b);
    const other = readAll(createDevices(10, ["patient", "vehicle", "pump"], 10, 0.25), 50, 0.25);
    assert.notDeepEqual(a, other);
    // vehicle-1 reads the same in a run of 40 devices.
    const alone = a.filter((r) => r.id === "vehicle-1");
    const crowd = readAll(createDevices(40, ["patient", "vehicle", "pump"], 9, 0.25), 50, 0.25).filter((r) => r.id === "vehicle-1");
    assert.deepEqual(crowd, alone);
  });

  it("reports plausible values on every channel of every kind", () => {
    const readings = readAll(createDevices(30, ["patient", "vehicle", "pump"], 5, 0.25), 2_400, 0.25); // 10 minutes
    const range = (channel: string): [number, number] => {
      const values = readings.map((r) => r.channels[channel]).filter((v): v is number => v !== undefined);
      return [Math.min(...values), Math.max(...values)];
    };
    const within = (channel: string, min: number, max: number): void => {
      const [lo, hi] = range(channel);
      assert.ok(lo >= min && hi <= max, `${channel} spans ${lo}..${hi}, expected within ${min}..${max}`);
    };
    within("bpm", 45, 180);
    within("spo2", 80, 100);
    within("speed_kmh", 0, 150);
    within("engine_temp_c", 30, 125);
    within("lat", 45.6, 52.1); // around Lyon (fleet-b) and Rotterdam (fleet-a)
    within("fuel_pct", 0, 100);
    within("pressure_bar", 1.5, 6.5);
    within("vibration_mm_s", 0.1, 30);
    for (const r of readings) for (const [channel, v] of Object.entries(r.channels)) assert.ok(Number.isFinite(v), `${r.id} ${channel} is ${v}`);
  });

  it("drives a patient into tachycardia and out again within the demo's first two minutes", () => {
    // The demo: 50 sources at 200 events/s, so each of the 30 patients reports every 0.25 s.
    const patients = createDevices(50, ["patient", "vehicle", "pump"], 1, 0.25).filter((d) => d.kind === "patient");
    assert.equal(patients.length, 30);
    // The patient twin's rule: EWMA (alpha 0.1) above 120 raises, below 110 resolves.
    const ewma = new Map<string, number>();
    const raised = new Set<string>();
    const resolved = new Set<string>();
    for (let r = 0; r < 120 / 0.25; r++) {
      for (const p of patients) {
        const bpm = p.read(T0_MS + r * 250).channels.bpm as number;
        const e = ewma.has(p.id) ? 0.1 * bpm + 0.9 * (ewma.get(p.id) as number) : bpm;
        ewma.set(p.id, e);
        if (!raised.has(p.id) && e > 120) raised.add(p.id);
        if (raised.has(p.id) && e < 110) resolved.add(p.id);
      }
    }
    assert.ok(raised.size >= 1, "at least one tachycardia alert opens");
    assert.ok(resolved.size >= 1, `at least one resolves; raised ${[...raised].join()}`);
  });
});
