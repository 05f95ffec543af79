import type { Prng } from "./prng.js";
import { approach, clamp, type Reading, round, type SimulatedDevice } from "./simulated-device.js";

/** The fleets vehicles are spread over, each around its depot (vehicle-1 in fleet-a, vehicle-2 in fleet-b, …). */
export const FLEETS = [
  { id: "fleet-a", lat: 51.9225, lon: 4.4792 }, // Rotterdam
  { id: "fleet-b", lat: 45.764, lon: 4.8357 }, // Lyon
] as const;

const EARTH_RADIUS_M = 6_371_000;
const DEG = Math.PI / 180;
// Comfortable acceleration and braking (km/h per second). The vehicle twin calls a deceleration
// faster than 25 km/h per second harsh braking, so normal braking stays well below it.
const ACCELERATION_KMH_S = 7;
const BRAKING_KMH_S = 10;
const HARSH_BRAKING_KMH_S: readonly [number, number] = [32, 45];
const STOP_MEAN_INTERVAL_S = 90;
const HARSH_BRAKING_MEAN_INTERVAL_S = 300;
const NEW_TARGET_MEAN_INTERVAL_S = 25;
const SPEEDING_MEAN_INTERVAL_S = 900;
const OVERHEAT_MEAN_INTERVAL_S = 1_200;
const ENGINE_NORMAL_C = 90;
/** Fuel used per km driven, % of the tank (about 8 l/100 km from a 60 l tank). */
const FUEL_PCT_PER_KM = 0.133;

type Mode =
  | { readonly name: "drive" }
  | { readonly name: "stop"; readonly untilMs: number }
  | { readonly name: "brake"; readonly toKmh: number; readonly rateKmhS: number }
  | { readonly name: "speeding"; readonly untilMs: number };

/**
 * A vehicle's telematics unit: speed (`speed_kmh`), engine temperature (`engine_temp_c`), GPS
 * (`lat`, `lon`) and fuel (`fuel_pct`). It drives in town or on the highway with speed changes
 * and stops, moves along its heading, now and then brakes hard (the vehicle twin raises
 * `harsh-braking`), speeds above 130 km/h (`overspeed`), or overheats above 110 °C
 * (`engine-overheat`). Each event carries the `fleet` attribute.
 */
export class VehicleDevice implements SimulatedDevice {
  readonly kind = "vehicle";
  readonly id: string;
  private readonly fleet: string;
  private lat: number;
  private lon: number;
  private headingDeg: number;
  private speedKmh = 0;
  private targetKmh: number;
  private readonly highway: boolean;
  private mode: Mode = { name: "drive" };
  private engineC: number;
  private overheatUntilMs: number | undefined;
  private fuelPct: number;
  private lastMs: number | undefined;

  /** @param number - 1 for `vehicle-1` */
  constructor(
    number: number,
    private readonly rng: Prng,
  ) {
    this.id = `vehicle-${number}`;
    const depot = FLEETS[(number - 1) % FLEETS.length] ?? FLEETS[0];
    this.fleet = depot.id;
    // Somewhere within a few km of the depot.
    this.lat = depot.lat + rng.range(-0.03, 0.03);
    this.lon = depot.lon + rng.range(-0.04, 0.04);
    this.headingDeg = rng.range(0, 360);
    this.highway = rng.chance(0.3);
    this.targetKmh = this.cruiseKmh();
    this.engineC = rng.range(35, 60); // warming up
    this.fuelPct = rng.range(35, 100);
  }

  read(timeMs: number): Reading {
    const dtS = this.lastMs === undefined ? 0 : Math.max(0, (timeMs - this.lastMs) / 1000);
    this.lastMs = timeMs;
    if (dtS > 0) this.advance(timeMs, dtS);
    return {
      channels: {
        speed_kmh: round(this.speedKmh, 1),
        engine_temp_c: round(this.engineC, 1),
        lat: round(this.lat, 6),
        lon: round(this.lon, 6),
        fuel_pct: round(this.fuelPct, 1),
      },
      attributes: { fleet: this.fleet },
    };
  }

  private cruiseKmh(): number {
    return this.highway ? this.rng.range(85, 122) : this.rng.range(30, 60);
  }

  private advance(timeMs: number, dtS: number): void {
    const rng = this.rng;
    this.changeMode(timeMs, dtS);

    const mode = this.mode;
    if (mode.name === "brake") {
      this.speedKmh = Math.max(mode.toKmh, this.speedKmh - mode.rateKmhS * dtS);
      if (this.speedKmh <= mode.toKmh) {
        this.mode = { name: "drive" };
        this.targetKmh = this.cruiseKmh();
      }
    } else {
      const target = mode.name === "stop" ? 0 : mode.name === "speeding" ? 138 : this.targetKmh;
      const change = clamp(target - this.speedKmh, -BRAKING_KMH_S * dtS, ACCELERATION_KMH_S * dtS);
      // Traffic: small variations that grow with time, not with the reading rate.
      this.speedKmh = Math.max(0, this.speedKmh + change + (this.speedKmh > 0 ? rng.normal(0, 0.8) * Math.sqrt(Math.min(dtS, 4)) : 0));
    }

    // The road bends a little; at a stop the vehicle may turn.
    if (this.speedKmh > 1) this.headingDeg = (this.headingDeg + rng.normal(0, 3) * Math.sqrt(Math.min(dtS, 4)) + 360) % 360;
    const metres = (this.speedKmh / 3.6) * dtS;
    this.lat += (metres * Math.cos(this.headingDeg * DEG)) / EARTH_RADIUS_M / DEG;
    this.lon += (metres * Math.sin(this.headingDeg * DEG)) / (EARTH_RADIUS_M * Math.cos(this.lat * DEG)) / DEG;
    this.fuelPct = Math.max(0, this.fuelPct - (metres / 1000) * FUEL_PCT_PER_KM);

    // The engine warms up to its normal temperature, a little higher at speed; a failing fan
    // sends it past 110 °C for a minute or so.
    if (this.overheatUntilMs === undefined && rng.happens(OVERHEAT_MEAN_INTERVAL_S, dtS)) this.overheatUntilMs = timeMs + rng.range(60, 90) * 1000;
    if (this.overheatUntilMs !== undefined && timeMs >= this.overheatUntilMs) this.overheatUntilMs = undefined;
    const engineTarget = this.overheatUntilMs !== undefined ? 118 : ENGINE_NORMAL_C + 0.03 * this.speedKmh;
    this.engineC = approach(this.engineC, engineTarget, dtS, this.overheatUntilMs !== undefined ? 20 : 60) + rng.normal(0, 0.15) * Math.sqrt(Math.min(dtS, 4));
  }

  private changeMode(timeMs: number, dtS: number): void {
    const rng = this.rng;
    const mode = this.mode;
    if (mode.name === "stop") {
      if (timeMs < mode.untilMs) return;
      this.mode = { name: "drive" };
      this.targetKmh = this.cruiseKmh();
      if (rng.chance(0.5)) this.headingDeg = (this.headingDeg + (rng.chance(0.5) ? 90 : 270)) % 360;
      if (this.fuelPct < 10) this.fuelPct = rng.range(95, 100); // filled up during the stop
      return;
    }
    if (mode.name === "speeding") {
      if (timeMs >= mode.untilMs) this.mode = { name: "drive" };
      return;
    }
    if (mode.name === "brake") return;
    if (this.speedKmh > 40 && rng.happens(HARSH_BRAKING_MEAN_INTERVAL_S, dtS)) {
      this.mode = { name: "brake", toKmh: rng.range(0, this.speedKmh - 35), rateKmhS: rng.range(...HARSH_BRAKING_KMH_S) };
    } else if (rng.happens(STOP_MEAN_INTERVAL_S, dtS) || this.fuelPct < 10) {
      this.mode = { name: "stop", untilMs: timeMs + rng.range(10, 40) * 1000 };
    } else if (this.highway && rng.happens(SPEEDING_MEAN_INTERVAL_S, dtS)) {
      this.mode = { name: "speeding", untilMs: timeMs + rng.range(15, 30) * 1000 };
    } else if (rng.happens(NEW_TARGET_MEAN_INTERVAL_S, dtS)) {
      this.targetKmh = this.cruiseKmh();
    }
  }
}
