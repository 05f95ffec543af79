import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState } from "../../client/index.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { counterVia } from "../harness/counters.js";
import { SeqWriter } from "../harness/seq-writer.js";
import { type TestScope, useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

/**
 * Three nodes, counters owned by n3, and a writer of their seqs through n1 at QUORUM (retrying
 * retryable refusals for up to 20 s per seq) that has had seq 1 of each ACCEPTED.
 */
async function counters(t: TestScope): Promise<{ c: ClusterHarness; ids: string[]; writer: SeqWriter }> {
  const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
  const ids = (
    await c.ownedBy(
      "n3",
      "counter",
      Array.from({ length: 120 }, (_, i) => `so-${i}`),
    )
  ).slice(0, 8);
  assert.ok(ids.length >= 4, "too few counters owned by n3");
  const writer = new SeqWriter({ kind: "counter", ids, clients: () => [c.client("n1")], consistency: Consistency.QUORUM, maxAttempts: 200 });
  await writeAll(writer, 1);
  assert.deepEqual(Object.fromEntries(writer.answers), { ACCEPTED: ids.length });
  return { c, ids, writer };
}

/** Seq `seq` of every counter, acknowledged. */
async function writeAll(writer: SeqWriter, seq: number): Promise<void> {
  await writer.run({ untilSeq: seq });
  assert.equal(writer.failure, undefined, `seq ${seq} of every counter acknowledged: ${writer.failure?.message}`);
}

/**
 * Reads every counter through n3 and n2 for `ms`: each read served must be at seq `seq`. Then
 * every node serves each counter at that seq.
 */
async function assertNoStaleReads(c: ClusterHarness, ids: readonly string[], seq: number, ms: number): Promise<void> {
  const stale: string[] = [];
  let served = 0;
  const until = Date.now() + ms;
  while (Date.now() < until) {
    for (const node of ["n3", "n2"]) {
      for (const id of ids) {
        const read = await counterVia(c.client(node, 5_000), id);
        if (typeof read === "string") continue; // refused (retryably) while n3 checks its copies
        served++;
        if (read.lastSeq !== seq) stale.push(`${node} read ${id} at seq ${read.lastSeq} from ${read.owner}`);
      }
    }
  }
  assert.deepEqual(stale.slice(0, 10), [], `${stale.length} stale reads after n3 resumed`);
  for (const node of ["n3", "n1", "n2"]) {
    for (const id of ids) {
      const read = await waitFor(
        async () => {
          const r = await counterVia(c.client(node, 5_000), id);
          return typeof r === "string" ? undefined : r;
        },
        { timeoutMs: 20_000, what: `${id} readable through ${node}` },
      );
      assert.equal(read?.lastSeq, seq, `${id} lost a write acknowledged while n3 was frozen`);
    }
  }
  assert.ok(served > 0, `no read was served in the ${ms} ms after n3 resumed`);
}

// A frozen owner (SIGSTOP) is marked down by its peers, which take its partitions under newer
// epochs and acknowledge writes. Its own failure detector credits peers with its stall, so once
// it runs again it sees no peer leave and come back; it must still not serve the copies it held
// before the freeze, which lack those writes.
describe("an owner that stalled long enough to be taken for dead", function () {
  this.timeout(120_000);
  const t = useTestScope();

  it("serves no read from its pre-stall copies once it runs again: each read through it either has the writes acknowledged meanwhile or is refused retryably", async () => {
    const { c, ids, writer } = await counters(t);
    c.pause("n3");
    await c.waitForState("n3", MemberState.DOWN, 10_000);
    await writeAll(writer, 2);
    c.resume("n3");
    await assertNoStaleReads(c, ids, 2, 3_000);
  });

  it("serves none either when it freezes again while it checks its copies or takes its partitions back", async () => {
    const { c, ids, writer } = await counters(t);
    c.pause("n3");
    await c.waitForState("n3", MemberState.DOWN, 10_000);
    await writeAll(writer, 2);
    c.resume("n3");
    // Frozen again as it asks its copies where they stand (or claims the partitions back).
    await new Promise((resolve) => setTimeout(resolve, 30));
    c.pause("n3");
    await c.waitForState("n3", MemberState.DOWN, 10_000);
    await writeAll(writer, 3);
    c.resume("n3");
    await assertNoStaleReads(c, ids, 3, 3_000);
  });
});
