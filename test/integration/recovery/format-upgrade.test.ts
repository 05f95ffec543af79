import assert from "node:assert/strict";
import type { AlertEvent } from "../../../runtime/alerts/alert-queries.js";
import { Partitioning, silentLogger } from "../../../runtime/index.js";
import { upgradeDataFormat } from "../../../runtime/store/format-upgrade.js";
import { Keys } from "../../../runtime/store/keys.js";
import { type BatchOp, RocksStore } from "../../../runtime/store/rocks-store.js";
import { SinkTwin } from "../../fixtures/index.js";
import { ForwardTwin } from "../../fixtures/recovery-twins.js";
import { openRuntime, publishOne, START_MS } from "../../harness/open-runtime.js";
import { type TestScope, useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

const FORMAT_KEY = "\u0000meta\u0000format";
const partitioning = new Partitioning(256);
const keys = new Keys();
const p = (kind: string, id: string): number => partitioning.partitionOf(kind, id);
/** A format-2 key of a node-wide sequence: `X NUL ns NUL seq(16 hex)`. */
const old = (keyspace: "o" | "l" | "d", seq: number): string => `${keyspace}\u0000\u0000${seq.toString(16).padStart(16, "0")}`;

function storedAlert(twinId: string, state: string, seq: number, count = 1): Record<string, unknown> {
  return {
    id: `alarm/${encodeURIComponent(twinId)}/high@1`,
    kind: "alarm",
    twinId,
    code: "high",
    severity: "WARNING",
    message: "level 120",
    state,
    raisedAt: START_MS,
    updatedAt: START_MS + seq,
    count,
    seq,
  };
}

/**
 * A data directory as twinmesh wrote data format 2: node-wide outbox, alert log and dead letter
 * sequences and marks. Written with RocksStore directly, key by key.
 */
async function formatTwoDirectory(t: TestScope): Promise<string> {
  const dir = t.tempDir("format-2");
  const store = await RocksStore.open(dir);
  const message = (from: string, seq: number): string =>
    JSON.stringify({ seq, fromKind: "forward", fromId: from, toKind: "sink", toId: "sink-1", message: { from, seq: 1 } });
  const ops: BatchOp[] = [
    { type: "put", key: FORMAT_KEY, value: JSON.stringify({ format: "twinmesh-data", version: 2 }) },
    { type: "put", key: "\u0000meta\u0000partitions", value: "256" },
    // Undelivered messages, the newest numbers already delivered (the mark is ahead of them).
    { type: "put", key: old("o", 3), value: message("f-1", 3) },
    { type: "put", key: old("o", 5), value: message("f-2", 5) },
    { type: "put", key: old("o", 9), value: message("f/3 %é", 9) },
    { type: "put", key: "\u0000meta\u0000outbox-seq", value: "12" },
    // a-1 opened (1) and was acknowledged (4); a-2 (2) and a "weird" twin (3) opened.
    { type: "put", key: old("l", 1), value: JSON.stringify(storedAlert("a-1", "OPEN", 1)) },
    { type: "put", key: old("l", 2), value: JSON.stringify(storedAlert("a-2", "OPEN", 2)) },
    { type: "put", key: old("l", 3), value: JSON.stringify(storedAlert("a/3 %", "OPEN", 3)) },
    { type: "put", key: old("l", 4), value: JSON.stringify(storedAlert("a-1", "ACKNOWLEDGED", 4, 2)) },
    { type: "put", key: keys.alert("alarm/a-1/high@1"), value: JSON.stringify(storedAlert("a-1", "ACKNOWLEDGED", 4, 3)) },
    { type: "put", key: keys.alert("alarm/a-2/high@1"), value: JSON.stringify(storedAlert("a-2", "OPEN", 2)) },
    { type: "put", key: keys.alert(`alarm/${encodeURIComponent("a/3 %")}/high@1`), value: JSON.stringify(storedAlert("a/3 %", "OPEN", 3)) },
    // Two dead letters (7 and 8; 9 and 10 were deleted: the mark says 10), and a legacy one.
    {
      type: "put",
      key: old("d", 7),
      value: JSON.stringify({
        o: 2,
        fk: "forward",
        fi: "f-1",
        tk: "sink",
        ti: "sink-1",
        m: { from: "f-1", seq: 0 },
        r: "HANDLER_FAILED",
        e: "boom",
        at: START_MS,
      }),
    },
    {
      type: "put",
      key: old("d", 8),
      value: JSON.stringify({
        o: 1,
        fk: "forward",
        fi: "f-2",
        tk: "sink",
        ti: "sink-1",
        m: { from: "f-2", seq: 0 },
        r: "HANDLER_FAILED",
        e: "boom",
        at: START_MS,
      }),
    },
    { type: "put", key: old("d", 6), value: JSON.stringify({ outboxKey: old("o", 1), reason: "OLD", message: "legacy", payload: {} }) },
    { type: "put", key: "\u0000meta\u0000dead-letter-seq", value: "10" },
  ];
  await store.write(ops);
  await store.close();
  return dir;
}

/** Every key and value of a directory but the format marker. */
async function dump(dir: string): Promise<[string, string][]> {
  const store = await RocksStore.open(dir);
  const all: [string, string][] = [];
  try {
    for await (const chunk of store.scan({ gte: "", lt: "\u{10FFFF}" })) for (const [k, v] of chunk) if (k !== FORMAT_KEY) all.push([k, v]);
  } finally {
    await store.close();
  }
  return all;
}

/** Keys still in the format-2 layout. */
function oldKeys(all: [string, string][]): string[] {
  return all
    .map(([k]) => k)
    .filter((k) => {
      const parts = k.split("\u0000");
      const sequence = parts.length === 3 && ["o", "l", "d"].includes(parts[0] ?? "") && /^[0-9a-f]{16}$/.test(parts[2] ?? "");
      return sequence || k === "\u0000meta\u0000outbox-seq" || k === "\u0000meta\u0000dead-letter-seq";
    });
}

describe("upgrade from data format 2 (recovery/format-upgrade)", () => {
  const t = useTestScope();

  it("opens a format-2 directory, moves each sequence under its partitions and stamps format 3; messages, alerts and dead letters carry on", async () => {
    const dir = await formatTwoDirectory(t);
    const { runtime, sent } = await openRuntime(t, { twins: [ForwardTwin, SinkTwin], dataDir: dir });
    const { host } = runtime;
    // The undelivered messages were delivered from their senders' partitions.
    await waitFor(async () => (await host.getTwin("sink", "sink-1").catch(() => undefined))?.state.received === 3, {
      timeoutMs: 5_000,
      what: "three messages",
    });
    assert.deepEqual([...((await host.getTwin("sink", "sink-1")).state.seen as string[])].sort(), ["f-1#1", "f-2#1", "f/3 %é#1"]);
    // A new message continues after the old node-wide number in its partition: 13, never a number handed out before.
    assert.equal((await publishOne(runtime, "forward", "f-1", 1)).status, "accepted");
    assert.deepEqual(
      sent.map((e) => [e.partition, e.seq]),
      [[p("forward", "f-1"), 13]],
    );
    // The alert log: each twin's changes in its partition, numbered 1, 2, … in their old order.
    const changes: AlertEvent[] = [];
    const controller = new AbortController();
    t.defer(() => controller.abort());
    const watch = runtime.alerts.watch("c2.", undefined, controller.signal);
    for (let i = 0; i < 4; i++) {
      const next = await watch.next();
      assert.ok(next.done !== true);
      changes.push(next.value);
    }
    controller.abort();
    assert.deepEqual(
      changes.map((c) => [c.alert.twinId, c.alert.state, c.partition, c.seq]).sort(),
      [
        ["a-1", "OPEN", p("alarm", "a-1"), 1],
        ["a-1", "ACKNOWLEDGED", p("alarm", "a-1"), 2],
        ["a-2", "OPEN", p("alarm", "a-2"), 1],
        ["a/3 %", "OPEN", p("alarm", "a/3 %"), 1],
      ].sort(),
    );
    // The alert record carries its last change's new number.
    assert.equal((JSON.parse((await runtime.store.get(keys.alert("alarm/a-1/high@1"))) ?? "{}") as { seq?: number }).seq, 2);
    // Dead letters: in their senders' partitions, numbered there; the legacy one (no sender) in partition 0.
    const letters = (await host.deadLetters.list({})).deadLetters;
    assert.deepEqual(
      letters.map((d) => [d.id, d.fromId, d.outboxSeq]).sort(),
      [
        ["0-1", "", 1],
        [`${p("forward", "f-1")}-1`, "f-1", 2],
        [`${p("forward", "f-2")}-1`, "f-2", 1],
      ].sort(),
    );
    await runtime.close();
    const all = await dump(dir);
    assert.deepEqual(oldKeys(all), []);
    const store = await RocksStore.open(dir);
    t.defer(() => store.close());
    assert.deepEqual(JSON.parse((await store.get(FORMAT_KEY)) ?? "null"), { format: "twinmesh-data", version: 3 });
  });

  it("finishes an upgrade interrupted after any write, ending with exactly the keys of an uninterrupted one", async () => {
    // Few partitions, so few mark writes: the loop below crashes once after each write.
    const partitioning = new Partitioning(8);
    const cleanDir = await formatTwoDirectory(t);
    let store = await RocksStore.open(cleanDir);
    let writes = 0;
    const write = store.write.bind(store);
    store.write = (ops) => {
      writes++;
      return write(ops);
    };
    await upgradeDataFormat(store, partitioning, silentLogger(), { batch: 2 });
    await store.close();
    const expected = await dump(cleanDir);
    assert.deepEqual(oldKeys(expected), []);
    assert.ok(writes >= 6, `only ${writes} writes: the test would not interrupt between batches`);

    for (let crashAt = 1; crashAt < writes; crashAt++) {
      const dir = await formatTwoDirectory(t);
      store = await RocksStore.open(dir);
      let n = 0;
      const real = store.write.bind(store);
      store.write = (ops) => (++n === crashAt ? Promise.reject(new Error("power cut")) : real(ops));
      await assert.rejects(upgradeDataFormat(store, partitioning, silentLogger(), { batch: 2 }), /power cut/);
      await store.close();
      // An older build refuses the half-upgraded directory (it says 3); this one finishes it.
      store = await RocksStore.open(dir);
      if (crashAt > 1) assert.deepEqual(JSON.parse((await store.get(FORMAT_KEY)) ?? "null"), { format: "twinmesh-data", version: 3, upgradingFrom: 2 });
      assert.equal(store.formatVersion, 2);
      await upgradeDataFormat(store, partitioning, silentLogger(), { batch: 2 });
      assert.equal(store.formatVersion, 3);
      await store.close();
      assert.deepEqual(await dump(dir), expected, `after a crash at write ${crashAt}`);
    }
  });
});
