import { Twin, type TwinContext } from "twinmesh";

/**
 * The message a {@link VehicleTwin} sends its fleet: a summary of one vehicle. Typing
 * `FleetTwin` with it makes `ctx.send(FleetTwin, fleet, report)` check it at compile time.
 */
export interface VehicleReport {
  /** The vehicle twin's id. */
  vehicle: string;
  /** Latest speed, km/h. */
  speedKmh: number;
  /** True above walking pace (GPS speed reads a few km/h at a standstill). */
  moving: boolean;
  /** True while the vehicle's `engine-overheat` alert is open. */
  overheating: boolean;
  /** Distance driven since the vehicle's twin started, km. */
  odometerKm: number;
  /** Codes of the vehicle's open alerts, sorted. */
  alerts: string[];
  /** When the vehicle sent it (epoch ms): newer reports win. */
  atMs: number;
}

/** What the fleet keeps per vehicle: the latest report. */
export type VehicleStatus = Omit<VehicleReport, "vehicle">;

/** State of a {@link FleetTwin}. */
export interface FleetState {
  /** Latest report of each vehicle, by vehicle id. */
  vehicles: Record<string, VehicleStatus>;
  /** Vehicles moving now. */
  moving: number;
  /** Vehicles with an overheating engine. */
  overheating: number;
  /** Sum of the vehicles' odometers, km. */
  totalDistanceKm: number;
}

/**
 * A fleet of vehicles: an aggregate twin fed by its vehicles' {@link VehicleReport}s. It lives
 * in the cloud tier, where vehicles entering at any edge site can reach it. It raises no alerts.
 */
export class FleetTwin extends Twin<FleetState, VehicleReport> {
  static readonly kind = "fleet";
  static readonly placement = "cloud";

  initial(): FleetState {
    return { vehicles: {}, moving: 0, overheating: 0, totalDistanceKm: 0 };
  }

  override onMessage(report: VehicleReport, ctx: TwinContext<FleetState>): void {
    // The compile-time type does not bind SendToTwin callers: throwing rejects the message and
    // leaves the state as it was.
    if (typeof report.vehicle !== "string" || typeof report.odometerKm !== "number" || typeof report.atMs !== "number") {
      throw new TypeError(`fleet ${ctx.id}: expected a VehicleReport, got ${JSON.stringify(report)}`);
    }
    const s = ctx.state;
    const { vehicle, ...status } = report;
    // Delivery is at least once and may reorder after a failover: keep only the newest report.
    const known = s.vehicles[vehicle];
    if (known !== undefined && status.atMs < known.atMs) return;
    s.vehicles[vehicle] = status;

    const vehicles = Object.values(s.vehicles);
    s.moving = vehicles.filter((v) => v.moving).length;
    s.overheating = vehicles.filter((v) => v.overheating).length;
    s.totalDistanceKm = vehicles.reduce((sum, v) => sum + v.odometerKm, 0);
  }
}
