/**
 * The example twin kinds that ship with twinmesh. `twinmesh start --twins` loads this module for
 * the demo; to write your own kind, copy the file closest to your domain and edit it.
 *
 * - {@link PatientTwin} (`patient`, edge): heart-rate EWMA, tachycardia/bradycardia/low-oxygen
 *   alerts with hysteresis, a missing-signal timer; reports to a {@link WardTwin}.
 * - {@link VehicleTwin} (`vehicle`, edge): overspeed, engine overheat, harsh braking, geofence,
 *   odometer; reports to a {@link FleetTwin}.
 * - {@link WardTwin} (`ward`, cloud) and {@link FleetTwin} (`fleet`, cloud): aggregates fed by
 *   typed `ctx.send` messages.
 * - {@link PumpTwin} (`pump`, edge): rolling window statistics, vibration levels, cavitation,
 *   and a state migration from version 1.
 * @packageDocumentation
 */
import { FleetTwin } from "./fleet-twin.js";
import { PatientTwin } from "./patient-twin.js";
import { PumpTwin } from "./pump-twin.js";
import { VehicleTwin } from "./vehicle-twin.js";
import { WardTwin } from "./ward-twin.js";

export { type FleetState, FleetTwin, type VehicleReport, type VehicleStatus } from "./fleet-twin.js";
export { PATIENT_ALERTS, type PatientAlertCode, type PatientState, PatientTwin } from "./patient-twin.js";
export { type ChannelStats, PUMP_CHANNELS, type PumpChannel, type PumpSample, type PumpState, PumpTwin, type VibrationLevel } from "./pump-twin.js";
export { type Geofence, VEHICLE_ALERTS, type VehicleAlertCode, type VehicleState, VehicleTwin } from "./vehicle-twin.js";
export { type BedReport, type BedStatus, type WardState, WardTwin } from "./ward-twin.js";

/** Every example kind, ready for `TwinRuntime.open({ twins: exampleTwins })`. */
export const exampleTwins = [PatientTwin, VehicleTwin, WardTwin, FleetTwin, PumpTwin] as const;
