import { createServer } from "node:net";
import { type DescribeClusterResponse, MemberState, TwinmeshClient } from "../../client/index.js";
import { HealthCheckResponse_ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { Partitioning } from "../../runtime/index.js";
import { NodeProcess, type NodeProcessOptions } from "./node-process.js";
import type { TestScope } from "./test-scope.js";

/** One member of a {@link ClusterHarness}: its id, port and data directory, kept across restarts. */
export interface ClusterMember {
  readonly id: string;
  readonly port: number;
  readonly address: string;
  readonly dataDir: string;
}

/** Options of {@link ClusterHarness.start}. */
export interface ClusterOptions {
  /** How many nodes. */
  readonly size: number;
  /** Twin modules every node loads. @defaultValue the example twins */
  readonly twins?: readonly string[];
  /** More `twinmesh start` arguments for every node (`--replication-factor 2`, say). */
  readonly args?: readonly string[];
  /** More arguments for one node, by id. */
  readonly argsOf?: Readonly<Record<string, readonly string[]>>;
  /**
   * The data directory of some members, by id (one on a small tmpfs the test mounted, say); the
   * test owns it and removes it. @defaultValue a temp dir of the test scope
   */
  readonly dataDirOf?: Readonly<Record<string, string>>;
  readonly logLevel?: string;
  /** More environment for every node (`OTEL_EXPORTER_OTLP_ENDPOINT`, say). */
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * A static cluster of real `twinmesh start` child processes on 127.0.0.1 (`n1`, `n2`, …), each
 * with its own data directory and a fixed port, so a node can be killed and started again at
 * the same address. Everything is stopped and removed when the test ends.
 *
 * @example
 * const cluster = await ClusterHarness.start(t, { size: 3 });
 * const client = cluster.client("n2");
 * await cluster.kill("n1");
 */
export class ClusterHarness {
  private readonly processes = new Map<string, NodeProcess>();
  /** Members paused (SIGSTOP) and not resumed since. */
  private readonly paused = new Set<string>();
  /** Output of processes that have exited, kept for failure reports. */
  private readonly past: string[] = [];
  /** Processes whose output is in {@link past} already. */
  private readonly recorded = new WeakSet<NodeProcess>();
  /** The placement as a member first described it (static membership never changes it). */
  private placement: { readonly partitioning: Partitioning; readonly lists: readonly (readonly string[])[] } | undefined;

  private constructor(
    private readonly t: TestScope,
    readonly members: readonly ClusterMember[],
    private readonly options: ClusterOptions,
  ) {}

  /** Starts every member and waits until each is serving. */
  static async start(t: TestScope, options: ClusterOptions): Promise<ClusterHarness> {
    const cluster = await ClusterHarness.prepare(t, options);
    await Promise.all(cluster.members.map((m) => cluster.startMember(m.id)));
    await cluster.formed();
    return cluster;
  }

  /** Picks the members' ports and directories without starting any: start them with {@link startMember}. */
  static async prepare(t: TestScope, options: ClusterOptions): Promise<ClusterHarness> {
    const ports = await freePorts(options.size);
    const members = ports.map((port, i) => ({
      id: `n${i + 1}`,
      port,
      address: `127.0.0.1:${port}`,
      dataDir: options.dataDirOf?.[`n${i + 1}`] ?? t.tempDir(`n${i + 1}`),
    }));
    const cluster = new ClusterHarness(t, members, options);
    t.defer((failed) => cluster.stopAll(failed));
    return cluster;
  }

  /** The `--peers` value of member `id`: every other member. */
  peersOf(id: string): string {
    return this.members
      .filter((m) => m.id !== id)
      .map((m) => `${m.id}@${m.address}`)
      .join(",");
  }

  /** Starts (or starts again) member `id` on its port and data directory. */
  async startMember(id: string, extra: Partial<NodeProcessOptions> = {}): Promise<NodeProcess> {
    const member = this.member(id);
    if (this.processes.get(id)?.running) throw new Error(`member ${id} is running`);
    const node = await NodeProcess.start({
      twins: this.options.twins,
      dataDir: member.dataDir,
      nodeId: id,
      port: member.port,
      logLevel: this.options.logLevel ?? process.env.TWINMESH_TEST_LOG_LEVEL ?? "warn",
      args: ["--peers", this.peersOf(id), ...(this.options.args ?? []), ...(this.options.argsOf?.[id] ?? [])],
      env: this.options.env,
      ...extra,
    });
    this.processes.set(id, node);
    return node;
  }

  /**
   * Waits until every running member sees every other running member up (heartbeats answered,
   * settings agreed), as `DescribeCluster` reports it.
   */
  async formed(timeoutMs = 10_000): Promise<void> {
    const running = this.members.filter((m) => this.processes.get(m.id)?.running === true).map((m) => m.id);
    const deadline = Date.now() + timeoutMs;
    for (const id of running) {
      const client = this.client(id);
      for (;;) {
        const { members } = await client.describeCluster();
        const up = new Set(members.filter((m) => m.state === MemberState.UP).map((m) => m.nodeId));
        // Formed: every running node sees the others up, and has taken the partitions it owns.
        const self = members.find((m) => m.self);
        const expected = running.length === this.members.length ? undefined : 0;
        if (running.every((r) => up.has(r)) && self !== undefined && (expected === undefined ? await this.ownersComplete(running) : true)) break;
        if (Date.now() > deadline)
          throw new Error(
            `the cluster did not form within ${timeoutMs} ms: ${id} sees ${JSON.stringify(members.map((m) => [m.nodeId, MemberState[m.state], m.problem]))}`,
          );
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  /** True when the running members together serve every partition, each by its own account. */
  private async ownersComplete(running: readonly string[]): Promise<boolean> {
    let owned = 0;
    let partitions = 0;
    for (const id of running) {
      const { members, partitions: count } = await this.client(id).describeCluster();
      partitions = count;
      owned += members.find((m) => m.self)?.ownedPartitions ?? 0;
    }
    return owned === partitions;
  }

  /** Ids of the members whose process is running now, in member order. */
  runningIds(): string[] {
    return this.members.filter((m) => this.processes.get(m.id)?.running === true).map((m) => m.id);
  }

  /**
   * The preference list of twin `kind`/`id`: its partition (the documented partition hash over
   * `DescribeCluster`'s partition count) and that partition's placement as a running member
   * describes it, static owner first, then its replicas. Read once per harness: static
   * membership never changes the placement.
   */
  async preferenceList(kind: string, id: string): Promise<readonly string[]> {
    if (this.placement === undefined) {
      const [via] = this.runningIds();
      if (via === undefined) throw new Error("no member is running to describe the cluster");
      const client = new TwinmeshClient(this.member(via).address, { deadlineMs: 10_000 });
      let described: DescribeClusterResponse;
      try {
        described = await client.describeCluster();
      } finally {
        client.close();
      }
      this.placement = { partitioning: new Partitioning(described.partitions), lists: described.placements.map((p) => [...p.nodeIds]) };
    }
    const partition = this.placement.partitioning.partitionOf(kind, id);
    const list = this.placement.lists[partition];
    if (list === undefined || list.length === 0) throw new Error(`DescribeCluster has no placement for partition ${partition} (${kind}/${id})`);
    return list;
  }

  /** The static owner of `kind`/`id`: the head of its preference list (it owns the twin while it is up). */
  async ownerOf(kind: string, id: string): Promise<string> {
    return (await this.preferenceList(kind, id))[0] as string;
  }

  /** The owner `kind`/`id` should have now: the first running member of its preference list. */
  async liveOwnerOf(kind: string, id: string): Promise<string | undefined> {
    const running = new Set(this.runningIds());
    return (await this.preferenceList(kind, id)).find((n) => running.has(n));
  }

  /** Of `ids`, those whose static owner is `owner`, in order. */
  async ownedBy(owner: string, kind: string, ids: readonly string[]): Promise<string[]> {
    const out: string[] = [];
    for (const id of ids) if ((await this.ownerOf(kind, id)) === owner) out.push(id);
    return out;
  }

  /** Waits until every running member other than `id` and those paused sees member `id` in `state` (`DescribeCluster`). */
  async waitForState(id: string, state: MemberState, timeoutMs = 10_000): Promise<void> {
    const observers = this.runningIds().filter((r) => r !== id && !this.paused.has(r));
    const deadline = Date.now() + timeoutMs;
    for (const observer of observers) {
      const client = this.client(observer, 5_000);
      for (;;) {
        const seen = await client.describeCluster().then(
          (d) => d.members.find((m) => m.nodeId === id)?.state,
          (err: unknown) => `describeCluster failed: ${(err as Error).message}`,
        );
        if (seen === state) break;
        if (Date.now() > deadline) {
          throw new Error(
            `${observer} did not see ${id} ${MemberState[state]} within ${timeoutMs} ms; it sees ${typeof seen === "number" ? MemberState[seen] : String(seen)}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  /**
   * Waits until member `id` has caught up: its gRPC health says SERVING (it says NOT_SERVING
   * while it catches up) and every other running member sees it UP (not CATCHING_UP).
   */
  async caughtUp(id: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const client = this.client(id, 5_000);
    for (;;) {
      const status = await client.health().then(
        (h) => HealthCheckResponse_ServingStatus[h.status],
        (err: unknown) => `health failed: ${(err as Error).message}`,
      );
      if (status === "SERVING") break;
      if (Date.now() > deadline) throw new Error(`${id} did not say SERVING within ${timeoutMs} ms; its health is ${status}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await this.waitForState(id, MemberState.UP, Math.max(1_000, deadline - Date.now()));
    // And it has taken back the partitions it owns.
    await this.formed(Math.max(1_000, deadline - Date.now()));
  }

  /** The running process of member `id`. */
  node(id: string): NodeProcess {
    const node = this.processes.get(id);
    if (node === undefined) throw new Error(`member ${id} was never started`);
    return node;
  }

  /** A client of member `id`, closed when the test ends. */
  client(id: string, deadlineMs = 20_000): TwinmeshClient {
    const client = new TwinmeshClient(this.member(id).address, { deadlineMs });
    this.t.defer(() => client.close());
    return client;
  }

  /** SIGKILL: member `id` crashes. */
  async kill(id: string): Promise<void> {
    const node = this.node(id);
    await node.kill();
    this.past.push(`----- ${id} (killed) -----\n${node.output()}`);
    this.recorded.add(node);
  }

  /**
   * SIGSTOP: member `id` freezes, as a node whose process stalls, until {@link resume}; resumed
   * at the end of the test at the latest, so it can be stopped.
   */
  pause(id: string): void {
    const node = this.node(id);
    node.pause();
    this.paused.add(id);
    this.t.defer(() => node.resume());
  }

  /** SIGCONT: a paused member `id` goes on. */
  resume(id: string): void {
    this.node(id).resume();
    this.paused.delete(id);
  }

  /**
   * Clients of the members running and not paused now, for a load that sends through any live
   * node (`SeqWriter`'s `clients`); one client per member, made on first use.
   */
  liveClients(deadlineMs = 5_000): () => TwinmeshClient[] {
    const clients = new Map<string, TwinmeshClient>();
    return () =>
      this.runningIds()
        .filter((id) => !this.paused.has(id))
        .map((id) => {
          let client = clients.get(id);
          if (client === undefined) clients.set(id, (client = this.client(id, deadlineMs)));
          return client;
        });
  }

  /** SIGTERM: member `id` drains and stops. @returns its exit code */
  async stop(id: string): Promise<number | null> {
    const node = this.node(id);
    const code = await node.stop();
    this.past.push(`----- ${id} (stopped) -----\n${node.output()}`);
    this.recorded.add(node);
    return code;
  }

  private member(id: string): ClusterMember {
    const member = this.members.find((m) => m.id === id);
    if (member === undefined) throw new Error(`no member ${id}; members are ${this.members.map((m) => m.id).join(", ")}`);
    return member;
  }

  /** Stops every member; when the test failed, first prints what every member wrote (those killed or stopped earlier included). */
  private async stopAll(failed: boolean): Promise<void> {
    if (failed) {
      for (const text of this.past) process.stderr.write(`\n${text}\n`);
      for (const [id, node] of this.processes) {
        if (node.running) node.report(`member ${id} (${node.address})`);
        // A member that exited by itself (a crash the test did not cause) says why.
        else if (!this.recorded.has(node)) node.report(`member ${id} (${node.address}, exited by itself)`);
      }
    }
    await Promise.all([...this.processes.values()].map((p) => p.kill()));
  }
}

/** `count` ports free on 127.0.0.1 now (bound, read and released; a race with other processes is possible but rare). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    if (address === null || typeof address === "string") throw new Error("no port");
    return address.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}
