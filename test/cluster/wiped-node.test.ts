import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState, type TwinmeshClient } from "../../client/index.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { assertAllAcked, counterText, range } from "../harness/counters.js";
import { SeqWriter } from "../harness/seq-writer.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"] as const;
/** Each variant runs this many times (the loss was seen in 2 of 4 manual runs). */
const ROUNDS = Number(process.env.TWINMESH_WIPED_ROUNDS ?? "1");

/** Empties member `id`'s data directory (it is stopped). */
function wipe(c: ClusterHarness, id: string): void {
  const member = c.members.find((m) => m.id === id);
  assert.ok(member !== undefined);
  rmSync(member.dataDir, { recursive: true, force: true });
  mkdirSync(member.dataDir, { recursive: true });
}

describe("a node restarted on a wiped data directory in a cluster of three at replication factor 3 (wiped-node)", function () {
  this.timeout(90_000);
  const t = useTestScope();

  async function start(): Promise<{ c: ClusterHarness; live: () => TwinmeshClient[] }> {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    return { c, live: c.liveClients(5_000) };
  }

  /** The member that is the static owner of the most of `ids`. */
  async function busiest(c: ClusterHarness, ids: readonly string[]): Promise<string> {
    const owned = await Promise.all(MEMBERS.map(async (m) => [m, (await c.ownedBy(m, "counter", ids)).length] as const));
    owned.sort((a, b) => b[1] - a[1]);
    return (owned[0] as readonly [string, number])[0];
  }

  // Seqs 6..10 are acknowledged at QUORUM by n1 and n2 while n3 is frozen; n1 then loses its disk
  // and n2 freezes. A correct cluster cannot serve those twins until n2 is back. Seen here (info
  // logs): n3 takes partitions counting the answer of n1 while n1 still reports catching up (its
  // GetPartitionStates answer, an empty copy, makes the majority), and n1, once it has caught up
  // from the lagging n3 and its 10 s startup grace is over, takes its own partitions counting
  // itself and n3. Back, n2 follows their newer epochs, is sent their whole key ranges, and gives
  // seqs 6..10 up.
  it("does not let a wiped node and a lagging replica outvote the one copy that holds acknowledged writes", async () => {
    const { c } = await start();
    const live = c.liveClients(5_000);
    const ids = range(200).map((i) => `g-${i}`);
    const writer = new SeqWriter({ kind: "counter", ids, clients: live, consistency: Consistency.QUORUM });
    await writer.run({ untilSeq: 5 });
    assert.equal(writer.failure?.message, undefined, "the first load failed");
    // n3 falls behind: seqs 6..10 are acknowledged by n1 and n2 only.
    c.pause("n3");
    await c.waitForState("n3", MemberState.DOWN);
    await writer.run({ untilSeq: 10 });
    assert.equal(writer.failure?.message, undefined, "the load without n3 failed");
    // n1 loses its disk; n2, the one copy left with seqs 6..10, freezes; n3 comes back.
    await c.kill("n1");
    wipe(c, "n1");
    c.pause("n2");
    c.resume("n3");
    await c.startMember("n1");
    // A correct cluster cannot serve the twins without n2 (the only holder of seqs 6..10 that is
    // not wiped); this one takes them from n3 and the wiped n1. Wait for either, 15 s at most.
    const n3 = c.client("n3", 5_000);
    const takenWithout = await waitFor(
      async () => {
        for (const id of ids.slice(0, 20)) if (/failed/.test(await counterText(n3, id))) return undefined;
        return true;
      },
      { timeoutMs: 15_000, what: "n3 to serve the twins without n2" },
    ).catch(() => false);
    c.resume("n2");
    await c.formed(20_000);
    await assertAllAcked(
      c,
      MEMBERS,
      writer,
      `n1 wiped while n2 alone held seqs 6..10 (n3 ${takenWithout === true ? "served the twins" : "did not serve the twins"} while n2 was frozen)`,
    );
  });

  for (const round of range(ROUNDS, 1)) {
    it(`keeps every seq acknowledged at QUORUM when the owner of the most twins restarts on a wiped data directory (round ${round})`, async () => {
      const { c, live } = await start();
      const ids = range(200).map((i) => `w${round}-${i}`);
      const writer = new SeqWriter({ kind: "counter", ids, clients: live, consistency: Consistency.QUORUM });
      await writer.run({ untilSeq: 5 });
      assert.equal(writer.failure?.message, undefined, "the load failed");
      const victim = await busiest(c, ids);
      await c.kill(victim);
      wipe(c, victim);
      await c.startMember(victim);
      await c.caughtUp(victim, 30_000);
      await assertAllAcked(c, MEMBERS, writer, `after ${victim} restarted on a wiped data directory`);
    });

    it(`keeps every seq acknowledged at QUORUM when a node is wiped and restarted while the load goes on (round ${round})`, async () => {
      const { c, live } = await start();
      const ids = range(200).map((i) => `l${round}-${i}`);
      const writer = new SeqWriter({ kind: "counter", ids, clients: live, consistency: Consistency.QUORUM, maxAttempts: 300 });
      const running = writer.run({ untilSeq: 30 });
      await waitFor(() => writer.failure !== undefined || writer.ackedCount >= 600, { timeoutMs: 30_000, what: "600 seqs acknowledged before the kill" });
      const victim = await busiest(c, ids);
      await c.kill(victim);
      wipe(c, victim);
      await waitFor(() => writer.failure !== undefined || writer.ackedCount >= 1800, { timeoutMs: 30_000, what: "1800 seqs acknowledged without the victim" });
      await c.startMember(victim);
      await c.caughtUp(victim, 30_000);
      await running;
      assert.equal(writer.failure?.message, undefined, "the load failed");
      await assertAllAcked(c, MEMBERS, writer, `after ${victim} restarted on a wiped data directory under load`);
    });

    it(`keeps every seq acknowledged at QUORUM when a second node is wiped after the first caught up, serving its partitions again once a third copy is back (round ${round})`, async () => {
      const { c, live } = await start();
      const ids = range(200).map((i) => `h${round}-${i}`);
      const writer = new SeqWriter({ kind: "counter", ids, clients: live, consistency: Consistency.QUORUM });
      await writer.run({ untilSeq: 5 });
      assert.equal(writer.failure?.message, undefined, "the load failed");
      const victim = await busiest(c, ids);
      const [other, third] = MEMBERS.filter((m) => m !== victim) as [string, string];
      await c.kill(victim);
      wipe(c, victim);
      await c.startMember(victim);
      await c.caughtUp(victim, 30_000);
      // A second node loses its disk while a third is down: one trusted copy (the victim's) and a
      // wiped one are no majority, so the wiped node keeps rebuilding (it cannot tell the victim's
      // copy is the most advanced) until the third is back; then every acknowledged seq is there.
      await c.kill(other);
      await c.kill(third);
      wipe(c, third);
      await c.startMember(third);
      await c.startMember(other);
      await c.caughtUp(third, 30_000);
      await c.caughtUp(other, 30_000);
      await assertAllAcked(c, MEMBERS, writer, `after ${victim} was wiped and caught up, then ${other} died and ${third} was wiped, and both came back`);
    });
  }
});
