import assert from "node:assert/strict";
import { type OwnershipGate, type PartitionId, TwinRuntime } from "../../../../runtime/index.js";
import type { BatchOp } from "../../../../runtime/store/rocks-store.js";
import { AlarmTwin } from "../../../fixtures/alarm-twin.js";
import { type TestScope, useTestScope } from "../../../harness/test-scope.js";
import { waitFor } from "../../../harness/wait-for.js";

/** The two alarm twins whose partitions' logs the tests fill; they are in different partitions. */
const TWINS = ["a-1", "a-2"];
/** The change seqs of a log that holds ten changes. */
const ONE_TO_TEN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

/**
 * A data directory whose two partitions' alert logs (of `a-1` and `a-2`) hold ten changes each
 * (raised, resolved, five times), written by a node whose budget is far above them.
 */
async function tenChangesEach(t: TestScope): Promise<string> {
  const dataDir = t.tempDir("trim");
  const owner = await TwinRuntime.open({ dataDir, twins: [AlarmTwin], host: { timerPollMs: 3_600_000 } });
  let closed = false;
  t.defer(() => (closed ? undefined : owner.close()));
  for (let seq = 1; seq <= 10; seq++) {
    const level = seq % 2 === 1 ? 120 : 10;
    const outcomes = await owner.host.publish(TWINS.map((id) => ({ kind: "alarm", sourceId: id, seq, channels: { level } })));
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ["accepted", "accepted"],
    );
  }
  closed = true;
  await owner.close();
  return dataDir;
}

/** The same directory opened with an alert log budget of 5, and the partitions of the two logs. */
async function budgetOfFive(t: TestScope, dataDir: string, ownership?: OwnershipGate): Promise<{ runtime: TwinRuntime; partitions: PartitionId[] }> {
  const runtime = await TwinRuntime.open({ dataDir, twins: [AlarmTwin], host: { timerPollMs: 3_600_000, alertLogRetention: 5 }, ownership });
  t.defer(() => runtime.close());
  const partitions = TWINS.map((id) => runtime.partitioning.partitionOf("alarm", id));
  assert.notEqual(partitions[0], partitions[1], "the two twins must be in different partitions");
  return { runtime, partitions };
}

/** A gate that owns the partitions in `owned`, which the test changes. */
function ownedOnly(owned: Set<number>): OwnershipGate {
  return { refusal: () => undefined, owns: (p) => owned.has(p) };
}

/** The change seqs partition `p`'s alert log holds on disk, in order. */
async function logSeqs(runtime: TwinRuntime, p: PartitionId): Promise<number[]> {
  const keys = runtime.host.keys;
  const seqs: number[] = [];
  for await (const chunk of runtime.store.scan(keys.alertLogRange(p, -1), { values: false })) {
    for (const [key] of chunk) seqs.push(keys.alertLogKeyOf(key).seq);
  }
  return seqs;
}

/**
 * Waits until the two logs hold 5 changes together: one trim leaves the log it takes first its
 * last change, the next one takes the other log down to 4. Each keeps its newest changes, and
 * the feed's first position is the disk's (a watcher from before it is told it missed changes).
 */
async function trimmedToBudget(runtime: TwinRuntime, partitions: PartitionId[], what: string): Promise<void> {
  const logs = () => Promise.all(partitions.map((p) => logSeqs(runtime, p)));
  const held = async () => (await logs()).reduce((n, seqs) => n + seqs.length, 0);
  await waitFor(async () => (await held()) <= 5 || undefined, { timeoutMs: 5_000, what });
  await runtime.host.whenIdle();
  const seqs = await logs();
  assert.deepEqual(seqs.map((s) => s.length).sort(), [1, 4]);
  for (const [i, p] of partitions.entries()) {
    const kept = seqs[i] as number[];
    assert.deepEqual(kept, ONE_TO_TEN.slice(ONE_TO_TEN.length - kept.length), "a trim removed other changes than a log's oldest");
    assert.equal(runtime.host.alerts.positions(p).first, kept[0], `partition ${p}'s feed starts elsewhere than its log on disk`);
  }
}

describe("TurnEffects", () => {
  const t = useTestScope();

  describe("alert log retention, with no new alert change", () => {
    it("trims at start, one log after another, until the logs are within the budget", async () => {
      const { runtime, partitions } = await budgetOfFive(t, await tenChangesEach(t));
      await trimmedToBudget(runtime, partitions, "the logs to be trimmed at start");
    });

    it("leaves a replica's copies over the budget alone, and trims them once the node takes their partitions", async () => {
      const owned = new Set<number>();
      const { runtime, partitions } = await budgetOfFive(t, await tenChangesEach(t), ownedOnly(owned));
      await runtime.host.whenIdle();
      assert.deepEqual(
        await Promise.all(partitions.map((p) => logSeqs(runtime, p))),
        [ONE_TO_TEN, ONE_TO_TEN],
        "a replica trimmed its copy: only the owner's trims reach every copy",
      );
      for (const p of partitions) owned.add(p);
      await runtime.host.partitionsChanged(partitions);
      await trimmedToBudget(runtime, partitions, "the taken partitions' logs to be trimmed");
    });

    it("trims only once every partition it takes is read, and a read while a trim is in flight keeps its changes trimmed: none is deleted twice", async () => {
      const owned = new Set<number>();
      const { runtime, partitions } = await budgetOfFive(t, await tenChangesEach(t), ownedOnly(owned));
      await runtime.host.whenIdle();
      // Slow writes, so a trim is in flight while the next partition is read; and every delete of the log recorded.
      const deleted: string[] = [];
      const write = runtime.store.write.bind(runtime.store);
      runtime.store.write = async (ops: BatchOp[]) => {
        for (const op of ops)
          if (op.type === "del" && partitions.some((p) => op.key.startsWith(runtime.host.keys.alertLog(p, 0).slice(0, -1)))) deleted.push(op.key);
        await new Promise((resolve) => setTimeout(resolve, 100));
        return write(ops);
      };
      for (const p of partitions) owned.add(p);
      // Read in the order opposite to the feed's: a trim started after the first read would take
      // the log read first, before the second read.
      await runtime.host.partitionsChanged([...partitions].reverse());
      // Read again at once (taken again after a stall, say): the first trim is in flight.
      await runtime.host.partitionsChanged(partitions);
      await trimmedToBudget(runtime, partitions, "the taken partitions' logs to be trimmed");
      assert.equal(deleted.length, 15);
      assert.equal(new Set(deleted).size, deleted.length, "a change was deleted twice: a trim in flight was read back");
    });

    it("trims again once its disk takes writes again after a trim failed with it", async () => {
      const owned = new Set<number>();
      const { runtime, partitions } = await budgetOfFive(t, await tenChangesEach(t), ownedOnly(owned));
      await runtime.host.whenIdle();
      let full = true;
      const write = runtime.store.write.bind(runtime.store);
      runtime.store.write = (ops: BatchOp[]) => (full ? Promise.reject(new Error("IO error: No space left on device")) : write(ops));
      for (const p of partitions) owned.add(p);
      await runtime.host.partitionsChanged(partitions);
      await waitFor(() => !runtime.host.serving || undefined, { timeoutMs: 5_000, what: "the trim to fail with the disk" });
      assert.deepEqual(await Promise.all(partitions.map((p) => logSeqs(runtime, p))), [ONE_TO_TEN, ONE_TO_TEN]);
      full = false;
      await waitFor(() => runtime.host.serving || undefined, { timeoutMs: 5_000, what: "the disk probe to find space" });
      await trimmedToBudget(runtime, partitions, "the logs to be trimmed once the disk takes writes");
    });
  });
});
