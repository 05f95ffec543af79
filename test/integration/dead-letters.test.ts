import assert from "node:assert/strict";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import type { DeadLetter, TwinmeshClient } from "../../client/index.js";
import type { PartitionId } from "../../runtime/index.js";
import { fixtureTwins } from "../fixtures/index.js";
import { MAIL_TWINS } from "../fixtures/mail-twins.js";
import { ev } from "../harness/events.js";
import { clientError } from "../harness/grpc-status.js";
import { type StartedNode, startNode, twinState } from "../harness/start-node.js";
import { type TestScope, useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const TWINS = [...fixtureTwins, ...MAIL_TWINS];

/** A dead letter, readable in assertion output. */
function brief(d: DeadLetter): Record<string, unknown> {
  return { from: `${d.fromKind}/${d.fromId}`, to: `${d.toKind}/${d.toId}`, reason: d.reason, message: d.message };
}

/** Every dead letter, following the page tokens. */
async function allDeadLetters(client: TwinmeshClient, filter = {}, pageSize = 0): Promise<DeadLetter[]> {
  const all: DeadLetter[] = [];
  let pageToken = "";
  do {
    const page = await client.listDeadLetters({ filter, pageSize, pageToken });
    all.push(...page.deadLetters);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return all;
}

/** Makes `posters` posters each send one message to `to` (a picky twin that refuses), and waits for the dead letters. */
async function deadLettersFor(node: StartedNode, to: string, posters: string[], seq = 1): Promise<void> {
  const before = node.node.runtime.host.metrics.deadLetters;
  const res = await node.client.publish(posters.map((p) => ev("poster", p, seq, {}, { attributes: { to } })));
  assert.deepEqual(
    res.results.map((r) => r.reason),
    posters.map(() => ""),
  );
  await waitFor(() => node.node.runtime.host.metrics.deadLetters === before + posters.length, {
    timeoutMs: 10_000,
    what: `${posters.length} dead letters for ${to}`,
  });
  // The count moves when a dead letter joins a commit group; idle means the group is written.
  await node.node.runtime.host.whenIdle();
}

async function start(t: TestScope, hostOptions = {}): Promise<StartedNode> {
  return startNode(t, { twins: TWINS, hostOptions });
}

describe("DeadLetterService (dead letters)", () => {
  const t = useTestScope();

  it("records a message whose onMessage threw as a dead letter that says why, when, from and to whom, with the message", async () => {
    const node = await start(t);
    const startedMs = Date.now();
    await deadLettersFor(node, "picky-1", ["p-1"]);
    const { deadLetters, nextPageToken } = await node.client.listDeadLetters();
    assert.equal(nextPageToken, "");
    assert.deepEqual(deadLetters.map(brief), [{ from: "poster/p-1", to: "picky/picky-1", reason: "HANDLER_FAILED", message: { from: "p-1", seq: 1 } }]);
    const [d] = deadLetters as [DeadLetter];
    assert.equal(d.errorMessage, "picky/picky-1 onMessage failed: picky picky-1 refuses messages");
    assert.ok(
      d.deadAt !== undefined && timestampMs(d.deadAt) >= startedMs - 1_000 && timestampMs(d.deadAt) <= Date.now(),
      "dead_at is the time of the failure",
    );
    assert.ok(d.outboxSeq > 0n);
    const { deadLetter } = await node.client.getDeadLetter(d.id);
    assert.deepEqual(deadLetter, d);
    // The failed turn left the receiver as it was.
    assert.deepEqual(await twinState(node.client, "picky", "picky-1").catch((e: unknown) => (e as { code?: number }).code), grpc.status.NOT_FOUND);
  });

  it("answers NOT_FOUND for an id that does not exist and INVALID_ARGUMENT for one that is not an id", async () => {
    const { client } = await start(t);
    const missing = await clientError(client.getDeadLetter("7-12345"));
    assert.equal(missing.code, grpc.status.NOT_FOUND);
    assert.equal(missing.reason, "DEAD_LETTER_NOT_FOUND");
    const bad = await clientError(client.getDeadLetter("seven"));
    assert.equal(bad.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(bad.reason, "BAD_FIELD");
    const neither = await clientError(client.retryDeadLetters({}));
    assert.equal(neither.code, grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(
      neither.violations.map((v) => v.field),
      ["ids"],
    );
  });

  it("retries dead letters by id once the target accepts: each is delivered exactly once and the dead letter is gone", async () => {
    const node = await start(t);
    const { client } = node;
    await deadLettersFor(node, "picky-1", ["p-1", "p-2", "p-3"]);
    const ids = (await allDeadLetters(client)).map((d) => d.id);
    assert.equal(ids.length, 3);
    await client.publish([ev("picky", "picky-1", 1, { accept: 1 })]);
    const res = await client.retryDeadLetters({ ids });
    assert.equal(res.retriedCount, 3n);
    await waitFor(async () => ((await twinState(client, "picky", "picky-1")).seen as string[]).length === 3, {
      timeoutMs: 10_000,
      what: "three redelivered messages",
    });
    await node.node.runtime.host.whenIdle();
    assert.deepEqual(((await twinState(client, "picky", "picky-1")).seen as string[]).sort(), ["p-1#1", "p-2#1", "p-3#1"]);
    assert.deepEqual(await allDeadLetters(client), []);
    // Retrying them again: they are gone, and nothing is delivered twice.
    const again = await clientError(client.retryDeadLetters({ ids }));
    assert.equal(again.reason, "DEAD_LETTER_NOT_FOUND");
    assert.equal(((await twinState(client, "picky", "picky-1")).seen as string[]).length, 3);
  });

  it("retries, with all and a filter, only the matching dead letters; one that fails again is dead-lettered again", async () => {
    const node = await start(t);
    const { client } = node;
    await deadLettersFor(node, "picky-1", ["p-1"]);
    await deadLettersFor(node, "picky-2", ["p-2", "p-3"]);
    await client.publish([ev("picky", "picky-2", 1, { accept: 1 })]);
    const res = await client.retryDeadLetters({ all: true, filter: { toKind: "picky", toId: "picky-2" } });
    assert.deepEqual([res.retriedCount, res.skippedCount], [2n, 0n]);
    await waitFor(async () => ((await twinState(client, "picky", "picky-2")).seen as string[]).length === 2, { timeoutMs: 10_000, what: "picky-2's messages" });
    assert.deepEqual((await allDeadLetters(client)).map(brief), [
      { from: "poster/p-1", to: "picky/picky-1", reason: "HANDLER_FAILED", message: { from: "p-1", seq: 1 } },
    ]);
    // picky-1 still refuses: the retried message dies again, as a new dead letter.
    const [first] = await allDeadLetters(client);
    const before = node.node.runtime.host.metrics.deadLetters;
    assert.equal((await client.retryDeadLetters({ all: true })).retriedCount, 1n);
    await waitFor(() => node.node.runtime.host.metrics.deadLetters === before + 1, { timeoutMs: 10_000, what: "the retried message to die again" });
    await node.node.runtime.host.whenIdle();
    const [second] = await allDeadLetters(client);
    assert.notEqual(second?.id, first?.id);
    assert.equal(second?.outboxSeq, first?.outboxSeq);
  });

  it("lists by filter and pages through many dead letters, each exactly once, oldest first", async () => {
    const node = await start(t);
    const posters = Array.from({ length: 23 }, (_, i) => `p-${String(i).padStart(2, "0")}`);
    await deadLettersFor(node, "picky-1", posters);
    await deadLettersFor(node, "picky-2", ["q-1"]);
    const paged = await allDeadLetters(node.client, {}, 5);
    assert.equal(paged.length, 24);
    assert.equal(new Set(paged.map((d) => d.id)).size, 24);
    // By partition, then oldest first: ids are `<partition>-<seq>`.
    const order = paged.map((d) => d.id.split("-").map(Number) as [number, number]);
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a[0] - b[0] || a[1] - b[1]),
    );
    assert.deepEqual((await allDeadLetters(node.client, { toId: "picky-2" }, 5)).map(brief), [
      { from: "poster/q-1", to: "picky/picky-2", reason: "HANDLER_FAILED", message: { from: "q-1", seq: 1 } },
    ]);
    assert.equal((await allDeadLetters(node.client, { fromKind: "poster", reason: "HANDLER_FAILED" }, 7)).length, 24);
    assert.deepEqual(await allDeadLetters(node.client, { reason: "TURN_TIMEOUT" }), []);
    const bad = await clientError(
      node.client.listDeadLetters({ filter: { toId: "picky-2" }, pageToken: (await node.client.listDeadLetters({ pageSize: 1 })).nextPageToken }),
    );
    assert.equal(bad.reason, "BAD_PAGE_TOKEN");
  });

  it("deletes dead letters by id and by filter", async () => {
    const node = await start(t);
    await deadLettersFor(node, "picky-1", ["p-1", "p-2"]);
    await deadLettersFor(node, "picky-2", ["p-3"]);
    const first = (await allDeadLetters(node.client)).find((d) => d.fromId === "p-1");
    assert.equal((await node.client.deleteDeadLetters({ ids: [first?.id ?? "", "0-999"] })).deletedCount, 1n);
    assert.equal((await node.client.deleteDeadLetters({ all: true, filter: { toId: "picky-2" } })).deletedCount, 1n);
    assert.deepEqual(
      (await allDeadLetters(node.client)).map((d) => d.fromId),
      ["p-2"],
    );
  });

  it("never hands out a dead letter id again, also after the newest letters were deleted and the node restarted", async () => {
    const first = await start(t);
    // One sender: its dead letters are numbered in its partition.
    await deadLettersFor(first, "picky-1", ["p-1"], 1);
    await deadLettersFor(first, "picky-1", ["p-1"], 2);
    const before = await allDeadLetters(first.client);
    assert.deepEqual(
      before.map((d) => d.message),
      [
        { from: "p-1", seq: 1 },
        { from: "p-1", seq: 2 },
      ],
    );
    await first.client.deleteDeadLetters({ ids: [before[1]?.id ?? ""] });
    const node = await first.restart();
    await deadLettersFor(node, "picky-1", ["p-1"], 3);
    const after = await allDeadLetters(node.client);
    assert.deepEqual(
      after.map((d) => d.message),
      [
        { from: "p-1", seq: 1 },
        { from: "p-1", seq: 3 },
      ],
    );
    assert.ok(!before.some((d) => d.id === after[1]?.id), `the new dead letter reused the id ${after[1]?.id} of a deleted one`);
  });

  it("lists, trims and deletes around a damaged dead letter record, showing it as UNREADABLE with its raw text", async () => {
    const node = await start(t);
    await deadLettersFor(node, "picky-1", ["p-1"]);
    const { host, store } = node.node.runtime;
    const [real] = await allDeadLetters(node.client);
    assert.ok(real !== undefined);
    // In the real letter's partition, after it: listings are ordered by partition, then seq.
    await store.write([{ type: "put", key: host.keys.deadLetter(Number(real.id.split("-")[0]) as PartitionId, 1_000), value: "{torn" }]);
    const all = await allDeadLetters(node.client);
    assert.deepEqual(
      all.map((d) => d.reason),
      ["HANDLER_FAILED", "UNREADABLE"],
    );
    assert.deepEqual(all[1]?.message, { raw: "{torn" });
    const retried = await node.client.retryDeadLetters({ all: true });
    assert.deepEqual([retried.retriedCount, retried.skippedCount], [1n, 1n]);
    await waitFor(() => host.metrics.deadLetters === 2, { timeoutMs: 10_000, what: "the retried message to fail again" });
    await host.whenIdle();
    assert.equal((await node.client.deleteDeadLetters({ all: true })).deletedCount, 2n);
    assert.deepEqual(await allDeadLetters(node.client), []);
  });

  it("keeps a dead letter whose target kind is not loaded, refusing a retry by id and skipping it in a retry of all", async () => {
    const first = await start(t);
    await deadLettersFor(first, "picky-1", ["p-1"]);
    const node = await first.restart({ twins: [...fixtureTwins, MAIL_TWINS[0]] });
    const [d] = await allDeadLetters(node.client);
    assert.ok(d !== undefined, "the dead letter survived the restart");
    const err = await clientError(node.client.retryDeadLetters({ ids: [d.id] }));
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(err.reason, "UNKNOWN_KIND");
    const res = await node.client.retryDeadLetters({ all: true });
    assert.deepEqual([res.retriedCount, res.skippedCount], [0n, 1n]);
    assert.deepEqual(
      (await allDeadLetters(node.client)).map((x) => x.id),
      [d.id],
    );
  });

  it("delivers a retried message after a restart: the requeued message is durable in the outbox", async () => {
    const first = await start(t);
    await deadLettersFor(first, "picky-1", ["p-1"]);
    await first.client.publish([ev("picky", "picky-1", 1, { accept: 1 })]);
    // Stop the outbox from delivering: the retry's write must carry the message over the restart.
    await first.node.runtime.host.close();
    const [d] = await allDeadLetters(first.client);
    await first.node.runtime.host.deadLetters.retry({ ids: [d?.id ?? ""] });
    const node = await first.restart();
    await waitFor(async () => ((await twinState(node.client, "picky", "picky-1")).seen as string[]).join(), {
      timeoutMs: 10_000,
      what: "the message delivered after the restart",
    });
    assert.deepEqual((await twinState(node.client, "picky", "picky-1")).seen, ["p-1#1"]);
    assert.deepEqual(await allDeadLetters(node.client), []);
  });

  it("trims dead letters beyond the most kept, oldest first, and those older than the retention", async () => {
    const node = await start(t, { maxDeadLetters: 2, retentionSweepMs: 20 });
    // One sender, so all five are in one partition: at most 2 are kept per partition.
    for (let seq = 1; seq <= 5; seq++) await deadLettersFor(node, "picky-1", ["p-1"], seq);
    const newest = (await waitFor(
      async () => {
        const left = await allDeadLetters(node.client);
        return left.length === 2 ? left : undefined;
      },
      { timeoutMs: 10_000, what: "retention to keep 2 dead letters" },
    )) as DeadLetter[];
    const ids = newest.map((d) => d.id.split("-").map(Number));
    const p = ids[0]?.[0] as number;
    assert.deepEqual(ids, [
      [p, 4],
      [p, 5],
    ]);

    const aged = await start(t, { deadLetterRetentionMs: 300, retentionSweepMs: 20 });
    await deadLettersFor(aged, "picky-1", ["p-1", "p-2"]);
    await waitFor(async () => (await allDeadLetters(aged.client)).length === 0, {
      timeoutMs: 10_000,
      what: "retention to trim dead letters older than 300 ms",
    });
  });
});
