import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { Command, Option } from "commander";
import { TwinmeshClient } from "../client/index.js";
import { withCliConventions } from "./commands/client-command.js";
import { ignoreClosedStdout, printLine, printNotice } from "./output.js";
import { wholeNumber } from "./start-command.js";

interface ClusterOptions {
  twins: string[];
  nodes: number;
  basePort: number;
  metricsBasePort: number;
  data: string;
  replicationFactor?: number;
  logLevel: string;
  logFormat?: "json" | "pretty";
}

/** The member ids and addresses of a local cluster of `nodes` nodes on consecutive ports. */
export function localMembers(nodes: number, basePort: number, metricsBasePort = 0): { id: string; port: number; address: string; metricsPort: number }[] {
  return Array.from({ length: nodes }, (_, i) => ({
    id: `n${i + 1}`,
    port: basePort + i,
    address: `127.0.0.1:${basePort + i}`,
    // Consecutive as well, so three local nodes do not all ask for 9464; 0 keeps every node's endpoint off.
    metricsPort: metricsBasePort === 0 ? 0 : metricsBasePort + i,
  }));
}

/**
 * `twinmesh cluster`: starts a static cluster of N nodes on this machine for trying the cluster
 * out, each a `twinmesh start` child process with its own port, data directory and `--peers`.
 * Their output is prefixed with the node id; SIGINT or SIGTERM stops them all (each drains).
 */
export function clusterCommand(): Command {
  return withCliConventions(new Command("cluster"))
    .description("start a cluster of N local nodes (n1, n2, …) on consecutive ports, for trying twinmesh's cluster out")
    .addOption(new Option("--twins <module...>", "twin module(s) every node loads (.ts or .js)").makeOptionMandatory())
    .addOption(new Option("--nodes <n>", "how many nodes").default(3).argParser(wholeNumber("--nodes", 1, 16)))
    .addOption(new Option("--base-port <port>", "n1's port; n2 takes the next one, and so on").default(7421).argParser(wholeNumber("--base-port", 1, 65_000)))
    .addOption(
      new Option("--metrics-base-port <port>", "n1's Prometheus endpoint port; n2 takes the next one, and so on (0 = no metrics endpoints)")
        .default(9464)
        .argParser(wholeNumber("--metrics-base-port", 0, 65_000)),
    )
    .addOption(new Option("--data <dir>", "parent directory of the nodes' data directories (<dir>/n1, <dir>/n2, …)").default("./cluster-data"))
    .addOption(
      new Option("--replication-factor <n>", "copies kept of each partition, capped at the cluster size (default 3)").argParser(
        wholeNumber("--replication-factor", 1, 64),
      ),
    )
    .addOption(
      new Option("--log-level <level>", "the nodes' log level")
        .choices(["trace", "debug", "info", "warn", "error", "fatal", "silent"])
        .env("TWINMESH_LOG_LEVEL")
        .default("warn"),
    )
    .addOption(
      new Option("--log-format <format>", "the nodes' log lines: json or pretty (default: pretty when this terminal is one, else json)")
        .choices(["json", "pretty"])
        .env("TWINMESH_LOG_FORMAT"),
    )
    .addHelpText(
      "after",
      `
Example:
  twinmesh cluster --twins ./my-twins.ts --nodes 3
  twinmesh ring --address 127.0.0.1:7421
  twinmesh status --address 127.0.0.1:7421   (every node's health, partitions and counts)
  twinmesh send patient bed-4 bpm=72 --address 127.0.0.1:7422   (any node takes any twin)`,
    )
    .action(async (opts: ClusterOptions) => {
      await runCluster(opts);
    });
}

async function runCluster(opts: ClusterOptions): Promise<void> {
  const members = localMembers(opts.nodes, opts.basePort, opts.metricsBasePort);
  const main = process.argv[1] as string;
  const children: ChildProcess[] = [];
  const ready = members.map((m) => {
    const peers = members.filter((p) => p.id !== m.id).map((p) => `${p.id}@${p.address}`);
    const args = [
      ...process.execArgv,
      main,
      "start",
      ...opts.twins.flatMap((t) => ["--twins", t]),
      "--node-id",
      m.id,
      "--port",
      String(m.port),
      "--metrics-port",
      String(m.metricsPort),
      "--data",
      join(opts.data, m.id),
      "--log-level",
      opts.logLevel,
      // The nodes write to pipes: they are told what this terminal is.
      "--log-format",
      opts.logFormat ?? (process.stdout.isTTY ? "pretty" : "json"),
      ...(peers.length > 0 ? ["--peers", peers.join(",")] : []),
      ...(opts.replicationFactor === undefined ? [] : ["--replication-factor", String(opts.replicationFactor)]),
    ];
    // Their own process group: a Ctrl-C reaches them once, through stop() below, not twice
    // (a second signal would end a draining node). The IPC channel stops them if this process dies.
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe", "ipc"], detached: true });
    children.push(child);
    return new Promise<boolean>((resolve) => {
      const prefix = (stream: NodeJS.WritableStream) => {
        let partial = "";
        return (chunk: Buffer) => {
          // Whole lines only: a line split across chunks is printed (and recognised) once complete.
          const lines = (partial + chunk.toString("utf8")).split("\n");
          partial = lines.pop() ?? "";
          for (const line of lines) {
            if (line !== "") stream.write(`[${m.id}] ${line}\n`);
            if (/^twinmesh node \S+ serving on /.test(line)) resolve(true);
          }
        };
      };
      child.stdout?.on("data", prefix(process.stdout));
      child.stderr?.on("data", prefix(process.stderr));
      child.once("exit", (code) => {
        printNotice(`node ${m.id} exited (code ${code})`);
        resolve(false);
      });
    });
  });
  const stop = (): void => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  ignoreClosedStdout();
  const started = await Promise.all(ready);
  if (started.every(Boolean) && !(await formed(members.map((m) => m.address)))) {
    printNotice("the nodes serve, but have not taken every partition between them within 30 s; `twinmesh ring` shows where they stand");
  }
  if (started.every(Boolean)) {
    printLine(`cluster of ${members.length} serving: ${members.map((m) => `${m.id} ${m.address}`).join(", ")}. Try, in another terminal:`);
    printLine(`  npx twinmesh ring --address ${members[0]?.address}`);
    printLine(`  npx twinmesh status --address ${members[0]?.address}`);
    printLine("Ctrl-C stops every node.");
  } else {
    printNotice("not every node started (see its output above); stopping the others");
    stop();
  }
  await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((resolve) => c.once("exit", resolve)) : Promise.resolve())));
  if (!started.every(Boolean)) process.exitCode = 1;
}

/**
 * Waits (up to 30 s) until the nodes serve every partition between them, each by its own
 * account: the moment events are taken at QUORUM without a retry.
 */
async function formed(addresses: readonly string[]): Promise<boolean> {
  const clients = addresses.map((a) => new TwinmeshClient(a, { deadlineMs: 2_000 }));
  try {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const described = await Promise.all(clients.map((c) => c.describeCluster().catch(() => undefined)));
      const owned = described.reduce((sum, d) => sum + (d?.members.find((m) => m.self)?.ownedPartitions ?? 0), 0);
      if (described.every((d) => d !== undefined) && owned === described[0]?.partitions) return true;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return false;
  } finally {
    for (const c of clients) c.close();
  }
}
