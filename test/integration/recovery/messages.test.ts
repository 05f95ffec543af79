import assert from "node:assert/strict";
import { SinkTwin } from "../../fixtures/index.js";
import { ForwardTwin, RefuseTwin } from "../../fixtures/recovery-twins.js";
import { entriesIn, keysIn, openRuntime, publishOne } from "../../harness/open-runtime.js";
import { useTestScope } from "../../harness/test-scope.js";
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
    const outboxKey = host.keys.outbox((sent[0] as { seq: number }).seq);
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
    await first.runtime.store.write([{ type: "put", key: first.runtime.host.keys.outbox(entry.seq), value: JSON.stringify(entry) }]);

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
    const dead = await entriesIn(first.runtime, host.keys.deadLetterRange());
    assert.equal(dead.length, 1);
    const letter = JSON.parse(dead[0]?.[1] as string) as { reason: string; payload: unknown };
    assert.equal(letter.reason, "HANDLER_FAILED");
    assert.deepEqual(letter.payload, { from: "f-1", seq: 1 });
    await assert.rejects(host.getTwin("refuse", "r-1"), { reason: "TWIN_NOT_FOUND" });

    const second = await first.reopen();
    await second.runtime.host.whenIdle();
    assert.equal(second.runtime.host.metrics.handlerErrors, 0);
    assert.equal((await entriesIn(second.runtime, second.runtime.host.keys.deadLetterRange())).length, 1);
  });
});
