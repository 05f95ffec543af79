import { type Telemetry, Twin, type TwinContext } from "twinmesh";
import { WardTwin } from "./ward-twin.js";

/** Weight of a new reading in the heart-rate EWMA: it moves the average 10 % of the way. */
const EWMA_ALPHA = 0.1;
// Thresholds apply to the EWMA, not to single readings, so one artefact cannot raise an alert.
// Each alert resolves on the far side of a gap (hysteresis): an EWMA hovering around a threshold
// raises once instead of flapping.
const TACHYCARDIA_ABOVE_BPM = 120;
const TACHYCARDIA_CLEARS_BELOW_BPM = 110;
const BRADYCARDIA_BELOW_BPM = 45;
const BRADYCARDIA_CLEARS_ABOVE_BPM = 50;
// Pulse oximeters already average over a few seconds, so SpO2 readings are used as they come.
const LOW_OXYGEN_BELOW_PCT = 90;
const LOW_OXYGEN_CLEARS_AT_PCT = 93;
/** Silence after which the monitor counts as disconnected. */
const MISSING_SIGNAL_MS = 60_000;
/** The ward hears from a bed on its 1st, 11th, 21st… heart-rate reading, and on every alert change. */
const REPORT_EVERY_SAMPLES = 10;

/** The alerts a patient twin raises, and their severities. */
export const PATIENT_ALERTS = {
  tachycardia: "critical",
  bradycardia: "warning",
  "low-oxygen": "critical",
  "missing-signal": "warning",
} as const;
/** One of the {@link PATIENT_ALERTS} codes. */
export type PatientAlertCode = keyof typeof PATIENT_ALERTS;

/** State of a {@link PatientTwin}. */
export interface PatientState {
  /** Heart-rate EWMA, bpm; the first reading seeds it; 0 before any. */
  ewma: number;
  /** Heart-rate readings received. */
  samples: number;
  /** Latest heart-rate reading, bpm. */
  lastBpm?: number;
  /** Latest SpO2 reading, %. */
  spo2?: number;
  /** The ward this patient reports to, from the `ward` attribute of the latest event that had one. */
  ward?: string;
  /** Time of the latest event (its `time`), epoch ms. */
  lastSeenMs?: number;
  /** Open alert codes, sorted. Kept in state because handlers cannot read the alert store. */
  alerts: PatientAlertCode[];
}

/**
 * A patient's bedside monitor. Reads channels `bpm` and `spo2`; the `ward` attribute (a string)
 * names the {@link WardTwin} that receives a `BedReport` summary.
 *
 * Alerts: `tachycardia` (critical) when the heart-rate EWMA rises above 120 bpm, resolved below
 * 110; `bradycardia` (warning) below 45, resolved above 50; `low-oxygen` (critical) when SpO2 is
 * below 90 %, resolved at 93 %; `missing-signal` (warning) after 60 s without any event,
 * resolved by the next one. Events without `bpm` leave the EWMA alone.
 */
export class PatientTwin extends Twin<PatientState> {
  static readonly kind = "patient";
  static readonly placement = "edge";

  initial(): PatientState {
    return { ewma: 0, samples: 0, alerts: [] };
  }

  override onTelemetry(t: Telemetry, ctx: TwinContext<PatientState>): void {
    const s = ctx.state;
    const alertsBefore = s.alerts.join();
    if (typeof t.attributes.ward === "string") s.ward = t.attributes.ward;
    s.lastSeenMs = t.time.getTime();

    // Any event proves the monitor is connected: push the deadline back (setting a timer that is
    // already set moves it) and clear a missing-signal alert.
    ctx.setTimer("missing-signal", MISSING_SIGNAL_MS);
    setAlert(ctx, "missing-signal", false);

    const spo2 = t.channels.spo2;
    if (spo2 !== undefined) {
      s.spo2 = spo2;
      const open = s.alerts.includes("low-oxygen");
      setAlert(ctx, "low-oxygen", open ? spo2 < LOW_OXYGEN_CLEARS_AT_PCT : spo2 < LOW_OXYGEN_BELOW_PCT, `SpO2 ${spo2} %`);
    }

    const bpm = t.channels.bpm;
    if (bpm !== undefined) {
      s.ewma = s.samples === 0 ? bpm : EWMA_ALPHA * bpm + (1 - EWMA_ALPHA) * s.ewma;
      s.samples += 1;
      s.lastBpm = bpm;
      const rate = `heart-rate EWMA ${s.ewma.toFixed(0)} bpm`;
      const tachycardia = s.alerts.includes("tachycardia");
      setAlert(ctx, "tachycardia", tachycardia ? s.ewma >= TACHYCARDIA_CLEARS_BELOW_BPM : s.ewma > TACHYCARDIA_ABOVE_BPM, rate);
      const bradycardia = s.alerts.includes("bradycardia");
      setAlert(ctx, "bradycardia", bradycardia ? s.ewma <= BRADYCARDIA_CLEARS_ABOVE_BPM : s.ewma < BRADYCARDIA_BELOW_BPM, rate);
    }

    const periodic = bpm !== undefined && (s.samples - 1) % REPORT_EVERY_SAMPLES === 0;
    if (periodic || s.alerts.join() !== alertsBefore) report(ctx);
  }

  override onTimer(name: string, ctx: TwinContext<PatientState>): void {
    if (name !== "missing-signal") return;
    const since = ctx.state.lastSeenMs === undefined ? "" : ` since ${new Date(ctx.state.lastSeenMs).toISOString()}`;
    // One-shot: not re-armed here, so a silent monitor raises once; its next event re-arms it.
    if (setAlert(ctx, "missing-signal", true, `no reading from the monitor${since}`)) report(ctx);
  }
}

/**
 * Raises or resolves `code` when it differs from what `ctx.state.alerts` says, so each change
 * is raised once (raising an open alert again would bump its count). True when it changed.
 */
function setAlert(ctx: TwinContext<PatientState>, code: PatientAlertCode, on: boolean, message = ""): boolean {
  const s = ctx.state;
  if (on === s.alerts.includes(code)) return false;
  if (on) {
    ctx.raise(code, { severity: PATIENT_ALERTS[code], message });
    s.alerts = [...s.alerts, code].sort();
  } else {
    ctx.resolve(code);
    s.alerts = s.alerts.filter((c) => c !== code);
  }
  return true;
}

/** Sends the bed's summary to its ward, if it has one. */
function report(ctx: TwinContext<PatientState>): void {
  const s = ctx.state;
  if (s.ward === undefined) return;
  ctx.send(WardTwin, s.ward, {
    bed: ctx.id,
    ewma: s.ewma,
    spo2: s.spo2 ?? null,
    alerts: [...s.alerts],
    critical: s.alerts.some((code) => PATIENT_ALERTS[code] === "critical"),
    atMs: ctx.now().getTime(),
  });
}
