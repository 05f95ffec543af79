import assert from "node:assert/strict";
import type * as grpc from "@grpc/grpc-js";
import type { NodeId } from "../../../cluster/node-id.js";
import { PartitionCopies } from "../../../cluster/partition-copies.js";
import { nextEpoch } from "../../../cluster/partition-ownership.js";
import { Replicator } from "../../../cluster/replicator.js";
import { RingSnapshot } from "../../../cluster/ring-snapshot.js";
import { type CommitGroup, Keys, type PartitionId, Partitioning, silentLogger, type TwinRuntime } from "../../../runtime/index.js";

const partitioning = new Partitioning(16);
const keys = new Keys();
const KEY = keys.twin("counter", "c-1");
const PARTITION = partitioning.partitionOf("counter", "c-1");

/** A replicator on a one-node ring (nothing to ship to), over copies the test sets up. */
async function replicatorOn(): Promise<{ replicator: Replicator; copies: PartitionCopies }> {
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
  });
  return { replicator, copies };
}

function groupWriting(key: string): CommitGroup {
  return { ops: [{ type: "put", key, value: "{}" }], copies: 1 } as unknown as CommitGroup;
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

  it("refuses the answers of a group whose turns wrote a partition this node no longer writes, NOT_OWNER, and ships nothing of it", async () => {
    const { replicator, copies } = await replicatorOn();
    const copy = copies.get(PARTITION as PartitionId);
    // This node follows another owner's epoch now (a turn outlived its ownership).
    copy.adopt({ epoch: nextEpoch(0, 1), position: 4 }, [{ epoch: nextEpoch(0, 1), start: 1 }]);
    const group = groupWriting(KEY);
    replicator.prepare(group);
    await assert.rejects(Promise.resolve(replicator.replicate(group)), (err: Error & { reason?: string }) => {
      assert.equal(err.reason, "NOT_OWNER");
      assert.match(err.message, new RegExp(`partition ${PARTITION} moved to another owner while this batch's turns ran; retry`));
      return true;
    });
    assert.deepEqual(copy.point, { epoch: nextEpoch(0, 1), position: 4 }, "the copy's point moved");
    assert.equal(replicator.stats.shipments, 0);
  });
});
