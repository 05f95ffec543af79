/**
 * cluster/: where twins live and how work reaches them. Today a single node owns the whole ring;
 * these are the seams the cluster builds on.
 */

export { type Membership, type NodeInfo, StaticMembership } from "./membership.js";
export { RingSnapshot, VNODES_PER_NODE } from "./ring-snapshot.js";
export { LocalRouter, type TwinRouter } from "./twin-router.js";
