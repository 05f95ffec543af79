import type { Command } from "commander";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { MemberState } from "../../proto/gen/twinmesh/v1/node_pb.js";
import { formatTable, printJson, printLine } from "../output.js";
import { type ClientCommandOptions, clientCommand, withClient } from "./client-command.js";

/**
 * `twinmesh ring`: the members of the cluster as the asked node sees them (self, up, down,
 * incompatible), and how many partitions each owns and holds replicas of.
 */
export function ringCommand(): Command {
  return clientCommand("ring", "show the nodes of the hash ring, their state, and the partitions each owns and replicates")
    .addHelpText(
      "after",
      `
Twins are placed by partition: a twin's partition is a hash of its kind and id, and each
partition's preference list names its owner (first) and its replicas. OWNS counts the partitions
a node heads, REPLICATES those it follows on. STATE is how the asked node sees each member: up,
down (silent for about a second) or incompatible (other partition count, replication factor or
twin kinds). A node alone owns every partition and keeps one copy of each twin.

Example:
  twinmesh ring --address 127.0.0.1:7421 --json`,
    )
    .action(async (options: ClientCommandOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const [{ status }, node, cluster] = await Promise.all([client.health(), client.describeNode(), client.describeCluster()]);
        const health = ServingStatus[status] ?? String(status);
        const kinds = node.kinds.map((k) => k.kind);
        const members = cluster.members.map((m) => ({
          nodeId: m.nodeId,
          address: m.self ? options.address : m.address,
          state: m.self ? "self" : (MemberState[m.state] ?? String(m.state)).toLowerCase().replace(/_/g, "-"),
          owns: m.ownedPartitions,
          replicates: m.replicatedPartitions,
          ...(m.problem === "" ? {} : { problem: m.problem }),
        }));
        if (options.json) {
          printJson({
            epoch: Number(cluster.epoch),
            partitions: cluster.partitions,
            replicationFactor: cluster.replicationFactor,
            health,
            kinds,
            nodes: members,
          });
          return;
        }
        const rows = members.map((m) => [m.nodeId, m.address, m.state, String(m.owns), String(m.replicates), m.problem ?? ""]);
        const headers = ["node", "address", "state", "owns", "replicates"];
        const table = rows.some((r) => r[5] !== "")
          ? formatTable([...headers, "problem"], rows)
          : formatTable(
              headers,
              rows.map((r) => r.slice(0, 5)),
            );
        for (const line of table) printLine(line);
        const rf = cluster.replicationFactor;
        printLine(
          `epoch ${cluster.epoch}, ${cluster.partitions} partitions, replication factor ${rf}${rf === 1 ? " (1 copy of each twin)" : ` (${rf} copies of each twin)`}; ${node.nodeId} is ${health}; kinds ${kinds.join(", ") || "(none)"}`,
        );
      });
    });
}
