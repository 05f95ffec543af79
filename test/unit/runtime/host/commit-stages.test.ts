import assert from "node:assert/strict";
import type { TwinContext } from "twinmesh";
import type { CommitGroup } from "../../../../runtime/host/commit-group.js";
import {
  type DeadLetter,
  type OwnershipGate,
  type PartitionId,
  Partitioning,
  parseDeadLetterId,
  type ReplicationStage,
  type StageFailure,
  type TurnOutcome,
  TwinRuntime,
  VirtualClock,
} from "../../../../runtime/index.js";
import { CounterTwin, type RelayMessage, RelayTwin, type SinkState, SinkTwin } from "../../../fixtures/index.js";
import { ForwardTwin, RefuseTwin } from "../../../fixtures/recovery-twins.js";
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

  it("answers each event of a group that fell short by the copies it asked for: those the group reached are met, the others refused retryably", async () => {
    const replication = new HeldReplication();
    const runtime = await open(t, { replication });
    // One group (published in one tick), three consistencies.
    const answers = [1, 2, 3].map((copies) => runtime.host.publish([event(`c-${copies}`, 1)], { copies }));
    await waitFor(() => replication.groups.length >= 1, { timeoutMs: 5_000, what: "the group" });
    assert.equal(replication.groups.length, 1, "the three batches were not one group");
    replication.groups[0]?.reject(Object.assign(shortfall("n3 is down; 2 of the 3 copies asked for are durable"), { copies: 2 }));
    const outcomes = (await Promise.all(answers)).map(([o]) => [o?.status, o?.reason, o?.retryable]);
    assert.deepEqual(outcomes, [
      ["accepted", undefined, undefined],
      ["accepted", undefined, undefined],
      ["rejected", "NOT_ENOUGH_REPLICAS", true],
    ]);
  });

  it("writes nothing of a partition its stage withdraws from a group, refuses its turns NOT_OWNER, and reloads its twins once the group is answered", async () => {
    let withdrawing = false;
    const replication: ReplicationStage = {
      prepare(group) {
        if (withdrawing) group.withdraw(runtime.partitioning.partitionOf("counter", "c-1"), runtime.host.keys, runtime.partitioning);
      },
      replicate: () => undefined,
    };
    const runtime = await open(t, { replication });
    assert.deepEqual(await runtime.host.publish([event("c-1", 1)]), [{ status: "accepted" }]);
    withdrawing = true;
    const [refused] = await runtime.host.publish([event("c-1", 2)]);
    assert.equal(refused?.reason, "NOT_OWNER");
    assert.equal(refused?.retryable, true);
    assert.match(refused?.message ?? "", /counter\/c-1 moved to another node while this turn ran; nothing of it was written here; retry/);
    withdrawing = false;
    // The twin reloaded: its state and marks are those on disk, which never had seq 2.
    assert.equal((await runtime.getTwin("counter", "c-1")).state.count, 1);
    assert.deepEqual(await runtime.host.publish([event("c-1", 2)]), [{ status: "accepted" }]);
    assert.equal((await runtime.getTwin("counter", "c-1")).state.count, 2);
  });

  it("answers the other partitions' turns of a group that lost one partition as their own writes earned: the withdrawal is per turn", async () => {
    let other = 2;
    let withdrawn: PartitionId | undefined;
    const waitedFor: number[] = [];
    const replication: ReplicationStage = {
      prepare(group) {
        if (withdrawn !== undefined) group.withdraw(withdrawn, runtime.host.keys, runtime.partitioning);
      },
      replicate: (group) => void waitedFor.push(group.copies),
    };
    const runtime = await open(t, { replication });
    const gone = runtime.partitioning.partitionOf("counter", "c-1");
    while (runtime.partitioning.partitionOf("counter", `c-${other}`) === gone) other++;
    withdrawn = gone;
    // The withdrawn event asks for 3 copies, the other for 2: the group waits for 2.
    const answers = [runtime.host.publish([event("c-1", 1)], { copies: 3 }), runtime.host.publish([event(`c-${other}`, 1)], { copies: 2 })];
    const outcomes = (await Promise.all(answers)).map(([o]) => o as TurnOutcome);
    assert.deepEqual(
      outcomes.map((o) => [o.status, o.reason]),
      [
        ["rejected", "NOT_OWNER"],
        ["accepted", undefined],
      ],
    );
    assert.deepEqual(waitedFor, [2], "one group, waiting for the copies its remaining answer asks");
    withdrawn = undefined;
    assert.equal((await runtime.getTwin("counter", `c-${other}`)).state.count, 1);
    await assert.rejects(runtime.getTwin("counter", "c-1"), { reason: "TWIN_NOT_FOUND" });
  });

  /** A sink whose first `failures` deliveries throw. */
  class FlakySink extends SinkTwin {
    static failures = 0;
    override onMessage(message: RelayMessage, ctx: TwinContext<SinkState>): void {
      if (FlakySink.failures > 0) {
        FlakySink.failures--;
        throw new Error("flaky");
      }
      super.onMessage(message, ctx);
    }
  }

  for (const failures of [0, 1]) {
    const what = failures === 0 ? "whose delivery" : "whose failed delivery (a dead letter)";
    it(`keeps in its sender's outbox a message ${what} was withdrawn with the target's partition, and delivers it after a restart, once`, async () => {
      const dataDir = t.tempDir("stages");
      let withdrawals = 0;
      const start = (withdrawing: boolean) =>
        TwinRuntime.open({
          dataDir,
          twins: [RelayTwin, FlakySink],
          host: { timerPollMs: 3_600_000 },
          replication: {
            prepare(group) {
              const sink = runtime.host.keys.twin("sink", "s-1");
              if (!withdrawing || !group.ackTwins.some((act) => act.key === sink)) return;
              withdrawals++;
              group.withdraw(runtime.partitioning.partitionOf("sink", "s-1"), runtime.host.keys, runtime.partitioning);
            },
            replicate: () => undefined,
          },
        });
      FlakySink.failures = failures;
      let runtime = await start(true);
      assert.notEqual(runtime.partitioning.partitionOf("relay", "r-1"), runtime.partitioning.partitionOf("sink", "s-1"));
      assert.deepEqual(await runtime.host.publish([{ kind: "relay", sourceId: "r-1", seq: 1, channels: {}, attributes: { to: "s-1" } }]), [
        { status: "accepted" },
      ]);
      // Every delivery is withdrawn while the node runs: the message must still be in the outbox on disk.
      await waitFor(() => withdrawals > 0, { timeoutMs: 5_000, what: "the delivery's group withdrawn" });
      await runtime.close();
      assert.equal(FlakySink.failures, 0, "the first delivery ran");
      runtime = await start(false);
      t.defer(() => runtime.close());
      await runtime.host.whenIdle();
      assert.deepEqual((await runtime.getTwin("sink", "s-1")).state, { received: 1, seen: ["r-1#1"] });
      assert.deepEqual((await runtime.host.deadLetters.list({})).deadLetters, []);
    });
  }

  it("runs the next turn of a twin whose turns were withdrawn on its stored record, even one handed to it as the group is answered", async () => {
    let withdrawOnce = true;
    const runtime = await TwinRuntime.open({
      dataDir: t.tempDir("stages"),
      twins: [RelayTwin, SinkTwin],
      host: { timerPollMs: 3_600_000 },
      replication: {
        prepare(group) {
          if (!withdrawOnce || !group.ackTwins.some((act) => act.key === runtime.host.keys.twin("sink", "s-1"))) return;
          withdrawOnce = false;
          group.withdraw(runtime.partitioning.partitionOf("sink", "s-1"), runtime.host.keys, runtime.partitioning);
        },
        replicate: () => undefined,
      },
    });
    t.defer(() => runtime.close());
    // The refused delivery is offered again as its group is answered: on the withdrawn working
    // record, which remembers it, it would be taken for a repeat and dropped.
    await runtime.host.publish([{ kind: "relay", sourceId: "r-1", seq: 1, channels: {}, attributes: { to: "s-1" } }]);
    await runtime.host.whenIdle();
    assert.equal(withdrawOnce, false, "the delivery's group was never withdrawn");
    assert.deepEqual((await runtime.getTwin("sink", "s-1")).state, { received: 1, seen: ["r-1#1"] });
  });

  describe("a group's messages leave once its writes have the copies messages need (messageCopies)", () => {
    /** A held stage whose messages need two copies, over relays and sinks. */
    async function relays(): Promise<{ runtime: TwinRuntime; replication: HeldReplication & { messageCopies: number } }> {
      const replication = Object.assign(new HeldReplication(), { messageCopies: 2 });
      const runtime = await TwinRuntime.open({ dataDir: t.tempDir("stages"), twins: [RelayTwin, SinkTwin], host: { timerPollMs: 3_600_000 }, replication });
      t.defer(async () => {
        // What the test left at the stage (a delivery's delete, say) is settled, or close would wait for it.
        await settleWhile(replication, async () => runtime.host.idle);
        await runtime.close();
      });
      return { runtime, replication };
    }
    const relayEvent = (seq: number) => ({ kind: "relay", sourceId: "r-1", seq, channels: {}, attributes: { to: "s-1" } });
    /** Resolves every group at the stage from `from` on that matches `which`, as they come, until `done`. */
    async function settleWhile(replication: HeldReplication, done: () => Promise<boolean>, which: (group: CommitGroup) => boolean = () => true): Promise<void> {
      await waitFor(
        async () => {
          for (const g of replication.groups.splice(0)) if (which(g.group)) g.resolve();
          return (await done()) || undefined;
        },
        { timeoutMs: 10_000, what: "the sink to have its messages" },
      );
    }
    const seen = async (runtime: TwinRuntime): Promise<string[]> =>
      ((await runtime.getTwin("sink", "s-1").catch(() => undefined))?.state as SinkState | undefined)?.seen ?? [];

    it("a group that sends asks for them whatever its answers asked; fallen short, its messages are held, and leave before the next group's of the partition once that one has them", async () => {
      const { runtime, replication } = await relays();
      const first = runtime.host.publish([relayEvent(1)], { copies: 1 });
      await waitFor(() => replication.groups.length === 1, { timeoutMs: 5_000, what: "the first group" });
      assert.equal(replication.groups[0]?.group.copies, 2, "a group that sends messages did not ask for the copies they need");
      replication.groups.shift()?.reject(Object.assign(shortfall("1 of 3 copies are durable"), { copies: 1 }));
      assert.deepEqual(await first, [{ status: "accepted" }], "the LOCAL answer was refused for the messages' sake");
      // Held as the group was acknowledged, so never handed to the dispatcher.
      assert.equal(runtime.host.load.outboxHeld, 1, "the message of a write short of the copies is not held");
      assert.deepEqual(await seen(runtime), [], "a message left before its sending write had the copies");

      const second = runtime.host.publish([relayEvent(2)], { copies: 1 });
      await waitFor(() => replication.groups.length === 1, { timeoutMs: 5_000, what: "the second group" });
      replication.groups.shift()?.resolve();
      await second;
      await settleWhile(replication, async () => (await seen(runtime)).length >= 2);
      assert.deepEqual(await seen(runtime), ["r-1#1", "r-1#2"]);
    });

    it("deletes a delivered message's outbox entry in a later commit, once the receiving write has the copies: short of them, the entry stays and the repeat is told apart", async () => {
      const { runtime, replication } = await relays();
      const entryKey = runtime.host.keys.outbox(runtime.partitioning.partitionOf("relay", "r-1"), 1);
      const sent = runtime.host.publish([relayEvent(1)], { copies: 1 });
      await waitFor(() => replication.groups.length === 1, { timeoutMs: 5_000, what: "the sending group" });
      replication.groups.shift()?.resolve();
      await sent;
      const receiving = await waitFor(() => replication.groups.find((g) => g.group.deliveries !== undefined), {
        timeoutMs: 5_000,
        what: "the receiving group",
      });
      assert.ok(receiving);
      assert.deepEqual(
        receiving.group.ops.filter((op) => op.key === entryKey),
        [],
        "the outbox entry is deleted in the receiving turn's own commit: a replica could keep the delete and refuse the receiver's write",
      );
      assert.equal(receiving.group.copies, 2, "the receiving group does not ask for the copies messages need");
      replication.groups.splice(replication.groups.indexOf(receiving), 1);
      receiving.reject(Object.assign(shortfall("1 of 3 copies are durable"), { copies: 1 }));
      // The message is offered again (a delete made for the first delivery was committed before
      // the second one's group), or its entry is gone.
      await waitFor(
        async () => replication.groups.some((g) => g.group.deliveries !== undefined) || (await runtime.store.get(entryKey)) === undefined || undefined,
        {
          timeoutMs: 10_000,
          what: "the message to be offered again",
        },
      );
      assert.notEqual(await runtime.store.get(entryKey), undefined, "the entry went though the receiving write fell short");
      await settleWhile(replication, async () => (await runtime.store.get(entryKey)) === undefined);
      assert.deepEqual(await seen(runtime), ["r-1#1"], "the message offered again was applied again");
    });

    it("lets no new turn's message of a partition it takes leave ahead of those its outbox holds, while it is still reading that partition", async () => {
      const { runtime, replication } = await relays();
      const p = runtime.partitioning.partitionOf("relay", "r-1");
      // Message 1's sending write falls short of the copies: it waits in the outbox.
      const first = runtime.host.publish([relayEvent(1)], { copies: 1 });
      await waitFor(() => replication.groups.length === 1 || undefined, { timeoutMs: 5_000, what: "the first group" });
      replication.groups.shift()?.reject(Object.assign(shortfall("1 of 3 copies are durable"), { copies: 1 }));
      await first;
      // The node takes the partition (again); its look at the partition's outbox is slow.
      const outbox = JSON.stringify(runtime.host.keys.outboxFrom(p));
      let open: () => void = () => undefined;
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      let gated = false;
      const scan = runtime.store.scan.bind(runtime.store);
      runtime.store.scan = (range, options) => {
        if (gated || JSON.stringify(range) !== outbox || options?.values !== false) return scan(range, options);
        gated = true;
        return (async function* () {
          await gate;
          yield* scan(range, options);
        })();
      };
      const taking = runtime.host.partitionsChanged([p]);
      await waitFor(() => gated || undefined, { timeoutMs: 5_000, what: "the look at the taken partition's outbox" });
      // Meanwhile the relay's next event commits with the copies messages need.
      let answered = false;
      const second = runtime.host.publish([relayEvent(2)], { copies: 1 }).then(() => {
        answered = true;
      });
      await settleWhile(replication, async () => answered);
      await second;
      open();
      await taking;
      await settleWhile(replication, async () => (await seen(runtime)).length >= 2);
      assert.deepEqual(await seen(runtime), ["r-1#1", "r-1#2"], "a message left ahead of one its sender's outbox already held");
    });

    it("lets no read of the outbox deliver a message of a group not yet acknowledged, nor one held, and reads a partition it takes only once a write of the new epoch has the copies", async () => {
      const { runtime, replication } = await relays();
      const p = runtime.partitioning.partitionOf("relay", "r-1");
      const noDelivery = () =>
        assert.deepEqual(
          replication.groups.filter((g) => g.group.deliveries !== undefined || g.group.ackMessages.some((m) => m.type === "message")),
          [],
          "a message left before its sending write had the copies",
        );
      const sent = runtime.host.publish([relayEvent(1)], { copies: 1 });
      await waitFor(() => replication.groups.length >= 1 || undefined, { timeoutMs: 5_000, what: "the sending group" });
      // Not acknowledged yet: the outbox read that a change of owner makes finds it on disk.
      await runtime.host.partitionsChanged([p]);
      const rewrite = await waitFor(() => replication.groups.find((g) => g.group.rewritesHeldMessages), {
        timeoutMs: 5_000,
        what: "the taken partition's first write",
      });
      noDelivery();
      // The sending group falls short: the message is held, and taking the partition again does not let it out.
      const sending = replication.groups.find((g) => g.group.outbox.length > 0);
      replication.groups.splice(replication.groups.indexOf(sending as (typeof replication.groups)[number]), 1);
      sending?.reject(Object.assign(shortfall("1 of 3 copies are durable"), { copies: 1 }));
      await sent;
      await runtime.host.partitionsChanged([p]);
      await waitFor(() => replication.groups.filter((g) => g.group.rewritesHeldMessages).length >= 1 || undefined, {
        timeoutMs: 5_000,
        what: "a write of the taken partition",
      });
      noDelivery();
      assert.ok(rewrite);
      await settleWhile(replication, async () => (await seen(runtime)).length >= 1);
      assert.deepEqual(await seen(runtime), ["r-1#1"]);
    });

    it("writes held messages again when nothing else writes their partition, and lets them leave once that write has the copies", async () => {
      const { runtime, replication } = await relays();
      const first = runtime.host.publish([relayEvent(1)], { copies: 1 });
      await waitFor(() => replication.groups.length >= 1 || undefined, {
        timeoutMs: 5_000,
        what: "the group",
      });
      assert.deepEqual(
        replication.groups.map((g) => g.group.outbox.length),
        [1],
        "the stage holds other groups than the sending one",
      );
      replication.groups.shift()?.reject(Object.assign(shortfall("1 of 3 copies are durable"), { copies: 1 }));
      await first;
      const again = await waitFor(() => replication.groups.find((g) => g.group.rewritesHeldMessages), {
        timeoutMs: 5_000,
        what: "the held messages written again",
      });
      assert.equal(again?.group.copies, 2, "the rewrite does not ask for the copies messages need");
      assert.deepEqual(await seen(runtime), []);
      await settleWhile(replication, async () => (await seen(runtime)).length >= 1);
      assert.deepEqual(await seen(runtime), ["r-1#1"]);
    });
  });

  it("delivers held messages a moment without the partition dropped before a later message of it, once it serves the partition again with no change of hands", async () => {
    const replication = Object.assign(new HeldReplication(), { messageCopies: 2 });
    const partitioning = new Partitioning(256);
    const relayPartition = partitioning.partitionOf("relay", "r-1");
    let servesRelays = true;
    const ownership: OwnershipGate = { refusal: () => undefined, owns: (p) => p !== relayPartition || servesRelays };
    const runtime = await TwinRuntime.open({
      dataDir: t.tempDir("stages"),
      twins: [RelayTwin, SinkTwin],
      host: { timerPollMs: 3_600_000 },
      replication,
      ownership,
    });
    t.defer(async () => {
      await waitFor(
        async () => {
          for (const g of replication.groups.splice(0)) g.resolve();
          return runtime.host.idle || undefined;
        },
        { timeoutMs: 10_000, what: "the stage to settle" },
      );
      await runtime.close();
    });
    await runtime.host.whenIdle();
    const relayEvent = (seq: number) => ({ kind: "relay", sourceId: "r-1", seq, channels: {}, attributes: { to: "s-1" } });
    const first = runtime.host.publish([relayEvent(1)], { copies: 1 });
    await waitFor(() => replication.groups.length >= 1 || undefined, { timeoutMs: 5_000, what: "the group" });
    // Short of the copies: message 1 is held. The node stops serving the relay's partition for a
    // moment; the rewrite of held messages drops it.
    replication.groups.shift()?.reject(Object.assign(shortfall("1 of 3 copies are durable"), { copies: 1 }));
    await first;
    servesRelays = false;
    await waitFor(() => runtime.host.load.outboxHeld === 0 || undefined, { timeoutMs: 5_000, what: "the held message dropped" });
    servesRelays = true;
    // A later message of the partition, whose write has the copies.
    const second = runtime.host.publish([relayEvent(2)], { copies: 2 });
    const seen = async (): Promise<string[]> => ((await runtime.getTwin("sink", "s-1").catch(() => undefined))?.state as SinkState | undefined)?.seen ?? [];
    await waitFor(
      async () => {
        for (const g of replication.groups.splice(0)) g.resolve();
        return (await seen()).length >= 2 || undefined;
      },
      { timeoutMs: 10_000, what: "both messages at the sink" },
    );
    await second;
    assert.deepEqual(await seen(), ["r-1#1", "r-1#2"]);
  });

  describe("an operator's change to the dead letters is committed like a turn's writes", () => {
    /**
     * A held stage (messages and operations need two copies) over forwards that send to a twin
     * refusing every message; `prepare` runs as the stage's own when each group is sealed.
     */
    async function refusals(owned: Set<number>, prepare?: (group: CommitGroup) => void) {
      const replication = Object.assign(new HeldReplication(), { messageCopies: 2, operationCopies: 2, prepare });
      const ownership: OwnershipGate = { refusal: () => undefined, owns: (p) => owned.has(p) };
      const clock = new VirtualClock(Date.parse("2026-01-01T00:00:00Z"));
      const runtime = await TwinRuntime.open({
        dataDir: t.tempDir("stages"),
        twins: [ForwardTwin, RefuseTwin],
        host: { timerPollMs: 3_600_000, deadLetterRetentionMs: 60_000 },
        replication,
        ownership,
        clock,
      });
      const settle = (done: () => Promise<boolean>, what: string) =>
        waitFor(
          async () => {
            for (const g of replication.groups.splice(0)) g.resolve();
            return (await done()) || undefined;
          },
          { timeoutMs: 10_000, what },
        );
      t.defer(async () => {
        await settle(async () => runtime.host.idle, "the host to be idle");
        await runtime.close();
      });
      const oneLetter = async (): Promise<DeadLetter> => {
        const sending = runtime.host.publish([{ kind: "forward", sourceId: "f-1", seq: 1, channels: {}, attributes: { kind: "refuse", to: "r-1" } }]);
        await settle(async () => (await runtime.host.deadLetters.list({})).deadLetters.length === 1, "the message to die");
        await sending;
        const [letter] = (await runtime.host.deadLetters.list({})).deadLetters;
        assert.ok(letter);
        return letter;
      };
      return { runtime, replication, settle, clock, oneLetter };
    }
    const allPartitions = (): Set<number> => new Set(Array.from({ length: 256 }, (_, p) => p));

    it("a retry asks for the copies operations wait for, its message leaves only once its write has the copies messages need, and a shortfall is answered UNAVAILABLE", async () => {
      const { runtime, replication, settle, oneLetter } = await refusals(allPartitions());
      const letter = await oneLetter();
      const outboxKey = runtime.host.keys.outbox(letter.partition, letter.outboxSeq);

      const retrying = runtime.host.deadLetters.retry({ ids: [letter.id] });
      const group = await waitFor(() => replication.groups.find((g) => g.group.ops.some((op) => op.key === outboxKey)), {
        timeoutMs: 5_000,
        what: "the retry's group at the replication stage",
      });
      assert.ok(group, "the retry was written outside the commit pipeline: its replicas would never see it");
      assert.equal(group.group.copies, 2, "the retry's group does not ask for the copies operations wait for");
      assert.deepEqual(
        group.group.outbox.map((e) => [e.partition, e.seq]),
        [[letter.partition, letter.outboxSeq]],
        "the requeued message is not one of its group's messages",
      );
      replication.groups.splice(replication.groups.indexOf(group), 1);
      group.reject(Object.assign(shortfall("1 of 3 copies are durable"), { copies: 1 }));
      await assert.rejects(retrying, { reason: "REPLICATION_FAILED", retryable: true });
      assert.equal(runtime.host.load.outboxHeld, 1, "a requeued message was let go before its write had the copies messages need");
      assert.deepEqual((await runtime.host.deadLetters.list({})).deadLetters, [], "the retry is written here");
      assert.equal((await runtime.store.get(outboxKey)) !== undefined, true, "the requeued message is not in the outbox");
      // A later write of the partition with the copies lets it leave: refused again, it dies again.
      await settle(async () => (await runtime.host.deadLetters.list({})).deadLetters.length === 1, "the held message to be delivered and die again");
      assert.notEqual((await runtime.host.deadLetters.list({})).deadLetters[0]?.id, letter.id);
    });

    it("lists, reads, retries, deletes and trims only the dead letters of partitions this node owns", async () => {
      const owned = allPartitions();
      const { runtime, settle, clock, oneLetter } = await refusals(owned);
      const letter = await oneLetter();
      // Another node takes the sender's partition: this node keeps a replica's copy of the letter.
      owned.delete(letter.partition);
      assert.deepEqual((await runtime.host.deadLetters.list({})).deadLetters, [], "a replica's copy was listed");
      await assert.rejects(runtime.host.deadLetters.get(letter.id), { reason: "PARTITION_MOVING", retryable: true });
      await assert.rejects(runtime.host.deadLetters.retry({ ids: [letter.id] }), { reason: "PARTITION_MOVING" });
      await assert.rejects(runtime.host.deadLetters.delete({ ids: [letter.id] }), { reason: "PARTITION_MOVING" });
      assert.deepEqual(await runtime.host.deadLetters.retry({ all: true }), { retried: 0, skipped: 0 });
      assert.deepEqual(await runtime.host.deadLetters.delete({ all: true }), { deleted: 0 });
      // Past the retention: a replica's copy waits for its owner's trim, shipped.
      clock.set(clock.nowMs() + 120_000);
      assert.equal(await runtime.host.deadLetters.trim(), 0, "a replica trimmed its copy on its own clock");
      const key = runtime.host.keys.deadLetter(letter.partition, parseDeadLetterId(letter.id, "id").seq);
      assert.notEqual(await runtime.store.get(key), undefined);
      owned.add(letter.partition);
      assert.deepEqual(
        (await runtime.host.deadLetters.list({})).deadLetters.map((d) => d.id),
        [letter.id],
      );
      const trimming = runtime.host.deadLetters.trim();
      await settle(async () => (await runtime.store.get(key)) === undefined, "the owner's trim");
      assert.equal(await trimming, 1);
    });

    it("answers a change whose partition was withdrawn from its group PARTITION_MOVING, and an operation keeps the copies it asked when another partition is withdrawn", async () => {
      let withdraw: { partition: PartitionId; when: (group: CommitGroup) => boolean } | undefined;
      const { runtime, replication, settle, oneLetter } = await refusals(allPartitions(), (group) => {
        if (withdraw?.when(group) === true) group.withdraw(withdraw.partition, runtime.host.keys, runtime.partitioning);
      });
      const letter = await oneLetter();
      const letterKey = runtime.host.keys.deadLetter(letter.partition, parseDeadLetterId(letter.id, "id").seq);
      const touches = (group: CommitGroup) => group.ops.some((op) => op.key === letterKey);
      // Another node takes the letter's partition as the retry's group is sealed.
      withdraw = { partition: letter.partition, when: touches };
      const retrying = runtime.host.deadLetters.retry({ ids: [letter.id] });
      let answered = false;
      retrying.then(
        () => {
          answered = true;
        },
        () => {
          answered = true;
        },
      );
      await settle(async () => answered, "the retry's answer");
      await assert.rejects(retrying, { reason: "PARTITION_MOVING", retryable: true });
      assert.deepEqual(
        (await runtime.host.deadLetters.list({})).deadLetters.map((d) => d.id),
        [letter.id],
        "a withdrawn retry changed the dead letters",
      );
      // A delete in a group that loses another partition still waits for the copies it asked for.
      const other = ((letter.partition + 1) % 256) as PartitionId;
      withdraw = { partition: other, when: touches };
      const deleting = runtime.host.deadLetters.delete({ ids: [letter.id] });
      const group = await waitFor(() => replication.groups.find((g) => touches(g.group)), { timeoutMs: 5_000, what: "the delete's group" });
      assert.equal(group?.group.copies, 2, "withdrawing another partition dropped the copies the delete asked for");
      group?.resolve();
      assert.deepEqual(await deleting, { deleted: 1 });
    });
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
