/**
 * `twinmesh/client`: a TypeScript client of a twinmesh node.
 * @packageDocumentation
 */
export { TwinmeshClient, TwinmeshClientError, PublishStreamSession, type TwinmeshClientOptions } from "./twinmesh-client.js";
export * from "../proto/gen/twinmesh/v1/telemetry_pb.js";
export * from "../proto/gen/twinmesh/v1/twin_pb.js";
export * from "../proto/gen/twinmesh/v1/alert_pb.js";
