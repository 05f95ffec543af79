import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState } from "../../client/index.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { counterVia } from "../harness/counters.js";
import { describeOutcome, ev, outcomes } from "../harness/events.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

// A frozen owner (SIGSTOP) is marked down by its peers, which take its partitions under newer
// epochs and acknowledge writes. Its own failure detector credits peers with its stall, so once
// it runs again it sees no peer leave and come back; it must still not serve the copies it held
// before the freeze, which lack those writes.
describe("an owner that stalled long enough to be taken for dead", function () {
  this.timeout(120_000);
  const t = useTestScope();

  it("serves no read from its pre-stall copies once it runs again: each read through it either has the writes acknowledged meanwhile or is refused retryably", async () => {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    const ids = (
      await c.ownedBy(
        "n3",
        "counter",
        Array.from({ length: 120 }, (_, i) => `so-${i}`),
      )
    ).slice(0, 8);
    assert.ok(ids.length >= 4, "too few counters owned by n3");
    const n1 = c.client("n1");
    const first = await n1.publish(
      ids.map((id) => ev("counter", id, 1, { v: 1 })),
      Consistency.QUORUM,
    );
    assert.deepEqual(
      outcomes(first.results).map(describeOutcome),
      ids.map(() => "ACCEPTED"),
    );

    c.pause("n3");
    await c.waitForState("n3", MemberState.DOWN, 10_000);
    // Seq 2 of every counter, acknowledged at QUORUM by the nodes that took n3's partitions.
    const pending = new Set(ids);
    await waitFor(
      async () => {
        const batch = [...pending];
        const res = await n1.publish(
          batch.map((id) => ev("counter", id, 2, { v: 2 })),
          Consistency.QUORUM,
        );
        outcomes(res.results).forEach((o, i) => {
          if (o.status === "ACCEPTED" || o.status === "DUPLICATE") pending.delete(batch[i] as string);
        });
        return pending.size === 0 || undefined;
      },
      { timeoutMs: 20_000, what: "seq 2 of every counter acknowledged while n3 is frozen" },
    );

    c.resume("n3");
    const n3 = c.client("n3", 5_000);
    const stale: string[] = [];
    let served = 0;
    // For 3 s after it runs again, every read through n3 and n2 is either current or refused.
    const until = Date.now() + 3_000;
    while (Date.now() < until) {
      for (const [node, client] of [
        ["n3", n3],
        ["n2", c.client("n2", 5_000)],
      ] as const) {
        for (const id of ids) {
          const read = await counterVia(client, id);
          if (typeof read === "string") continue; // refused (retryably) while n3 checks its copies
          served++;
          if (read.lastSeq !== 2) stale.push(`${node} read ${id} at seq ${read.lastSeq} from ${read.owner}`);
        }
      }
    }
    assert.deepEqual(stale.slice(0, 10), [], `${stale.length} stale reads after n3 resumed`);
    // And it serves again, with every write.
    for (const client of [n3, c.client("n1"), c.client("n2")]) {
      for (const id of ids) {
        const read = await waitFor(
          async () => {
            const r = await counterVia(client, id);
            return typeof r === "string" ? undefined : r;
          },
          { timeoutMs: 20_000, what: `${id} readable` },
        );
        assert.equal(read?.lastSeq, 2, `${id} lost the write acknowledged while n3 was frozen`);
      }
    }
    assert.ok(served > 0, "no read was served during the 3 s after n3 resumed");
  });
});
