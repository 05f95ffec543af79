import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Consistency, TwinmeshClient } from "../../client/index.js";
import { HealthCheckResponse_ServingStatus as Serving } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { blobVia } from "../harness/blob-reads.js";
import { runCli } from "../harness/cli-process.js";
import { ClusterHarness, freePorts } from "../harness/cluster-harness.js";
import { describeOutcome, type EventInit, ev, type Outcome, outcomes } from "../harness/events.js";
import { NodeProcess } from "../harness/node-process.js";
import { Scrape } from "../harness/prometheus-text.js";
import { useTestScope } from "../harness/test-scope.js";
import { fillLeaving, mountTmpfs } from "../harness/tmpfs.js";
import { waitFor } from "../harness/wait-for.js";

const BLOB = fileURLToPath(new URL("../fixtures/blob-twin.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"] as const;
/** Free space left on n3's tmpfs once the filler is written: a few hundred blob writes. */
const LEFT_BYTES = 4 * 1024 * 1024;

describe("a cluster of three nodes whose replica's disk is full (replica-disk-full)", function () {
  this.timeout(60_000);
  const t = useTestScope();

  it("keeps accepting QUORUM through every node with 2 of 3 copies, refuses ALL retryably, reports n3 NOT_SERVING with a disk problem, and once space returns n3 catches up: every acknowledged seq is there once, on n3 too", async function () {
    // Unmounted after the members stop (the scope runs its cleanups in reverse).
    const mountPoint = mountTmpfs(t, this, "64m");
    const n3Dir = join(mountPoint, "n3");
    mkdirSync(n3Dir);
    const ports = await freePorts(MEMBERS.length);
    const argsOf = Object.fromEntries(MEMBERS.map((id, i) => [id, ["--metrics-port", String(ports[i])]]));
    const c = await ClusterHarness.start(t, {
      size: 3,
      twins: [BLOB],
      args: ["--replication-factor", "3", "--partitions", "32"],
      argsOf,
      dataDirOf: { n3: n3Dir },
    });
    const clients = new Map(MEMBERS.map((id) => [id as string, c.client(id, 10_000)]));
    const client = (id: string): TwinmeshClient => clients.get(id) as TwinmeshClient;

    // Twins n1 and n2 own: n3 only replicates them (RF=3), so its disk takes every write of theirs.
    // The disk is filled with twins written once each, so the shipment n3's disk refused holds
    // the last write of its twins, which nothing later rewrites (a lost one stays lost); `ids`
    // are written in every later step.
    const candidates = Array.from({ length: 2_000 }, (_, i) => `d-${i}`);
    const byN1 = await c.ownedBy("n1", "blob", candidates);
    const byN2 = await c.ownedBy("n2", "blob", candidates);
    const ids = [...byN1.splice(0, 4), ...byN2.splice(0, 4)];
    /** Per twin: the last seq sent, and the seqs acknowledged (ACCEPTED, or DUPLICATE for the retry of a refused one). */
    const sent = new Map<string, number>();
    const acked = new Map<string, Set<number>>();
    const send = (id: string): EventInit => {
      const seq = (sent.get(id) ?? 0) + 1;
      sent.set(id, seq);
      return ev("blob", id, seq);
    };
    const nextRound = (): EventInit[] => ids.map(send);
    const fillRound = (): EventInit[] => [...byN1.splice(0, 4), ...byN2.splice(0, 4)].map(send);
    const record = (events: readonly EventInit[], results: readonly Outcome[]): void => {
      results.forEach((o, i) => {
        const e = events[i] as EventInit;
        const id = e.sourceId as string;
        if (!acked.has(id)) acked.set(id, new Set());
        if (o.status === "ACCEPTED" || o.status === "DUPLICATE") acked.get(id)?.add(Number(e.seq));
      });
    };

    // Leave n3 a few MiB, then write until its disk refuses.
    const filler = fillLeaving(mountPoint, LEFT_BYTES);
    const n3Health = async (): Promise<Serving> => (await client("n3").health()).status;
    let rounds = 0;
    for (; rounds < 120 && (await n3Health()) === Serving.SERVING; rounds++) {
      const events = fillRound();
      const via = MEMBERS[rounds % 3] as string;
      const results = outcomes((await client(via).publish(events, Consistency.QUORUM)).results);
      record(events, results);
      assert.deepEqual(
        results.map(describeOutcome),
        events.map(() => "ACCEPTED"),
        `QUORUM round ${rounds} through ${via}, filling n3's disk`,
      );
    }
    assert.equal(await n3Health(), Serving.NOT_SERVING, `n3 still says SERVING after ${rounds} rounds of 8 × 20 KB into its last ${LEFT_BYTES} bytes`);

    // What an operator sees on n3: `twinmesh ring` names the problem on its own line.
    const ring = JSON.parse((await runCli(["ring", "--json", "--address", c.members[2]?.address ?? ""])).stdout) as {
      nodes: { nodeId: string; state: string; problem?: string }[];
    };
    const self = ring.nodes.find((n) => n.nodeId === "n3");
    assert.match(self?.problem ?? "", /disk/i, `twinmesh ring through n3 says nothing of its disk: ${JSON.stringify(ring.nodes)}`);

    // QUORUM through every node, n3 included, is still accepted: the owner and the healthy replica.
    for (const via of MEMBERS) {
      const events = nextRound();
      const results = outcomes((await client(via).publish(events, Consistency.QUORUM)).results);
      record(events, results);
      assert.deepEqual(
        results.map(describeOutcome),
        events.map(() => "ACCEPTED"),
        `QUORUM through ${via} with n3's disk full`,
      );
    }
    // ALL cannot be: refused, retryably, for lack of copies.
    const all = nextRound();
    const refused = outcomes((await client("n1").publish(all, Consistency.ALL)).results);
    for (const [k, o] of refused.entries()) {
      assert.deepEqual([o.status, o.retryable], ["REJECTED", true], `ALL with n3's disk full, event ${k}: ${describeOutcome(o)}`);
      assert.ok(["REPLICATION_TIMEOUT", "NOT_ENOUGH_REPLICAS"].includes(o.reason), `ALL with n3's disk full, event ${k}: ${describeOutcome(o)}`);
    }

    // Space returns: n3 serves again by itself, and the refused ALL events, retried with the same
    // seqs, are applied once (DUPLICATE when the owner kept them, ACCEPTED when not).
    rmSync(filler);
    await waitFor(async () => (await n3Health()) === Serving.SERVING, { timeoutMs: 10_000, what: "n3 to say SERVING once space returned" });
    let open = all.map((_, i) => i);
    const final = new Array<Outcome>(all.length);
    const deadline = Date.now() + 20_000;
    while (open.length > 0 && Date.now() < deadline) {
      const events = open.map((i) => all[i] as EventInit);
      const results = outcomes((await client("n2").publish(events, Consistency.ALL)).results);
      results.forEach((o, k) => {
        final[open[k] as number] = o;
      });
      open = open.filter((_, k) => results[k]?.status === "REJECTED" && results[k]?.retryable === true);
    }
    assert.deepEqual(
      final.map((o) => (o.status === "DUPLICATE" ? "ACCEPTED" : describeOutcome(o))),
      all.map(() => "ACCEPTED"),
      "the refused ALL events retried once n3's disk has room",
    );
    record(all, final);

    // n3 confirms every shipment of n1 and n2 (the lag they report for it is 0), and reads the same.
    const lagOfN3 = async (): Promise<number> => {
      const scrapes = await Promise.all(["n1", "n2"].map((id) => Scrape.of(c.node(id).metricsAddress)));
      return scrapes.reduce((sum, s) => sum + (s.value("twinmesh_replication_lag", { peer: "n3" }) ?? 0), 0);
    };
    await waitFor(async () => (await lagOfN3()) === 0, { timeoutMs: 10_000, what: "n1 and n2 to see n3 confirm every shipment" });
    const want = async (owner: (id: string) => Promise<string>): Promise<Map<string, string>> => {
      const out = new Map<string, string>();
      for (const [id, seqs] of acked)
        out.set(id, JSON.stringify({ owner: await owner(id), n: seqs.size, lastSeq: Math.max(...seqs), blobBytes: 20_000 + String(Math.max(...seqs)).length }));
      return out;
    };
    const assertReads = async (via: readonly string[], expected: ReadonlyMap<string, string>, what: string): Promise<void> => {
      const wrong: string[] = [];
      for (const node of via) {
        const reads = await Promise.all([...expected.keys()].map((id) => blobVia(client(node), id)));
        [...expected].forEach(([id, w], k) => {
          if (reads[k] !== w) wrong.push(`${id} through ${node}: got ${reads[k]}, want ${w}`);
        });
      }
      assert.equal(wrong.length, 0, `${what}:\n  ${wrong.slice(0, 10).join("\n  ")}`);
    };
    for (const [id, seqs] of acked) assert.equal(seqs.size, sent.get(id), `${id}: some seq was never acknowledged`);
    await assertReads(MEMBERS, await want((id) => c.ownerOf("blob", id)), "after n3's disk had room again");

    // n3's own copy is whole: with the cluster gone, n3's data directory alone, started as a
    // one-node cluster, reads every twin the same.
    await Promise.all(MEMBERS.map((id) => c.kill(id)));
    const alone = await NodeProcess.start({ twins: [BLOB], dataDir: n3Dir, nodeId: "n3", args: ["--partitions", "32"] });
    t.defer(() => alone.kill());
    const aloneClient = new TwinmeshClient(alone.address, { deadlineMs: 10_000 });
    t.defer(() => aloneClient.close());
    clients.set("alone", aloneClient);
    await assertReads(["alone"], await want(async () => "n3"), "n3's data directory alone, the cluster gone");
  });
});
