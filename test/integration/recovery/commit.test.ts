import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { CounterTwin } from "../../fixtures/index.js";
import { ACCEPTED, ev, outcomes, rejected } from "../../harness/events.js";
import { clientError } from "../../harness/grpc-status.js";
import { openRuntime } from "../../harness/open-runtime.js";
import { startNode, twinState } from "../../harness/start-node.js";
import { useTestScope } from "../../harness/test-scope.js";
import { WriteSpy } from "../../harness/write-spy.js";

describe("group commit and durability (recovery/commit)", () => {
  const t = useTestScope();

  // A kill -9 cannot tell `wal` from `fsync` (the page cache survives it): the sync write option
  // the store hands to RocksDB is what makes the difference, so that is what these assert.
  it("asks RocksDB to sync every write batch of a node started with durability fsync", async () => {
    const writes = WriteSpy.install(t);
    const { node, client } = await startNode(t, { durability: "fsync" });
    const before = writes.writes.length;
    assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 1), ev("alarm", "a-1", 1, { level: 120 })])).results), [ACCEPTED, ACCEPTED]);
    const commitKey = node.runtime.host.keys.twin("counter", "c-1");
    assert.ok(
      writes.writes.slice(before).some((w) => w.ops.some((op) => op.key === commitKey)),
      "the commit's write batch was not seen",
    );
    // Every write: the format marker at open, the group commit, the alert changes with it.
    assert.deepEqual(
      writes.writes.map((w) => w.sync),
      writes.writes.map(() => true),
    );
  });

  it("does not ask RocksDB to sync in the default durability (wal)", async () => {
    const writes = WriteSpy.install(t);
    const { client } = await startNode(t);
    assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 1)])).results), [ACCEPTED]);
    assert.ok(writes.writes.length >= 2);
    assert.deepEqual(
      writes.writes.map((w) => w.sync),
      writes.writes.map(() => false),
    );
  });

  it("closes a group at maxGroupEvents while no write is in flight, and groups the rest behind it", async () => {
    const writes = WriteSpy.install(t);
    const { runtime } = await openRuntime(t, { twins: [CounterTwin], host: { maxGroupEvents: 10 } });
    const before = writes.writes.length;
    const events = Array.from({ length: 25 }, (_, i) => ({ kind: "counter", sourceId: `c-${i}`, seq: 1 }));
    const results = await runtime.host.publish(events);
    assert.deepEqual(new Set(results.map((r) => r.status)), new Set(["accepted"]));
    const twinPrefix = runtime.host.keys.twin("counter", "");
    const twinsPerWrite = writes.writes.slice(before).map((w) => w.ops.filter((op) => op.type === "put" && op.key.startsWith(twinPrefix)).length);
    assert.deepEqual(twinsPerWrite, [10, 15]);
  });

  it("rejects an event whose twin cannot be read with a retryable LOAD_FAILED, keeps serving, and takes the retry", async () => {
    const { node, client } = await startNode(t);
    const { store } = node.runtime;
    const getMany = store.getMany;
    store.getMany = () => Promise.reject(new Error("injected read failure"));
    t.defer(() => {
      store.getMany = getMany;
    });
    assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 1, { v: 2 })])).results), [
      rejected("LOAD_FAILED", "could not read twin state: injected read failure", true),
    ]);
    const err = await clientError(client.sendToTwin({ kind: "counter", id: "c-2", message: { add: 1 } }));
    assert.deepEqual([err.code, err.reason, err.message], [grpc.status.UNAVAILABLE, "LOAD_FAILED", "could not read twin state: injected read failure"]);
    store.getMany = getMany;
    assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 1, { v: 2 })])).results), [ACCEPTED]);
    assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 1, lastSeq: 1, total: 2, messages: 0 });
    await client.sendToTwin({ kind: "counter", id: "c-2", message: { add: 1 } });
    assert.deepEqual(await twinState(client, "counter", "c-2"), { count: 0, lastSeq: 0, total: 1, messages: 1 });
  });
});
