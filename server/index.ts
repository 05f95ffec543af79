/**
 * server/: the gRPC adapters of the public twinmesh.v1 services over the runtime.
 */
export { TwinmeshNode, type NodeOptions } from "./twinmesh-server.js";
export { DEFAULT_MAX_MESSAGE_BYTES } from "./grpc/grpc-adapter.js";
