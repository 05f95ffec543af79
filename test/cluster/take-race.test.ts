import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState } from "../../client/index.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { assertAllAcked, range } from "../harness/counters.js";
import { SeqWriter } from "../harness/seq-writer.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"] as const;

describe("a node frozen while it takes its partitions back (take-race)", function () {
  this.timeout(120_000);
  const t = useTestScope();

  // n2 restarts, catches up, and reads where its partitions' copies stand to take them back; it
  // freezes right then (a failpoint: a stalled VM, a long GC pause). n1 and n3 take its
  // partitions again and acknowledge writes at QUORUM. n2 resumes with what it read before the
  // freeze: the epoch it computes from it is of the same round as the ones n1 began, and above
  // n1's (its member index is higher). Before claims, n2 began it and served, and the copies
  // followed the numerically newer epoch, giving up what n1 acknowledged.
  it("loses no seq acknowledged at QUORUM by the nodes that took the partitions while it was frozen", async () => {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    const live = c.liveClients(5_000);
    const ids = range(120).map((i) => `tr-${i}`);
    const writer = new SeqWriter({ kind: "counter", ids, clients: live, consistency: Consistency.QUORUM, maxAttempts: 400 });
    const n2Twins = await c.ownedBy("n2", "counter", ids);
    assert.ok(n2Twins.length > 10, `n2 owns ${n2Twins.length} of the twins: too few to tell`);
    await writer.run({ untilSeq: 2 });
    assert.equal(writer.failure?.message, undefined, "the first load failed");
    await c.kill("n2");
    await writer.run({ untilSeq: 4 });
    assert.equal(writer.failure?.message, undefined, "the load without n2 failed");

    const n2 = await c.startMember("n2", { env: { TWINMESH_FAILPOINTS: "freeze-before-claim" }, logLevel: "info" });
    // The failpoint writes its line just before it stops the process: a pause sent in between
    // would be undone by the resume below, and the failpoint would then stop n2 for good.
    await waitFor(() => (/failpoint freeze-before-claim: frozen/.test(n2.output()) && n2.stopped) || undefined, {
      timeoutMs: 30_000,
      what: "n2 to freeze as it takes its partitions back",
    });
    c.pause("n2"); // already frozen: the harness resumes it at the end
    await c.waitForState("n2", MemberState.DOWN, 10_000);
    // n1 and n3 take n2's partitions again: the twins they own are written at QUORUM.
    await writer.run({ untilSeq: 7 });
    assert.equal(writer.failure?.message, undefined, "the load while n2 was frozen failed");

    c.resume("n2");
    await writer.run({ untilSeq: 9 });
    assert.equal(writer.failure?.message, undefined, "the load after n2 resumed failed");
    await c.formed(30_000);
    await assertAllAcked(c, MEMBERS, writer, "after n2 resumed from its freeze");
  });
});
