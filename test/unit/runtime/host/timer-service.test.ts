import assert from "node:assert/strict";
import { VirtualClock } from "../../../../runtime/clock.js";
import { resolveHostOptions } from "../../../../runtime/host/host-options.js";
import { TimerService } from "../../../../runtime/host/timer-service.js";
import { silentLogger } from "../../../../runtime/index.js";
import { Keys } from "../../../../runtime/store/keys.js";
import { RocksStore } from "../../../../runtime/store/rocks-store.js";
import { type TestScope, useTestScope } from "../../../harness/test-scope.js";

const keys = new Keys();

interface Posted {
  kind: string;
  id: string;
  name: string;
  dueMs: number;
  indexKey: string;
}

/** A timer service over a real store and a virtual clock, posting to a list; nothing polls by itself. */
class Harness {
  readonly posted: Posted[] = [];
  readonly unknownKinds = new Set<string>();
  /** Keys the scans read, across all scans. */
  keysRead = 0;
  readonly clock = new VirtualClock(1_000_000);
  timers!: TimerService;

  constructor(readonly store: RocksStore) {}

  static async open(t: TestScope, maxConcurrentTimers = 100): Promise<Harness> {
    const store = await RocksStore.open(t.tempDir("timers"));
    t.defer(() => store.close());
    const h = new Harness(store);
    const scan = store.scan.bind(store);
    store.scan = async function* (range, options) {
      for await (const chunk of scan(range, options)) {
        h.keysRead += chunk.length;
        yield chunk;
      }
    };
    const options = resolveHostOptions({ timerPollMs: 3_600_000, maxConcurrentTimers });
    h.timers = new TimerService(store, keys, h.clock, silentLogger(), options, (kind, id, name, dueMs, indexKey) => {
      if (h.unknownKinds.has(kind)) return false;
      h.posted.push({ kind, id, name, dueMs, indexKey });
      return true;
    });
    t.defer(() => h.timers.close());
    return h;
  }

  /** Writes timer index entries as committed turns would, and tells the service. */
  async arm(dueMs: number, id: string, kind = "tick", name = "t"): Promise<string> {
    const key = keys.timer(dueMs, kind, id, name);
    await this.store.write([{ type: "put", key, value: "" }]);
    this.timers.armedAt(dueMs);
    return key;
  }

  /** A timer's turn committed: its index entry is gone and it is released. */
  async commit(p: Posted): Promise<void> {
    await this.store.write([{ type: "del", key: p.indexKey }]);
    this.timers.released(p.indexKey);
  }
}

describe("TimerService", () => {
  const t = useTestScope();

  it("fires what is due, in due order, and nothing that is not", async () => {
    const h = await Harness.open(t);
    const now = h.clock.nowMs();
    await h.arm(now - 10, "b");
    await h.arm(now - 20, "a");
    await h.arm(now + 1, "later");
    assert.equal(await h.timers.fireDue(), 2);
    assert.deepEqual(
      h.posted.map((p) => p.id),
      ["a", "b"],
    );
  });

  it("fires a timer once while its turn is in flight, and again only if the turn did not commit", async () => {
    const h = await Harness.open(t);
    await h.arm(h.clock.nowMs(), "a");
    assert.equal(await h.timers.fireDue(), 1);
    assert.equal(await h.timers.fireDue(), 0, "an in-flight timer fired again");
    h.timers.released(h.posted[0]?.indexKey as string); // the turn failed: the entry is still there
    assert.equal(await h.timers.fireDue(), 1);
    await h.commit(h.posted[1] as Posted);
    assert.equal(await h.timers.fireDue(), 0);
  });

  it("has at most maxConcurrentTimers in flight and fires the rest as turns commit", async () => {
    const h = await Harness.open(t, 2);
    for (const id of ["a", "b", "c", "d", "e"]) await h.arm(h.clock.nowMs() - 100, id);
    assert.equal(await h.timers.fireDue(), 2);
    await h.commit(h.posted[0] as Posted);
    await h.commit(h.posted[1] as Posted);
    assert.equal(await h.timers.fireDue(), 2);
    assert.deepEqual(
      h.posted.map((p) => p.id),
      ["a", "b", "c", "d"],
    );
  });

  it("reads the index from the earliest unfired time, not from its head", async () => {
    const h = await Harness.open(t);
    for (let i = 0; i < 50; i++) await h.arm(h.clock.nowMs() - 1_000 + i, `old-${i}`);
    await h.timers.fireDue();
    for (const p of [...h.posted]) await h.commit(p);
    h.clock.set(h.clock.nowMs() + 10_000);
    await h.arm(h.clock.nowMs(), "new");
    h.keysRead = 0;
    assert.equal(await h.timers.fireDue(), 1);
    assert.equal(h.keysRead, 1, "the scan read fired timers again");
  });

  it("fires a timer armed, earlier than the floor, while a scan was reading", async () => {
    const h = await Harness.open(t);
    const due = h.clock.nowMs() - 500;
    // Hold the scan open between taking its snapshot and ending, and arm a timer then.
    const scan = h.store.scan.bind(h.store);
    let armed: Promise<string> | undefined;
    h.store.scan = async function* (range, options) {
      yield* scan(range, options);
      armed ??= h.arm(due, "late");
      await armed;
    };
    await h.arm(h.clock.nowMs(), "now");
    await h.timers.fireDue();
    assert.deepEqual(
      h.posted.map((p) => p.id),
      ["now"],
    );
    h.store.scan = scan;
    await h.timers.fireDue();
    assert.deepEqual(
      h.posted.map((p) => p.id),
      ["now", "late"],
    );
  });

  it("passes over due timers of a kind that is not loaded once, without re-reading them on every poll", async () => {
    const h = await Harness.open(t);
    h.unknownKinds.add("gone");
    for (let i = 0; i < 20; i++) await h.arm(h.clock.nowMs() - 100 + i, `g-${i}`, "gone");
    assert.equal(await h.timers.fireDue(), 0);
    assert.deepEqual(h.timers.counts.parkedKinds, ["gone"]);
    h.clock.set(h.clock.nowMs() + 1_000);
    await h.arm(h.clock.nowMs(), "a");
    h.keysRead = 0;
    assert.equal(await h.timers.fireDue(), 1);
    assert.equal(h.keysRead, 1, "the parked timers were read again");
  });

  it("fires a parked kind's timers when a service with that kind starts over the same index", async () => {
    const h = await Harness.open(t);
    h.unknownKinds.add("gone");
    await h.arm(h.clock.nowMs() - 100, "g", "gone");
    assert.equal(await h.timers.fireDue(), 0);
    await h.timers.close();
    const restarted = new TimerService(h.store, keys, h.clock, silentLogger(), resolveHostOptions({ timerPollMs: 3_600_000 }), (_k, id) => {
      h.posted.push({ kind: "gone", id, name: "t", dueMs: 0, indexKey: "" });
      return true;
    });
    t.defer(() => restarted.close());
    assert.equal(await restarted.fireDue(), 1);
  });

  it("reports the earliest pending timer as the next one due", async () => {
    const h = await Harness.open(t);
    assert.equal(await h.timers.nextDue(), undefined);
    await h.arm(h.clock.nowMs() + 5_000, "b");
    await h.arm(h.clock.nowMs() + 2_000, "a");
    assert.equal(await h.timers.nextDue(), h.clock.nowMs() + 2_000);
  });

  it("shares one scan between concurrent calls", async () => {
    const h = await Harness.open(t);
    await h.arm(h.clock.nowMs(), "a");
    const [x, y] = await Promise.all([h.timers.fireDue(), h.timers.fireDue()]);
    assert.equal(x, 1);
    assert.equal(y, 1);
    assert.equal(h.posted.length, 1);
  });
});
