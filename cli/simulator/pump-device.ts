import type { Prng } from "./prng.js";
import { approach, clamp, type Reading, round, type SimulatedDevice } from "./simulated-device.js";

const CAVITATION_MEAN_INTERVAL_S = 420;
// The pump twin judges cavitation against the mean of its last samples, so an episode lasts at
// least this many readings to be seen whatever the reading rate.
const CAVITATION_MIN_READINGS = 10;
const WEAR_MEAN_INTERVAL_S = 600;
const WEAR_RAMP_S = 20;

interface Cavitation {
  readonly endMs: number;
  readonly pressureFactor: number;
  readonly vibrationFactor: number;
}

interface Wear {
  readonly startMs: number;
  readonly endMs: number;
  readonly peakMmS: number;
}

/**
 * An industrial centrifugal pump: discharge pressure (`pressure_bar`), flow (`flow_lpm`), RMS
 * vibration velocity (`vibration_mm_s`) and bearing temperature (`temp_c`) around its own duty
 * point. Now and then it cavitates (pressure falls to about two thirds while vibration jumps
 * 2–3×: the pump twin raises `cavitation`), or a worn bearing makes it vibrate at 5–8.5 mm/s for
 * a while (`vibration`, warning or critical).
 */
export class PumpDevice implements SimulatedDevice {
  readonly kind = "pump";
  readonly id: string;
  private readonly pressureBar: number;
  private readonly flowLpm: number;
  private readonly vibrationMmS: number;
  private readonly tempC: number;
  private temp: number;
  private cavitation: Cavitation | undefined;
  private wear: Wear | undefined;
  private lastMs: number | undefined;

  /**
   * @param number - 1 for `pump-1`
   * @param intervalS - about how often this device is read, to size episodes in readings
   */
  constructor(
    number: number,
    private readonly rng: Prng,
    private readonly intervalS: number,
  ) {
    this.id = `pump-${number}`;
    this.pressureBar = rng.range(3, 6);
    this.flowLpm = rng.range(150, 400);
    this.vibrationMmS = rng.range(1.2, 2.5);
    this.tempC = rng.range(45, 60);
    this.temp = this.tempC;
  }

  read(timeMs: number): Reading {
    const dtS = this.lastMs === undefined ? 0 : Math.max(0, (timeMs - this.lastMs) / 1000);
    this.lastMs = timeMs;
    const rng = this.rng;

    if (this.cavitation === undefined && dtS > 0 && rng.happens(CAVITATION_MEAN_INTERVAL_S, dtS)) {
      const seconds = Math.max(rng.range(15, 40), CAVITATION_MIN_READINGS * this.intervalS);
      this.cavitation = { endMs: timeMs + seconds * 1000, pressureFactor: rng.range(0.6, 0.7), vibrationFactor: rng.range(2.2, 3) };
    }
    if (this.cavitation !== undefined && timeMs >= this.cavitation.endMs) this.cavitation = undefined;
    if (this.wear === undefined && dtS > 0 && rng.happens(WEAR_MEAN_INTERVAL_S, dtS)) {
      this.wear = { startMs: timeMs, endMs: timeMs + rng.range(50, 90) * 1000, peakMmS: rng.range(5, 8.5) };
    }
    if (this.wear !== undefined && timeMs >= this.wear.endMs) this.wear = undefined; // repaired

    const cav = this.cavitation;
    const pressure = this.pressureBar * (cav?.pressureFactor ?? 1) * (1 + rng.normal(0, 0.015));
    const flow = this.flowLpm * (cav === undefined ? 1 : 0.8) * (1 + rng.normal(0, 0.02));
    const vibration = Math.max(this.wearVibration(timeMs), this.vibrationMmS) * (cav?.vibrationFactor ?? 1) + rng.normal(0, 0.08);
    this.temp = approach(this.temp, this.tempC + (cav === undefined ? 0 : 4) + (this.wear === undefined ? 0 : 6), dtS, 30);

    return {
      channels: {
        pressure_bar: round(clamp(pressure, 0, 25), 2),
        flow_lpm: round(clamp(flow, 0, 2_000), 1),
        vibration_mm_s: round(clamp(vibration, 0.1, 50), 2),
        temp_c: round(this.temp + rng.normal(0, 0.2), 1),
      },
      attributes: {},
    };
  }

  /** A worn bearing's vibration: ramps up to its peak and stays there until repaired. */
  private wearVibration(timeMs: number): number {
    const w = this.wear;
    if (w === undefined) return 0;
    const ramp = clamp((timeMs - w.startMs) / (WEAR_RAMP_S * 1000), 0, 1);
    return this.vibrationMmS + (w.peakMmS - this.vibrationMmS) * ramp;
  }
}
