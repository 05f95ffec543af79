import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { ACCEPTED, ev, type Outcome, outcomes, rejected } from "../harness/events.js";
import { clientError } from "../harness/grpc-status.js";
import { startNode, twinState } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

const INTERNAL = (id: string): Outcome =>
  rejected(
    "INTERNAL",
    `twinmesh failed while committing this turn of faulty/${id} (a bug, logged on the node); nothing of it was applied and the twin was reloaded from disk`,
  );
const ABANDONED: Outcome = rejected(
  "COMMIT_FAILED",
  "a twinmesh bug in another turn abandoned the commit group this event was in before it was written; nothing of it was applied; retry with the same seq",
  true,
);

describe("TwinHost contains a turn whose bookkeeping throws (contained-faults)", () => {
  const t = useTestScope();

  for (const [trap, path] of [
    [1, "synchronous"],
    [2, "async"],
  ] as const) {
    it(`answers the event INTERNAL after a ${path} handler, rolls back the group it was in, reloads the twin and keeps serving it`, async () => {
      const { client, logs } = await startNode(t);
      assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 1, { v: 5 }), ev("faulty", "f-1", 1)])).results), [ACCEPTED, ACCEPTED]);
      // Both twins are in memory, so c-1's turn runs first, into the open group the broken turn
      // then joins: that group is abandoned.
      const res = await client.publish([ev("counter", "c-1", 2, { v: 5 }), ev("faulty", "f-1", 2, { trap })]);
      assert.deepEqual(outcomes(res.results), [ABANDONED, INTERNAL("f-1")]);

      assert.deepEqual(await twinState(client, "faulty", "f-1"), { count: 1, lastSeq: 1 });
      assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 1, lastSeq: 1, total: 5, messages: 0 });
      assert.equal((await clientError(client.getTwin({ kind: "counter", id: "trap-f-1" }))).code, grpc.status.NOT_FOUND);

      // The twin is not wedged, nothing half-written survives, and the client's retry applies.
      assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 2, { v: 5 }), ev("faulty", "f-1", 2), ev("faulty", "f-1", 3)])).results), [
        ACCEPTED,
        ACCEPTED,
        ACCEPTED,
      ]);
      assert.deepEqual(await twinState(client, "faulty", "f-1"), { count: 3, lastSeq: 3 });
      assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 2, lastSeq: 2, total: 10, messages: 0 });
      assert.deepEqual(
        logs.filter((l) => l.level === 50).map((l) => [l.msg, l.kind, l.twin, l.trigger]),
        [["turn bookkeeping failed; its commit group was abandoned and its twins reload from disk", "faulty", "f-1", "telemetry"]],
      );
    });
  }

  it("releases the in-flight count of every broken turn, so the node keeps taking events", async () => {
    const { client } = await startNode(t, { hostOptions: { maxInflightEvents: 2 } });
    for (let seq = 1; seq <= 4; seq++) {
      assert.deepEqual(outcomes((await client.publish([ev("faulty", `f-${seq}`, 1, { trap: 1 + (seq % 2) })])).results), [INTERNAL(`f-${seq}`)]);
    }
    assert.deepEqual(outcomes((await client.publish([ev("faulty", "f-1", 1), ev("faulty", "f-2", 1)])).results), [ACCEPTED, ACCEPTED]);
  });
});
