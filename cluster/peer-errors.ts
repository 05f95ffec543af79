/**
 * The errors of node-to-node calls. They are {@link TwinmeshError}s, so the gRPC boundary maps
 * them like every other (server/grpc/to-status.ts), and a router can turn a retryable one into a
 * retryable `REJECTED` result per event.
 */
import { StatusCode, TwinmeshError } from "../runtime/index.js";
import type { NodeSettings } from "./node-settings.js";

/**
 * A peer could not answer: it is unreachable, or the stream to it broke (or was closed) before
 * the answer came. Events sent in the batch may or may not have been applied by the owner:
 * retry them with the same seqs (the owner drops duplicates).
 */
export class PeerUnavailableError extends TwinmeshError {
  override readonly name = "PeerUnavailableError";
  readonly code = StatusCode.UNAVAILABLE;
  override readonly retryable = true;
  constructor(
    /** `PEER_UNAVAILABLE`: the peer or the stream failed; `FORWARD_CLOSED`: this node is closing its forwarding. */
    readonly reason: "PEER_UNAVAILABLE" | "FORWARD_CLOSED",
    /** The peer's node id. */
    readonly peer: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A Ping refused because the two nodes cannot form one cluster. Carries the refusing node's id
 * and settings (they travel in the status's ErrorInfo metadata), so the caller can name the
 * difference from its own side.
 */
export class IncompatiblePeerError extends TwinmeshError {
  override readonly name = "IncompatiblePeerError";
  readonly code = StatusCode.FAILED_PRECONDITION;
  /** The refusing node's partition count. */
  readonly partitions: number;
  /** The refusing node's replication factor. */
  readonly replicationFactor: number;
  /** The refusing node's twin kinds, sorted. */
  readonly kinds: readonly string[];
  /** The refusing node's node-to-node protocol version. */
  readonly peerProtocol: number;
  constructor(
    /** `INCOMPATIBLE_SETTINGS`: partitions, replication factor, kinds or peer protocol differ; `SAME_NODE_ID`: both nodes have one id. */
    readonly reason: "INCOMPATIBLE_SETTINGS" | "SAME_NODE_ID",
    /** The refusing node's id. */
    readonly node: string,
    settings: NodeSettings,
    message: string,
  ) {
    super(message);
    this.partitions = settings.partitions;
    this.replicationFactor = settings.replicationFactor;
    this.kinds = settings.kinds;
    this.peerProtocol = settings.peerProtocol;
  }
}

/** A PeerService method this node does not serve (yet): it was started without a handler for it. */
export class NotServedError extends TwinmeshError {
  override readonly name = "NotServedError";
  readonly code = StatusCode.FAILED_PRECONDITION;
  readonly reason = "NOT_SERVED";
  constructor(
    readonly node: string,
    readonly method: string,
  ) {
    super(`node ${node} does not serve ${method}: it runs without a handler for it; send it to a node that serves it, or start this one with one`);
  }
}
