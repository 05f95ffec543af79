import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency } from "../../client/index.js";
import { MemberState } from "../../proto/gen/twinmesh/v1/node_pb.js";
import { type CliResult, runCli } from "../harness/cli-process.js";
import { ClusterHarness, freePorts } from "../harness/cluster-harness.js";
import { ev, statuses } from "../harness/events.js";
import { Scrape } from "../harness/prometheus-text.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
/** `twinmesh status`'s exit code for a cluster that is not healthy (see its --help). */
const EXIT_DEGRADED = 3;

interface StatusJson {
  healthy: boolean;
  problems: string[];
  nodes: {
    nodeId: string;
    address: string;
    seenAs: string;
    answered: boolean;
    error?: string;
    status?: {
      serving: boolean;
      partitionProgress: { owned: number; taking: number };
      openAlerts: { info: number; warning: number; critical: number };
      timersPending: number;
      events: { accepted: number };
      replicationLag: { nodeId: string; shipmentsBehind: number }[];
    };
  }[];
}

function assertExit(result: CliResult, code: number): CliResult {
  assert.equal(result.code, code, `exit code; the command printed ${JSON.stringify({ stdout: result.stdout, stderr: result.stderr }, null, 2)}`);
  return result;
}

describe("twinmesh status in a three-node cluster (status-cluster)", function () {
  this.timeout(90_000);
  const t = useTestScope();

  it("asks every member, counts each alert and timer once (on its owner), and marks a killed member NO ANSWER with exit 3", async () => {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--partitions", "32", "--replication-factor", "3"] });
    const n1 = c.members[0]?.address as string;
    // Two alerts and a timer, replicated to every node (RF 3): each is counted by its owner only.
    const sent = await c
      .client("n1")
      .publish([ev("alarm", "a-1", 1, { level: 120 }), ev("alarm", "a-2", 1, { level: 160 }), ev("alarm", "t-1", 1, { timerMs: 3_600_000 })], Consistency.ALL);
    assert.deepEqual(statuses(sent.results), ["ACCEPTED", "ACCEPTED", "ACCEPTED"]);

    // Without --cluster: a node with peers asks them all.
    const healthy = JSON.parse(assertExit(await runCli(["status", "--json", "--interval", "0", "--address", n1]), 0).stdout) as StatusJson;
    assert.equal(healthy.healthy, true, JSON.stringify(healthy.problems));
    assert.deepEqual(
      healthy.nodes.map((n) => [n.nodeId, n.address, n.seenAs, n.answered, n.status?.serving]),
      c.members.map((m, i) => [m.id, m.address, i === 0 ? "self" : "up", true, true]),
    );
    const sum = (pick: (s: NonNullable<StatusJson["nodes"][number]["status"]>) => number): number =>
      healthy.nodes.reduce((total, n) => total + (n.status === undefined ? 0 : pick(n.status)), 0);
    assert.deepEqual(
      [
        sum((s) => s.partitionProgress.owned),
        sum((s) => s.partitionProgress.taking),
        sum((s) => s.openAlerts.warning),
        sum((s) => s.openAlerts.critical),
        sum((s) => s.timersPending),
        sum((s) => s.events.accepted),
      ],
      [32, 0, 1, 1, 1, 3],
    );
    // Replication lag names only other members (those a node has shipped to).
    for (const n of healthy.nodes) for (const l of n.status?.replicationLag ?? []) assert.notEqual(l.nodeId, n.nodeId);

    await c.kill("n3");
    await c.waitForState("n3", MemberState.DOWN, 15_000);
    const degradedRun = assertExit(await runCli(["status", "--json", "--interval", "0", "--address", n1]), EXIT_DEGRADED);
    const degraded = JSON.parse(degradedRun.stdout) as StatusJson;
    assert.equal(degraded.healthy, false);
    assert.deepEqual(degraded.problems, ["n3 did not answer (down as the asked node sees it)"]);
    assert.deepEqual(
      degraded.nodes.map((n) => [n.nodeId, n.seenAs, n.answered]),
      [
        ["n1", "self", true],
        ["n2", "up", true],
        ["n3", "down", false],
      ],
    );
    assert.match(degraded.nodes[2]?.error ?? "", /ECONNREFUSED/);
    assert.equal(degradedRun.stderr, "twinmesh: degraded: n3 did not answer (down as the asked node sees it) (DEGRADED)\n");

    // The table marks it too; n1 and n2 take n3's partitions between them.
    await waitFor(
      async () => {
        const r = await runCli(["status", "--json", "--interval", "0", "--address", n1]);
        const s = JSON.parse(r.stdout) as StatusJson;
        return s.nodes.reduce((total, n) => total + (n.status?.partitionProgress.owned ?? 0), 0) === 32 || undefined;
      },
      { timeoutMs: 15_000, what: "n1 and n2 to own all 32 partitions" },
    );
    const text = assertExit(await runCli(["status", "--interval", "0", "--address", n1]), EXIT_DEGRADED);
    const rows = text.stdout.split("\n");
    assert.match(
      rows[0] ?? "",
      /^NODE\s+ADDRESS\s+SEEN AS\s+HEALTH\s+EPOCH\s+OWNS\s+TAKING\s+UPTIME\s+ACCEPTED\s+TWINS\s+ALERTS C\/W\/I\s+TIMERS\s+DEAD LETTERS\s+PROBLEM$/,
    );
    assert.match(rows.find((r) => r.startsWith("n3 ")) ?? "", /^n3\s+127\.0\.0\.1:\d+\s+down\s+NO ANSWER\s+/);
    assert.match(rows.find((r) => r.startsWith("n2 ")) ?? "", /^n2\s+127\.0\.0\.1:\d+\s+up\s+SERVING\s+/);
    assert.equal(rows.at(-2), "degraded: n3 did not answer (down as the asked node sees it)");

    // --no-cluster asks only n1, which serves.
    assertExit(await runCli(["status", "--no-cluster", "--interval", "0", "--address", n1]), 0);
  });

  it("shows partitions a node is taking while a first start waits for every copy, in GetNodeStatus and twinmesh_cluster_handoff_partitions, until the last member comes", async () => {
    const [metricsPort] = await freePorts(1);
    const c = await ClusterHarness.prepare(t, {
      size: 3,
      twins: [FIXTURES],
      // A first start waits for every copy for the startup grace: long enough to be seen.
      args: ["--partitions", "32", "--replication-factor", "3", "--startup-grace-ms", "120000"],
      argsOf: { n1: ["--metrics-port", String(metricsPort)] },
    });
    await Promise.all([c.startMember("n1"), c.startMember("n2")]);
    // At a cluster's first start a node takes a partition only once every copy answers (for the
    // startup grace): with n3 not started, n1 and n2 should own partitions and cannot yet.
    const n1 = c.client("n1", 5_000);
    const taking = await waitFor(
      async () => {
        const s = await n1.getNodeStatus();
        return s.serving && (s.partitionProgress?.taking ?? 0) > 0 ? s : undefined;
      },
      { timeoutMs: 30_000, what: "n1 to serve and be taking partitions" },
    );
    assert.equal(taking?.partitionProgress?.owned, 0);
    assert.equal(taking?.partitionProgress?.rebuilding, 0);
    const scrape = await Scrape.of(c.node("n1").metricsAddress);
    assert.ok((scrape.value("twinmesh_cluster_handoff_partitions", { phase: "taking" }) ?? 0) > 0, "twinmesh_cluster_handoff_partitions{phase=taking} on n1");

    await c.startMember("n3");
    await c.formed(20_000);
    const after = await Promise.all(c.members.map((m) => c.client(m.id, 5_000).getNodeStatus()));
    assert.deepEqual(
      after.map((s) => s.partitionProgress?.taking),
      [0, 0, 0],
    );
    assert.equal(
      after.reduce((sum, s) => sum + (s.partitionProgress?.owned ?? 0), 0),
      32,
    );
    assert.equal((await Scrape.of(c.node("n1").metricsAddress)).value("twinmesh_cluster_handoff_partitions", { phase: "taking" }), 0);
  });
});
