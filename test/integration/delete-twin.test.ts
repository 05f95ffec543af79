import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { ACCEPTED, DUPLICATE, ev, type Outcome, outcomes, rejected } from "../harness/events.js";
import { clientError } from "../harness/grpc-status.js";
import { startNode, twinState } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

function twinDeleted(seq: number, tomb: number, twin = "counter/c-1"): Outcome {
  return rejected(
    "TWIN_DELETED",
    `seq ${seq} is at or below seq ${tomb}, the highest seq of twin ${twin} when it was deleted with a tombstone: its effect was deleted, so it is not applied again; send seqs above ${tomb}, or delete the twin without a tombstone to let its source start again at 1`,
  );
}

describe("TwinService DeleteTwin (delete-twin)", () => {
  const t = useTestScope();

  it("forgets the source's seqs by default: a re-provisioned source starting again at seq 1 is ACCEPTED and makes a fresh twin, also after a restart", async () => {
    let node = await startNode(t);
    const sent = await node.client.publish([ev("counter", "c-1", 1, { v: 10 }), ev("counter", "c-1", 2, { v: 10 }), ev("counter", "c-1", 3, { v: 10 })]);
    assert.deepEqual(outcomes(sent.results), [ACCEPTED, ACCEPTED, ACCEPTED]);
    assert.deepEqual(await node.client.deleteTwin({ kind: "counter", id: "c-1" }), {
      $typeName: "twinmesh.v1.DeleteTwinResponse",
      existed: true,
      timersCancelled: 0,
      resolvedAlertIds: [],
      tombstone: false,
      tombstoneSeq: 0n,
    });
    assert.equal((await clientError(node.client.getTwin({ kind: "counter", id: "c-1" }))).code, grpc.status.NOT_FOUND);
    assert.equal((await node.client.deleteTwin({ kind: "counter", id: "c-1" })).existed, false);
    assert.equal((await node.client.deleteTwin({ kind: "counter", id: "never" })).existed, false);

    assert.deepEqual(outcomes((await node.client.publish([ev("counter", "c-1", 1, { v: 1 })])).results), [ACCEPTED]);
    const { twin } = await node.client.getTwin({ kind: "counter", id: "c-1" });
    assert.deepEqual(twin?.state, { count: 1, lastSeq: 1, total: 1, messages: 0 });
    assert.equal(twin?.lastSeq, 1n);
    // Versions keep counting across the delete (3 turns, the delete, 1 turn): one version, one state.
    assert.equal(twin?.version, 5n);

    node = await node.restart();
    // The new twin's own marks hold: seq 1 is in it now.
    assert.deepEqual(outcomes((await node.client.publish([ev("counter", "c-1", 1, { v: 1 }), ev("counter", "c-1", 2, { v: 1 })])).results), [
      DUPLICATE,
      ACCEPTED,
    ]);
    assert.deepEqual(await twinState(node.client, "counter", "c-1"), { count: 2, lastSeq: 2, total: 2, messages: 0 });
  });

  it("keeps late retries out with a tombstone: old seqs are REJECTED naming the deletion, higher seqs make a fresh twin that still rejects them", async () => {
    let node = await startNode(t);
    await node.client.publish([ev("counter", "c-1", 1, { v: 10 }), ev("counter", "c-1", 2, { v: 10 }), ev("counter", "c-1", 4, { v: 10 })]);
    assert.deepEqual(await node.client.deleteTwin({ kind: "counter", id: "c-1", keepTombstone: true }), {
      $typeName: "twinmesh.v1.DeleteTwinResponse",
      existed: true,
      timersCancelled: 0,
      resolvedAlertIds: [],
      tombstone: true,
      tombstoneSeq: 4n,
    });
    // seq 3 never arrived before the delete; it is at or below the tombstone all the same.
    assert.deepEqual(outcomes((await node.client.publish([ev("counter", "c-1", 2), ev("counter", "c-1", 3), ev("counter", "c-1", 4)])).results), [
      twinDeleted(2, 4),
      twinDeleted(3, 4),
      twinDeleted(4, 4),
    ]);
    assert.equal((await clientError(node.client.getTwin({ kind: "counter", id: "c-1" }))).code, grpc.status.NOT_FOUND);
    // Deleting a tombstone again with keep_tombstone changes nothing and says what it keeps.
    const again = await node.client.deleteTwin({ kind: "counter", id: "c-1", keepTombstone: true });
    assert.deepEqual([again.existed, again.tombstone, again.tombstoneSeq], [false, true, 4n]);

    node = await node.restart();
    assert.deepEqual(outcomes((await node.client.publish([ev("counter", "c-1", 1)])).results), [twinDeleted(1, 4)]);
    assert.deepEqual(
      outcomes((await node.client.publish([ev("counter", "c-1", 6, { v: 1 }), ev("counter", "c-1", 3), ev("counter", "c-1", 5, { v: 1 })])).results),
      [ACCEPTED, twinDeleted(3, 4), ACCEPTED],
    );
    assert.deepEqual(outcomes((await node.client.publish([ev("counter", "c-1", 6)])).results), [DUPLICATE]);
    assert.deepEqual(await twinState(node.client, "counter", "c-1"), { count: 2, lastSeq: 5, total: 2, messages: 0 });

    // A delete without a tombstone forgets it: the source may start again at 1.
    const plain = await node.client.deleteTwin({ kind: "counter", id: "c-1" });
    assert.deepEqual([plain.existed, plain.tombstone, plain.tombstoneSeq], [true, false, 0n]);
    assert.deepEqual(outcomes((await node.client.publish([ev("counter", "c-1", 1, { v: 7 })])).results), [ACCEPTED]);
    assert.deepEqual(await twinState(node.client, "counter", "c-1"), { count: 1, lastSeq: 1, total: 7, messages: 0 });
  });

  it("applies unsequenced events (seq 0) to a tombstoned twin: they make a fresh twin, as they are never deduplicated", async () => {
    const { client } = await startNode(t);
    await client.publish([ev("counter", "c-1", 1, { v: 10 }), ev("counter", "c-1", 2, { v: 10 })]);
    await client.deleteTwin({ kind: "counter", id: "c-1", keepTombstone: true });
    assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 0, { v: 3 }), ev("counter", "c-1", 2)])).results), [ACCEPTED, twinDeleted(2, 2)]);
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 1, lastSeq: 0, total: 3, messages: 0 });
  });

  it("forgets idempotency keys by default: an old key delivers to a fresh twin", async () => {
    const { client } = await startNode(t);
    await client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-1" });
    await client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-2" });
    await client.deleteTwin({ kind: "counter", id: "c-1" });
    const after = await client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 1 }, idempotencyKey: "k-1" });
    // Two turns, the delete, this turn.
    assert.deepEqual([after.duplicate, after.version], [false, 4n]);
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 0, lastSeq: 0, total: 1, messages: 1 });
    const retry = await client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 1 }, idempotencyKey: "k-1" });
    assert.deepEqual([retry.duplicate, retry.version], [true, 4n]);
  });

  it("refuses an idempotency key used before a delete with a tombstone (FAILED_PRECONDITION, TWIN_DELETED), also once the twin lives again", async () => {
    let node = await startNode(t);
    await node.client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-1" });
    await node.client.deleteTwin({ kind: "counter", id: "c-1", keepTombstone: true });
    const refused = await clientError(node.client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-1" }));
    assert.equal(refused.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(refused.reason, "TWIN_DELETED");
    assert.equal(
      refused.message,
      'idempotency key "k-1" was used before twin counter/c-1 was deleted with a tombstone: its effect was deleted, so the message is not delivered again; use a new key',
    );
    assert.equal((await clientError(node.client.getTwin({ kind: "counter", id: "c-1" }))).code, grpc.status.NOT_FOUND);

    const fresh = await node.client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 2 }, idempotencyKey: "k-2" });
    assert.deepEqual([fresh.duplicate, fresh.version], [false, 3n]);
    node = await node.restart();
    assert.equal(
      (await clientError(node.client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 5 }, idempotencyKey: "k-1" }))).reason,
      "TWIN_DELETED",
    );
    assert.equal((await node.client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 2 }, idempotencyKey: "k-2" })).duplicate, true);
    assert.deepEqual(await twinState(node.client, "counter", "c-1"), { count: 0, lastSeq: 0, total: 2, messages: 1 });
  });

  it("removes the twin's timers and resolves its alerts, says so, and a new twin's alerts get new ids", async () => {
    const { client, node } = await startNode(t);
    await client.publish([ev("alarm", "a-1", 1, { level: 150, timerMs: 3_600_000 })]);
    assert.notEqual(await node.runtime.host.nextTimerDue(), undefined);
    const deleted = await client.deleteTwin({ kind: "alarm", id: "a-1" });
    assert.deepEqual([deleted.existed, deleted.timersCancelled, deleted.resolvedAlertIds], [true, 1, ["alarm/a-1/high@1"]]);
    assert.equal(await node.runtime.host.nextTimerDue(), undefined);
    const listed = await client.listAlerts();
    assert.deepEqual(
      listed.alerts.map((a) => [a.id, a.state]),
      [["alarm/a-1/high@1", 3]],
    );

    await client.publish([ev("alarm", "a-1", 1, { level: 150 })]);
    const open = await client.listAlerts({ filter: 'state == "OPEN"' });
    assert.deepEqual(
      open.alerts.map((a) => a.id),
      ["alarm/a-1/high@3"],
    );
  });
});
