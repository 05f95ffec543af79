import assert from "node:assert/strict";
import { type Delivery, OutboxDispatcher } from "../../../../runtime/host/outbox-dispatcher.js";
import type { OutboxEntry } from "../../../../runtime/host/outbox-entry.js";
import { type PartitionId, silentLogger } from "../../../../runtime/index.js";
import { Keys } from "../../../../runtime/store/keys.js";
import { type KeyRange, RocksStore } from "../../../../runtime/store/rocks-store.js";
import { type TestScope, useTestScope } from "../../../harness/test-scope.js";
import { waitFor } from "../../../harness/wait-for.js";

const keys = new Keys();

const P0 = 0 as PartitionId;

function entry(seq: number, toId = "sink-1", toKind = "sink", partition = P0): OutboxEntry {
  return { partition, seq, fromKind: "forward", fromId: "f-1", toKind, toId, message: { n: seq } };
}

/** A dispatcher over a real store, with a deliverer the test steers and a record of what it did. */
class Harness {
  readonly delivered: number[] = [];
  readonly offered: number[] = [];
  /** When each offer was made (performance.now()). */
  readonly offeredAt: number[] = [];
  readonly quarantined: { key: string; problem: string }[] = [];
  readonly scans: KeyRange[] = [];
  /** Reads of the outbox that ended (to their end or stopped early). */
  scansEnded = 0;
  /** Targets whose mailbox is full. */
  readonly busy = new Set<string>();
  /** Targets whose mailbox takes this many more messages, then is full. */
  readonly room = new Map<string, number>();
  readonly unknownKinds = new Set<string>();
  /** Partitions this node owns; undefined: all. */
  owned: Set<number> | undefined;
  /** Entries (`partition:seq`) whose sending writes are not durable enough yet. */
  readonly held = new Set<string>();
  /** Every delivery, as `partition:seq`. */
  readonly handed: string[] = [];
  settledCalls = 0;
  dispatcher!: OutboxDispatcher;

  constructor(readonly store: RocksStore) {}

  static async open(t: TestScope, options: { maxQueued?: number; retryMs?: number; partitions?: number; owned?: number[] } = {}): Promise<Harness> {
    const store = await RocksStore.open(t.tempDir("outbox"));
    t.defer(() => store.close());
    const h = new Harness(store);
    h.owned = options.owned === undefined ? undefined : new Set(options.owned);
    const scan = store.scan.bind(store);
    store.scan = (range, opts) => {
      h.scans.push(range);
      const inner = scan(range, opts);
      return (async function* () {
        try {
          yield* inner;
        } finally {
          h.scansEnded++;
        }
      })();
    };
    h.dispatcher = new OutboxDispatcher({
      store,
      keys,
      log: silentLogger(),
      deliver: (e) => h.deliver(e),
      quarantine: async (key, _raw, problem) => {
        h.quarantined.push({ key, problem });
        await store.write([{ type: "del", key }]);
      },
      settled: () => {
        h.settledCalls++;
      },
      owns: (p) => h.owned?.has(p) ?? true,
      held: (p, seq) => h.held.has(`${p}:${seq}`),
      partitions: options.partitions ?? 1,
      maxQueued: options.maxQueued ?? 100,
      retryMs: options.retryMs ?? 10,
    });
    t.defer(() => h.dispatcher.close());
    return h;
  }

  private deliver(e: OutboxEntry): Delivery {
    this.offered.push(e.seq);
    this.offeredAt.push(performance.now());
    if (this.unknownKinds.has(e.toKind)) return "unknown-kind";
    if (this.busy.has(e.toId)) return "busy";
    const room = this.room.get(e.toId);
    if (room !== undefined) {
      if (room === 0) return "busy";
      this.room.set(e.toId, room - 1);
    }
    this.delivered.push(e.seq);
    this.handed.push(`${e.partition}:${e.seq}`);
    return "delivered";
  }

  /**
   * Makes the reads of partition `p`'s outbox wait until `open()`: before they open their
   * snapshot, or after `afterChunks` chunks (a chunk holds up to 256 KiB). `reached` once one waits.
   */
  gateReadOf(p: PartitionId, { afterChunks = 0 } = {}): { open: () => void; readonly reached: boolean } {
    let open!: () => void;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    const state = { open, reached: false };
    const scan = this.store.scan;
    this.store.scan = (range, opts) => {
      const inner = scan(range, opts);
      if (keys.outboxKeyOf(range.gte).partition !== p) return inner;
      return (async function* () {
        let chunks = 0;
        if (afterChunks === 0) {
          state.reached = true;
          await gate;
        }
        for await (const chunk of inner) {
          yield chunk;
          if (++chunks === afterChunks) {
            state.reached = true;
            await gate;
          }
        }
      })();
    };
    return state;
  }

  /** Writes `e` to the outbox and hands it to the dispatcher, as a committed turn does. */
  async send(e: OutboxEntry): Promise<void> {
    await this.persist(e);
    this.dispatcher.enqueue(e);
  }

  /** Writes entries to the outbox as committed turns would. */
  async persist(...entries: OutboxEntry[]): Promise<void> {
    await this.store.write(entries.map((e) => ({ type: "put", key: keys.outbox(e.partition, e.seq), value: JSON.stringify(e) })));
  }

  /** Commits the delivery of `seq` (of partition `p`): its outbox entry is deleted and it is released. */
  async commit(seq: number, p = P0): Promise<void> {
    await this.store.write([{ type: "del", key: keys.outbox(p, seq) }]);
    this.dispatcher.released(entry(seq, "", "", p), false);
  }
}

describe("OutboxDispatcher", () => {
  const t = useTestScope();

  it("hands a committed message to its target at once and is idle once the delivery commits", async () => {
    const h = await Harness.open(t);
    await h.send(entry(1));
    assert.deepEqual(h.delivered, [1]);
    assert.equal(h.dispatcher.idle, false);
    await h.commit(1);
    assert.equal(h.dispatcher.idle, true);
  });

  it("delivers no more messages of a partition that moved to another node: its new owner delivers them, and a late second delivery would be applied twice", async () => {
    const h = await Harness.open(t, { owned: [0] });
    await h.persist(entry(1), entry(2), entry(3), entry(5, "sink-2"));
    h.busy.add("sink-1");
    for (const seq of [1, 2, 3]) h.dispatcher.enqueue(entry(seq));
    // Message 5 is in flight.
    h.dispatcher.enqueue(entry(5, "sink-2"));
    assert.deepEqual(h.delivered, [5]);
    h.delivered.length = 0;
    // The target was busy: the three wait. Then the sender's partition moves away, unannounced.
    h.owned = new Set();
    h.busy.delete("sink-1");
    // The next retry round offers the waiting messages again: it drops them instead.
    await waitFor(() => h.dispatcher.counts.queued === 0, { timeoutMs: 2_000, what: "the retry round" });
    assert.deepEqual(h.delivered, [], "a message of a partition this node no longer owns was delivered");
    // Neither a new commit nor the failed turn of message 5 queues anything again.
    h.dispatcher.enqueue(entry(4));
    h.dispatcher.released(entry(5, "sink-2"), true);
    assert.deepEqual(h.dispatcher.counts, { queued: 0, inflight: 0, parked: 0 });
    assert.deepEqual(h.delivered, []);
    await waitFor(() => h.dispatcher.idle, { timeoutMs: 2_000, what: "idle" });
  });

  it("reads no message of a partition past one that is held: the later ones would overtake it, and leave after it when the partition is read again", async () => {
    const h = await Harness.open(t);
    await h.persist(entry(1), entry(2), entry(3, "sink-2"));
    h.held.add("0:1");
    h.dispatcher.start();
    await waitFor(() => h.scans.length >= 1 && h.dispatcher.idle, { timeoutMs: 2_000, what: "the start-up read" });
    assert.deepEqual(h.delivered, [], "a message left ahead of a held one of its partition");
    // Released with a read of its partition (as HeldMessages does for a partition that waited as a whole).
    h.held.clear();
    h.dispatcher.partitionChanged(P0);
    await waitFor(() => h.delivered.length === 3, { timeoutMs: 2_000, what: "the three deliveries" });
    assert.deepEqual(h.delivered, [1, 2, 3]);
  });

  it("leaves a message committed while its partition's outbox is yet to be read behind the older ones that read finds", async () => {
    const h = await Harness.open(t, { partitions: 2, retryMs: 60_000 });
    const P1 = 1 as PartitionId;
    await h.persist(entry(1, "a"), entry(1, "b", "sink", P1));
    const gate = h.gateReadOf(P0);
    t.defer(gate.open);
    h.dispatcher.start();
    await waitFor(() => h.scans.length === 1, { timeoutMs: 2_000, what: "the read of partition 0" });
    // A turn of partition 1 commits message 2 while the read has yet to reach partition 1.
    await h.send(entry(2, "b", "sink", P1));
    gate.open();
    await waitFor(() => h.handed.length === 3, { timeoutMs: 2_000, what: "the three deliveries" });
    assert.deepEqual(
      h.handed.filter((id) => id.startsWith("1:")),
      ["1:1", "1:2"],
      "the new message overtook the one the outbox held",
    );
  });

  it("admits a message committed while its partition's outbox is being read after what that read finds, and lets one of a partition the read has passed leave at once", async () => {
    const h = await Harness.open(t, { partitions: 3, maxQueued: 5_000, retryMs: 60_000 });
    const [P1, P2] = [1 as PartitionId, 2 as PartitionId];
    // Partition 1 holds more than a chunk (256 KiB): its read waits after the first one, with
    // its snapshot open.
    const older = Array.from({ length: 400 }, (_, i) => ({ ...entry(i + 1, "b", "sink", P1), message: { pad: "x".repeat(1_000) } }));
    await h.persist(entry(1, "a"), ...older, entry(1, "c", "sink", P2));
    const gate = h.gateReadOf(P1, { afterChunks: 1 });
    t.defer(gate.open);
    h.dispatcher.start();
    await waitFor(() => gate.reached || undefined, { timeoutMs: 2_000, what: "the first chunk of partition 1" });
    assert.ok(h.handed.length > 1 && h.handed.length < 401, `${h.handed.length - 1} of partition 1's 400 messages were read in the first chunk`);
    // Partition 0 was read: its new message leaves at once.
    await h.send(entry(2, "a"));
    assert.equal(h.handed.at(-1), "0:2", "a message of a partition already read waited for the rest of the scan");
    // Partition 1 is being read: its new message, which the read's snapshot lacks, follows what the read finds.
    await h.send(entry(401, "b", "sink", P1));
    gate.open();
    await waitFor(() => h.handed.length === 404 || undefined, { timeoutMs: 2_000, what: "every delivery" });
    assert.deepEqual(
      h.handed.filter((id) => id.startsWith("1:")),
      Array.from({ length: 401 }, (_, i) => `1:${i + 1}`),
      "partition 1's messages left out of order",
    );
    assert.equal(h.handed.at(-1), "2:1");
  });

  it("leaves a message committed while older ones of its partition wait on disk (memory was full) behind them, and reads them though busy targets fill over half of memory", async () => {
    const h = await Harness.open(t, { maxQueued: 4, retryMs: 60_000 });
    await h.persist(entry(1, "hot"), entry(2, "hot"), entry(3, "hot"), entry(4, "hot"), entry(5, "cold"));
    h.busy.add("hot");
    h.dispatcher.start();
    // Four wait for the busy target; message 5 stays on disk.
    await waitFor(() => h.scans.length === 1 && h.dispatcher.counts.queued === 4, { timeoutMs: 2_000, what: "the first read" });
    // The busy target takes one: three wait, over half of memory.
    h.busy.delete("hot");
    h.room.set("hot", 1);
    h.dispatcher.targetFreed("sink", "hot");
    assert.deepEqual(h.delivered, [1]);
    await h.send(entry(6, "cold"));
    assert.deepEqual(h.delivered, [1], "message 6 left ahead of message 5, still on disk");
    // The partition is read for them, though the busy target still holds three in memory.
    await waitFor(() => h.delivered.length === 3, { timeoutMs: 2_000, what: "the two cold messages" });
    assert.deepEqual(h.delivered, [1, 5, 6]);
    h.room.delete("hot");
    h.dispatcher.targetFreed("sink", "hot");
    assert.deepEqual(h.delivered, [1, 5, 6, 2, 3, 4]);
  });

  it("keeps reading a partition with new messages waiting while memory stays over half full, each time a message leaves", async () => {
    const h = await Harness.open(t, { maxQueued: 4, retryMs: 60_000 });
    await h.persist(entry(1, "hot"), entry(2, "hot"), entry(3, "hot"), entry(4, "hot"), entry(5, "cold"), entry(6, "hot"), entry(7, "cold"));
    h.busy.add("hot");
    h.dispatcher.start();
    await waitFor(() => h.scans.length === 1 && h.dispatcher.counts.queued === 4, { timeoutMs: 2_000, what: "the first read" });
    await h.send(entry(8, "cold"));
    // One hot message leaves: the read that follows admits 5 and 6, and stops, full, at 7.
    h.busy.delete("hot");
    h.room.set("hot", 1);
    h.dispatcher.targetFreed("sink", "hot");
    await waitFor(() => h.scans.length === 2 && h.dispatcher.counts.queued === 4, { timeoutMs: 2_000, what: "the second read" });
    assert.deepEqual(h.delivered, [1, 5]);
    // Another leaves: the partition is read again from 7, though three still wait for the busy target.
    h.room.set("hot", 1);
    h.dispatcher.targetFreed("sink", "hot");
    await waitFor(() => h.delivered.length === 5, { timeoutMs: 2_000, what: "messages 7 and 8" });
    assert.deepEqual(h.delivered, [1, 5, 2, 7, 8]);
  });

  it("reads a partition whose read stopped at a held message again from there once that message leaves, with what was committed meanwhile", async () => {
    const h = await Harness.open(t, { partitions: 2, retryMs: 60_000 });
    const P1 = 1 as PartitionId;
    await h.persist(entry(1, "a"), entry(3, "b", "sink", P1), entry(4, "b", "sink", P1));
    h.held.add("1:3");
    const gate = h.gateReadOf(P0);
    t.defer(gate.open);
    h.dispatcher.start();
    await waitFor(() => gate.reached || undefined, { timeoutMs: 2_000, what: "the read of partition 0" });
    // Committed while the scan has yet to reach partition 1, whose read then stops at message 3.
    await h.send(entry(10, "b", "sink", P1));
    gate.open();
    await waitFor(() => h.scansEnded === 2 || undefined, { timeoutMs: 2_000, what: "the read of partition 1" });
    assert.deepEqual(h.handed, ["0:1"]);
    // Message 3 is released (its sending write reached the copies): it leaves, and so do the others after it.
    h.held.clear();
    h.dispatcher.enqueue(entry(3, "b", "sink", P1));
    await waitFor(() => h.handed.length === 4 || undefined, { timeoutMs: 2_000, what: "partition 1's messages" });
    assert.deepEqual(h.handed, ["0:1", "1:3", "1:4", "1:10"]);
  });

  it("leaves a message committed during a read that then stops at a held message behind that message", async () => {
    const h = await Harness.open(t, { partitions: 1, retryMs: 60_000 });
    const older = Array.from({ length: 400 }, (_, i) => ({ ...entry(i + 1, "b"), message: { pad: "x".repeat(1_000) } }));
    await h.persist(...older);
    h.held.add("0:400");
    const gate = h.gateReadOf(P0, { afterChunks: 1 });
    t.defer(gate.open);
    h.dispatcher.start();
    await waitFor(() => gate.reached || undefined, { timeoutMs: 2_000, what: "the first chunk" });
    await h.send(entry(401, "b"));
    gate.open();
    await waitFor(() => h.scansEnded === 1 || undefined, { timeoutMs: 2_000, what: "the read" });
    assert.equal(h.handed.at(-1), "0:399", "message 401 left ahead of message 400, still held");
    h.held.clear();
    h.dispatcher.enqueue(entry(400, "b"));
    await waitFor(() => h.handed.length === 401 || undefined, { timeoutMs: 2_000, what: "messages 400 and 401" });
    assert.deepEqual(h.handed.slice(-2), ["0:400", "0:401"]);
  });

  it("leaves messages committed during a read beyond what memory takes behind a held message that read stops at", async () => {
    const h = await Harness.open(t, { maxQueued: 4, retryMs: 60_000 });
    await h.persist(entry(1, "b"));
    h.held.add("0:1");
    const gate = h.gateReadOf(P0);
    t.defer(gate.open);
    h.dispatcher.start();
    await waitFor(() => gate.reached || undefined, { timeoutMs: 2_000, what: "the read" });
    // Five commits during the read: four wait with it, the fifth is left to a later read.
    for (const seq of [2, 3, 4, 5, 6]) {
      await h.send(entry(seq, "b"));
    }
    gate.open();
    await waitFor(() => h.scansEnded >= 1 || undefined, { timeoutMs: 2_000, what: "the read to stop at message 1" });
    await waitFor(() => h.dispatcher.idle || undefined, { timeoutMs: 2_000, what: "the scans to settle" });
    assert.deepEqual(h.delivered, [], "a message left ahead of message 1, still held");
    h.held.clear();
    h.dispatcher.enqueue(entry(1, "b"));
    await waitFor(() => h.delivered.length === 6 || undefined, { timeoutMs: 2_000, what: "the six messages" });
    assert.deepEqual(h.delivered, [1, 2, 3, 4, 5, 6]);
  });

  it("reads a partition with a message committed while a scan had yet to reach it even when that scan stopped at a full memory before it", async () => {
    const h = await Harness.open(t, { partitions: 2, maxQueued: 4, retryMs: 60_000 });
    const P1 = 1 as PartitionId;
    await h.persist(...[1, 2, 3, 4, 5].map((seq) => entry(seq, "hot")), entry(1, "cold", "sink", P1));
    h.busy.add("hot");
    const gate = h.gateReadOf(P0);
    t.defer(gate.open);
    h.dispatcher.start();
    await waitFor(() => gate.reached || undefined, { timeoutMs: 2_000, what: "the read of partition 0" });
    await h.send(entry(2, "cold", "sink", P1));
    gate.open();
    // Partition 0 fills memory; the scan stops before partition 1.
    await waitFor(() => (h.scansEnded === 1 && h.dispatcher.counts.queued === 4) || undefined, { timeoutMs: 2_000, what: "the read of partition 0" });
    assert.deepEqual(h.handed, []);
    // One hot message leaves: memory is still over half full, yet partition 1 is read for its new message.
    h.busy.delete("hot");
    h.room.set("hot", 1);
    h.dispatcher.targetFreed("sink", "hot");
    await waitFor(() => h.handed.length === 3 || undefined, { timeoutMs: 2_000, what: "partition 1's messages" });
    assert.deepEqual(h.handed, ["0:1", "1:1", "1:2"]);
  });

  it("forgets what was committed during the read of a partition that moved away meanwhile: it is read again from the head once back", async () => {
    const h = await Harness.open(t, { partitions: 1, owned: [0], retryMs: 60_000 });
    const older = Array.from({ length: 400 }, (_, i) => ({ ...entry(i + 1, "b"), message: { pad: "x".repeat(1_000) } }));
    await h.persist(...older);
    const gate = h.gateReadOf(P0, { afterChunks: 1 });
    t.defer(gate.open);
    h.dispatcher.start();
    await waitFor(() => gate.reached || undefined, { timeoutMs: 2_000, what: "the first chunk" });
    const first = h.handed.length;
    await h.send(entry(401, "b"));
    // The partition moves away and comes back, its whole outbox held (as a node taking it holds it).
    h.owned?.delete(0);
    h.dispatcher.partitionChanged(P0);
    h.owned?.add(0);
    for (let seq = 1; seq <= 401; seq++) h.held.add(`0:${seq}`);
    h.dispatcher.partitionChanged(P0);
    gate.open();
    await waitFor(() => h.scansEnded === 2 || undefined, { timeoutMs: 2_000, what: "the read after the move" });
    assert.equal(h.handed.length, first, "a message left while the partition's outbox was held");
    // Released as a whole: read from the head.
    h.held.clear();
    h.dispatcher.partitionChanged(P0);
    await waitFor(() => h.handed.length === 401 || undefined, { timeoutMs: 2_000, what: "every message" });
    assert.deepEqual(
      h.handed,
      Array.from({ length: 401 }, (_, i) => `0:${i + 1}`),
    );
  });

  it("reads again what it let go of while its partition was not served for a moment, before a new message of it", async () => {
    const h = await Harness.open(t, { owned: [0], retryMs: 10 });
    await h.persist(entry(1, "hot"));
    h.busy.add("hot");
    h.dispatcher.enqueue(entry(1, "hot"));
    // The node stops serving the partition for a moment (its view of the ring changed) and the
    // retry round lets message 1 go; then it serves it again, with no change of hands announced.
    h.owned?.delete(0);
    await waitFor(() => h.dispatcher.counts.queued === 0 || undefined, { timeoutMs: 2_000, what: "the retry round" });
    h.owned?.add(0);
    h.busy.delete("hot");
    await h.send(entry(2, "hot"));
    await waitFor(() => h.delivered.length === 2 || undefined, { timeoutMs: 2_000, what: "both messages" });
    assert.deepEqual(h.delivered, [1, 2]);
  });

  it("puts a message whose turn ended without a commit back before later ones to the same twin, though memory is full", async () => {
    const h = await Harness.open(t, { maxQueued: 4, retryMs: 10 });
    await h.persist(...[1, 2, 3, 4, 5].map((seq) => entry(seq, "hot")));
    h.dispatcher.enqueue(entry(1, "hot"));
    h.busy.add("hot");
    for (const seq of [2, 3, 4, 5]) h.dispatcher.enqueue(entry(seq, "hot"));
    assert.equal(h.dispatcher.counts.queued, 4);
    h.dispatcher.released(entry(1, "hot"), true);
    h.busy.delete("hot");
    await waitFor(() => h.delivered.length === 6, { timeoutMs: 2_000, what: "the six offers" });
    assert.deepEqual(h.delivered, [1, 1, 2, 3, 4, 5]);
  });

  it("redelivers at start-up what the outbox holds, each message once", async () => {
    const h = await Harness.open(t);
    await h.persist(entry(3), entry(1, "sink-2"), entry(2));
    h.dispatcher.start();
    h.dispatcher.enqueue(entry(2)); // a commit racing the start-up scan
    await waitFor(() => h.delivered.length === 3, { timeoutMs: 2_000, what: "three deliveries" });
    for (const seq of [1, 2, 3]) await h.commit(seq);
    await waitFor(() => h.dispatcher.idle, { timeoutMs: 2_000, what: "idle" });
    assert.deepEqual(
      [...h.delivered].sort((a, b) => a - b),
      [1, 2, 3],
      "a message was handed over twice or not at all",
    );
  });

  it("holds back only a busy target's messages, in order, and offers them when a commit frees its mailbox", async () => {
    const h = await Harness.open(t, { retryMs: 60_000 });
    h.busy.add("hot");
    for (let seq = 1; seq <= 5; seq++) h.dispatcher.enqueue(entry(seq, seq % 2 === 0 ? "cold" : "hot"));
    assert.deepEqual(h.delivered, [2, 4]);
    // While its first message waits, later ones for the same target are queued behind it without being offered.
    assert.deepEqual(
      h.offered.filter((s) => s % 2 === 1),
      [1],
    );
    h.busy.delete("hot");
    h.dispatcher.targetFreed("sink", "hot");
    assert.deepEqual(h.delivered, [2, 4, 1, 3, 5]);
  });

  it("offers a busy target's messages again on the retry tick", async () => {
    const h = await Harness.open(t, { retryMs: 10 });
    h.busy.add("hot");
    h.dispatcher.enqueue(entry(1, "hot"));
    h.busy.delete("hot");
    await waitFor(() => h.delivered.includes(1), { timeoutMs: 2_000, what: "the retry" });
  });

  it("offers a message again, before later ones to the same twin, when its turn ended without a commit", async () => {
    const h = await Harness.open(t, { retryMs: 10 });
    h.dispatcher.enqueue(entry(1, "hot"));
    h.busy.add("hot");
    h.dispatcher.enqueue(entry(2, "hot"));
    h.dispatcher.released(entry(1, "hot"), true);
    h.busy.delete("hot");
    // Freed at once, it is still offered after its backoff (one interval after one failure).
    h.dispatcher.targetFreed("sink", "hot");
    await waitFor(() => h.delivered.length === 3 || undefined, { timeoutMs: 2_000, what: "the retry" });
    assert.deepEqual(h.delivered, [1, 1, 2]);
  });

  it("offers a message again when its turn ended without a commit", async () => {
    const h = await Harness.open(t, { retryMs: 10 });
    await h.send(entry(1));
    h.dispatcher.released(entry(1), true);
    await waitFor(() => h.delivered.length === 2, { timeoutMs: 2_000, what: "the second delivery" });
    assert.deepEqual(h.delivered, [1, 1]);
  });

  it("backs off a target whose deliveries keep ending without a commit, twice as long each time up to 16 intervals, and not after a delivery commits", async () => {
    const h = await Harness.open(t, { retryMs: 20 });
    await h.persist(entry(1), entry(2));
    h.dispatcher.enqueue(entry(1));
    for (let failures = 1; failures <= 6; failures++) {
      h.dispatcher.released(entry(1), true);
      await waitFor(() => h.offered.length === failures + 1 || undefined, { timeoutMs: 5_000, what: `offer ${failures + 1}` });
    }
    // Timers never fire early: each wait is at least its backoff (20, 40, 80, 160, 320, then 320 ms).
    const gaps = h.offeredAt.slice(1).map((at, i) => at - (h.offeredAt[i] as number));
    [20, 40, 80, 160, 320, 320].forEach((least, i) => {
      assert.ok(
        (gaps[i] as number) >= least - 1,
        `offer ${i + 2} came ${Math.round(gaps[i] as number)} ms after the one before it; its backoff is ${least} ms`,
      );
    });
    // The delivery commits: the next message to that twin, failing once, waits one interval again.
    await h.commit(1);
    h.dispatcher.enqueue(entry(2));
    h.dispatcher.released(entry(2), true);
    const before = performance.now();
    await waitFor(() => h.offered.length === 9 || undefined, { timeoutMs: 5_000, what: "the second message offered again" });
    assert.ok((h.offeredAt[8] as number) - before < 300, "the backoff outlived a committed delivery");
  });

  it("keeps at most maxQueued in memory and reads the rest from where it stopped, never from the head again", async () => {
    const h = await Harness.open(t, { maxQueued: 4, retryMs: 60_000 });
    const all = Array.from({ length: 10 }, (_, i) => entry(i + 1, "hot"));
    await h.persist(...all);
    h.busy.add("hot");
    h.dispatcher.start();
    await waitFor(() => h.scans.length === 1 && h.dispatcher.counts.queued === 4, { timeoutMs: 2_000, what: "the first scan" });
    h.dispatcher.targetFreed("sink", "hot"); // still busy: nothing moves
    assert.equal(h.scans.length, 1, "the outbox was read again while the busy target's queue was full");
    h.busy.delete("hot");
    h.dispatcher.targetFreed("sink", "hot");
    assert.deepEqual(h.delivered, [1, 2, 3, 4]);
    for (const seq of [1, 2, 3, 4]) await h.commit(seq);
    await waitFor(() => h.delivered.length >= 8, { timeoutMs: 2_000, what: "the second scan" });
    assert.equal(h.scans[1]?.gte, keys.outbox(P0, 5), "the second scan did not resume where the first stopped");
    h.dispatcher.targetFreed("sink", "hot");
    for (const seq of [5, 6, 7, 8]) await h.commit(seq);
    await waitFor(() => h.delivered.length === 10, { timeoutMs: 2_000, what: "the last two" });
    for (const seq of [9, 10]) await h.commit(seq);
    await waitFor(() => h.dispatcher.idle, { timeoutMs: 2_000, what: "idle" });
    assert.deepEqual(h.delivered, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("finds a message enqueued while memory was full even when its seq is below the last scan position", async () => {
    const h = await Harness.open(t, { maxQueued: 2, retryMs: 60_000 });
    h.busy.add("hot");
    await h.persist(entry(10, "hot"), entry(11, "hot"));
    h.dispatcher.start();
    await waitFor(() => h.dispatcher.counts.queued === 2, { timeoutMs: 2_000, what: "the scan" });
    // A dead letter requeued under its old seq while memory is full.
    await h.send(entry(3, "cold"));
    assert.deepEqual(h.delivered, []);
    h.busy.delete("hot");
    h.dispatcher.targetFreed("sink", "hot");
    await waitFor(() => h.delivered.includes(3), { timeoutMs: 2_000, what: "the requeued message" });
  });

  it("moves an entry that does not parse to quarantine once and delivers its neighbours", async () => {
    const h = await Harness.open(t);
    await h.persist(entry(1), entry(3));
    await h.store.write([
      { type: "put", key: keys.outbox(P0, 2), value: "{not json" },
      { type: "put", key: keys.outbox(P0, 4), value: JSON.stringify({ ...entry(4), seq: 99 }) },
    ]);
    h.dispatcher.start();
    await waitFor(() => h.quarantined.length === 2, { timeoutMs: 2_000, what: "quarantine" });
    assert.deepEqual(h.delivered, [1, 3]);
    assert.deepEqual(
      h.quarantined.map((q) => q.key),
      [keys.outbox(P0, 2), keys.outbox(P0, 4)],
    );
    assert.match(h.quarantined[0]?.problem ?? "", /not JSON/);
    assert.match(h.quarantined[1]?.problem ?? "", /does not match/);
  });

  it("parks messages to a kind that is not loaded instead of offering them again, and stays idle", async () => {
    const h = await Harness.open(t, { retryMs: 5 });
    h.unknownKinds.add("gone");
    h.dispatcher.enqueue(entry(1, "x", "gone"));
    h.dispatcher.enqueue(entry(2, "y", "gone"));
    // A busy target's message shows when retry ticks have run.
    h.busy.add("hot");
    h.dispatcher.enqueue(entry(3, "hot"));
    await waitFor(() => h.offered.filter((s) => s === 3).length >= 3, { timeoutMs: 2_000, what: "two retry ticks" });
    h.busy.delete("hot");
    await waitFor(() => h.delivered.includes(3), { timeoutMs: 2_000, what: "the busy message" });
    await h.commit(3);
    assert.deepEqual(
      h.offered.filter((s) => s !== 3),
      [1],
      "a parked kind's messages were offered again",
    );
    assert.deepEqual(h.dispatcher.counts, { queued: 0, inflight: 0, parked: 2 });
    assert.equal(h.dispatcher.idle, true);
  });

  it("offers a busy target only its first waiting message per tick, however many wait", async () => {
    const h = await Harness.open(t, { maxQueued: 50_000, retryMs: 60_000 });
    h.busy.add("hot");
    for (let seq = 1; seq <= 30_000; seq++) h.dispatcher.enqueue(entry(seq, "hot"));
    assert.equal(h.offered.length, 1);
    assert.equal(h.dispatcher.counts.queued, 30_000);
  });

  it("keeps messages of different partitions with the same seq apart: each is delivered and released on its own", async () => {
    const h = await Harness.open(t, { partitions: 4, retryMs: 10 });
    const a = entry(1, "sink-1", "sink", 1 as PartitionId);
    const b = entry(1, "sink-2", "sink", 2 as PartitionId);
    await h.persist(a, b);
    h.dispatcher.enqueue(a);
    h.dispatcher.enqueue(b);
    assert.deepEqual(h.handed, ["1:1", "2:1"]);
    // Partition 2's turn did not commit: only it is offered again.
    h.dispatcher.released(b, true);
    await waitFor(() => h.handed.length === 3, { timeoutMs: 2_000, what: "the second offer" });
    assert.deepEqual(h.handed, ["1:1", "2:1", "2:1"]);
    await h.commit(1, 1 as PartitionId);
    await h.commit(1, 2 as PartitionId);
    assert.equal(h.dispatcher.idle, true);
  });

  it("reads only the outboxes of owned partitions, reads one when it becomes owned and forgets one it lost", async () => {
    const h = await Harness.open(t, { partitions: 4, owned: [0, 2], retryMs: 60_000 });
    await h.persist(
      entry(1, "a", "sink", 0 as PartitionId),
      entry(1, "b", "sink", 1 as PartitionId),
      entry(1, "c", "sink", 2 as PartitionId),
      entry(7, "d", "sink", 3 as PartitionId),
    );
    h.dispatcher.start();
    await waitFor(() => h.handed.length === 2 && h.dispatcher.counts.inflight === 2, { timeoutMs: 2_000, what: "the start-up scan" });
    assert.deepEqual(h.handed, ["0:1", "2:1"]);
    assert.deepEqual(
      h.scans.map((r) => keys.outboxKeyOf(r.gte).partition),
      [0, 2],
      "a partition this node does not own was read",
    );
    // Partition 3 moves here.
    h.owned?.add(3);
    h.dispatcher.partitionChanged(3 as PartitionId);
    await waitFor(() => h.handed.includes("3:7"), { timeoutMs: 2_000, what: "partition 3's message" });
    // Partition 0 moves away while its target is busy: its waiting message is dropped from memory.
    h.busy.add("e");
    h.dispatcher.enqueue(entry(2, "e", "sink", 0 as PartitionId));
    assert.equal(h.dispatcher.counts.queued, 1);
    h.owned?.delete(0);
    h.dispatcher.partitionChanged(0 as PartitionId);
    assert.equal(h.dispatcher.counts.queued, 0);
  });
});
