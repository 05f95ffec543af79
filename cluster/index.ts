/**
 * cluster/: where twins live and how work reaches them: the ring, membership, the failure
 * detector, and the node-to-node transport (PeerService served, peers pinged, events forwarded).
 */

export {
  type ClusterMetricsView,
  ClusterNode,
  type ClusterOptions,
  type ClusterTimings,
  DEFAULT_REPLICATION_FACTOR,
  type HandoffProgress,
  type MemberView,
} from "./cluster-node.js";
export { ClusterOwnership, ClusterRouter } from "./cluster-router.js";
export {
  DEFAULT_DOWN_AFTER_MS,
  FailureDetector,
  type FailureDetectorOptions,
  type PeerLiveness,
  type ResolvedFailureDetectorOptions,
  resolveFailureDetectorOptions,
} from "./failure-detector.js";
export { ForwardClient, type ForwardClientOptions } from "./forward-client.js";
export type { ForwardBatch, ForwardHandler } from "./forward-server.js";
export { MemberReads } from "./member-reads.js";
export { type Membership, type NodeInfo, STATIC_EPOCH, StaticMembership } from "./membership.js";
export { mergeAggregates } from "./merge-aggregates.js";
export { NODE_ID_PATTERN, type NodeId, parseNodeId } from "./node-id.js";
export { type NodeSettings, type NodeWithSettings, PEER_PROTOCOL, resolveNodeSettings, settingsDifference } from "./node-settings.js";
export { IncompatiblePeerError, NotServedError, PeerUnavailableError } from "./peer-errors.js";
export { type PeerAddress, parsePeers } from "./peer-list.js";
export { PeerCondition, PeerPool, type PeerPoolOptions, type PeerState } from "./peer-pool.js";
export {
  addPeerService,
  type ClaimPartitionsHandler,
  type FetchPartitionHandler,
  type LocalNode,
  type PartitionStatesHandler,
  type PeerHandlers,
  type PeerServiceOptions,
  type ReplicateHandler,
} from "./peer-service.js";
export { type NodeShare, partitionRingKey, RingSnapshot, VNODES_PER_NODE } from "./ring-snapshot.js";
export { copiesFor, decodePartitions, encodePartitions, PARTITIONS_HEADER, ROUTED_BY_HEADER, RoutedCallError, RoutedCalls } from "./routed-calls.js";
export { ScatterReads, type ScatterReadsConfig } from "./scatter-reads.js";
export { ClusterPageTokens } from "./scatter-token.js";
export { type ConsistencyLevel, LocalRouter, type ReadScope, routerFor, type TwinRouter } from "./twin-router.js";
