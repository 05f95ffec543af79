import { Twin, type TwinContext } from "twinmesh";

/** Beds with a critical alert at which the ward raises `ward-overloaded`. */
const OVERLOADED_AT_BEDS = 3;
/** `ward-overloaded` resolves only below this many critical beds (hysteresis). */
const OVERLOADED_CLEARS_BELOW_BEDS = 2;

/**
 * The message a {@link PatientTwin} sends its ward: a summary of one bed. Typing `WardTwin`
 * with it makes `ctx.send(WardTwin, ward, report)` check the report at compile time.
 */
export interface BedReport {
  /** The patient twin's id. */
  bed: string;
  /** Heart-rate EWMA, bpm. */
  ewma: number;
  /** Latest SpO2 reading, %, or null when the monitor has no oximeter. */
  spo2: number | null;
  /** Codes of the patient's open alerts, sorted. */
  alerts: string[];
  /** True when one of those alerts is critical. */
  critical: boolean;
  /** When the patient sent it (epoch ms): newer reports win. */
  atMs: number;
}

/** What the ward keeps per bed: the latest report. */
export type BedStatus = Omit<BedReport, "bed">;

/** State of a {@link WardTwin}. */
export interface WardState {
  /** Latest report of each bed, by patient id. */
  beds: Record<string, BedStatus>;
  /** Beds with at least one open alert. */
  bedsInAlert: number;
  /** Beds with a critical alert. */
  criticalBeds: number;
  /** Mean heart-rate EWMA over the beds, bpm; 0 while no bed has reported. */
  averageEwma: number;
  /** True while `ward-overloaded` is open. */
  overloaded: boolean;
}

/**
 * A hospital ward: an aggregate twin fed by its patients' {@link BedReport}s, not by telemetry.
 * It lives in the cloud tier, where every edge site's patients can reach it.
 *
 * Alerts: `ward-overloaded` (warning) when 3 or more beds have a critical alert; resolves when
 * fewer than 2 do.
 */
export class WardTwin extends Twin<WardState, BedReport> {
  static readonly kind = "ward";
  static readonly placement = "cloud";

  initial(): WardState {
    return { beds: {}, bedsInAlert: 0, criticalBeds: 0, averageEwma: 0, overloaded: false };
  }

  override onMessage(report: BedReport, ctx: TwinContext<WardState>): void {
    // The compile-time type does not bind SendToTwin callers: throwing rejects the message and
    // leaves the state as it was.
    if (typeof report.bed !== "string" || typeof report.ewma !== "number" || !Array.isArray(report.alerts)) {
      throw new TypeError(`ward ${ctx.id}: expected a BedReport, got ${JSON.stringify(report)}`);
    }
    const s = ctx.state;
    const { bed, ...status } = report;
    // Delivery is at least once and may reorder after a failover: keep only the newest report.
    const known = s.beds[bed];
    if (known !== undefined && status.atMs < known.atMs) return;
    s.beds[bed] = status;

    const beds = Object.values(s.beds);
    s.bedsInAlert = beds.filter((b) => b.alerts.length > 0).length;
    s.criticalBeds = beds.filter((b) => b.critical).length;
    s.averageEwma = beds.reduce((sum, b) => sum + b.ewma, 0) / beds.length;

    if (!s.overloaded && s.criticalBeds >= OVERLOADED_AT_BEDS) {
      s.overloaded = true;
      ctx.raise("ward-overloaded", { severity: "warning", message: `${s.criticalBeds} beds have critical alerts` });
    } else if (s.overloaded && s.criticalBeds < OVERLOADED_CLEARS_BELOW_BEDS) {
      s.overloaded = false;
      ctx.resolve("ward-overloaded");
    }
  }
}
