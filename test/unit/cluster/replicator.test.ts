import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import type { NodeId } from "../../../cluster/node-id.js";
import { nextEpoch, PartitionCopies } from "../../../cluster/partition-copies.js";
import { Replicator } from "../../../cluster/replicator.js";
import { RingSnapshot } from "../../../cluster/ring-snapshot.js";
import { unpackChanges } from "../../../cluster/shipment-changes.js";
import { ReplicateResponseSchema, type Shipment } from "../../../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import type { Activation } from "../../../runtime/host/activation.js";
import type { StageFailure } from "../../../runtime/host/commit-completion.js";
import { CommitGroup } from "../../../runtime/host/commit-group.js";
import type { TwinMessage } from "../../../runtime/host/twin-message.js";
import { Keys, type PartitionId, Partitioning, silentLogger, type TwinRuntime } from "../../../runtime/index.js";

const partitioning = new Partitioning(16);
const keys = new Keys();
const KEY = keys.twin("counter", "c-1");
const PARTITION = partitioning.partitionOf("counter", "c-1");

/**
 * A replicator over copies the test sets up, on a ring of n1 and `replicas` more nodes (n2, n3),
 * RF 3. They are up (the test may take one out of `up`) and take every shipment without a word:
 * the test says what is durable on them with `durable`.
 */
async function replicatorOn(replicas = 0): Promise<{ replicator: Replicator; copies: PartitionCopies; superseded: number[]; up: Set<string> }> {
  const superseded: number[] = [];
  const store = {
    async *scan(): AsyncIterable<[string, string][]> {},
  };
  const runtime = { store, partitioning, host: { keys } } as unknown as TwinRuntime;
  const copies = await PartitionCopies.load(runtime.store, 16);
  const nodes = ["n1", "n2", "n3"].slice(0, replicas + 1);
  const up = new Set(nodes.slice(1));
  const ring = new RingSnapshot(1n, nodes, partitioning, 3);
  const silentStream = Object.assign(new EventEmitter(), { write: () => true, cancel: () => undefined, writableLength: 0 });
  const replicator = new Replicator({
    self: "n1" as NodeId,
    runtime,
    ring: () => ring,
    peers: {
      isUp: (peer) => up.has(peer),
      isCurrent: (peer) => up.has(peer),
      channel: (): grpc.Client => {
        if (replicas === 0) throw new Error("a one-node ring has no peer");
        return { makeBidiStreamRequest: () => silentStream } as unknown as grpc.Client;
      },
    },
    copies,
    log: silentLogger(),
    superseded: (p) => void superseded.push(p),
  });
  return { replicator, copies, superseded, up };
}

/** `replica` (n2 unless named) says `partition` is durable on it up to `position` of `epoch`. */
function durable(replicator: Replicator, epoch: number, position: number, partition: number = PARTITION, replica = "n2"): void {
  replicator.durable(replica as NodeId, create(ReplicateResponseSchema, { durable: [{ partition, epoch: BigInt(epoch), position: BigInt(position) }] }));
}

/**
 * How `promise` stands once the callbacks already due have run: "confirmed", its failure, or
 * "waiting". The replicator settles a group synchronously (on an answer, a lost replica or a new
 * epoch), so a group still waiting then waits for something the test has not done yet.
 */
async function settled(promise: Promise<void> | undefined): Promise<"confirmed" | "waiting" | StageFailure> {
  let state: "confirmed" | "waiting" | StageFailure = "waiting";
  Promise.resolve(promise).then(
    () => {
      state = "confirmed";
    },
    (err: StageFailure) => {
      state = err;
    },
  );
  await new Promise((resolve) => setImmediate(resolve));
  return state;
}

/** `reason: message` of a failure, or the state. */
function text(state: "confirmed" | "waiting" | StageFailure): string {
  return typeof state === "string" ? state : `${state.reason}: ${state.message}`;
}

/** A group of one accepted event per twin (`counter/<id>`), each writing its record. */
function groupWriting(...ids: string[]): CommitGroup {
  const group = new CommitGroup();
  for (const id of ids) {
    const act = { key: keys.twin("counter", id), id, entry: { kind: "counter" } } as Activation;
    group.ops.push({ type: "put", key: act.key, value: "{}" });
    group.twins.add(act);
    group.ackMessages.push({ type: "telemetry", index: 0, sink: { complete: () => undefined } } as unknown as TwinMessage);
    group.ackOutcomes.push({ status: "accepted" });
    group.ackTwins.push(act);
  }
  return group;
}

describe("Replicator", () => {
  it("numbers and keeps a group that writes a partition this node owns under the epoch it began", async () => {
    const { replicator, copies } = await replicatorOn();
    const copy = copies.get(PARTITION as PartitionId);
    copy.beginEpoch(nextEpoch(0, 0));
    const group = groupWriting("c-1");
    replicator.prepare(group);
    assert.equal(replicator.replicate(group), undefined, "a LOCAL group with no replica to wait for is answered at once");
    assert.deepEqual(copy.point, { epoch: nextEpoch(0, 0), position: 2 });
  });

  it("withdraws the turns of a partition this node no longer writes from a group, refusing them NOT_OWNER, and ships the rest", async () => {
    const { replicator, copies } = await replicatorOn();
    const copy = copies.get(PARTITION as PartitionId);
    // This node follows another owner's epoch now (a turn outlived its ownership).
    copy.adopt({ epoch: nextEpoch(0, 1), position: 4 }, [{ epoch: nextEpoch(0, 1), start: 1 }]);
    let n = 2;
    while (partitioning.partitionOf("counter", `c-${n}`) === PARTITION) n++;
    const mine = keys.twin("counter", `c-${n}`);
    const other = copies.get(partitioning.partitionOf("counter", `c-${n}`));
    other.beginEpoch(nextEpoch(0, 0));
    const group = groupWriting("c-1", `c-${n}`);
    replicator.prepare(group);
    assert.deepEqual(
      group.ops.filter((op) => !op.key.startsWith("\u0000")).map((op) => op.key),
      [mine],
      "only the owned partition's writes are left in the batch",
    );
    assert.deepEqual(
      group.withdrawn?.map((act) => act.key),
      [KEY],
      "the twin whose writes were withdrawn reloads",
    );
    assert.deepEqual(
      group.ackOutcomes.map((o) => [o.status, o.reason]),
      [
        ["rejected", "NOT_OWNER"],
        ["accepted", undefined],
      ],
      "the withdrawn turn is refused, the other keeps its answer",
    );
    assert.match(group.ackOutcomes[0]?.message ?? "", /counter\/c-1 moved to another node while this turn ran; nothing of it was written here; retry/);
    assert.equal(replicator.replicate(group), undefined, "a LOCAL group waits for no replica");
    assert.deepEqual(copy.point, { epoch: nextEpoch(0, 1), position: 4 }, "the withdrawn partition's point moved");
    assert.deepEqual(other.point, { epoch: nextEpoch(0, 0), position: 2 }, "the owned partition's shipment was numbered");
    assert.equal(other.written, 2, "and sent");
  });

  it("ships nothing of a withdrawn delivery to its sender's partition: the sender's outbox entry stays on every copy", async () => {
    const { replicator, copies } = await replicatorOn();
    // The sink's partition moved away; the relay's (the sender's) is still this node's.
    let r = 0;
    while (partitioning.partitionOf("relay", `r-${r}`) === partitioning.partitionOf("sink", "s-1")) r++;
    const sender = partitioning.partitionOf("relay", `r-${r}`);
    const target = partitioning.partitionOf("sink", "s-1");
    copies.get(target).adopt({ epoch: nextEpoch(0, 1), position: 4 }, [{ epoch: nextEpoch(0, 1), start: 1 }]);
    const mine = copies.get(sender);
    mine.beginEpoch(nextEpoch(0, 0));
    const sink = { key: keys.twin("sink", "s-1"), id: "s-1", entry: { kind: "sink" } } as Activation;
    const relay = keys.twin("relay", `r-${r}`);
    const entry = { partition: sender, seq: 7, fromKind: "relay", fromId: `r-${r}`, toKind: "sink", toId: "s-1", message: {} };
    const group = new CommitGroup();
    group.ops.push({ type: "put", key: sink.key, value: "{}" }, { type: "del", key: keys.outbox(sender, 7) }, { type: "put", key: relay, value: "{}" });
    group.twins.add(sink);
    group.ackMessages.push({ type: "message", index: 0, message: {}, outbox: entry, sink: { complete: () => undefined } } as unknown as TwinMessage);
    group.ackOutcomes.push({ status: "accepted" });
    group.ackTwins.push(sink);
    replicator.prepare(group);
    assert.equal(replicator.replicate(group), undefined);
    assert.deepEqual(
      group.ops.filter((op) => !op.key.startsWith("\u0000")).map((op) => op.key),
      [relay],
      "the local batch keeps only the relay's write",
    );
    const shipped = replicator.shipmentsAfter(sender, mine.position - 1) ?? [];
    assert.equal(shipped.length, 1);
    assert.deepEqual(
      unpackChanges((shipped[0] as Shipment).changes).map((op) => op.key),
      [relay],
      "the sender's shipment deletes no outbox entry",
    );
    assert.equal(group.ackOutcomes[0]?.reason, "NOT_OWNER");
  });

  it("lets a partition go when a replica says it follows a newer epoch of it than the one this node writes under, and only then", async () => {
    const { replicator, copies, superseded } = await replicatorOn();
    const copy = copies.get(PARTITION as PartitionId);
    copy.beginEpoch(nextEpoch(0, 0));
    durable(replicator, copy.epoch, 1);
    durable(replicator, copy.epoch - 256, 9);
    assert.deepEqual(superseded, [], "the same or an older epoch");
    durable(replicator, 2 ** 48 + 2, 2);
    assert.deepEqual(superseded, [], "an epoch past 2^48, which no cluster reaches, is ignored");
    durable(replicator, nextEpoch(copy.epoch, 2), 2);
    assert.deepEqual(superseded, [PARTITION], "a newer epoch");
    assert.equal(copy.writing, false, "the partition is written no more");
    durable(replicator, nextEpoch(copy.epoch, 2), 2);
    assert.deepEqual(superseded, [PARTITION], "let go once");
    // A copy that follows another owner already is not this node's to let go.
    copy.adopt({ epoch: nextEpoch(copy.epoch, 2), position: 2 }, [{ epoch: nextEpoch(copy.epoch, 2), start: 2 }]);
    durable(replicator, nextEpoch(copy.epoch, 1), 3);
    assert.deepEqual(superseded, [PARTITION]);
  });

  it("refuses the waiting answers of an epoch this node no longer writes as soon as a newer one shows, and confirms the newer one's", async () => {
    const { replicator, copies } = await replicatorOn(1);
    const copy = copies.get(PARTITION as PartitionId);
    const first = nextEpoch(0, 0);
    copy.beginEpoch(first);
    const commit = (copiesAsked: number): Promise<void> | undefined => {
      const group = groupWriting("c-1");
      group.asks(copiesAsked);
      replicator.prepare(group);
      return replicator.replicate(group);
    };
    // Positions 2 to 4 at LOCAL, then 5 waiting for n2.
    for (let i = 0; i < 3; i++) assert.equal(commit(1), undefined);
    const old = commit(2);
    assert.deepEqual(copy.point, { epoch: first, position: 5 });
    // n2 took the partition (its history is shorter: it never had 3 to 5), and this node took it back.
    const theirs = nextEpoch(first, 1);
    copy.adopt({ epoch: theirs, position: 2 }, [
      { epoch: first, start: 1 },
      { epoch: theirs, start: 3 },
    ]);
    copy.beginEpoch(nextEpoch(theirs, 0));
    replicator.announce([PARTITION as PartitionId]);
    assert.match(
      text(await settled(old)),
      /^NOT_OWNER: partition \d+ changed owner \(epoch \d+: this node took it again\) before its replicas confirmed this batch; retry/,
    );
    const current = commit(2);
    durable(replicator, copy.epoch, copy.position);
    assert.equal(await settled(current), "confirmed", "the newer epoch's lower position is confirmed at once");
    // A replica that shows a newer epoch than a waiting answer's ends that answer too.
    const stale = commit(2);
    durable(replicator, nextEpoch(copy.epoch, 1), 1);
    assert.match(text(await settled(stale)), /^NOT_OWNER: .*n2 follows it/);
  });

  it("refuses its waiting answers and lets the partition go when a replica answers that it promised a newer epoch to another node", async () => {
    const { replicator, copies, superseded } = await replicatorOn(1);
    const copy = copies.get(PARTITION as PartitionId);
    copy.beginEpoch(nextEpoch(0, 0));
    const group = groupWriting("c-1");
    group.asks(2);
    replicator.prepare(group);
    const waiting = replicator.replicate(group);
    const promise = (epoch: number): void =>
      replicator.durable("n2" as NodeId, create(ReplicateResponseSchema, { promised: [{ partition: PARTITION, epoch: BigInt(epoch), position: 0n }] }));
    promise(copy.epoch);
    assert.equal(await settled(waiting), "waiting", "a promise of this node's own epoch is no news");
    promise(nextEpoch(copy.epoch, 2));
    assert.match(text(await settled(waiting)), /^NOT_OWNER: partition \d+ was taken by another node/);
    assert.deepEqual(superseded, [PARTITION]);
    assert.equal(copy.writing, false, "the partition is written no more");
  });

  describe("a group whose answers ask for different copies", () => {
    /** Prepares and replicates a group of one event per entry of `asked` (the copies each answer asks for). */
    function commitAsking(replicator: Replicator, ...asked: number[]): Promise<void> | undefined {
      const group = groupWriting("c-1");
      for (const copies of asked) group.asks(copies);
      replicator.prepare(group);
      return replicator.replicate(group);
    }

    it("answers at the copies its live replicas gave when a replica goes down: QUORUM answers are met, ALL answers get the shortfall", async () => {
      const { replicator, copies } = await replicatorOn(2);
      const copy = copies.get(PARTITION as PartitionId);
      copy.beginEpoch(nextEpoch(0, 0));
      const waiting = commitAsking(replicator, 2, 3);
      durable(replicator, copy.epoch, copy.position);
      assert.equal(await settled(waiting), "waiting", "ALL waits for n3");
      replicator.notCountingOn("n3" as NodeId, "n3 is down");
      const failure = await settled(waiting);
      assert.notEqual(typeof failure, "string");
      assert.equal((failure as StageFailure).reason, "NOT_ENOUGH_REPLICAS");
      assert.equal((failure as StageFailure).copies, 2, "two copies are durable: answers that asked for two are met");
      assert.match((failure as StageFailure).message, /^n3 is down; 2 of the 3 copies asked for are durable$/);
    });

    it("waits for the copies its live replicas can still give that one of its answers asks for, not for none", async () => {
      const { replicator, copies, up } = await replicatorOn(2);
      const copy = copies.get(PARTITION as PartitionId);
      copy.beginEpoch(nextEpoch(0, 0));
      up.delete("n3");
      const both = commitAsking(replicator, 2, 3);
      const all = commitAsking(replicator, 3);
      const quorum = commitAsking(replicator, 1, 2);
      const failure = (await settled(all)) as StageFailure;
      assert.equal(failure.copies, 1, "an ALL-only group is refused at once");
      assert.match(failure.message, /^only 2 of the 3 copies asked for are live for partition \d+; 1 of the 3 copies asked for is durable$/);
      assert.equal(await settled(both), "waiting", "a QUORUM answer waits for n2");
      assert.equal(await settled(quorum), "waiting");
      durable(replicator, copy.epoch, copy.position);
      assert.equal(((await settled(both)) as StageFailure).copies, 2);
      assert.equal(await settled(quorum), "confirmed");
    });

    it("lowers its goal when a replica goes down before any confirmed, and meets it with the others", async () => {
      const { replicator, copies } = await replicatorOn(2);
      const copy = copies.get(PARTITION as PartitionId);
      copy.beginEpoch(nextEpoch(0, 0));
      const waiting = commitAsking(replicator, 2, 3);
      replicator.notCountingOn("n3" as NodeId, "n3 is down");
      assert.equal(await settled(waiting), "waiting");
      durable(replicator, copy.epoch, copy.position, PARTITION, "n3");
      assert.equal(await settled(waiting), "waiting", "a replica not counted on confirms nothing for the group");
      durable(replicator, copy.epoch, copy.position);
      assert.equal(((await settled(waiting)) as StageFailure).copies, 2);
    });
  });
});
