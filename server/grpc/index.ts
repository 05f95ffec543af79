/**
 * server/grpc/: the adapter between protobuf-es service descriptors and grpc-js, and the one
 * error-to-status mapping. The public services in server/ and the node-to-node PeerService in
 * cluster/ are served through it; other folders import it from here.
 */

export {
  type AdapterOptions,
  addService,
  type BidiHandler,
  type CallContext,
  DEFAULT_MAX_MESSAGE_BYTES,
  type ServerStreamHandler,
  type ServiceImpl,
  type StreamSink,
  type UnaryHandler,
} from "./grpc-adapter.js";
export { ERROR_DOMAIN, type ErrorLog, STATUS_DETAILS_KEY } from "./to-status.js";
