import assert from "node:assert/strict";
import {
  isTwinmeshError,
  type OwnershipGate,
  outboxMessageId,
  type PartitionId,
  Partitioning,
  type RemoteMessages,
  type ReplicationStage,
  type StageFailure,
  StatusCode,
  type TurnOutcome,
  TwinRuntime,
} from "../../../../runtime/index.js";
import { CounterTwin, RelayTwin, SinkTwin } from "../../../fixtures/index.js";
import { SlowRelayTwin, SlowSinkTwin, slowGate } from "../../../fixtures/slow-mail-twins.js";
import { type TestScope, useTestScope } from "../../../harness/test-scope.js";
import { waitFor } from "../../../harness/wait-for.js";

const partitioning = new Partitioning(256);
const p = (kind: string, id: string): PartitionId => partitioning.partitionOf(kind, id);

/** The refusals a cluster's ownership gate gives (cluster/partition-ownership.ts), each retryable. */
const GATE_REFUSALS = ["NOT_OWNER", "PARTITION_MOVING", "OWNER_UNAVAILABLE", "NOT_SERVING"] as const;

/** A gate that refuses the partitions in `refused` with their reason, and runs the others. */
function gate(refused: Map<number, string>): OwnershipGate {
  return {
    refusal: (kind, id): TurnOutcome | undefined => {
      const reason = refused.get(p(kind, id));
      return reason === undefined ? undefined : { status: "rejected", reason, message: `${kind}/${id}: ${reason}`, retryable: true };
    },
    owns: (partition) => !refused.has(partition),
  };
}

async function open(
  t: TestScope,
  name: string,
  extra: { ownership?: OwnershipGate; replication?: ReplicationStage; remoteMessages?: RemoteMessages },
): Promise<TwinRuntime> {
  const runtime = await TwinRuntime.open({
    dataDir: t.tempDir(name),
    twins: [CounterTwin, RelayTwin, SinkTwin, SlowRelayTwin, SlowSinkTwin],
    host: { timerPollMs: 3_600_000 },
    partitions: partitioning.partitions,
    ...extra,
  });
  t.defer(() => runtime.close());
  await runtime.host.whenIdle();
  return runtime;
}

/** What an operation's rejection says about itself, as the gRPC boundary and a sender's outbox read it. */
async function refusalOf(operation: Promise<unknown>): Promise<unknown> {
  try {
    await operation;
  } catch (err) {
    return isTwinmeshError(err) ? { code: err.code, reason: err.reason, retryable: err.retryable } : err;
  }
  return "answered";
}

const unavailable = (reason: string) => ({ code: StatusCode.UNAVAILABLE, reason, retryable: true });

describe("TwinHost: how a refused single-twin operation is answered (twin-host)", () => {
  const t = useTestScope();

  it("refuses SendToTwin and DeleteTwin UNAVAILABLE and retryable, with the gate's own reason, for each refusal of the ownership gate", async () => {
    const refused = new Map<number, string>();
    const runtime = await open(t, "gate", { ownership: gate(refused) });
    for (const reason of GATE_REFUSALS) {
      refused.set(p("counter", "c-1"), reason);
      assert.deepEqual(await refusalOf(runtime.host.sendToTwin("counter", "c-1", { add: 1 }, "o:7:1")), unavailable(reason), `SendToTwin, ${reason}`);
      assert.deepEqual(await refusalOf(runtime.host.deleteTwin("counter", "c-1")), unavailable(reason), `DeleteTwin, ${reason}`);
    }
    refused.clear();
    // Nothing of the refused calls was applied: the first message accepted is the first one.
    assert.deepEqual(await runtime.host.sendToTwin("counter", "c-1", { add: 1 }, "o:7:1"), { duplicate: false, version: 1 });
  });

  it("refuses a message admitted while its twin was here UNAVAILABLE and retryable when the partition starts moving before its turn", async () => {
    const refused = new Map<number, string>();
    const runtime = await open(t, "moved", { ownership: gate(refused) });
    const sending = runtime.host.sendToTwin("counter", "c-2", { add: 1 }, "o:7:2");
    // Admitted above (synchronously); the turn, after the twin's load, finds the partition moving.
    refused.set(p("counter", "c-2"), "PARTITION_MOVING");
    assert.deepEqual(await refusalOf(sending), unavailable("PARTITION_MOVING"));
  });

  it("refuses SendToTwin UNAVAILABLE and retryable when its replicas did not confirm in time (REPLICATION_TIMEOUT)", async () => {
    const timeout: StageFailure = Object.assign(new Error("partition 3's replicas did not confirm within 5000 ms"), { reason: "REPLICATION_TIMEOUT" });
    const runtime = await open(t, "timeout", { replication: { operationCopies: 2, replicate: () => Promise.reject(timeout) } });
    assert.deepEqual(await refusalOf(runtime.host.sendToTwin("counter", "c-3", { add: 1 }, "o:7:3")), unavailable("REPLICATION_TIMEOUT"));
  });

  it("delivers a twin's messages to another node's twin whose partition was still moving there at the first try, each once, none dead-lettered", async () => {
    const relay = "r-1";
    const sink = "s-1";
    assert.notEqual(p("relay", relay), p("sink", sink));
    // The sink's new owner: taking the sink's partition at the first delivery, serving it afterwards.
    const moving = new Map<number, string>([[p("sink", sink), "PARTITION_MOVING"]]);
    const owner = await open(t, "owner", { ownership: gate(moving) });
    let tries = 0;
    // As cluster-node.ts sends one: SendToTwin to the owner, keyed by the message's id.
    const remoteMessages: RemoteMessages = {
      send: async (entry) => {
        tries++;
        await owner.host.sendToTwin(entry.toKind, entry.toId, entry.message, outboxMessageId(entry));
      },
    };
    const sender = await open(t, "sender", { ownership: gate(new Map([[p("sink", sink), "NOT_OWNER"]])), remoteMessages });
    const results = await sender.host.publish([1, 2].map((seq) => ({ kind: "relay", sourceId: relay, seq, channels: {}, attributes: { to: sink } })));
    assert.deepEqual(results, [{ status: "accepted" }, { status: "accepted" }]);
    await waitFor(() => tries >= 1, { timeoutMs: 5_000, what: "the first delivery, refused while the partition moves" });
    moving.clear();
    // Idle: nothing left in the sender's outbox, delivered or given up to its dead letters.
    await sender.host.whenIdle();
    assert.deepEqual((await owner.host.getTwin("sink", sink)).state, { received: 2, seen: [`${relay}#1`, `${relay}#2`] });
    assert.deepEqual((await sender.host.deadLetters.list({})).deadLetters, []);
  });

  it("sends no message on to a twin's new owner while an earlier one to it is still in a turn here: that one, refused, would be applied after it", async () => {
    const relay = "r-2";
    const sink = "s-2";
    assert.notEqual(p("slow-relay", relay), p("slow-sink", sink));
    const sent: string[] = [];
    const remoteMessages: RemoteMessages = {
      send: async (entry) => {
        sent.push(`${entry.message.from}#${entry.message.seq}`);
      },
    };
    const refused = new Map<number, string>();
    const sender = await open(t, "moved-away", { ownership: gate(refused), remoteMessages });
    slowGate.reset();
    slowGate.close();
    t.defer(() => slowGate.reset());
    const relayed = (seq: number) => ({ kind: "slow-relay", sourceId: relay, seq, channels: {}, attributes: { to: sink } });
    assert.deepEqual(await sender.host.publish([relayed(1)]), [{ status: "accepted" }]);
    // Message 1 is in the sink's turn here when the sink's partition moves to another node.
    await waitFor(() => slowGate.entered === 1 || undefined, { timeoutMs: 5_000, what: "message 1's turn" });
    refused.set(p("slow-sink", sink), "NOT_OWNER");
    assert.deepEqual(await sender.host.publish([relayed(2)]), [{ status: "accepted" }]);
    // The turn ends refused (the partition moved while it ran): message 1 goes to the new owner too.
    slowGate.open();
    await waitFor(() => sent.length === 2 || undefined, { timeoutMs: 5_000, what: "both messages sent to the new owner" });
    assert.deepEqual(sent, [`${relay}#1`, `${relay}#2`]);
  });

  it("applies no message here to a twin that just moved here while an earlier one to it is still on its way to the former owner: that one, refused, would be applied after it", async () => {
    const relay = "r-3";
    const sink = "s-3";
    assert.notEqual(p("relay", relay), p("sink", sink));
    let refuse!: (err: Error) => void;
    const sentThere: number[] = [];
    const remoteMessages: RemoteMessages = {
      send: (entry) => {
        sentThere.push(entry.seq);
        return new Promise<void>((_resolve, reject) => {
          refuse = reject;
        });
      },
    };
    const refused = new Map<number, string>([[p("sink", sink), "NOT_OWNER"]]);
    const sender = await open(t, "moved-here", { ownership: gate(refused), remoteMessages });
    const relayed = (seq: number) => ({ kind: "relay", sourceId: relay, seq, channels: {}, attributes: { to: sink } });
    assert.deepEqual(await sender.host.publish([relayed(1)]), [{ status: "accepted" }]);
    await waitFor(() => sentThere.length === 1 || undefined, { timeoutMs: 5_000, what: "message 1 sent to the sink's owner" });
    // The sink's partition moves here while message 1 is on its way to its former owner.
    refused.clear();
    assert.deepEqual(await sender.host.publish([relayed(2)]), [{ status: "accepted" }]);
    refuse(new Error("NOT_OWNER: the sink's partition moved"));
    await sender.host.whenIdle();
    assert.deepEqual((await sender.host.getTwin("sink", sink)).state, { received: 2, seen: [`${relay}#1`, `${relay}#2`] });
    assert.equal(sentThere.length, 1, "a message was sent to the sink's former owner after its partition moved here");
  });

  it("takes a message delivered here from its sender's outbox and the same message sent by the node that owned the sender for one: applied once either way round", async () => {
    const runtime = await open(t, "both-ways", {});
    // Delivered here: the relay and the sink share this node.
    await runtime.host.publish([{ kind: "relay", sourceId: "r-1", seq: 1, channels: {}, attributes: { to: "s-1" } }]);
    await runtime.host.whenIdle();
    const first = outboxMessageId({ partition: p("relay", "r-1"), seq: 1 });
    // The same message, as the sender's former owner hands it over (SendToTwin keyed by its id).
    assert.deepEqual(await runtime.host.sendToTwin("sink", "s-1", { from: "r-1", seq: 1 }, first), { duplicate: true, version: 1 });
    // And the other way round: handed over first, then found in the outbox here.
    const second = outboxMessageId({ partition: p("relay", "r-1"), seq: 2 });
    assert.deepEqual(await runtime.host.sendToTwin("sink", "s-1", { from: "r-1", seq: 2 }, second), { duplicate: false, version: 2 });
    await runtime.host.publish([{ kind: "relay", sourceId: "r-1", seq: 2, channels: {}, attributes: { to: "s-1" } }]);
    await runtime.host.whenIdle();
    assert.deepEqual((await runtime.host.getTwin("sink", "s-1")).state, { received: 2, seen: ["r-1#1", "r-1#2"] });
  });
});
