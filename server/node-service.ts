import { readFileSync } from "node:fs";
import type { NodeService } from "../proto/gen/twinmesh/v1/node_pb.js";
import type { TwinRuntime } from "../runtime/index.js";
import type { ServiceImpl } from "./grpc/grpc-adapter.js";

/**
 * Copies of a twin's state a single node keeps: its own. Design §5 counts consistency in copies,
 * the owner's included, with the replication factor capped at the number of nodes, so on one
 * node QUORUM (a majority of 1) and ALL are both that one copy.
 */
export const SINGLE_NODE_REPLICATION_FACTOR = 1;

/** The twinmesh release, read once from the package's own package.json (beside dist/). */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown };
    return typeof pkg.version === "string" ? pkg.version : "";
  } catch {
    return "";
  }
}

/** `twinmesh.v1.NodeService` over a {@link TwinRuntime}: answers from configuration only. */
export function nodeService(runtime: TwinRuntime): ServiceImpl<typeof NodeService> {
  const version = packageVersion();
  const kinds = runtime.registry.kindNames().map((kind) => {
    const entry = runtime.registry.get(kind);
    return { $typeName: "twinmesh.v1.TwinKindInfo", kind, placement: entry.placement, stateVersion: entry.stateVersion } as const;
  });
  return {
    describeNode() {
      return Promise.resolve({
        $typeName: "twinmesh.v1.DescribeNodeResponse",
        nodeId: runtime.host.nodeId,
        kinds,
        replicationFactor: SINGLE_NODE_REPLICATION_FACTOR,
        version,
      });
    },
  };
}
