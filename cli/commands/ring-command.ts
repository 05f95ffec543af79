import type { Command } from "commander";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { formatTable, printJson, printLine } from "../output.js";
import { type ClientCommandOptions, clientCommand, withClient } from "./client-command.js";

/**
 * `twinmesh ring`: who owns which part of the hash ring. A single node owns all of it; the ring
 * of many nodes comes with the cluster, and this command will list it then.
 */
export function ringCommand(): Command {
  return clientCommand("ring", "show the nodes of the hash ring and what each owns")
    .addHelpText(
      "after",
      `
Today a node runs alone, owns the whole ring and keeps one copy of each twin (replication
factor 1), so every --consistency level means that one copy. Rings of several nodes, with
replicas and handoff, come with the cluster; this command will then list each node's share.

Example:
  twinmesh ring --json`,
    )
    .action(async (options: ClientCommandOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const [{ status }, node] = await Promise.all([client.health(), client.describeNode()]);
        const health = ServingStatus[status] ?? String(status);
        const kinds = node.kinds.map((k) => k.kind);
        if (options.json) {
          printJson({ replicationFactor: node.replicationFactor, nodes: [{ nodeId: node.nodeId, address: options.address, health, owns: "all", kinds }] });
          return;
        }
        const rows = [[node.nodeId, options.address, health, "the whole ring (single node)"]];
        for (const line of formatTable(["node", "address", "health", "owns"], rows)) printLine(line);
        const rf = node.replicationFactor;
        printLine(`replication factor ${rf}: ${rf} ${rf === 1 ? "copy" : "copies"} of each twin; kinds ${kinds.join(", ") || "(none)"}`);
      });
    });
}
