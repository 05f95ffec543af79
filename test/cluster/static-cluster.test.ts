import assert from "node:assert/strict";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ClusterClient, MemberState, type TwinmeshClient } from "../../client/index.js";
import { RingSnapshot, ROUTED_BY_HEADER } from "../../cluster/index.js";
import { GetTwinRequestSchema, SendToTwinRequestSchema, TwinService } from "../../proto/gen/twinmesh/v1/twin_pb.js";
import { Partitioning } from "../../runtime/index.js";
import { CliProcess, runCli } from "../harness/cli-process.js";
import { ClusterHarness, freePorts } from "../harness/cluster-harness.js";
import { ev, outcomes, statuses } from "../harness/events.js";
import { rawClient } from "../harness/grpc-status.js";
import { StreamLoad } from "../harness/stream-load.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"];

/** The owner of `kind`/`id` in a 3-node cluster of 256 partitions, as every node computes it. */
function ownerOf(id: string, kind = "counter"): string {
  const partitioning = new Partitioning(256);
  return new RingSnapshot(1n, MEMBERS, partitioning, 3).preferenceList(partitioning.partitionOf(kind, id))[0] as string;
}

/** Ids whose `kind` twins `owner` owns. */
function sourcesOwnedBy(owner: string, count: number, kind = "counter"): string[] {
  const ids: string[] = [];
  for (let i = 0; ids.length < count; i++) if (ownerOf(`s-${i}`, kind) === owner) ids.push(`s-${i}`);
  return ids;
}

describe("a static cluster of three nodes (static-cluster)", function () {
  this.timeout(60_000);
  const t = useTestScope();

  async function start(args: string[] = [], argsOf: Record<string, string[]> = {}): Promise<ClusterHarness> {
    return ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args, argsOf });
  }

  it("applies a batch sent to any node on each twin's owner, once, and reads every twin the same through every node", async () => {
    const c = await start();
    const ids = Array.from({ length: 30 }, (_, i) => `s-${i}`);
    const res = await c.client("n1").publish(ids.map((id) => ev("counter", id, 1, { v: 2 })));
    assert.deepEqual(
      statuses(res.results),
      ids.map(() => "ACCEPTED"),
    );
    // A retry through another node is recognised by the owner.
    const retry = await c.client("n3").publish(ids.map((id) => ev("counter", id, 1, { v: 2 })));
    assert.deepEqual(
      statuses(retry.results),
      ids.map(() => "DUPLICATE"),
    );
    const owners = new Set<string>();
    for (const id of ids) {
      for (const via of MEMBERS) {
        const { twin } = await c.client(via).getTwin({ kind: "counter", id });
        assert.equal(twin?.ownerNodeId, ownerOf(id), `owner of ${id} read through ${via}`);
        assert.equal((twin?.state as { count?: number } | undefined)?.count, 1, `${id} read through ${via}`);
      }
      owners.add(ownerOf(id));
    }
    assert.deepEqual([...owners].sort(), MEMBERS, "the 30 twins did not spread over the three nodes");
  });

  it("keeps each source's order across nodes: seqs sent alternately through every node apply in order, each once", async () => {
    const c = await start();
    const [id] = sourcesOwnedBy("n2", 1) as [string];
    for (let seq = 1; seq <= 9; seq++) {
      const via = MEMBERS[seq % 3] as string;
      const res = await c.client(via).publish([ev("counter", id, seq, { v: seq })]);
      assert.deepEqual(statuses(res.results), ["ACCEPTED"], `seq ${seq} through ${via}`);
    }
    const { twin } = await c.client("n1").getTwin({ kind: "counter", id });
    assert.deepEqual(twin?.state, { count: 9, lastSeq: 9, total: 45, messages: 0 });
  });

  it("sends, deletes and reads a twin on its owner whichever node is asked", async () => {
    const c = await start();
    const [id] = sourcesOwnedBy("n3", 1) as [string];
    const sent = await c.client("n1").sendToTwin({ kind: "counter", id, message: { add: 5 }, idempotencyKey: "k-1" });
    assert.equal(sent.duplicate, false);
    const again = await c.client("n2").sendToTwin({ kind: "counter", id, message: { add: 5 }, idempotencyKey: "k-1" });
    assert.equal(again.duplicate, true);
    assert.deepEqual((await c.client("n2").getTwin({ kind: "counter", id })).twin?.state, { count: 0, lastSeq: 0, total: 5, messages: 1 });
    const deleted = await c.client("n1").deleteTwin({ kind: "counter", id });
    assert.equal(deleted.existed, true);
    await assert.rejects(c.client("n2").getTwin({ kind: "counter", id }), (err: { reason?: string }) => err.reason === "TWIN_NOT_FOUND");
  });

  it("delivers messages from a twin on one node to a twin another node owns, each once, in the order they were sent", async () => {
    const c = await start();
    const [relay] = sourcesOwnedBy("n1", 1, "relay") as [string];
    const [sink] = sourcesOwnedBy("n2", 1, "sink") as [string];
    const res = await c.client("n3").publish([1, 2, 3].map((seq) => ev("relay", relay, seq, {}, { attributes: { to: sink } })));
    assert.deepEqual(statuses(res.results), ["ACCEPTED", "ACCEPTED", "ACCEPTED"]);
    await waitFor(
      async () => {
        const { twin } = await c.client("n1").getTwin({ kind: "sink", id: sink });
        return (twin?.state as { received?: number } | undefined)?.received === 3;
      },
      { timeoutMs: 10_000, what: "the three messages on n2's sink" },
    ).catch(async (err: unknown) => {
      throw new Error(
        `${(err as Error).message}; sink state: ${JSON.stringify(
          (await c
            .client("n2")
            .getTwin({ kind: "sink", id: sink })
            .catch((e: unknown) => e)) as object,
        )}`,
      );
    });
    const { twin } = await c.client("n2").getTwin({ kind: "sink", id: sink });
    assert.equal(twin?.ownerNodeId, "n2");
    assert.deepEqual((twin?.state as { seen?: string[] } | undefined)?.seen, [`${relay}#1`, `${relay}#2`, `${relay}#3`]);
  });

  it("delivers messages for a dead owner's twin to the node that took its partition, each once", async () => {
    const c = await start();
    const [relay] = sourcesOwnedBy("n1", 1, "relay") as [string];
    const [sink] = sourcesOwnedBy("n2", 1, "sink") as [string];
    await c.kill("n2");
    await c.waitForState("n2", MemberState.DOWN);
    const res = await publishUntilAnswered(
      c.client("n1"),
      [1, 2].map((seq) => ev("relay", relay, seq, {}, { attributes: { to: sink } })),
    );
    assert.deepEqual(res, ["ACCEPTED", "ACCEPTED"]);
    const received = async (via: string): Promise<number | undefined> => {
      const got = await c
        .client(via)
        .getTwin({ kind: "sink", id: sink })
        .catch(() => undefined);
      return (got?.twin?.state as { received?: number } | undefined)?.received;
    };
    await waitFor(async () => (await received("n3")) === 2, { timeoutMs: 15_000, what: "both messages on the sink's new owner" });
    await c.startMember("n2");
    await c.caughtUp("n2");
    await waitFor(async () => (await received("n2")) === 2, { timeoutMs: 15_000, what: "the sink read through n2 once it is back, each message once" });
  });
  it("aggregates over every node's twins, combined exactly, through any node, and again once a killed member's partitions failed over", async () => {
    const c = await start();
    const ids = Array.from({ length: 30 }, (_, i) => `s-${i}`);
    const res = await c.client("n1").publish(ids.map((id, i) => ev("counter", id, 1, { v: i }, { attributes: { ward: i % 2 === 0 ? "even" : "odd" } })));
    assert.deepEqual(
      statuses(res.results),
      ids.map(() => "ACCEPTED"),
    );
    const wards = async (via: string): Promise<unknown> => {
      const { groups, scanned, matched } = await c.client(via).aggregateTwins({ kind: "counter", field: "state.total", groupBy: "state.ward" });
      return [scanned, matched, Object.fromEntries(groups.map((g) => [String(g.key?.kind.value), [g.count, g.sum, g.min, g.max, g.avg]]))];
    };
    const want = [30n, 30n, { even: [15n, 210, 0, 28, 14], odd: [15n, 225, 1, 29, 15] }];
    for (const via of MEMBERS) assert.deepEqual(await wards(via), want, `through ${via}`);
    await c.kill("n3");
    // Refused (retryably) or exact, never partial: n3's partitions count once the survivors serve them.
    const partial: unknown[] = [];
    await waitFor(
      async () => {
        const got = await wards("n1").catch((err: { reason?: string; retryable?: boolean }) => `${err.reason} (retryable: ${err.retryable})`);
        if (typeof got === "string") return false;
        if (!isDeepStrictEqual(got, want)) partial.push(got);
        return true;
      },
      { timeoutMs: 15_000, what: "the aggregate through n1 to answer again once n3's partitions failed over" },
    );
    assert.deepEqual(partial, []);
    assert.deepEqual(await wards("n2"), want);
  });

  it("answers a call another node routed to it itself: one for a twin it does not own is refused NOT_OWNER, never routed on", async () => {
    const c = await start();
    const [theirs] = sourcesOwnedBy("n2", 1) as [string];
    const raw = rawClient(c.members[0]?.address ?? "");
    t.defer(() => raw.close());
    const metadata = new grpc.Metadata();
    metadata.set(ROUTED_BY_HEADER, "n3");
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      raw.makeUnaryRequest(
        `/${TwinService.typeName}/${TwinService.method.sendToTwin.name}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from(toBinary(SendToTwinRequestSchema, create(SendToTwinRequestSchema, { kind: "counter", id: theirs, message: { add: 1 } }))),
        metadata,
        { deadline: Date.now() + 10_000 },
        (e) => resolve(e as grpc.ServiceError),
      );
    });
    assert.equal(err?.code, grpc.status.UNAVAILABLE);
    assert.match(err.details, /is owned by n2, not by this node \(n1\)/);
    // A routed read of a twin this node does not own is refused the same way, not answered "not found".
    const read = await new Promise<grpc.ServiceError>((resolve) => {
      raw.makeUnaryRequest(
        `/${TwinService.typeName}/${TwinService.method.getTwin.name}`,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from(toBinary(GetTwinRequestSchema, create(GetTwinRequestSchema, { kind: "counter", id: theirs }))),
        metadata,
        { deadline: Date.now() + 10_000 },
        (e) => resolve(e as grpc.ServiceError),
      );
    });
    assert.equal(read?.code, grpc.status.UNAVAILABLE);
    assert.match(read.details, /is owned by n2/);
    // Nothing reached the owner.
    await assert.rejects(c.client("n2").getTwin({ kind: "counter", id: theirs }));
  });

  it("shows the members, their state and their partition shares in twinmesh ring", async () => {
    const c = await start();
    await c.kill("n3");
    await waitFor(
      async () => {
        const ring = JSON.parse((await runCli(["ring", "--json", "--address", c.members[0]?.address ?? ""])).stdout) as { nodes: { state: string }[] };
        return ring.nodes[2]?.state === "down";
      },
      { timeoutMs: 10_000, what: "n1 to see n3 down" },
    );
    const result = await runCli(["ring", "--json", "--address", c.members[0]?.address ?? ""]);
    assert.equal(result.code, 0, result.stderr);
    const ring = JSON.parse(result.stdout) as {
      epoch: number;
      partitions: number;
      replicationFactor: number;
      nodes: { nodeId: string; state: string; owns: number; replicates: number }[];
    };
    assert.deepEqual(
      ring.nodes.map((n) => [n.nodeId, n.state]),
      [
        ["n1", "self"],
        ["n2", "up"],
        ["n3", "down"],
      ],
    );
    assert.deepEqual([ring.epoch, ring.partitions, ring.replicationFactor], [1, 256, 3]);
    assert.equal(
      ring.nodes.reduce((sum, n) => sum + n.owns, 0),
      256,
    );
    assert.equal(
      ring.nodes.reduce((sum, n) => sum + n.replicates, 0),
      512,
    );
    // n3 is down: its partitions failed over to n1 and n2.
    assert.deepEqual(
      ring.nodes.map((n) => (n.nodeId === "n3" ? n.owns : n.owns > 80)),
      [true, true, 0],
      `owned: ${ring.nodes.map((n) => `${n.nodeId} ${n.owns}`).join(", ")}`,
    );
  });

  it("ring-aware client: sends each event straight to its owner, and retries a dead owner's events with the same seqs once it is back", async () => {
    const c = await start();
    const client = await ClusterClient.connect([c.members[0]?.address ?? ""], { retryDelayMs: 200, attempts: 12 });
    t.defer(() => client.close());
    const ids = Array.from({ length: 12 }, (_, i) => `s-${i}`);
    for (const id of ids) assert.equal(client.ownerOf("counter", id), ownerOf(id));
    const first = await client.publish(ids.map((id) => ev("counter", id, 1)));
    assert.deepEqual(
      statuses(first.results),
      ids.map(() => "ACCEPTED"),
    );
    // Straight to the owner: no node forwarded anything.
    assert.equal(client.clientFor("counter", "s-1").address, c.members.find((m) => m.id === ownerOf("s-1"))?.address);
    await c.kill("n2");
    await c.client("n1").describeCluster(); // n1 is up
    const onN2 = sourcesOwnedBy("n2", 2);
    const retrying = client.publish([...onN2, "s-0"].map((id) => ev("counter", id, 2)));
    // The scenario is time passing with the owner down: the client retries meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 300));
    await c.startMember("n2");
    const second = await retrying;
    assert.deepEqual(
      statuses(second.results).map((s) => (s === "DUPLICATE" ? "ACCEPTED" : s)),
      ["ACCEPTED", "ACCEPTED", "ACCEPTED"],
      JSON.stringify(outcomes(second.results)),
    );
    // n2 takes its partitions back one at a time (PARTITION_MOVING meanwhile): read each twin once
    // its partition is served again.
    for (const id of onN2) {
      const twin = await waitFor(async () => (await c.client("n3").getTwin({ kind: "counter", id })).twin, {
        timeoutMs: 15_000,
        what: `${id} readable through n3`,
      });
      assert.equal((twin?.state as { count?: number } | undefined)?.count, 2, `${id} applied once`);
    }
  });

  it("does not take a saturated node for a dead one: its peers see it up throughout a sustained load", async () => {
    const c = await start();
    const load = new StreamLoad(c.client("n1"), { sources: 300, perSource: 10, inflight: 16 });
    const running = load.run();
    const observer = c.client("n2");
    const seenDown: string[] = [];
    const until = Date.now() + 4_000;
    while (Date.now() < until && load.stoppedBy === undefined) {
      const { members } = await observer.describeCluster();
      const n1 = members.find((m) => m.nodeId === "n1");
      if (n1?.state !== MemberState.UP) seenDown.push(`${MemberState[n1?.state ?? 0]} after ${load.ackedCount} events`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    load.stop();
    await running;
    assert.equal(load.stoppedBy, "stop()", `the load stopped early: ${load.failure?.message ?? [...load.answers].join()}`);
    assert.ok(load.ackedCount > 10_000, `only ${load.ackedCount} events were acknowledged: the node was not saturated`);
    assert.deepEqual(seenDown, [], "n2 saw the busy n1 as not up");
  });

  it("starts before its peers, takes no partition alone, and serves once they answer", async () => {
    // n1 alone of n1..n3 first: its peers are down, it serves its own twins.
    const c = await ClusterHarness.prepare(t, { size: 3, twins: [FIXTURES] });
    await c.startMember("n1");
    const [mine] = sourcesOwnedBy("n1", 1) as [string];
    const [theirs] = sourcesOwnedBy("n3", 1) as [string];
    // Alone, it cannot tell whether a peer holds newer copies: it takes no partition, and says so.
    const early = await c.client("n1").publish([ev("counter", mine, 1), ev("counter", theirs, 1)]);
    assert.deepEqual(
      outcomes(early.results).map((o) => [o.reason, o.retryable]),
      [
        ["NOT_ENOUGH_REPLICAS", true],
        ["NOT_ENOUGH_REPLICAS", true],
      ],
    );
    await Promise.all([c.startMember("n2"), c.startMember("n3")]);
    await c.formed();
    const later = await c.client("n1").publish([ev("counter", mine, 1), ev("counter", theirs, 1)]);
    assert.deepEqual(statuses(later.results), ["ACCEPTED", "ACCEPTED"]);
  });

  it("treats a node started with other settings as incompatible, naming the difference, and forwards nothing to it", async () => {
    const c = await ClusterHarness.prepare(t, { size: 3, twins: [FIXTURES], argsOf: { n3: ["--partitions", "128"] } });
    await Promise.all(MEMBERS.map((id) => c.startMember(id)));
    const [theirs] = sourcesOwnedBy("n3", 1) as [string];
    await waitFor(
      async () => {
        const n3 = (await c.client("n1").describeCluster()).members.find((m) => m.nodeId === "n3");
        return n3?.state === MemberState.INCOMPATIBLE && /128 partitions/.test(n3.problem);
      },
      { timeoutMs: 10_000, what: "n3 to be reported incompatible with its partition count" },
    );
    // Its twins are served by the compatible nodes, which never forward to it.
    await c.formed().catch(() => undefined);
    assert.deepEqual(await publishUntilAnswered(c.client("n1"), [ev("counter", theirs, 1)]), ["ACCEPTED"]);
    assert.notEqual((await c.client("n2").getTwin({ kind: "counter", id: theirs })).twin?.ownerNodeId, "n3");
  });

  it("twinmesh cluster starts N local nodes that form one cluster, and Ctrl-C stops them all", async () => {
    const [basePort] = await freeConsecutivePorts(2);
    const [metricsBasePort] = await freeConsecutivePorts(2);
    const data = t.tempDir("cluster-command");
    const run = CliProcess.spawn(
      ["cluster", "--twins", FIXTURES, "--nodes", "2", "--base-port", String(basePort), "--metrics-base-port", String(metricsBasePort), "--data", data],
      { timeoutMs: 40_000 },
    );
    t.defer(() => run.signal("SIGKILL"));
    await waitFor(() => /cluster of 2 serving/.test(run.stdout()), { timeoutMs: 20_000, what: "the cluster's ready line" });
    const address = `127.0.0.1:${basePort}`;
    await waitFor(
      async () => {
        const ring = JSON.parse((await runCli(["ring", "--json", "--address", address])).stdout) as { nodes: { nodeId: string; state: string }[] };
        return ring.nodes.map((n) => `${n.nodeId}:${n.state}`).join() === "n1:self,n2:up";
      },
      { timeoutMs: 10_000, what: "n1 to see n2 up" },
    );
    // Each node serves its own metrics, on consecutive ports from --metrics-base-port.
    for (const [i, id] of ["n1", "n2"].entries()) {
      const text = await (await fetch(`http://127.0.0.1:${(metricsBasePort as number) + i}/metrics`)).text();
      assert.match(text, /^twinmesh_cluster_members 2$/m, `${id}'s metrics`);
    }
    const sent = await runCli(["send", "counter", "c-1", "v=3", "--address", `127.0.0.1:${(basePort as number) + 1}`]);
    assert.equal(sent.code, 0, sent.stderr);
    const end = await run.signal("SIGINT");
    assert.equal(end.code, 0, end.stderr);
    assert.match(end.stdout, /\[n1\] /);
  });
});

/** `count` consecutive ports from a free one (checked free now). */
/** Publishes `events` again while any is refused retryably (a partition moving), for up to 10 s; returns the statuses. */
async function publishUntilAnswered(client: TwinmeshClient, events: Parameters<TwinmeshClient["publish"]>[0]): Promise<string[]> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const results = outcomes((await client.publish(events)).results);
    if (Date.now() > deadline || !results.some((o) => o.status === "REJECTED" && o.retryable)) return results.map((o) => o.status);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function freeConsecutivePorts(count: number): Promise<number[]> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const [base] = await freePorts(1);
    const ports = Array.from({ length: count }, (_, i) => (base as number) + i);
    if (ports.every((p) => p <= 65_000) && (await Promise.all(ports.map(isFree))).every(Boolean)) return ports;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}
