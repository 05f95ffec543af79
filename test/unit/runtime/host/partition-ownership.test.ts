import assert from "node:assert/strict";
import type { AlertEvent } from "../../../../runtime/alerts/alert-queries.js";
import { resolveHostOptions } from "../../../../runtime/host/host-options.js";
import { TimerService } from "../../../../runtime/host/timer-service.js";
import { type OwnershipGate, type PartitionId, Partitioning, silentLogger, VirtualClock } from "../../../../runtime/index.js";
import { Keys, PartitionMark } from "../../../../runtime/store/keys.js";
import { RocksStore } from "../../../../runtime/store/rocks-store.js";
import { AlarmTwin, GateTwin, gate as handlerGate, SinkTwin } from "../../../fixtures/index.js";
import { ForwardTwin, RefuseTwin } from "../../../fixtures/recovery-twins.js";
import { openRuntime, publishOne, START_MS } from "../../../harness/open-runtime.js";
import { useTestScope } from "../../../harness/test-scope.js";
import { waitFor } from "../../../harness/wait-for.js";

const partitioning = new Partitioning(256);
const keys = new Keys();
const p = (kind: string, id: string): PartitionId => partitioning.partitionOf(kind, id);

/** An ownership gate over a set of partitions the test changes. */
function gate(owned: Set<number>): OwnershipGate {
  return {
    refusal: (kind, id) =>
      owned.has(p(kind, id)) ? undefined : { status: "rejected", reason: "NOT_OWNER", message: `${kind}/${id} is owned elsewhere`, retryable: true },
    owns: (partition) => owned.has(partition),
  };
}

async function collect(gen: AsyncGenerator<AlertEvent>, n: number): Promise<AlertEvent[]> {
  const out: AlertEvent[] = [];
  for (let i = 0; i < n; i++) {
    const next = await gen.next();
    assert.ok(next.done !== true);
    out.push(next.value);
  }
  return out;
}

describe("partition ownership (OwnershipGate.owns)", () => {
  const t = useTestScope();

  it("fires only timers of owned partitions, and the others once their partition moves here", async () => {
    const store = await RocksStore.open(t.tempDir("timers"));
    t.defer(() => store.close());
    const clock = new VirtualClock(START_MS);
    const owned = new Set([p("tick", "mine")]);
    const posted: string[] = [];
    const timers = new TimerService(
      store,
      keys,
      clock,
      silentLogger(),
      resolveHostOptions({ timerPollMs: 3_600_000 }),
      (_kind, id) => {
        posted.push(id);
        return true;
      },
      { partitioning, owns: (q) => owned.has(q) },
    );
    t.defer(() => timers.close());
    await store.write([
      { type: "put", key: keys.timer(START_MS - 2, "tick", "theirs", "t"), value: "" },
      { type: "put", key: keys.timer(START_MS - 1, "tick", "mine", "t"), value: "" },
    ]);
    assert.notEqual(p("tick", "mine"), p("tick", "theirs"));
    assert.equal(await timers.fireDue(), 1);
    assert.deepEqual(posted, ["mine"]);
    // Passed over, not holding the floor: later polls read past it.
    owned.add(p("tick", "theirs"));
    timers.partitionsChanged();
    assert.equal(await timers.fireDue(), 1);
    assert.deepEqual(posted, ["mine", "theirs"]);
  });

  it("lists and watches only the alerts of owned partitions", async () => {
    const owned = new Set(partitioning.all() as number[]);
    const { runtime } = await openRuntime(t, { twins: [AlarmTwin], ownership: gate(owned) });
    assert.notEqual(p("alarm", "a-1"), p("alarm", "a-2"));
    const controller = new AbortController();
    t.defer(() => controller.abort());
    const { cursor } = await runtime.alerts.list({});
    assert.equal((await publishOne(runtime, "alarm", "a-1", 1, { level: 120 })).status, "accepted");
    assert.equal((await publishOne(runtime, "alarm", "a-2", 1, { level: 120 })).status, "accepted");
    owned.delete(p("alarm", "a-2"));
    await runtime.partitionsChanged([p("alarm", "a-2")]);
    const listed = await runtime.alerts.list({});
    assert.deepEqual(
      listed.alerts.map((a) => a.twinId),
      ["a-1"],
    );
    assert.ok(!listed.cursor.includes(`${p("alarm", "a-2").toString(36)}-`), `cursor ${listed.cursor} names a partition not owned`);
    const watch = runtime.alerts.watch(cursor, undefined, controller.signal);
    const [first] = await collect(watch, 1);
    assert.equal(first?.alert.twinId, "a-1");
    // a-2's change is not read here; a later change of an owned partition is.
    assert.equal((await publishOne(runtime, "alarm", "a-1", 2, { level: 10 })).status, "accepted");
    const [second] = await collect(watch, 1);
    assert.deepEqual([second?.alert.twinId, second?.alert.state], ["a-1", "RESOLVED"]);
  });

  it("writes nothing of a turn whose partition moved away while its async handler ran: it is answered the gate's retryable refusal, and the twin goes on from its stored state", async () => {
    const g = p("gate", "g-1");
    const owned = new Set([g]);
    const { runtime } = await openRuntime(t, { twins: [GateTwin], ownership: gate(owned) });
    t.defer(() => handlerGate.reset());
    handlerGate.reset();
    assert.equal((await publishOne(runtime, "gate", "g-1", 1)).status, "accepted");
    handlerGate.close();
    const held = publishOne(runtime, "gate", "g-1", 2);
    await waitFor(() => (handlerGate.entered === 2 ? true : undefined), { timeoutMs: 5_000, what: "seq 2's handler to start" });
    // The partition moves to another node while the handler waits.
    owned.delete(g);
    handlerGate.open();
    assert.deepEqual(await held, { status: "rejected", reason: "NOT_OWNER", message: "gate/g-1 is owned elsewhere", retryable: true });
    await runtime.host.whenIdle();
    // It comes back: seq 2 was never applied here, and the twin's state is seq 1's.
    owned.add(g);
    assert.deepEqual((await runtime.host.getTwin("gate", "g-1")).state, { count: 1, lastSeq: 1 });
    assert.equal((await publishOne(runtime, "gate", "g-1", 2)).status, "accepted");
    assert.deepEqual((await runtime.host.getTwin("gate", "g-1")).state, { count: 2, lastSeq: 2 });
  });

  it("continues a partition's numbering after keys replicated underneath, never reusing a number", async () => {
    const { runtime, sent } = await openRuntime(t, { twins: [ForwardTwin, SinkTwin, AlarmTwin, RefuseTwin] });
    const f = p("forward", "f-1");
    const a = p("alarm", "a-1");
    // Keys another owner wrote in these partitions, as replication writes them (no handler runs).
    await runtime.store.write([
      { type: "put", key: keys.mark(f, PartitionMark.OUTBOX_SEQ), value: "40" },
      { type: "put", key: keys.mark(f, PartitionMark.DEAD_LETTER_SEQ), value: "5" },
      {
        type: "put",
        key: keys.alertLog(a, 7),
        value: JSON.stringify({ id: "alarm/a-1/high@1", kind: "alarm", twinId: "a-1", code: "high", state: "RESOLVED", seq: 7 }),
      },
    ]);
    await runtime.partitionsChanged([f, a]);
    assert.equal((await publishOne(runtime, "forward", "f-1", 1)).status, "accepted");
    assert.deepEqual(
      sent.map((e) => [e.partition, e.seq]),
      [[f, 41]],
    );
    const controller = new AbortController();
    t.defer(() => controller.abort());
    const { cursor } = await runtime.alerts.list({});
    assert.equal(cursor, `c2.${a.toString(36)}-7`);
    const watch = runtime.alerts.watch(cursor, undefined, controller.signal);
    assert.equal((await publishOne(runtime, "alarm", "a-1", 1, { level: 120 })).status, "accepted");
    const [change] = await collect(watch, 1);
    assert.deepEqual([change?.partition, change?.seq], [a, 8]);
    // A message that dies is numbered after the replicated dead letter mark.
    assert.equal((await publishOne(runtime, "forward", "f-1", 2, {}, { kind: "refuse", to: "r-1" })).status, "accepted");
    await runtime.host.whenIdle();
    assert.deepEqual(
      (await runtime.host.deadLetters.list({})).deadLetters.map((d) => d.id),
      [`${f}-6`],
    );
  });
});
