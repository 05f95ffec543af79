import { readFileSync } from "node:fs";
import type { ClusterNode } from "../cluster/index.js";
import { type DescribeClusterResponse, MemberState, type NodeService } from "../proto/gen/twinmesh/v1/node_pb.js";
import type { TwinRuntime } from "../runtime/index.js";
import type { ServiceImpl } from "./grpc/grpc-adapter.js";

/**
 * Copies of a twin's state a single node keeps: its own. Design §5 counts consistency in copies,
 * the owner's included, with the replication factor capped at the number of nodes, so on one
 * node QUORUM (a majority of 1) and ALL are both that one copy.
 */
export const SINGLE_NODE_REPLICATION_FACTOR = 1;

const STATE: Readonly<Record<string, MemberState>> = {
  self: MemberState.UP,
  up: MemberState.UP,
  down: MemberState.DOWN,
  incompatible: MemberState.INCOMPATIBLE,
  "catching-up": MemberState.CATCHING_UP,
};

/** The twinmesh release, read once from the package's own package.json (beside dist/). */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "";
  } catch {
    return "";
  }
}

/** `twinmesh.v1.NodeService` over a {@link TwinRuntime} (and its cluster, if it is in one): answers from configuration and membership only. */
export function nodeService(runtime: TwinRuntime, cluster?: ClusterNode): ServiceImpl<typeof NodeService> {
  const version = packageVersion();
  const kinds = runtime.registry.kindNames().map((kind) => {
    const entry = runtime.registry.get(kind);
    return { $typeName: "twinmesh.v1.TwinKindInfo", kind, placement: entry.placement, stateVersion: entry.stateVersion } as const;
  });
  const { partitions } = runtime.partitioning;
  return {
    describeNode() {
      return Promise.resolve({
        $typeName: "twinmesh.v1.DescribeNodeResponse",
        nodeId: runtime.host.nodeId,
        kinds,
        replicationFactor: cluster?.currentRing().replicationFactor ?? SINGLE_NODE_REPLICATION_FACTOR,
        version,
      });
    },

    describeCluster() {
      if (cluster === undefined) {
        const self = runtime.host.nodeId;
        return Promise.resolve({
          $typeName: "twinmesh.v1.DescribeClusterResponse",
          epoch: 1n,
          partitions,
          replicationFactor: SINGLE_NODE_REPLICATION_FACTOR,
          members: [
            {
              $typeName: "twinmesh.v1.ClusterMember",
              nodeId: self,
              address: "",
              state: MemberState.UP,
              problem: "",
              ownedPartitions: partitions,
              replicatedPartitions: 0,
              self: true,
            },
          ],
          placements: Array.from({ length: partitions }, () => ({ $typeName: "twinmesh.v1.PartitionPlacement", nodeIds: [self] }) as const),
        } satisfies DescribeClusterResponse);
      }
      const ring = cluster.currentRing();
      return Promise.resolve({
        $typeName: "twinmesh.v1.DescribeClusterResponse",
        epoch: ring.epoch,
        partitions,
        replicationFactor: ring.replicationFactor,
        members: cluster.members().map((m) => ({
          $typeName: "twinmesh.v1.ClusterMember",
          nodeId: m.id,
          address: m.address,
          state: STATE[m.condition] ?? MemberState.UNSPECIFIED,
          problem: m.problem ?? "",
          ownedPartitions: m.owned,
          replicatedPartitions: m.replicated,
          self: m.id === cluster.self,
        })),
        placements: runtime.partitioning.all().map((p) => ({ $typeName: "twinmesh.v1.PartitionPlacement", nodeIds: [...ring.preferenceList(p)] }) as const),
      } satisfies DescribeClusterResponse);
    },
  };
}
