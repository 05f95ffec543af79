import assert from "node:assert/strict";
import { RingSnapshot } from "../../../cluster/index.js";
import { type PartitionId, Partitioning } from "../../../runtime/index.js";

const P256 = new Partitioning(256);

describe("RingSnapshot", () => {
  it("gives every partition to the only node of a one-node ring, with no replicas", () => {
    const ring = new RingSnapshot(1n, ["a"], P256, 3);
    assert.equal(ring.replicationFactor, 1);
    for (const p of P256.all()) assert.deepEqual(ring.preferenceList(p), ["a"]);
    assert.deepEqual(ring.shareOf("a"), { owned: 256, replicated: 0 });
  });

  it("lists replication-factor distinct nodes per partition, capped at the cluster size, and spreads ownership", () => {
    const ring = new RingSnapshot(1n, ["a", "b", "c"], P256, 5);
    assert.equal(ring.replicationFactor, 3);
    const owned = new Map<string, number>();
    for (const p of P256.all()) {
      const list = ring.preferenceList(p);
      assert.equal(new Set(list).size, 3, `partition ${p}: ${list.join(",")}`);
      const owner = ring.ownerOf(p) ?? "";
      owned.set(owner, (owned.get(owner) ?? 0) + 1);
    }
    // 64 virtual nodes each: no node owns less than half or more than twice its fair share.
    for (const node of ["a", "b", "c"]) {
      const n = owned.get(node) ?? 0;
      assert.ok(n > 256 / 3 / 2 && n < (256 / 3) * 2, `${node} owns ${n}`);
      assert.deepEqual(ring.shareOf(node), { owned: n, replicated: 256 - n });
    }
  });

  it("makes the first live node of a partition's list its owner, and the next one when it is down", () => {
    const ring = new RingSnapshot(1n, ["a", "b", "c"], P256, 3);
    for (const p of P256.all()) {
      const [first, second] = ring.preferenceList(p);
      assert.equal(ring.ownerOf(p), first);
      assert.equal(
        ring.ownerOf(p, (n) => n !== first),
        second,
      );
    }
    assert.equal(
      ring.ownerOf(0 as PartitionId, () => false),
      undefined,
    );
    const down = ring.preferenceList(0 as PartitionId)[0] ?? "";
    assert.deepEqual(
      ring.shareOf(down, (n) => n !== down),
      { owned: 0, replicated: 256 },
    );
  });

  it("moves only partitions to the joining node when a node joins (fixed virtual nodes)", () => {
    const partitioning = new Partitioning(4096);
    const before = new RingSnapshot(1n, ["a", "b", "c"], partitioning, 1);
    const after = new RingSnapshot(2n, ["a", "b", "c", "d"], partitioning, 1);
    let moved = 0;
    for (const p of partitioning.all()) {
      const was = before.ownerOf(p);
      const now = after.ownerOf(p);
      if (was !== now) {
        assert.equal(now, "d", `partition ${p} moved from ${was} to ${now}, not to the new node`);
        moved++;
      }
    }
    // Roughly a quarter of the partitions move to the new node.
    assert.ok(moved > 4096 * 0.15 && moved < 4096 * 0.35, `moved ${moved}`);
  });

  it("is the same placement whatever order the nodes are listed in", () => {
    const one = new RingSnapshot(1n, ["c", "a", "b"], P256, 2);
    const two = new RingSnapshot(1n, ["a", "b", "c"], P256, 2);
    for (const p of P256.all()) assert.deepEqual(one.preferenceList(p), two.preferenceList(p));
  });

  it("refuses an empty ring and a replication factor below 1", () => {
    assert.throws(() => new RingSnapshot(1n, [], P256, 1), RangeError);
    assert.throws(() => new RingSnapshot(1n, ["a"], P256, 0), RangeError);
  });
});
