import assert from "node:assert/strict";
import { type OwnershipGate, type PartitionId, Partitioning, TwinRuntime } from "../../../../runtime/index.js";
import { AlarmTwin } from "../../../fixtures/alarm-twin.js";
import { type TestScope, useTestScope } from "../../../harness/test-scope.js";
import { waitFor } from "../../../harness/wait-for.js";

const TWINS = ["a-1", "a-2"];
const PARTITIONS = TWINS.map((id) => new Partitioning(256).partitionOf("alarm", id));
const TEN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

/**
 * A data directory whose two partitions' alert logs (of `a-1` and `a-2`) hold ten changes each
 * (raised, resolved, five times), written by a node whose budget is far above them.
 */
async function tenChangesEach(t: TestScope): Promise<string> {
  const dataDir = t.tempDir("trim");
  const owner = await TwinRuntime.open({ dataDir, twins: [AlarmTwin], host: { timerPollMs: 3_600_000 } });
  for (let seq = 1; seq <= 10; seq++) {
    const level = seq % 2 === 1 ? 120 : 10;
    const outcomes = await owner.host.publish(TWINS.map((id) => ({ kind: "alarm", sourceId: id, seq, channels: { level } })));
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ["accepted", "accepted"],
    );
  }
  await owner.close();
  return dataDir;
}

/** The same directory opened with an alert log budget of 5. */
async function budgetOfFive(t: TestScope, dataDir: string, ownership?: OwnershipGate): Promise<TwinRuntime> {
  const runtime = await TwinRuntime.open({ dataDir, twins: [AlarmTwin], host: { timerPollMs: 3_600_000, alertLogRetention: 5 }, ownership });
  t.defer(() => runtime.close());
  return runtime;
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

/** Waits until both logs hold 5 changes together, each its newest ones. */
async function trimmedToBudget(runtime: TwinRuntime, what: string): Promise<void> {
  const held = async () => (await Promise.all(PARTITIONS.map((p) => logSeqs(runtime, p)))).reduce((n, seqs) => n + seqs.length, 0);
  await waitFor(async () => (await held()) <= 5 || undefined, { timeoutMs: 5_000, what });
  await runtime.host.whenIdle();
  assert.equal(await held(), 5);
  for (const p of PARTITIONS) {
    const seqs = await logSeqs(runtime, p);
    assert.deepEqual(seqs, TEN.slice(TEN.length - seqs.length), "a trim removed other changes than a log's oldest");
  }
}

describe("alert log retention without new alert changes", () => {
  const t = useTestScope();

  before(() => assert.notEqual(PARTITIONS[0], PARTITIONS[1], "the two twins must be in different partitions"));

  it("trims at start, one log after another (one trim leaves a log its last change), until the logs are within the budget", async () => {
    const runtime = await budgetOfFive(t, await tenChangesEach(t));
    await trimmedToBudget(runtime, "the logs to be trimmed at start");
  });

  it("leaves a replica's copies over the budget alone, and trims them once the node takes their partitions", async () => {
    const owned = new Set<number>();
    const runtime = await budgetOfFive(t, await tenChangesEach(t), { refusal: () => undefined, owns: (p) => owned.has(p) });
    await runtime.host.whenIdle();
    assert.deepEqual(
      await Promise.all(PARTITIONS.map((p) => logSeqs(runtime, p))),
      [TEN, TEN],
      "a replica trimmed its copy: only the owner's trims reach every copy",
    );
    for (const p of PARTITIONS) owned.add(p);
    await runtime.host.partitionsChanged(PARTITIONS);
    await trimmedToBudget(runtime, "the taken partitions' logs to be trimmed");
  });
});
