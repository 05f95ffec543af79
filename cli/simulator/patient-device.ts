import type { Prng } from "./prng.js";
import { approach, clamp, type Reading, type SimulatedDevice } from "./simulated-device.js";

/** The wards patients are spread over (patient-1 in ward-a, patient-2 in ward-b, …). */
export const WARDS = ["ward-a", "ward-b", "ward-c", "ward-d"] as const;

// Mean time between tachycardia episodes of one patient. With the demo's 30 patients one starts
// about every 15 s, so an alert opens within the first minute and resolves about a minute later.
const TACHYCARDIA_MEAN_INTERVAL_S = 480;
const TACHYCARDIA_ONSET_S = 10;
const TACHYCARDIA_RECOVERY_S = 20;
// The plateau also lasts this many readings, so the twin's EWMA (10 % per reading) crosses its
// threshold even when each source reports only every few seconds.
const TACHYCARDIA_MIN_PLATEAU_READINGS = 30;
const SPO2_DIP_MEAN_INTERVAL_S = 600;
const SPO2_DIP_MIN_READINGS = 12;
/** How fast the heart rate follows its target (the body's lag), s. */
const HEART_TAU_S = 4;
const SPO2_TAU_S = 3;

interface Episode {
  readonly startMs: number;
  readonly peakBpm: number;
  /** Onset ends, plateau ends, recovery ends (epoch ms). */
  readonly onsetEndMs: number;
  readonly plateauEndMs: number;
  readonly endMs: number;
}

interface Dip {
  readonly endMs: number;
  readonly levelPct: number;
}

/**
 * A bedside monitor: heart rate (`bpm`) around a resting rate with noise, and SpO2 (`spo2`, %).
 * Now and then a tachycardia episode ramps the heart rate to 135–165 bpm for half a minute or
 * more and back (the patient twin raises `tachycardia` when its EWMA passes 120 and resolves it
 * below 110), and the SpO2 dips to 85–89 % for a while (`low-oxygen`). Each event carries the
 * `ward` attribute.
 */
export class PatientDevice implements SimulatedDevice {
  readonly kind = "patient";
  readonly id: string;
  private readonly ward: string;
  private readonly restingBpm: number;
  private readonly baselineSpo2: number;
  private heartBpm: number;
  private spo2: number;
  private lastMs: number | undefined;
  private episode: Episode | undefined;
  private dip: Dip | undefined;

  /**
   * @param number - 1 for `patient-1`
   * @param intervalS - about how often this device is read, to size episodes in readings
   */
  constructor(
    number: number,
    private readonly rng: Prng,
    private readonly intervalS: number,
  ) {
    this.id = `patient-${number}`;
    this.ward = WARDS[(number - 1) % WARDS.length] as string;
    this.restingBpm = rng.range(58, 82);
    this.baselineSpo2 = rng.range(95.5, 98.5);
    this.heartBpm = this.restingBpm;
    this.spo2 = this.baselineSpo2;
  }

  read(timeMs: number): Reading {
    const dtS = this.lastMs === undefined ? 0 : Math.max(0, (timeMs - this.lastMs) / 1000);
    this.lastMs = timeMs;
    const rng = this.rng;

    if (this.episode === undefined && dtS > 0 && rng.happens(TACHYCARDIA_MEAN_INTERVAL_S, dtS)) {
      const plateauS = Math.max(rng.range(25, 50), TACHYCARDIA_MIN_PLATEAU_READINGS * this.intervalS);
      const onsetEndMs = timeMs + TACHYCARDIA_ONSET_S * 1000;
      const plateauEndMs = onsetEndMs + plateauS * 1000;
      this.episode = { startMs: timeMs, peakBpm: rng.range(135, 165), onsetEndMs, plateauEndMs, endMs: plateauEndMs + TACHYCARDIA_RECOVERY_S * 1000 };
    }
    if (this.episode !== undefined && timeMs >= this.episode.endMs) this.episode = undefined;
    const targetBpm = this.targetBpm(timeMs);
    // The heart follows its target with a lag, plus beat-to-beat variability that grows with time.
    this.heartBpm = approach(this.heartBpm, targetBpm, dtS, HEART_TAU_S) + rng.normal(0, 1.2) * Math.sqrt(Math.min(dtS, 4));
    const bpm = Math.round(clamp(this.heartBpm + rng.normal(0, 1.5), 30, 220));

    if (this.dip === undefined && dtS > 0 && rng.happens(SPO2_DIP_MEAN_INTERVAL_S, dtS)) {
      const seconds = Math.max(rng.range(15, 30), SPO2_DIP_MIN_READINGS * this.intervalS);
      this.dip = { endMs: timeMs + seconds * 1000, levelPct: rng.range(85, 89) };
    }
    if (this.dip !== undefined && timeMs >= this.dip.endMs) this.dip = undefined;
    this.spo2 = approach(this.spo2, this.dip?.levelPct ?? this.baselineSpo2, dtS, SPO2_TAU_S);
    // Oximeters report whole percent, at most 100.
    const spo2 = Math.round(clamp(this.spo2 + rng.normal(0, 0.4), 70, 100));

    return { channels: { bpm, spo2 }, attributes: { ward: this.ward } };
  }

  private targetBpm(timeMs: number): number {
    const e = this.episode;
    if (e === undefined) return this.restingBpm;
    if (timeMs < e.onsetEndMs) return this.restingBpm + (e.peakBpm - this.restingBpm) * ((timeMs - e.startMs) / (e.onsetEndMs - e.startMs));
    if (timeMs < e.plateauEndMs) return e.peakBpm;
    return e.peakBpm + (this.restingBpm - e.peakBpm) * ((timeMs - e.plateauEndMs) / (e.endMs - e.plateauEndMs));
  }
}
