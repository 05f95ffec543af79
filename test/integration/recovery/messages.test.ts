import assert from "node:assert/strict";
import { TwinRuntime } from "../../../runtime/index.js";
import { Keys } from "../../../runtime/store/keys.js";
import { RocksStore } from "../../../runtime/store/rocks-store.js";
import { SinkTwin } from "../../fixtures/index.js";
import { ForwardTwin, RefuseTwin } from "../../fixtures/recovery-twins.js";
import { entriesIn, keysIn, openRuntime, publishOne } from "../../harness/open-runtime.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";
import { WriteSpy } from "../../harness/write-spy.js";

describe("messages between twins across failures (recovery/messages)", () => {
  const t = useTestScope();

  it("deletes a delivered message from the outbox in the same write batch as the receiving turn", async () => {
    const writes = WriteSpy.install(t);
    const { runtime, sent } = await openRuntime(t, { twins: [ForwardTwin, SinkTwin] });
    const { host } = runtime;
    assert.equal((await publishOne(runtime, "forward", "f-1", 1)).status, "accepted");
    await host.whenIdle();
    assert.deepEqual((await host.getTwin("sink", "sink-1")).state, { received: 1, seen: ["f-1#1"] });
    assert.deepEqual(await keysIn(runtime, host.keys.outboxRange()), []);
    const delivered = sent[0];
    assert.ok(delivered !== undefined);
    const outboxKey = host.keys.outbox(delivered.partition, delivered.seq);
    const sinkKey = host.keys.twin("sink", "sink-1");
    const receiving = writes.writes.filter((w) => w.ops.some((op) => op.type === "put" && op.key === sinkKey));
    assert.equal(receiving.length, 1);
    assert.ok(
      receiving[0]?.ops.some((op) => op.type === "del" && op.key === outboxKey),
      "the receiver's write batch does not delete the outbox entry",
    );
  });

  it("applies a twin-to-twin message once when its outbox entry is delivered again after a restart", async () => {
    const first = await openRuntime(t, { twins: [ForwardTwin, SinkTwin] });
    assert.equal((await publishOne(first.runtime, "forward", "f-1", 1)).status, "accepted");
    await first.runtime.host.whenIdle();
    assert.deepEqual((await first.runtime.host.getTwin("sink", "sink-1")).state, { received: 1, seen: ["f-1#1"] });
    // The delivered entry is back, as after a delivery whose delete was lost (or a replica's
    // redelivery): the receiver's inbox marks must recognise its id.
    const entry = first.sent[0];
    assert.ok(entry !== undefined);
    await first.runtime.store.write([{ type: "put", key: first.runtime.host.keys.outbox(entry.partition, entry.seq), value: JSON.stringify(entry) }]);

    const second = await first.reopen();
    await second.runtime.host.whenIdle();
    assert.deepEqual(await keysIn(second.runtime, second.runtime.host.keys.outboxRange()), []);
    assert.deepEqual((await second.runtime.host.getTwin("sink", "sink-1")).state, { received: 1, seen: ["f-1#1"] });
    assert.equal(second.runtime.host.metrics.handlerErrors, 0);
  });

  it("moves a message whose handler fails to the dead letters, out of the outbox, and does not deliver it again after a restart", async () => {
    const first = await openRuntime(t, { twins: [ForwardTwin, RefuseTwin] });
    const { host } = first.runtime;
    assert.equal((await publishOne(first.runtime, "forward", "f-1", 1, {}, { kind: "refuse", to: "r-1" })).status, "accepted");
    await host.whenIdle();
    assert.equal(host.metrics.handlerErrors, 1);
    assert.equal(host.metrics.deadLetters, 1);
    assert.deepEqual(await keysIn(first.runtime, host.keys.outboxRange()), []);
    const dead = await host.deadLetters.list({});
    assert.equal(dead.deadLetters.length, 1);
    const letter = dead.deadLetters[0];
    assert.equal(letter?.reason, "HANDLER_FAILED");
    assert.deepEqual(letter?.message, { from: "f-1", seq: 1 });
    await assert.rejects(host.getTwin("refuse", "r-1"), { reason: "TWIN_NOT_FOUND" });

    const second = await first.reopen();
    await second.runtime.host.whenIdle();
    assert.equal(second.runtime.host.metrics.handlerErrors, 0);
    assert.equal((await entriesIn(second.runtime, second.runtime.host.keys.deadLetterRange())).length, 1);
  });
});

describe("dead-lettering while the outbox is rescanned (recovery/messages)", () => {
  const t = useTestScope();

  it("runs a failing message's handler once when an outbox rescan overlaps its failure", async () => {
    // A failed outbox message stays in the dispatcher's in-flight set until the batch that
    // dead-letters it commits; released earlier, a rescan reading the outbox in between would
    // queue it again, run its handler twice and dead-letter it twice.
    const writes = WriteSpy.install(t);
    const proto = RocksStore.prototype;
    const scan = proto.scan;
    t.defer(() => {
      proto.scan = scan;
    });
    // Counts the outbox reads (not the one-key lookups) that ran to their end.
    const outboxPrefix = new Keys().outboxRange().gte;
    let outboxReads = 0;
    proto.scan = async function* (this: RocksStore, range, options) {
      yield* scan.call(this, range, options);
      if (range.gte.startsWith(outboxPrefix) && range.limit === undefined) outboxReads++;
    };
    const runtime = await TwinRuntime.open({ dataDir: t.tempDir("rescan"), twins: [ForwardTwin, RefuseTwin], host: { timerPollMs: 3_600_000 } });
    t.defer(() => runtime.close());
    const { host } = runtime;
    await host.whenIdle();
    assert.equal((await publishOne(runtime, "forward", "f-1", 1, {}, { kind: "refuse", to: "r-1" })).status, "accepted");
    writes.hold();
    t.defer(() => writes.release());
    await waitFor(() => host.metrics.handlerErrors === 1, { timeoutMs: 5_000, what: "the message's handler to fail" });
    // Its dead-letter batch is not written yet when a rescan reads the outbox (as after a change
    // of the sender partition's owner).
    const before = outboxReads;
    await runtime.partitionsChanged([runtime.partitioning.partitionOf("forward", "f-1")]);
    await waitFor(() => outboxReads > before || undefined, { timeoutMs: 5_000, what: "the rescan of the sender's outbox" });
    assert.ok(writes.heldCount >= 1, "the dead-letter batch was written before the rescan");
    writes.release();
    await host.whenIdle();
    assert.equal(host.metrics.handlerErrors, 1);
    assert.equal((await entriesIn(runtime, host.keys.deadLetterRange())).length, 1);
  });
});
