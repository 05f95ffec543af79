import type { Command } from "commander";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { formatTable, printJson, printLine } from "../output.js";
import { type ClientCommandOptions, clientCommand, withClient } from "./client-command.js";

interface RingOptions extends ClientCommandOptions {
  kind?: string;
}

/**
 * `twinmesh ring`: who owns which part of the hash ring. A single node owns all of it; the ring
 * of many nodes comes with the cluster, and this command will list it then.
 */
export function ringCommand(): Command {
  return clientCommand("ring", "show the nodes of the hash ring and what each owns")
    .option("--kind <kind>", "read the node id from the owner of one twin of this kind (the v1 API has no node-info call)")
    .addHelpText(
      "after",
      `
Today a node runs alone and owns the whole ring. Rings of several nodes, with replicas
and handoff, come with the cluster; this command will then list each node's share.

Example:
  twinmesh ring --kind patient`,
    )
    .action(async (options: RingOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const { status } = await client.health();
        const health = ServingStatus[status] ?? String(status);
        let nodeId: string | undefined;
        if (options.kind !== undefined) {
          for await (const message of client.queryTwins({ kind: options.kind, limit: 1 })) nodeId ??= message.twins[0]?.ownerNodeId;
        }
        if (options.json) {
          printJson({ nodes: [{ nodeId: nodeId ?? null, address: options.address, health, owns: "all" }] });
          return;
        }
        const rows = [[nodeId ?? "?", options.address, health, "the whole ring (single node)"]];
        for (const line of formatTable(["node", "address", "health", "owns"], rows)) printLine(line);
        if (nodeId === undefined) {
          printLine(
            options.kind === undefined
              ? "(pass --kind <kind> to read the node id from a twin's owner)"
              : `(no ${options.kind} twin yet to read the node id from)`,
          );
        }
      });
    });
}
