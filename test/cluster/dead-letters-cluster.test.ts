import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency, type TwinmeshClient } from "../../client/index.js";
import type { DeadLetter } from "../../proto/gen/twinmesh/v1/dead_letter_pb.js";
import type { SinkState } from "../fixtures/relay-twin.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { describeOutcome, ev, outcomes } from "../harness/events.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const NODES = ["n1", "n2", "n3"] as const;

/** Every dead letter through `client`, following page tokens (`pageSize` 0: the node's default). */
async function allDeadLetters(client: TwinmeshClient, filter = {}, pageSize = 0): Promise<DeadLetter[]> {
  const all: DeadLetter[] = [];
  let pageToken = "";
  for (let pages = 0; pages < 100; pages++) {
    const page = await client.listDeadLetters({ filter, pageSize, pageToken });
    all.push(...page.deadLetters);
    pageToken = page.nextPageToken;
    if (pageToken === "") return all;
  }
  throw new Error("over 100 pages of dead letters");
}

const ids = (letters: readonly DeadLetter[]): string[] => letters.map((d) => d.id);

// A dead letter lives in its sender's partition. Only that partition's owner lists and changes
// it, through the commit pipeline, so its replicas and a later owner hold the same dead letters;
// any node answers for the whole cluster.
describe("dead letters in a cluster: listed through any node, changed on their owner, shipped to its replicas", function () {
  this.timeout(120_000);
  const t = useTestScope();

  it("lists every dead letter once through every node, pages across nodes, and retries and deletes each on its partition's owner", async () => {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    const candidates = Array.from({ length: 90 }, (_, i) => `dlr-${i}`);
    // One sender owned by each node: its dead letter is in a partition that node owns.
    const relays = await Promise.all(NODES.map(async (n) => (await c.ownedBy(n, "relay", candidates))[0] as string));
    assert.ok(relays.every((r) => r !== undefined));
    const sink = "dl-sink-1";
    const sent = await c.client("n1").publish(
      relays.map((r) => ev("relay", r, 1, {}, { attributes: { to: sink, boom: true } })),
      Consistency.QUORUM,
    );
    assert.deepEqual(outcomes(sent.results).map(describeOutcome), ["ACCEPTED", "ACCEPTED", "ACCEPTED"]);
    const listed = await waitFor(
      async () => {
        const letters = await allDeadLetters(c.client("n1"));
        return letters.length >= 3 ? letters : undefined;
      },
      { timeoutMs: 20_000, what: "three dead letters listed through n1" },
    );
    assert.ok(listed);
    assert.deepEqual(listed.map((d) => `${d.fromId}->${d.toId}:${d.reason}`).sort(), relays.map((r) => `${r}->${sink}:HANDLER_FAILED`).sort());
    for (const n of NODES) {
      assert.deepEqual(ids(await allDeadLetters(c.client(n))), ids(listed), `${n} lists other dead letters than n1`);
      // A page at a time, each page's token continued through the next node.
      const paged: DeadLetter[] = [];
      let pageToken = "";
      for (let i = 0; i < 6; i++) {
        const page = await c.client(NODES[(NODES.indexOf(n) + i) % 3] as string).listDeadLetters({ pageSize: 1, pageToken });
        paged.push(...page.deadLetters);
        pageToken = page.nextPageToken;
        if (pageToken === "") break;
      }
      assert.equal(pageToken, "", "paging did not end");
      assert.deepEqual(ids(paged), ids(listed), `pages of one through the nodes from ${n} differ from the listing`);
      for (const d of listed) assert.deepEqual((await c.client(n).getDeadLetter(d.id)).deadLetter, d, `${n} reads ${d.id} otherwise`);
    }

    // Fixed: the sink applies boom messages now. Two are retried through n3, whichever node owns them.
    await c.client("n2").sendToTwin({ kind: "sink", id: sink, message: { accept: true } });
    const [first, second, third] = listed as [DeadLetter, DeadLetter, DeadLetter];
    const retried = await c.client("n3").retryDeadLetters({ ids: [first.id, second.id] });
    assert.deepEqual([retried.retriedCount, retried.skippedCount], [2n, 0n]);
    const state = await waitFor(
      async () => {
        const s = (await c.client("n1").getTwin({ kind: "sink", id: sink })).twin?.state as SinkState | undefined;
        return (s?.received ?? 0) >= 2 ? s : undefined;
      },
      { timeoutMs: 20_000, what: "the two retried messages to reach the sink" },
    );
    assert.deepEqual(state?.seen.slice().sort(), [`${first.fromId}#1`, `${second.fromId}#1`].sort());
    for (const n of NODES) assert.deepEqual(ids(await allDeadLetters(c.client(n))), [third.id], `${n} still lists a retried dead letter`);
    // All that match, on every owner, through n2.
    const deleted = await c.client("n2").deleteDeadLetters({ all: true, filter: { toId: sink } });
    assert.equal(deleted.deletedCount, 1n);
    for (const n of NODES) assert.deepEqual(await allDeadLetters(c.client(n)), [], `${n} still lists a deleted dead letter`);
    await assert.rejects(c.client("n1").getDeadLetter(third.id), { code: 5 });
    // A partition the cluster does not have: no such dead letter, whichever node is asked.
    await assert.rejects(c.client("n2").getDeadLetter("999-1"), { code: 5 });
    assert.equal((await c.client("n3").deleteDeadLetters({ ids: ["999-1", third.id] })).deletedCount, 0n);
    await assert.rejects(c.client("n3").retryDeadLetters({ ids: ["999-1"] }), { code: 5 });
  });

  it("keeps a retry acknowledged at QUORUM through a kill -9 of the owner: the new owner neither lists the dead letter again nor loses its message", async () => {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    const [relay] = await c.ownedBy(
      "n3",
      "relay",
      Array.from({ length: 60 }, (_, i) => `dlk-${i}`),
    );
    assert.ok(relay !== undefined, "no relay owned by n3");
    const sink = "dl-sink-2";
    const sent = await c.client("n1").publish([ev("relay", relay, 1, {}, { attributes: { to: sink, boom: true } })], Consistency.QUORUM);
    assert.deepEqual(outcomes(sent.results).map(describeOutcome), ["ACCEPTED"]);
    const [letter] =
      (await waitFor(
        async () => {
          const letters = await allDeadLetters(c.client("n1"));
          return letters.length >= 1 ? letters : undefined;
        },
        { timeoutMs: 20_000, what: "the dead letter" },
      )) ?? [];
    assert.ok(letter);
    await c.client("n1").sendToTwin({ kind: "sink", id: sink, message: { accept: true } });
    const retried = await c.client("n1").retryDeadLetters({ ids: [letter.id] });
    assert.equal(retried.retriedCount, 1n);
    // The owner crashes right after answering: its retry is on a majority of the partition's copies.
    await c.kill("n3");
    const state = await waitFor(
      async () => {
        const s = (
          await c
            .client("n1")
            .getTwin({ kind: "sink", id: sink })
            .catch(() => undefined)
        )?.twin?.state as SinkState | undefined;
        return (s?.received ?? 0) >= 1 ? s : undefined;
      },
      { timeoutMs: 30_000, what: "the retried message to reach the sink" },
    );
    assert.deepEqual(state?.seen, [`${relay}#1`]);
    // Nothing left to deliver on the survivors, and still one copy of the message.
    for (const n of ["n1", "n2"]) {
      await waitFor(
        async () => {
          const o = (await c.client(n).getNodeStatus()).outbox;
          return o !== undefined && o.queued + o.inflight + o.held === 0n ? true : undefined;
        },
        { timeoutMs: 20_000, what: `${n}'s outbox to be empty` },
      );
    }
    const after = (await c.client("n2").getTwin({ kind: "sink", id: sink })).twin?.state as SinkState | undefined;
    assert.deepEqual(after?.seen, [`${relay}#1`], "the retried message was applied twice across the failover");
    for (const n of ["n1", "n2"]) {
      const letters = await waitFor(() => allDeadLetters(c.client(n)).catch(() => undefined), { timeoutMs: 20_000, what: `a listing through ${n}` });
      assert.deepEqual(letters, [], `${n}: the retried dead letter is back after the failover`);
    }
  });
});
