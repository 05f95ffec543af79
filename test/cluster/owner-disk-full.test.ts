import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState, type TwinmeshClient } from "../../client/index.js";
import { HealthCheckResponse_ServingStatus as Serving } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { BLOB_BYTES } from "../fixtures/blob-twin.js";
import { blobVia } from "../harness/blob-reads.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { describeOutcome, type EventInit, ev, type Outcome, outcomes } from "../harness/events.js";
import { useTestScope } from "../harness/test-scope.js";
import { fillLeaving, mountTmpfs } from "../harness/tmpfs.js";
import { waitFor } from "../harness/wait-for.js";

const BLOB = fileURLToPath(new URL("../fixtures/blob-twin.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"] as const;
/** Free space left on n3's tmpfs once the filler is written: a few hundred blob writes. */
const LEFT_BYTES = 4 * 1024 * 1024;

describe("a cluster of three nodes whose owner's disk is full (owner-disk-full)", function () {
  this.timeout(90_000);
  const t = useTestScope();

  it("moves the partitions of a node whose disk is full to the next copies, which accept QUORUM for its twins, and gives them back once space returns: every acknowledged seq is there once", async function () {
    const mountPoint = mountTmpfs(t, this, "64m");
    const n3Dir = join(mountPoint, "n3");
    mkdirSync(n3Dir);
    const c = await ClusterHarness.start(t, {
      size: 3,
      twins: [BLOB],
      args: ["--replication-factor", "3", "--partitions", "32"],
      dataDirOf: { n3: n3Dir },
    });
    const clients = new Map(MEMBERS.map((id) => [id as string, c.client(id, 10_000)]));
    const client = (id: string): TwinmeshClient => clients.get(id) as TwinmeshClient;

    // Twins n3 owns: its own commits fill its disk. `ids` are written in every step; the filler
    // twins once each.
    const byN3 = await c.ownedBy(
      "n3",
      "blob",
      Array.from({ length: 2_000 }, (_, i) => `o-${i}`),
    );
    const ids = byN3.splice(0, 8);
    const sent = new Map<string, number>();
    /** Per twin, the seqs acknowledged (ACCEPTED, or DUPLICATE for the retry of one refused before). */
    const acked = new Map<string, Set<number>>();
    const send = (id: string): EventInit => {
      const seq = (sent.get(id) ?? 0) + 1;
      sent.set(id, seq);
      return ev("blob", id, seq);
    };
    const record = (events: readonly EventInit[], results: readonly Outcome[]): void => {
      results.forEach((o, i) => {
        const id = (events[i] as EventInit).sourceId as string;
        if (!acked.has(id)) acked.set(id, new Set());
        if (o.status === "ACCEPTED" || o.status === "DUPLICATE") acked.get(id)?.add(Number((events[i] as EventInit).seq));
      });
    };
    /** Publishes `events` at QUORUM through `via`, retrying the retryable refusals with the same seqs for `ms` at most. */
    const publishUntilAcked = async (via: string, events: readonly EventInit[], ms: number, what: string): Promise<void> => {
      let open = events.map((_, i) => i);
      const last = new Array<Outcome>(events.length);
      const deadline = Date.now() + ms;
      while (open.length > 0 && Date.now() < deadline) {
        const batch = open.map((i) => events[i] as EventInit);
        const results = outcomes((await client(via).publish(batch, Consistency.QUORUM)).results);
        results.forEach((o, k) => {
          last[open[k] as number] = o;
        });
        record(batch, results);
        open = open.filter((_, k) => results[k]?.status === "REJECTED" && results[k]?.retryable === true);
        if (open.length > 0) await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(
        last.map((o) => (o.status === "DUPLICATE" ? "ACCEPTED" : describeOutcome(o))),
        events.map(() => "ACCEPTED"),
        what,
      );
    };
    /** The owner `via` reads a twin from, or undefined while it cannot read it. */
    const ownerVia = async (via: string, id: string): Promise<string | undefined> => {
      const read = await blobVia(client(via), id);
      return read.startsWith("{") ? (JSON.parse(read) as { owner?: string }).owner : undefined;
    };
    const n3Health = async (): Promise<Serving> => (await client("n3").health()).status;
    await publishUntilAcked("n1", ids.map(send), 10_000, "the first round, n3 healthy");

    // Leave n3 a few MiB, then write n3's twins until its disk refuses. A round whose commit n3's
    // disk refused is retried with the same seqs below, once its partitions have moved.
    const filler = fillLeaving(mountPoint, LEFT_BYTES);
    const refused: EventInit[] = [];
    let rounds = 0;
    for (; rounds < 120 && (await n3Health()) === Serving.SERVING; rounds++) {
      const events = byN3.splice(0, 8).map(send);
      const results = outcomes((await client(MEMBERS[rounds % 3] as string).publish(events, Consistency.QUORUM)).results);
      record(events, results);
      results.forEach((o, i) => {
        if (o.status === "REJECTED") {
          assert.equal(o.retryable, true, `filling n3's disk, round ${rounds}: ${describeOutcome(o)}`);
          refused.push(events[i] as EventInit);
        }
      });
    }
    assert.equal(await n3Health(), Serving.NOT_SERVING, `n3 still says SERVING after ${rounds} rounds of 8 × 20 KB into its last ${LEFT_BYTES} bytes`);

    // n3's twins are served by the next copies: QUORUM is accepted for them through every node,
    // the refused rounds too (each seq once), and n1 sees n3 DISK_FULL, naming the problem.
    await publishUntilAcked("n1", ids.map(send), 15_000, "n3's twins through n1 once n3's disk is full");
    await publishUntilAcked("n3", ids.map(send), 10_000, "n3's twins through n3 itself, which forwards them");
    await publishUntilAcked("n2", refused, 10_000, "the events n3's full disk refused, retried with their seqs");
    const seen = (await client("n1").describeCluster()).members.find((m) => m.nodeId === "n3");
    assert.equal(MemberState[seen?.state ?? 0], "DISK_FULL", `n3 as n1 sees it: ${JSON.stringify(seen?.problem)}`);
    assert.match(seen?.problem ?? "", /disk/i);
    assert.notEqual(await ownerVia("n1", ids[0] as string), "n3", "n3 still owns its twins with a full disk");

    // Space returns: n3 serves again and takes its partitions back, from the copies that served
    // them meanwhile, and the load goes on through it.
    rmSync(filler);
    await waitFor(async () => (await n3Health()) === Serving.SERVING, { timeoutMs: 10_000, what: "n3 to say SERVING once space returned" });
    await waitFor(async () => (await ownerVia("n2", ids[0] as string)) === "n3" || undefined, {
      timeoutMs: 20_000,
      what: "n3 to own its twins again",
    });
    await publishUntilAcked("n3", ids.map(send), 10_000, "n3's twins through n3 once it owns them again");

    // Every acknowledged seq is there once, through every node, once n3 serves every partition again.
    await waitFor(
      async () => {
        for (const id of acked.keys()) if ((await ownerVia("n1", id)) !== "n3") return undefined;
        return true;
      },
      { timeoutMs: 20_000, what: "n3 to own every twin it wrote again" },
    );
    const wrong: string[] = [];
    for (const [id, seqs] of acked) {
      assert.equal(seqs.size, sent.get(id), `${id}: some seq was never acknowledged`);
      const want = JSON.stringify({ owner: "n3", n: seqs.size, lastSeq: Math.max(...seqs), blobBytes: BLOB_BYTES + String(Math.max(...seqs)).length });
      for (const via of MEMBERS) {
        const got = await blobVia(client(via), id);
        if (got !== want) wrong.push(`${id} through ${via}: got ${got}, want ${want}`);
      }
    }
    assert.equal(wrong.length, 0, `${wrong.length} reads differ:\n  ${wrong.slice(0, 10).join("\n  ")}`);
  });
});
