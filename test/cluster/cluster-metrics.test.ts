import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState } from "../../client/index.js";
import { ClusterHarness, freePorts } from "../harness/cluster-harness.js";
import { ev, statuses } from "../harness/events.js";
import { Scrape } from "../harness/prometheus-text.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"];

describe("a three-node cluster's metrics (cluster-metrics)", function () {
  this.timeout(60_000);
  const t = useTestScope();

  it("reports every member up, the ring epoch, and partitions owned that add up to the partition count", async () => {
    const ports = await freePorts(MEMBERS.length);
    const argsOf = Object.fromEntries(MEMBERS.map((id, i) => [id, ["--metrics-port", String(ports[i])]]));
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], argsOf, args: ["--partitions", "64"] });
    const addresses = MEMBERS.map((id) => c.node(id).metricsAddress);
    assert.deepEqual(
      addresses,
      ports.map((p) => `127.0.0.1:${p}`),
    );

    // formed() waited for each node's own account of the partitions it owns; the gauges read the
    // same state. A replica's copies may still be catching up to the epochs the owners just began
    // (they own nothing meanwhile): wait for every handoff phase to drain.
    const phases = ["taking", "waiting_for_previous_owner", "catching_up", "rebuilding"];
    const scrapes = await waitFor(
      async () => {
        const all = await Promise.all(addresses.map((a) => Scrape.of(a)));
        return all.every((s) => phases.every((phase) => s.value("twinmesh_cluster_handoff_partitions", { phase }) === 0)) ? all : undefined;
      },
      { timeoutMs: 15_000, what: "every member's handoff partitions to reach 0" },
    );
    assert.ok(scrapes);
    for (const [i, s] of scrapes.entries()) {
      assert.equal(s.value("twinmesh_cluster_members"), 3, `${MEMBERS[i]}: members`);
      assert.equal(s.value("twinmesh_cluster_members_up"), 3, `${MEMBERS[i]}: members up`);
      assert.equal(s.value("twinmesh_cluster_catching_up"), 0, `${MEMBERS[i]}: catching up`);
      assert.ok((s.value("twinmesh_cluster_ring_epoch") ?? 0) >= 1, `${MEMBERS[i]}: ring epoch ${s.value("twinmesh_cluster_ring_epoch")}`);
      // Formed: nothing is on its way anywhere.
      for (const phase of phases) {
        assert.equal(s.value("twinmesh_cluster_handoff_partitions", { phase }), 0, `${MEMBERS[i]}: handoff ${phase}`);
      }
    }
    assert.equal(
      scrapes.reduce((sum, s) => sum + (s.value("twinmesh_cluster_partitions_owned") ?? 0), 0),
      64,
    );
    // A new cluster: every copy started level with its owner's, and followed the epochs the owners
    // began from exactly where it stood, so no node had a partition to fetch.
    assert.deepEqual(
      scrapes.map((s) => s.count("twinmesh_replication_catch_ups_total")),
      [0, 0, 0],
      "partitions fetched by n1, n2, n3",
    );

    // Events sent to n1 for twins others own are forwarded, and each is counted once, on its owner.
    const sent = await c.client("n1").publish(
      Array.from({ length: 30 }, (_, i) => ev("counter", `m-${i}`, 1)),
      Consistency.QUORUM,
    );
    assert.deepEqual(
      sent.results.filter((r) => statuses([r])[0] !== "ACCEPTED").map((r) => r.reason),
      [],
    );
    const after = await Promise.all(addresses.map((a) => Scrape.of(a)));
    assert.equal(
      after.reduce((sum, s) => sum + s.count("twinmesh_events_total", { kind: "counter", outcome: "accepted" }), 0),
      30,
    );
    assert.ok((after[0]?.count("twinmesh_cluster_forwarded_events_total") ?? 0) > 0, "n1 forwarded nothing");
    await waitFor(async () => (await Promise.all(addresses.map((a) => Scrape.of(a)))).every((s) => s.count("twinmesh_replication_shipments_total") > 0), {
      timeoutMs: 10_000,
      what: "every owner to ship to its replicas",
    });

    // Replication lag: 0 once every replica has confirmed; a frozen replica falls behind (writes
    // at LOCAL do not wait for it), and catches up to 0 again when it resumes.
    const lagOf = async (peer: string): Promise<number> => {
      const all = await Promise.all(MEMBERS.filter((id) => id !== peer).map((id) => Scrape.of(c.node(id).metricsAddress)));
      return all.reduce((sum, s) => sum + (s.value("twinmesh_replication_lag", { peer }) ?? 0), 0);
    };
    await waitFor(async () => (await lagOf("n3")) === 0, { timeoutMs: 10_000, what: "n3 to confirm every shipment" });
    const n1s = await c.ownedBy(
      "n1",
      "counter",
      Array.from({ length: 30 }, (_, i) => `m-${i}`),
    );
    c.pause("n3");
    try {
      const local = await c.client("n1").publish(
        n1s.map((id) => ev("counter", id, 2)),
        Consistency.LOCAL,
      );
      assert.deepEqual(
        statuses(local.results),
        n1s.map(() => "ACCEPTED"),
      );
      assert.ok((await lagOf("n3")) > 0, "a frozen replica shows no lag");
    } finally {
      c.resume("n3");
    }
    await waitFor(async () => (await lagOf("n3")) === 0, { timeoutMs: 15_000, what: "n3's lag back to 0 once it resumes" });
  });

  it("times the wait for replicas on the owner and each replica's answers: both replicas frozen under a QUORUM write show as one long wait", async () => {
    const ports = await freePorts(MEMBERS.length);
    const argsOf = Object.fromEntries(MEMBERS.map((id, i) => [id, ["--metrics-port", String(ports[i])]]));
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], argsOf, args: ["--partitions", "64"] });
    const scrape = (id: string): Promise<Scrape> => Scrape.of(c.node(id).metricsAddress);
    const wait = "twinmesh_replication_wait_seconds";
    const applied = "twinmesh_replication_apply_duration_seconds_count";
    const n1s = await c.ownedBy(
      "n1",
      "counter",
      Array.from({ length: 30 }, (_, i) => `w-${i}`),
    );
    assert.ok(n1s.length > 0, "n1 owns none of 30 twins");
    // Every group a cluster node writes is timed, a group answered at once as 0.
    const first = await c.client("n1").publish(
      n1s.map((id) => ev("counter", id, 1)),
      Consistency.LOCAL,
    );
    assert.deepEqual(new Set(statuses(first.results)), new Set(["ACCEPTED"]));
    const before = await scrape("n1");
    assert.ok(before.count(`${wait}_count`) > 0, "n1 timed none of its groups");
    const slowBefore = before.count(`${wait}_count`) - before.count(`${wait}_bucket`, { le: "0.25" });
    const replicasBefore = await Promise.all(["n2", "n3"].map(async (id) => (await scrape(id)).count(applied)));

    // Both replicas frozen: a QUORUM write on n1 waits until one answers. They are held for 400 ms
    // (less than the failure detector's 1 s, so neither is marked down) after n1 shows the
    // shipments unconfirmed, which it does only once the group is written.
    c.pause("n2");
    c.pause("n3");
    let heldMs = 0;
    let publishing: Promise<string[]> | undefined;
    try {
      publishing = c
        .client("n1")
        .publish(
          n1s.map((id) => ev("counter", id, 2)),
          Consistency.QUORUM,
        )
        .then((res) => statuses(res.results));
      await waitFor(async () => ((await scrape("n1")).value("twinmesh_replication_lag", { peer: "n2" }) ?? 0) > 0 || undefined, {
        timeoutMs: 5_000,
        what: "n1's write to wait for n2",
      });
      const shippedAt = performance.now();
      await new Promise((resolve) => setTimeout(resolve, 400));
      heldMs = performance.now() - shippedAt;
    } finally {
      c.resume("n2");
      c.resume("n3");
    }
    assert.deepEqual(
      await publishing,
      n1s.map(() => "ACCEPTED"),
    );
    const after = await scrape("n1");
    assert.ok(
      after.count(`${wait}_count`) - after.count(`${wait}_bucket`, { le: "0.25" }) > slowBefore,
      "the wait for two frozen replicas is not among n1's waits over 0.25 s",
    );
    const waited = after.count(`${wait}_sum`) - before.count(`${wait}_sum`);
    assert.ok(waited >= heldMs / 1000, `n1's replication waits grew by ${waited} s while its replicas were held for ${heldMs} ms`);
    await waitFor(
      async () => {
        const now = await Promise.all(["n2", "n3"].map(async (id) => (await scrape(id)).count(applied)));
        return now.every((n, i) => n > (replicasBefore[i] ?? 0)) || undefined;
      },
      { timeoutMs: 10_000, what: "n2 and n3 to count the Replicate requests they answered" },
    );
  });

  it("counts no catch-up when a killed member's partitions fail over to survivors that were level with it, and counts the restarted member's", async () => {
    const ports = await freePorts(MEMBERS.length);
    const argsOf = Object.fromEntries(MEMBERS.map((id, i) => [id, ["--metrics-port", String(ports[i])]]));
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], argsOf, args: ["--partitions", "64"] });
    const scrape = (id: string): Promise<Scrape> => Scrape.of(c.node(id).metricsAddress);
    const sent = await c.client("n2").publish(
      Array.from({ length: 60 }, (_, i) => ev("counter", `f-${i}`, 1)),
      Consistency.ALL,
    );
    assert.deepEqual(new Set(statuses(sent.results)), new Set(["ACCEPTED"]));
    const before = await Promise.all(["n2", "n3"].map(async (id) => (await scrape(id)).count("twinmesh_replication_catch_ups_total")));
    const ownedByN1 = (await scrape("n1")).value("twinmesh_cluster_partitions_owned") ?? 0;
    assert.ok(ownedByN1 > 0, "n1 owns no partition");

    // Every copy holds every write (ALL): n2 and n3 take n1's partitions, each new owner beginning
    // its epoch where the other survivor's copy stands.
    await c.kill("n1");
    await c.waitForState("n1", MemberState.DOWN);
    await waitFor(
      async () => {
        const owned = await Promise.all(["n2", "n3"].map(async (id) => (await scrape(id)).value("twinmesh_cluster_partitions_owned") ?? 0));
        return owned.reduce((sum, n) => sum + n, 0) === 64 || undefined;
      },
      { timeoutMs: 15_000, what: "n2 and n3 to own every partition" },
    );
    const { twin } = await c.client("n3").getTwin({ kind: "counter", id: "f-0" });
    assert.ok(twin !== undefined, "f-0 after the failover");
    // Settled: nothing on its way to either survivor, and each has confirmed the other's shipments.
    const settled = await waitFor(
      async () => {
        const all = await Promise.all(["n2", "n3"].map((id) => scrape(id)));
        const moving = all.some((s) => (s.value("twinmesh_cluster_handoff_partitions", { phase: "catching_up" }) ?? 0) > 0);
        const behind = all.some((s, i) => (s.value("twinmesh_replication_lag", { peer: i === 0 ? "n3" : "n2" }) ?? 0) > 0);
        return moving || behind ? undefined : all;
      },
      { timeoutMs: 15_000, what: "n2 and n3 to settle after the failover" },
    );
    assert.ok(settled);
    assert.deepEqual(
      settled.map((s) => s.count("twinmesh_replication_catch_ups_total")),
      before,
      "catch-ups of n2 and n3 during the failover",
    );

    // n1 comes back behind the new epochs of exactly the partitions it owned, and fetches those
    // (the shipments it missed: the new owners still keep them), before it owns them again.
    await c.startMember("n1");
    await c.caughtUp("n1", 30_000);
    const n1 = await scrape("n1");
    assert.equal(n1.count("twinmesh_replication_catch_ups_total"), ownedByN1, "n1's catch-ups");
    assert.equal(n1.count("twinmesh_replication_range_copies_total"), 0, "n1's whole-range copies");
  });
});
