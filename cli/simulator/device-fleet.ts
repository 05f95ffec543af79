import { PatientDevice } from "./patient-device.js";
import { Prng } from "./prng.js";
import { PumpDevice } from "./pump-device.js";
import { SIMULATED_KINDS, type SimulatedDevice, type SimulatedKind } from "./simulated-device.js";
import { VehicleDevice } from "./vehicle-device.js";

/**
 * How many of `total` sources each kind gets: shares as in {@link SIMULATED_KINDS}, renormalised
 * over `kinds`, rounded by largest remainder, and at least one per kind when there are enough
 * sources. 20 sources of all three kinds: 12 patients, 6 vehicles, 2 pumps.
 */
export function allocateSources(total: number, kinds: readonly SimulatedKind[]): Map<SimulatedKind, number> {
  const weight = kinds.reduce((sum, k) => sum + SIMULATED_KINDS[k], 0);
  const exact = kinds.map((kind) => ({ kind, share: (total * SIMULATED_KINDS[kind]) / weight }));
  const counts = new Map(exact.map((e) => [e.kind, Math.floor(e.share)]));
  let left = total - [...counts.values()].reduce((a, b) => a + b, 0);
  for (const e of [...exact].sort((a, b) => b.share - Math.floor(b.share) - (a.share - Math.floor(a.share)))) {
    if (left === 0) break;
    counts.set(e.kind, (counts.get(e.kind) ?? 0) + 1);
    left--;
  }
  if (total >= kinds.length) {
    for (const kind of kinds) {
      if ((counts.get(kind) ?? 0) > 0) continue;
      // Take one from the largest kind.
      const [largest] = [...counts.entries()].sort((a, b) => b[1] - a[1]);
      if (largest === undefined) break;
      counts.set(largest[0], largest[1] - 1);
      counts.set(kind, 1);
    }
  }
  return counts;
}

/**
 * The devices of one run, interleaved by kind (so every batch holds a mix) and each with its own
 * generator forked from `seed` by its id: a device's readings do not change when `--sources`
 * or `--kinds` add other devices.
 *
 * @param intervalS - about how often each device will be read
 */
export function createDevices(total: number, kinds: readonly SimulatedKind[], seed: string | number, intervalS: number): SimulatedDevice[] {
  const root = Prng.from(seed);
  const placed: { position: number; device: SimulatedDevice }[] = [];
  for (const [kind, count] of allocateSources(total, kinds)) {
    for (let n = 1; n <= count; n++) {
      const rng = root.fork(`${kind}-${n}`);
      const device =
        kind === "patient" ? new PatientDevice(n, rng, intervalS) : kind === "vehicle" ? new VehicleDevice(n, rng) : new PumpDevice(n, rng, intervalS);
      // Spread each kind evenly over the round: patient, vehicle, patient, pump, …
      placed.push({ position: (n - 0.5) / count, device });
    }
  }
  return placed.sort((a, b) => a.position - b.position).map((p) => p.device);
}
