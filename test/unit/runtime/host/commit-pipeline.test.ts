import assert from "node:assert/strict";
import { Activation } from "../../../../runtime/host/activation.js";
import type { CommitGroup } from "../../../../runtime/host/commit-group.js";
import { CommitPipeline } from "../../../../runtime/host/commit-pipeline.js";
import { TwinRegistry } from "../../../../runtime/host/twin-registry.js";
import { silentLogger } from "../../../../runtime/index.js";
import type { BatchOp, RocksStore } from "../../../../runtime/store/rocks-store.js";
import { CounterTwin } from "../../../fixtures/index.js";
import { waitFor } from "../../../harness/wait-for.js";

/** A store whose writes stay pending until the test settles them. */
class FakeStore {
  readonly writes: { ops: readonly BatchOp[]; settle: (err?: Error) => void }[] = [];
  write(ops: readonly BatchOp[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.writes.push({ ops: [...ops], settle: (err) => (err === undefined ? resolve() : reject(err)) });
    });
  }
}

const registry = new TwinRegistry();
registry.register(CounterTwin);

function twin(id: string): Activation {
  const act = new Activation(registry.get("counter"), id, `t/${id}`);
  act.record = { sv: 1, ver: 1, hw: 0 };
  act.state = { count: 1 };
  act.stateJson = JSON.stringify(act.state);
  act.loading = false;
  return act;
}

/** What the pipeline under test reported. */
interface Harness {
  pipeline: CommitPipeline;
  store: FakeStore;
  committed: CommitGroup[];
  failed: { groups: CommitGroup[]; err: Error }[];
}

function harness(maxGroupEvents = 100): Harness {
  const store = new FakeStore();
  const committed: CommitGroup[] = [];
  const failed: { groups: CommitGroup[]; err: Error }[] = [];
  const pipeline = new CommitPipeline(
    store as unknown as RocksStore,
    maxGroupEvents,
    { committed: (g) => void committed.push(g), failed: (groups, err) => void failed.push({ groups, err }) },
    silentLogger(),
  );
  return { pipeline, store, committed, failed };
}

/** A turn of `act` in the open group: the twin is touched and one event counted. */
function turn(pipeline: CommitPipeline, act: Activation): CommitGroup {
  const group = pipeline.current;
  pipeline.touch(act);
  group.events++;
  pipeline.schedule();
  return group;
}

const keysOf = (ops: readonly BatchOp[]): string[] => ops.map((op) => op.key);

describe("CommitPipeline", () => {
  it("keeps one write in flight: a group opened during a write is written only after it, as the next write", async () => {
    const { pipeline, store, committed } = harness();
    const a = twin("a");
    const b = twin("b");
    const first = turn(pipeline, a);
    await waitFor(() => store.writes.length === 1, { timeoutMs: 1_000, what: "the first write" });
    const second = turn(pipeline, b);
    assert.notEqual(second, first);
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(store.writes.length, 1, "a second write started while the first was in flight");
    assert.equal(b.uncommitted, 1);
    store.writes[0]?.settle();
    await waitFor(() => store.writes.length === 2, { timeoutMs: 1_000, what: "the second write" });
    assert.deepEqual(keysOf(store.writes[0]?.ops ?? []), ["t/a"]);
    assert.deepEqual(keysOf(store.writes[1]?.ops ?? []), ["t/b"]);
    assert.deepEqual(committed, [first]);
    assert.equal(pipeline.idle, false);
    store.writes[1]?.settle();
    await pipeline.whenIdle();
    assert.deepEqual(committed, [first, second]);
    assert.deepEqual([a.uncommitted, b.uncommitted], [0, 0]);
  });

  it("keeps one write in flight when a committed group's hook fills the open group and then adds to the next (an acknowledgement running turns, a trim)", async () => {
    const store = new FakeStore();
    let inFlight = 0;
    let most = 0;
    const counting = {
      write(ops: readonly BatchOp[]): Promise<void> {
        most = Math.max(most, ++inFlight);
        return store.write(ops).finally(() => inFlight--);
      },
    };
    let hooked = false;
    const pipeline: CommitPipeline = new CommitPipeline(
      counting as unknown as RocksStore,
      2,
      {
        committed: () => {
          if (hooked) return;
          hooked = true;
          // The open group reaches maxGroupEvents: it is written at once, and a turn after it opens the next group.
          turn(pipeline, twin("c"));
          turn(pipeline, twin("d"));
        },
        failed: () => undefined,
      },
      silentLogger(),
    );
    turn(pipeline, twin("a"));
    await waitFor(() => store.writes.length === 1, { timeoutMs: 1_000, what: "the first write" });
    turn(pipeline, twin("b"));
    store.writes[0]?.settle();
    await waitFor(() => store.writes.length >= 2, { timeoutMs: 1_000, what: "the second write" });
    await new Promise<void>((resolve) => setImmediate(resolve));
    assert.equal(most, 1, "two writes were in flight at once");
    assert.deepEqual(keysOf(store.writes[1]?.ops ?? []), ["t/b", "t/c"]);
    store.writes[1]?.settle();
    await waitFor(() => store.writes.length === 3, { timeoutMs: 1_000, what: "the third write" });
    assert.deepEqual(keysOf(store.writes[2]?.ops ?? []), ["t/d"]);
    store.writes[2]?.settle();
    await pipeline.whenIdle();
    assert.equal(most, 1, "two writes were in flight at once");
  });

  it("writes a twin touched by several turns of one group once, with its latest state", async () => {
    const { pipeline, store } = harness();
    const a = twin("a");
    turn(pipeline, a);
    a.stateJson = JSON.stringify({ count: 2 });
    turn(pipeline, a);
    await waitFor(() => store.writes.length === 1, { timeoutMs: 1_000, what: "the write" });
    assert.deepEqual(keysOf(store.writes[0]?.ops ?? []), ["t/a"]);
    assert.ok(store.writes[0]?.ops[0]?.type === "put" && String(store.writes[0].ops[0].value).endsWith('{"count":2}'));
    assert.equal(a.uncommitted, 1);
    store.writes[0]?.settle();
    await pipeline.whenIdle();
  });

  it("closes the open group at maxGroupEvents at once, without waiting for the burst of turns to end", () => {
    const { pipeline, store } = harness(3);
    turn(pipeline, twin("a"));
    turn(pipeline, twin("b"));
    assert.equal(store.writes.length, 0);
    turn(pipeline, twin("c"));
    // Synchronously: no setImmediate has run yet.
    assert.deepEqual(keysOf(store.writes[0]?.ops ?? []), ["t/a", "t/b", "t/c"]);
    store.writes[0]?.settle();
  });

  it("fails the group whose write failed and the open group built on it, and then takes new groups", async () => {
    const { pipeline, store, committed, failed } = harness();
    const a = twin("a");
    const b = twin("b");
    const first = turn(pipeline, a);
    await waitFor(() => store.writes.length === 1, { timeoutMs: 1_000, what: "the first write" });
    const second = turn(pipeline, b);
    const disk = new Error("IO error: injected");
    store.writes[0]?.settle(disk);
    await waitFor(() => failed.length === 1, { timeoutMs: 1_000, what: "the failure to be reported" });
    assert.equal(pipeline.idle, true);
    assert.deepEqual(committed, []);
    assert.deepEqual(failed[0]?.groups, [first, second]);
    assert.equal(failed[0]?.err, disk);
    assert.equal(store.writes.length, 1, "the group built on the failed one was written");
    assert.deepEqual([a.uncommitted, b.uncommitted], [0, 0]);
    // The pipeline goes on with a fresh group.
    const c = twin("c");
    const third = turn(pipeline, c);
    await waitFor(() => store.writes.length === 2, { timeoutMs: 1_000, what: "the next write" });
    store.writes[1]?.settle();
    await pipeline.whenIdle();
    assert.deepEqual(committed, [third]);
  });

  it("writes nothing of an evicted twin, and completes a group of acks alone without a write", async () => {
    const { pipeline, store, committed } = harness();
    const a = twin("a");
    const group = turn(pipeline, a);
    a.evicted = true;
    await pipeline.whenIdle();
    assert.equal(store.writes.length, 0);
    assert.deepEqual(committed, [group]);
  });
});
