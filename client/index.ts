/**
 * `twinmesh/client`: a TypeScript client of a twinmesh node.
 * @packageDocumentation
 */

export * from "../proto/gen/twinmesh/v1/alert_pb.js";
export * from "../proto/gen/twinmesh/v1/dead_letter_pb.js";
export * from "../proto/gen/twinmesh/v1/node_pb.js";
export * from "../proto/gen/twinmesh/v1/telemetry_pb.js";
export * from "../proto/gen/twinmesh/v1/twin_pb.js";
export { ClusterClient, type ClusterClientOptions } from "./cluster-client.js";
export { PublishStreamSession, TwinmeshClient, TwinmeshClientError, type TwinmeshClientOptions } from "./twinmesh-client.js";
