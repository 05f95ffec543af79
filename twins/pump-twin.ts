import { type JsonObject, type Telemetry, Twin, type TwinContext } from "twinmesh";

/** The channels a pump twin reads. Samples and statistics in its state use the same names. */
export const PUMP_CHANNELS = ["pressure_bar", "flow_lpm", "vibration_mm_s", "temp_c"] as const;
/** One of the {@link PUMP_CHANNELS}. */
export type PumpChannel = (typeof PUMP_CHANNELS)[number];

/** Samples kept for the rolling statistics. */
const WINDOW_SAMPLES = 20;
// ISO 10816-3 zones for the RMS vibration velocity of a medium-sized machine (which the sensor
// reports): above 4.5 mm/s is "restricted operation", above 7.1 mm/s "damage may occur". A level is
// left only about 10 % below where it was entered (hysteresis).
const VIBRATION_WARNING_ABOVE_MM_S = 4.5;
const VIBRATION_WARNING_CLEARS_BELOW_MM_S = 4.0;
const VIBRATION_CRITICAL_ABOVE_MM_S = 7.1;
const VIBRATION_CRITICAL_CLEARS_BELOW_MM_S = 6.4;
// Cavitation (vapour bubbles collapsing on the impeller) shows as discharge pressure falling while
// vibration jumps. Both are judged against the window before the sample, which needs a few samples.
const CAVITATION_PRESSURE_BELOW_MEAN = 0.8;
const CAVITATION_VIBRATION_ABOVE_MEAN = 1.5;
const CAVITATION_MIN_SAMPLES = 5;
/** Cavitation clears once pressure is back to 95 % of the mean from before it began. */
const CAVITATION_CLEARS_AT_BASELINE = 0.95;

/** One event's readings; a channel the event lacked is absent. */
export type PumpSample = Partial<Record<PumpChannel, number>>;
/** Rolling statistics of one channel over the window. */
export interface ChannelStats {
  min: number;
  max: number;
  mean: number;
}
/** ISO 10816 vibration level, as mirrored by the `vibration` alert. */
export type VibrationLevel = "ok" | "warning" | "critical";

/** State of a {@link PumpTwin} (`stateVersion` 2). */
export interface PumpState {
  /** The last 20 samples, oldest first. */
  window: PumpSample[];
  /** Min, max and mean of each channel over `window`; a channel with no readings is absent. */
  stats: Partial<Record<PumpChannel, ChannelStats>>;
  /** Samples received. */
  samples: number;
  /** `ok` while no `vibration` alert is open, else its severity. */
  vibrationLevel: VibrationLevel;
  /** While `cavitation` is open: the mean pressure before it began, bar. */
  cavitationBaselineBar?: number;
}

/**
 * An industrial centrifugal pump. Reads channels `pressure_bar`, `flow_lpm`, `vibration_mm_s` and
 * `temp_c`, keeps rolling min/max/mean over the last 20 samples in `state.stats` (queryable, e.g.
 * `state.stats.vibration_mm_s.mean > 4.0`).
 *
 * Alerts: `vibration`, warning above 4.5 mm/s and critical above 7.1 mm/s (one alert whose
 * severity follows the level; back to warning below 6.4, resolved below 4.0); `cavitation`
 * (warning) when pressure falls below 80 % of the window mean while vibration exceeds 150 % of
 * it, resolved when pressure is back to 95 % of the earlier mean.
 *
 * State migration: version 1 kept only vibration readings; see {@link PumpTwin.migrate}.
 */
export class PumpTwin extends Twin<PumpState> {
  static readonly kind = "pump";
  static readonly placement = "edge";
  static readonly stateVersion = 2;

  initial(): PumpState {
    return { window: [], stats: {}, samples: 0, vibrationLevel: "ok" };
  }

  /**
   * Upgrades state stored by an older version of this class; the runtime calls it when it loads
   * such a twin. Version 1 (twinmesh 0.1) stored `{ vibration: number[]; samples: number; level:
   * "ok" | "warning" | "critical" }`: the last 20 vibration readings only. Version 2 keeps whole
   * samples (`vibration` became `window`) and `level` became `vibrationLevel`.
   */
  override migrate(old: JsonObject, fromVersion: number): PumpState {
    if (fromVersion !== 1) throw new Error(`pump state version ${fromVersion} is unknown; this class migrates from version 1`);
    // Stored JSON is only as typed as the code that wrote it: check each field.
    const readings = Array.isArray(old.vibration) ? old.vibration.filter((v): v is number => typeof v === "number") : [];
    const window = readings.slice(-WINDOW_SAMPLES).map((v): PumpSample => ({ vibration_mm_s: v }));
    return {
      window,
      stats: windowStats(window),
      samples: typeof old.samples === "number" ? old.samples : readings.length,
      // Carry the level over: it mirrors an open alert, which the new code must still resolve.
      vibrationLevel: old.level === "warning" || old.level === "critical" ? old.level : "ok",
    };
  }

  override onTelemetry(t: Telemetry, ctx: TwinContext<PumpState>): void {
    const sample: PumpSample = {};
    for (const channel of PUMP_CHANNELS) {
      const value = t.channels[channel];
      if (value !== undefined) sample[channel] = value;
    }
    if (Object.keys(sample).length === 0) return;
    const s = ctx.state;
    const { pressure_bar: pressure, vibration_mm_s: vibration } = sample;

    // s.stats still describes the window before this sample: the baseline.
    const basePressure = s.stats.pressure_bar?.mean;
    const baseVibration = s.stats.vibration_mm_s?.mean;
    if (s.cavitationBaselineBar === undefined) {
      if (
        pressure !== undefined &&
        vibration !== undefined &&
        basePressure !== undefined &&
        baseVibration !== undefined &&
        s.window.length >= CAVITATION_MIN_SAMPLES &&
        pressure < CAVITATION_PRESSURE_BELOW_MEAN * basePressure &&
        vibration > CAVITATION_VIBRATION_ABOVE_MEAN * baseVibration
      ) {
        // Freeze the baseline: the window soon fills with low readings and its mean follows them.
        s.cavitationBaselineBar = basePressure;
        ctx.raise("cavitation", {
          severity: "warning",
          message: `pressure ${pressure} bar (mean ${basePressure.toFixed(2)}) with vibration ${vibration} mm/s (mean ${baseVibration.toFixed(2)})`,
        });
      }
    } else if (pressure !== undefined && pressure >= CAVITATION_CLEARS_AT_BASELINE * s.cavitationBaselineBar) {
      s.cavitationBaselineBar = undefined;
      ctx.resolve("cavitation");
    }

    if (vibration !== undefined) {
      const level = vibrationLevel(s.vibrationLevel, vibration);
      if (level !== s.vibrationLevel) {
        // One code for both levels: raising an open alert again updates its severity.
        if (level === "ok") ctx.resolve("vibration");
        else ctx.raise("vibration", { severity: level, message: `vibration ${vibration} mm/s RMS` });
        s.vibrationLevel = level;
      }
    }

    s.window.push(sample);
    if (s.window.length > WINDOW_SAMPLES) s.window.shift();
    s.stats = windowStats(s.window);
    s.samples += 1;
  }
}

/** The ISO 10816 level of a reading, given the previous level (hysteresis). */
function vibrationLevel(previous: VibrationLevel, mmS: number): VibrationLevel {
  if (mmS > VIBRATION_CRITICAL_ABOVE_MM_S) return "critical";
  if (previous === "critical" && mmS >= VIBRATION_CRITICAL_CLEARS_BELOW_MM_S) return "critical";
  if (mmS > VIBRATION_WARNING_ABOVE_MM_S) return "warning";
  if (previous !== "ok" && mmS >= VIBRATION_WARNING_CLEARS_BELOW_MM_S) return "warning";
  return "ok";
}

function windowStats(window: readonly PumpSample[]): PumpState["stats"] {
  const stats: PumpState["stats"] = {};
  for (const channel of PUMP_CHANNELS) {
    const values = window.map((sample) => sample[channel]).filter((v): v is number => v !== undefined);
    if (values.length === 0) continue;
    stats[channel] = { min: Math.min(...values), max: Math.max(...values), mean: values.reduce((sum, v) => sum + v, 0) / values.length };
  }
  return stats;
}
