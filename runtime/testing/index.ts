/**
 * `twinmesh/testing`: test twin classes in process with the real runtime and virtual time.
 * @packageDocumentation
 */

export { VirtualClock } from "../clock.js";
export { type PublishOptions, type SentMessage, TwinTestKit, type TwinTestKitOptions } from "./twin-test-kit.js";
