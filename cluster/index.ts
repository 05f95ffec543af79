/**
 * cluster/: where twins live and how work reaches them. Today a single node owns the whole ring;
 * these are the seams the cluster builds on.
 */

export {
  DEFAULT_DOWN_AFTER_MS,
  FailureDetector,
  type FailureDetectorOptions,
  type PeerLiveness,
  type ResolvedFailureDetectorOptions,
  resolveFailureDetectorOptions,
} from "./failure-detector.js";
export { type Membership, type NodeInfo, STATIC_EPOCH, StaticMembership } from "./membership.js";
export { NODE_ID_PATTERN, type NodeId, parseNodeId } from "./node-id.js";
export { type PeerAddress, parsePeers } from "./peer-list.js";
export { type NodeShare, partitionRingKey, RingSnapshot, VNODES_PER_NODE } from "./ring-snapshot.js";
export { type ConsistencyLevel, LocalRouter, type TwinRouter } from "./twin-router.js";
