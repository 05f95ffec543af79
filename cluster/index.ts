/**
 * cluster/: where twins live and how work reaches them. Today a single node owns the whole ring;
 * these are the seams the cluster builds on.
 */
export { RingSnapshot, VNODES_PER_NODE } from "./ring-snapshot.js";
export { type Membership, type NodeInfo, StaticMembership } from "./membership.js";
export { type TwinRouter, LocalRouter } from "./twin-router.js";
