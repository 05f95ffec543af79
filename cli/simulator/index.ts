/**
 * The device simulator and the batching publisher it shares with `twinmesh send --file`.
 * Other parts of the CLI import only this file.
 */

export { allocateSources, createDevices } from "./device-fleet.js";
export { WARDS } from "./patient-device.js";
export { Prng } from "./prng.js";
export { type EventInit, PublishPipeline, type PublishPipelineOptions, type PublishTotals, type RejectionSummary } from "./publish-pipeline.js";
export { type Reading, SIMULATED_KINDS, type SimulatedDevice, type SimulatedKind } from "./simulated-device.js";
export { resolveSimulatorOptions, runSimulator, type SimulatorOptions, type SimulatorProgress } from "./simulator.js";
export { FLEETS } from "./vehicle-device.js";
