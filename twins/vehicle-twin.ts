import { type Telemetry, Twin, type TwinContext } from "twinmesh";
import { FleetTwin } from "./fleet-twin.js";

// Overspeed needs 3 readings in a row above 130 km/h, so one overtaking manoeuvre or GPS glitch
// does not count; it resolves below 120 km/h (hysteresis).
const OVERSPEED_ABOVE_KMH = 130;
const OVERSPEED_AFTER_EVENTS = 3;
const OVERSPEED_CLEARS_BELOW_KMH = 120;
const OVERHEAT_ABOVE_C = 110;
const OVERHEAT_CLEARS_BELOW_C = 100;
/** 25 km/h lost per second is about 0.7 g: an emergency stop, not normal braking. */
const HARSH_BRAKING_KMH_PER_S = 25;
/** GPS speed reads a few km/h at a standstill. */
const MOVING_ABOVE_KMH = 3;
/** The fleet hears from a vehicle every 10th event, and whenever it starts or stops moving or an alert changes. */
const REPORT_EVERY_EVENTS = 10;
const EARTH_RADIUS_M = 6_371_000;

/** The alerts a vehicle twin raises, and their severities. */
export const VEHICLE_ALERTS = {
  overspeed: "warning",
  "engine-overheat": "critical",
  "harsh-braking": "info",
  geofence: "warning",
} as const;
/** One of the {@link VEHICLE_ALERTS} codes. */
export type VehicleAlertCode = keyof typeof VEHICLE_ALERTS;

/** A circle the vehicle should stay in. */
export interface Geofence {
  lat: number;
  lon: number;
  radiusM: number;
}

/** State of a {@link VehicleTwin}. */
export interface VehicleState {
  /** Latest speed, km/h. */
  speedKmh?: number;
  /** Time (the event's `time`, epoch ms) of that speed: deceleration is measured from it. */
  speedAtMs?: number;
  engineTempC?: number;
  fuelPct?: number;
  lat?: number;
  lon?: number;
  /** Consecutive events above the overspeed limit. */
  overspeedEvents: number;
  /** Harsh braking events so far. */
  harshBrakes: number;
  /** Distance driven, km (summed between position fixes while moving). */
  odometerKm: number;
  /** From the `geofence_lat`, `geofence_lon` and `geofence_radius_m` attributes. */
  geofence?: Geofence;
  /** The fleet this vehicle reports to, from the `fleet` attribute. */
  fleet?: string;
  /** Events received. */
  events: number;
  /** Open condition alerts, sorted (`harsh-braking` is an event and is not listed). */
  alerts: VehicleAlertCode[];
}

/**
 * A vehicle's telematics unit. Reads channels `speed_kmh`, `engine_temp_c`, `lat`, `lon` and
 * optionally `fuel_pct`; the `fleet` attribute names the {@link FleetTwin} that receives a
 * `VehicleReport` summary.
 *
 * Alerts: `overspeed` (warning) after 3 readings in a row above 130 km/h, resolved below 120;
 * `engine-overheat` (critical) above 110 °C, resolved below 100 °C; `harsh-braking` (info) on
 * each deceleration faster than 25 km/h per second, measured between consecutive events' `time`
 * (never resolved by the twin: its count says how often); `geofence` (warning) while outside
 * the circle the `geofence_*` attributes describe.
 */
export class VehicleTwin extends Twin<VehicleState> {
  static readonly kind = "vehicle";
  static readonly placement = "edge";

  initial(): VehicleState {
    return { overspeedEvents: 0, harshBrakes: 0, odometerKm: 0, events: 0, alerts: [] };
  }

  override onTelemetry(t: Telemetry, ctx: TwinContext<VehicleState>): void {
    const s = ctx.state;
    const summaryBefore = summary(s);
    const wasMoving = isMoving(s);
    s.events += 1;
    const { fleet, geofence_lat: fenceLat, geofence_lon: fenceLon, geofence_radius_m: radiusM } = t.attributes;
    if (typeof fleet === "string") s.fleet = fleet;
    if (typeof fenceLat === "number" && typeof fenceLon === "number" && typeof radiusM === "number") {
      s.geofence = { lat: fenceLat, lon: fenceLon, radiusM };
    }

    const speed = t.channels.speed_kmh;
    if (speed !== undefined) {
      // Deceleration uses the events' own times, not arrival times, which batching and retries distort.
      const atMs = t.time.getTime();
      const seconds = s.speedAtMs === undefined ? 0 : (atMs - s.speedAtMs) / 1000;
      if (s.speedKmh !== undefined && seconds > 0 && (s.speedKmh - speed) / seconds > HARSH_BRAKING_KMH_PER_S) {
        s.harshBrakes += 1;
        ctx.raise("harsh-braking", {
          severity: VEHICLE_ALERTS["harsh-braking"],
          message: `harsh braking #${s.harshBrakes}: ${s.speedKmh} to ${speed} km/h in ${seconds.toFixed(1)} s`,
        });
      }
      s.speedKmh = speed;
      s.speedAtMs = atMs;

      s.overspeedEvents = speed > OVERSPEED_ABOVE_KMH ? s.overspeedEvents + 1 : 0;
      const overspeed = s.alerts.includes("overspeed");
      setAlert(ctx, "overspeed", overspeed ? speed >= OVERSPEED_CLEARS_BELOW_KMH : s.overspeedEvents >= OVERSPEED_AFTER_EVENTS, `${speed} km/h`);
    }

    const temp = t.channels.engine_temp_c;
    if (temp !== undefined) {
      s.engineTempC = temp;
      const overheat = s.alerts.includes("engine-overheat");
      setAlert(ctx, "engine-overheat", overheat ? temp >= OVERHEAT_CLEARS_BELOW_C : temp > OVERHEAT_ABOVE_C, `engine at ${temp} °C`);
    }

    const { lat, lon } = t.channels;
    if (lat !== undefined && lon !== undefined) {
      // GPS positions wander a few metres while parked: count a leg only if the vehicle was
      // moving at either end of it.
      if (s.lat !== undefined && s.lon !== undefined && (wasMoving || isMoving(s))) {
        s.odometerKm += haversineM(s.lat, s.lon, lat, lon) / 1000;
      }
      s.lat = lat;
      s.lon = lon;
      if (s.geofence !== undefined) {
        const fromCentreM = haversineM(s.geofence.lat, s.geofence.lon, lat, lon);
        setAlert(ctx, "geofence", fromCentreM > s.geofence.radiusM, `${fromCentreM.toFixed(0)} m from the geofence centre (radius ${s.geofence.radiusM} m)`);
      }
    }

    if (t.channels.fuel_pct !== undefined) s.fuelPct = t.channels.fuel_pct;

    if (s.fleet !== undefined && ((s.events - 1) % REPORT_EVERY_EVENTS === 0 || summary(s) !== summaryBefore)) {
      ctx.send(FleetTwin, s.fleet, {
        vehicle: ctx.id,
        speedKmh: s.speedKmh ?? 0,
        moving: isMoving(s),
        overheating: s.alerts.includes("engine-overheat"),
        odometerKm: s.odometerKm,
        alerts: [...s.alerts],
        atMs: ctx.now().getTime(),
      });
    }
  }
}

function isMoving(s: VehicleState): boolean {
  return (s.speedKmh ?? 0) > MOVING_ABOVE_KMH;
}

/** What the fleet must hear about as soon as it changes. */
function summary(s: VehicleState): string {
  return `${isMoving(s)} ${s.alerts.join()}`;
}

/**
 * Raises or resolves `code` when it differs from what `ctx.state.alerts` says, so each change
 * is raised once (raising an open alert again would bump its count).
 */
function setAlert(ctx: TwinContext<VehicleState>, code: VehicleAlertCode, on: boolean, message: string): void {
  const s = ctx.state;
  if (on === s.alerts.includes(code)) return;
  if (on) {
    ctx.raise(code, { severity: VEHICLE_ALERTS[code], message });
    s.alerts = [...s.alerts, code].sort();
  } else {
    ctx.resolve(code);
    s.alerts = s.alerts.filter((c) => c !== code);
  }
}

/** Great-circle distance in metres (haversine on a sphere: within 0.5 % of the real Earth). */
function haversineM(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const rad = Math.PI / 180;
  const h = Math.sin(((lat2 - lat1) * rad) / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(((lon2 - lon1) * rad) / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.sqrt(h));
}
