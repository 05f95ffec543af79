import assert from "node:assert/strict";
import type { CommitGroup } from "../../../../runtime/host/commit-group.js";
import { Keys, type OwnershipGate, type ReplicationStage, type StageFailure, type TurnOutcome, TwinRuntime } from "../../../../runtime/index.js";
import { CounterTwin } from "../../../fixtures/index.js";
import { type TestScope, useTestScope } from "../../../harness/test-scope.js";
import { waitFor } from "../../../harness/wait-for.js";

/** A replication stage the test settles by hand, group by group. */
class HeldReplication implements ReplicationStage {
  readonly groups: { group: CommitGroup; resolve: () => void; reject: (err: StageFailure) => void }[] = [];

  replicate(group: CommitGroup): Promise<void> {
    return new Promise<void>((resolve, reject) => this.groups.push({ group, resolve, reject }));
  }
}

function shortfall(message: string): StageFailure {
  return Object.assign(new Error(message), { reason: "NOT_ENOUGH_REPLICAS" });
}

async function open(t: TestScope, extra: { replication?: ReplicationStage; ownership?: OwnershipGate }): Promise<TwinRuntime> {
  const runtime = await TwinRuntime.open({ dataDir: t.tempDir("stages"), twins: [CounterTwin], host: { timerPollMs: 3_600_000 }, ...extra });
  t.defer(() => runtime.close());
  return runtime;
}

const event = (sourceId: string, seq: number) => ({ kind: "counter", sourceId, seq, channels: { v: 1 } });

describe("commit stages: write → replicate → acknowledge (host seams for the cluster)", () => {
  const t = useTestScope();

  it("answers an event only when its group's replication stage has the copies it asked for", async () => {
    const replication = new HeldReplication();
    const runtime = await open(t, { replication });
    let answered: TurnOutcome[] | undefined;
    const publishing = runtime.host.publish([event("c-1", 1)], { copies: 2 }).then((o) => {
      answered = o;
    });
    await waitFor(() => replication.groups.length === 1, { timeoutMs: 5_000, what: "the group at the replication stage" });
    assert.equal(replication.groups[0]?.group.copies, 2, "the copies asked for did not reach the group");
    // Written here already: a reader sees it, the client does not have its answer yet.
    assert.equal((await runtime.getTwin("counter", "c-1")).state.count, 1);
    assert.equal(answered, undefined, "answered before the replicas had it");
    replication.groups[0]?.resolve();
    await publishing;
    assert.deepEqual(answered, [{ status: "accepted" }]);
  });

  it("acknowledges groups in commit order even when a later group's replicas answer first", async () => {
    const replication = new HeldReplication();
    const runtime = await open(t, { replication });
    const order: string[] = [];
    const first = runtime.host.publish([event("a", 1)]).then(() => order.push("a"));
    await waitFor(() => replication.groups.length === 1, { timeoutMs: 5_000, what: "the first group" });
    const second = runtime.host.publish([event("b", 1)]).then(() => order.push("b"));
    await waitFor(() => replication.groups.length === 2, { timeoutMs: 5_000, what: "the second group" });
    replication.groups[1]?.resolve();
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(order, [], "the later group was acknowledged before the earlier one");
    replication.groups[0]?.resolve();
    await Promise.all([first, second]);
    assert.deepEqual(order, ["a", "b"]);
    await runtime.host.whenIdle();
  });

  it("answers a retryable rejection when the copies cannot be had, and the retry DUPLICATE, applied once", async () => {
    const replication = new HeldReplication();
    const runtime = await open(t, { replication });
    const publishing = runtime.host.publish([event("c-1", 1)], { copies: 3 });
    await waitFor(() => replication.groups.length === 1, { timeoutMs: 5_000, what: "the group" });
    replication.groups[0]?.reject(shortfall("1 of 3 copies are durable; 2 replicas are down"));
    const [outcome] = await publishing;
    assert.equal(outcome?.status, "rejected");
    assert.equal(outcome?.reason, "NOT_ENOUGH_REPLICAS");
    assert.equal(outcome?.retryable, true);
    assert.match(outcome?.message ?? "", /2 replicas are down/);
    const retry = runtime.host.publish([event("c-1", 1)], { copies: 3 });
    await waitFor(() => replication.groups.length === 2, { timeoutMs: 5_000, what: "the retry's group" });
    replication.groups[1]?.resolve();
    assert.equal((await retry)[0]?.status, "duplicate");
    assert.equal((await runtime.getTwin("counter", "c-1")).state.count, 1);
  });

  it("writes nothing of a partition its stage withdraws from a group, and reloads that partition's twins once the group is answered", async () => {
    let withdrawing = false;
    const replication: ReplicationStage = {
      prepare(group) {
        if (withdrawing) group.withdraw(runtime.partitioning.partitionOf("counter", "c-1"), (key) => Keys.partitionOfKey(key, runtime.partitioning));
      },
      replicate: (group) => (group.withdrawn === undefined ? undefined : Promise.reject(Object.assign(new Error("moved"), { reason: "NOT_OWNER" }))),
    };
    const runtime = await open(t, { replication });
    assert.deepEqual(await runtime.host.publish([event("c-1", 1)]), [{ status: "accepted" }]);
    withdrawing = true;
    const [refused] = await runtime.host.publish([event("c-1", 2)]);
    assert.equal(refused?.reason, "NOT_OWNER");
    withdrawing = false;
    // The twin reloaded: its state and marks are those on disk, which never had seq 2.
    assert.equal((await runtime.getTwin("counter", "c-1")).state.count, 1);
    assert.deepEqual(await runtime.host.publish([event("c-1", 2)]), [{ status: "accepted" }]);
    assert.equal((await runtime.getTwin("counter", "c-1")).state.count, 2);
  });

  it("is idle only when no written group waits for replication", async () => {
    const replication = new HeldReplication();
    const runtime = await open(t, { replication });
    const publishing = runtime.host.publish([event("c-1", 1)]);
    await waitFor(() => replication.groups.length === 1, { timeoutMs: 5_000, what: "the group" });
    assert.equal(runtime.host.idle, false);
    replication.groups[0]?.resolve();
    await publishing;
    await runtime.host.whenIdle();
    assert.equal(runtime.host.idle, true);
  });

  it("refuses, retryably and before anything is applied, events and operations for twins this node does not own", async () => {
    const ownership: OwnershipGate = {
      refusal: (_kind, id) =>
        id.startsWith("far-") ? { status: "rejected", reason: "NOT_OWNER", message: `${id} is owned by n2; send it there`, retryable: true } : undefined,
    };
    const runtime = await open(t, { ownership });
    const outcomes = await runtime.host.publish([event("near-1", 1), event("far-1", 1), event("far-1", 2)]);
    assert.deepEqual(
      outcomes.map((o) => [o.status, o.reason]),
      [
        ["accepted", undefined],
        ["rejected", "NOT_OWNER"],
        ["rejected", "PRECEDING_EVENT_REJECTED"],
      ],
    );
    assert.equal(outcomes[1]?.retryable, true);
    await assert.rejects(runtime.host.sendToTwin("counter", "far-2", { add: 1 }), { reason: "NOT_OWNER" });
    await assert.rejects(runtime.getTwin("counter", "far-1"), { reason: "TWIN_NOT_FOUND" });
  });
});
