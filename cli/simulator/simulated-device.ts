import type { JsonObject } from "@bufbuild/protobuf";

/** The kinds the simulator can play, with their share of the sources in the default mix. */
export const SIMULATED_KINDS = { patient: 0.6, vehicle: 0.3, pump: 0.1 } as const;
/** One of the {@link SIMULATED_KINDS}. */
export type SimulatedKind = keyof typeof SIMULATED_KINDS;

/** One reading of a device. */
export interface Reading {
  readonly channels: Record<string, number>;
  readonly attributes: JsonObject;
}

/**
 * A simulated data source: a device model with its own state. `read` is called with increasing
 * times and advances the model to that time, so a device's readings depend on its seed and on
 * the times it is read at, not on the wall clock.
 */
export interface SimulatedDevice {
  readonly kind: SimulatedKind;
  /** The source id, which is also the twin id: `patient-1`, `vehicle-3`, `pump-2`. */
  readonly id: string;
  /** The reading at `timeMs` (epoch ms), no earlier than the previous call's. */
  read(timeMs: number): Reading;
}

/** Rounds to `decimals` places, as a device that reports fixed-point values would. */
export function round(value: number, decimals: number): number {
  const f = 10 ** decimals;
  return Math.round(value * f) / f;
}

/** `value` limited to [min, max]. */
export function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

/**
 * Moves `current` toward `target` as a first-order lag with time constant `tauS`, the way a
 * body or a machine follows a change: after `tauS` seconds it has covered about 63 % of the gap.
 */
export function approach(current: number, target: number, dtS: number, tauS: number): number {
  return target + (current - target) * Math.exp(-dtS / tauS);
}
