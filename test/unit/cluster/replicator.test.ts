import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import type { NodeId } from "../../../cluster/node-id.js";
import { PartitionCopies } from "../../../cluster/partition-copies.js";
import { nextEpoch } from "../../../cluster/partition-ownership.js";
import { Replicator } from "../../../cluster/replicator.js";
import { RingSnapshot } from "../../../cluster/ring-snapshot.js";
import { ReplicateResponseSchema } from "../../../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import type { Activation } from "../../../runtime/host/activation.js";
import { CommitGroup } from "../../../runtime/host/commit-group.js";
import { Keys, type PartitionId, Partitioning, silentLogger, type TwinRuntime } from "../../../runtime/index.js";

const partitioning = new Partitioning(16);
const keys = new Keys();
const KEY = keys.twin("counter", "c-1");
const PARTITION = partitioning.partitionOf("counter", "c-1");

/** A replicator on a one-node ring (nothing to ship to), over copies the test sets up. */
async function replicatorOn(): Promise<{ replicator: Replicator; copies: PartitionCopies; superseded: number[] }> {
  const superseded: number[] = [];
  const store = {
    async *scan(): AsyncIterable<[string, string][]> {},
  };
  const runtime = { store, partitioning } as unknown as TwinRuntime;
  const copies = await PartitionCopies.load(runtime.store, 16);
  const ring = new RingSnapshot(1n, ["n1"], partitioning, 3);
  const replicator = new Replicator({
    self: "n1" as NodeId,
    runtime,
    ring: () => ring,
    peers: {
      isUp: () => false,
      isCurrent: () => false,
      channel: (): grpc.Client => {
        throw new Error("a one-node ring has no peer");
      },
    },
    copies,
    log: silentLogger(),
    superseded: (p) => void superseded.push(p),
  });
  return { replicator, copies, superseded };
}

function groupWriting(...keysWritten: string[]): CommitGroup {
  const group = new CommitGroup();
  for (const key of keysWritten) {
    group.ops.push({ type: "put", key, value: "{}" });
    group.twins.add({ key } as Activation);
  }
  return group;
}

describe("Replicator", () => {
  it("numbers and keeps a group that writes a partition this node owns under the epoch it began", async () => {
    const { replicator, copies } = await replicatorOn();
    const copy = copies.get(PARTITION as PartitionId);
    copy.beginEpoch(nextEpoch(0, 0));
    const group = groupWriting(KEY);
    replicator.prepare(group);
    assert.equal(replicator.replicate(group), undefined, "a LOCAL group with no replica to wait for is answered at once");
    assert.deepEqual(copy.point, { epoch: nextEpoch(0, 0), position: 2 });
  });

  it("withdraws the writes of a partition this node no longer writes from a group, ships the rest, and refuses the group's answers NOT_OWNER", async () => {
    const { replicator, copies } = await replicatorOn();
    const copy = copies.get(PARTITION as PartitionId);
    // This node follows another owner's epoch now (a turn outlived its ownership).
    copy.adopt({ epoch: nextEpoch(0, 1), position: 4 }, [{ epoch: nextEpoch(0, 1), start: 1 }]);
    let n = 2;
    while (partitioning.partitionOf("counter", `c-${n}`) === PARTITION) n++;
    const mine = keys.twin("counter", `c-${n}`);
    const other = copies.get(partitioning.partitionOf("counter", `c-${n}`));
    other.beginEpoch(nextEpoch(0, 0));
    const group = groupWriting(KEY, mine);
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
    await assert.rejects(Promise.resolve(replicator.replicate(group)), (err: Error & { reason?: string }) => {
      assert.equal(err.reason, "NOT_OWNER");
      assert.match(err.message, new RegExp(`partition ${PARTITION} moved to another owner while this batch's turns ran; retry`));
      return true;
    });
    assert.deepEqual(copy.point, { epoch: nextEpoch(0, 1), position: 4 }, "the withdrawn partition's point moved");
    assert.deepEqual(other.point, { epoch: nextEpoch(0, 0), position: 2 }, "the owned partition's shipment was numbered");
    assert.equal(other.written, 2, "and sent");
  });

  it("lets a partition go when a replica says it follows a newer epoch of it than the one this node writes under, and only then", async () => {
    const { replicator, copies, superseded } = await replicatorOn();
    const copy = copies.get(PARTITION as PartitionId);
    copy.beginEpoch(nextEpoch(0, 0));
    const durable = (epoch: number, position: number) =>
      replicator.durable(
        "n2" as NodeId,
        create(ReplicateResponseSchema, { durable: [{ partition: PARTITION, epoch: BigInt(epoch), position: BigInt(position) }] }),
      );
    durable(copy.epoch, 1);
    durable(copy.epoch - 256, 9);
    assert.deepEqual(superseded, [], "the same or an older epoch");
    durable(nextEpoch(copy.epoch, 2), 2);
    assert.deepEqual(superseded, [PARTITION], "a newer epoch");
    assert.equal(copy.writing, false, "the partition is written no more");
    durable(nextEpoch(copy.epoch, 2), 2);
    assert.deepEqual(superseded, [PARTITION], "let go once");
    // A copy that follows another owner already is not this node's to let go.
    copy.adopt({ epoch: nextEpoch(copy.epoch, 2), position: 2 }, [{ epoch: nextEpoch(copy.epoch, 2), start: 2 }]);
    durable(nextEpoch(copy.epoch, 1), 3);
    assert.deepEqual(superseded, [PARTITION]);
  });
});
