/**
 * `twinmesh/testing`: test twin classes in process with the real runtime and virtual time.
 * @packageDocumentation
 */
export { TwinTestKit, type TwinTestKitOptions, type PublishOptions, type SentMessage } from "./twin-test-kit.js";
export { VirtualClock } from "../clock.js";
