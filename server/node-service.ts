import { readFileSync } from "node:fs";
import type { ClusterNode } from "../cluster/index.js";
import { HealthCheckResponse_ServingStatus } from "../proto/gen/grpc/health/v1/health_pb.js";
import {
  type AlertCounts,
  type DescribeClusterResponse,
  type EventCounts,
  type GetNodeStatusResponse,
  MemberState,
  type NodeService,
} from "../proto/gen/twinmesh/v1/node_pb.js";
import type { AlertsBySeverity, HostMetrics, TwinRuntime } from "../runtime/index.js";
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
  "disk-full": MemberState.DISK_FULL,
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

/** The serving status of each service, as the node's grpc.health.v1 service reports it. */
export interface HealthReader {
  list(): ReadonlyMap<string, HealthCheckResponse_ServingStatus>;
}

/**
 * `twinmesh.v1.NodeService` over a {@link TwinRuntime} (and its cluster, if it is in one).
 * DescribeNode and DescribeCluster answer from configuration and membership only; GetNodeStatus
 * adds the health, the host's counters and the counts kept in the store, read from the same
 * sources the metrics exporter reads.
 */
export function nodeService(runtime: TwinRuntime, cluster?: ClusterNode, health?: HealthReader): ServiceImpl<typeof NodeService> {
  const version = packageVersion();
  const startedAt = performance.now();
  const kinds = runtime.registry.kindNames().map((kind) => {
    const entry = runtime.registry.get(kind);
    return { $typeName: "twinmesh.v1.TwinKindInfo", kind, placement: entry.placement, stateVersion: entry.stateVersion } as const;
  });
  const { partitions } = runtime.partitioning;

  const describeCluster = (): DescribeClusterResponse => {
    if (cluster === undefined) {
      const self = runtime.host.nodeId;
      return {
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
            problem: runtime.host.diskProblem ?? "",
            ownedPartitions: partitions,
            replicatedPartitions: 0,
            self: true,
          },
        ],
        placements: Array.from({ length: partitions }, () => ({ $typeName: "twinmesh.v1.PartitionPlacement", nodeIds: [self] }) as const),
      };
    }
    const ring = cluster.currentRing();
    return {
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
    };
  };

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
      return Promise.resolve(describeCluster());
    },

    async getNodeStatus() {
      // Gauges and counters first, then the store scan: the scan takes a while, the rest is a snapshot.
      const { host } = runtime;
      const load = host.load;
      const events = eventCounts(host.metrics);
      const view = cluster?.metricsView();
      const services = [...(health?.list() ?? new Map<string, HealthCheckResponse_ServingStatus>())]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(
          ([service, status]) => ({ $typeName: "twinmesh.v1.ServiceHealth", service, serving: status === HealthCheckResponse_ServingStatus.SERVING }) as const,
        );
      const ring = describeCluster();
      const self = ring.members.find((m) => m.self);
      const stored = await runtime.storedCounts.read();
      return {
        $typeName: "twinmesh.v1.GetNodeStatusResponse",
        nodeId: host.nodeId,
        version,
        uptimeMs: BigInt(Math.round(performance.now() - startedAt)),
        serving: services.find((s) => s.service === "")?.serving ?? host.serving,
        services,
        // Why it does not serve, in words a person can act on: its disk, a drain, a catch-up.
        problem:
          self?.problem ||
          (host.diskProblem === undefined && !host.serving
            ? "draining: finishing the turns it accepted, then stopping (new events are refused SHUTTING_DOWN)"
            : cluster?.catchingUp === true
              ? `catching up after its start (${view?.handoff.catchingUp ?? 0} copies still catching up); it owns nothing and counts toward no quorum until done`
              : ""),
        epoch: ring.epoch,
        partitions,
        replicationFactor: ring.replicationFactor,
        members: ring.members,
        partitionProgress: {
          $typeName: "twinmesh.v1.PartitionProgress",
          owned: view?.ownedPartitions ?? partitions,
          taking: view?.handoff.taking ?? 0,
          catchingUp: view?.handoff.catchingUp ?? 0,
          waitingForPreviousOwner: view?.handoff.waitingForPreviousOwner ?? 0,
          stuck: view?.handoff.stuck ?? 0,
          rebuilding: view?.handoff.rebuilding ?? 0,
        },
        events,
        twinsActive: BigInt(load.activeTwins),
        openAlerts: alertCounts(stored.openAlerts),
        acknowledgedAlerts: alertCounts(stored.acknowledgedAlerts),
        timersPending: BigInt(stored.timersPending),
        outbox: {
          $typeName: "twinmesh.v1.OutboxDepth",
          queued: BigInt(load.outboxQueued),
          inflight: BigInt(load.outboxInFlight),
          parked: BigInt(load.outboxParked),
          held: BigInt(load.outboxHeld),
        },
        deadLetters: BigInt(stored.deadLetters),
        replicationLag: [...(view?.replicationLag ?? [])]
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
          .map(([nodeId, behind]) => ({ $typeName: "twinmesh.v1.ReplicaLag", nodeId, shipmentsBehind: BigInt(behind) }) as const),
      } satisfies GetNodeStatusResponse;
    },
  };
}

/** The events the host answered, summed over kinds: the same counts twinmesh_events_total exports. */
function eventCounts(metrics: HostMetrics): EventCounts {
  let accepted = 0;
  let duplicate = 0;
  let rejected = 0;
  const byReason: Record<string, bigint> = {};
  for (const k of metrics.events.kinds()) {
    accepted += k.accepted;
    duplicate += k.duplicate;
    for (const [reason, n] of k.rejected) {
      rejected += n;
      byReason[reason] = (byReason[reason] ?? 0n) + BigInt(n);
    }
  }
  return {
    $typeName: "twinmesh.v1.EventCounts",
    accepted: BigInt(accepted),
    duplicate: BigInt(duplicate),
    rejected: BigInt(rejected),
    rejectedByReason: byReason,
  };
}

function alertCounts(counts: AlertsBySeverity): AlertCounts {
  return { $typeName: "twinmesh.v1.AlertCounts", info: BigInt(counts.info), warning: BigInt(counts.warning), critical: BigInt(counts.critical) };
}
