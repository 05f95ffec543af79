import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState } from "../../client/index.js";
import type { SinkState } from "../fixtures/relay-twin.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { describeOutcome, ev, outcomes } from "../harness/events.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

// A write that only its owner holds can be lost with it; a client's retry of it is then applied
// again on the new owner, which sends its messages again and numbers them anew. Had the first
// copy of a message left, its receiver would apply it twice, or drop another message that the
// new owner gave the same id. So a message leaves only once its sending write is on a majority
// of its partition's copies, whatever consistency the write was acknowledged at.
describe("messages between twins leave only with their sending write on a majority of copies", function () {
  this.timeout(120_000);
  const t = useTestScope();

  it("holds a message sent by a write only its owner has, and delivers it once the write reaches a majority", async () => {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    const n1 = c.client("n1");
    const ids = Array.from({ length: 60 }, (_, i) => `md-${i}`);
    const [relay] = await c.ownedBy("n1", "relay", ids);
    const [sink] = await c.ownedBy("n1", "sink", ids);
    assert.ok(relay !== undefined && sink !== undefined, "no relay or sink owned by n1");
    const send = (seq: number) => ev("relay", relay, seq, {}, { attributes: { to: sink } });
    const sinkState = async (): Promise<SinkState | undefined> => (await n1.getTwin({ kind: "sink", id: sink })).twin?.state as SinkState | undefined;

    assert.deepEqual(outcomes((await n1.publish([send(1)], Consistency.QUORUM)).results).map(describeOutcome), ["ACCEPTED"]);
    await waitFor(async () => ((await sinkState())?.received ?? 0) >= 1 || undefined, { timeoutMs: 20_000, what: "the first message to reach the sink" });

    // Both replicas freeze: n1 acknowledges a LOCAL write that only it holds.
    c.pause("n2");
    c.pause("n3");
    await c.waitForState("n2", MemberState.DOWN, 10_000);
    await c.waitForState("n3", MemberState.DOWN, 10_000);
    assert.deepEqual(outcomes((await n1.publish([send(2)], Consistency.LOCAL)).results).map(describeOutcome), ["ACCEPTED"]);
    // The node says it holds the message back (NodeStatus outbox.held) once the write fell short.
    await waitFor(async () => ((await n1.getNodeStatus()).outbox?.held ?? 0n) >= 1n || undefined, {
      timeoutMs: 10_000,
      what: "n1 to hold the message of a write only it has",
    });
    assert.deepEqual((await sinkState())?.seen, [`${relay}#1`], "a message left while its sending write was on the owner alone");

    c.resume("n2");
    c.resume("n3");
    const state = await waitFor(
      async () => {
        const now = await sinkState();
        return (now?.received ?? 0) >= 2 ? now : undefined;
      },
      { timeoutMs: 30_000, what: "the held message to reach the sink once the replicas are back" },
    );
    assert.deepEqual(state?.seen, [`${relay}#1`, `${relay}#2`]);
    assert.equal((await n1.getNodeStatus()).outbox?.held, 0n, "a delivered message is still counted held");
  });
});
