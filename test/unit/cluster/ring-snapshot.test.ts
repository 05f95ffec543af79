import assert from "node:assert/strict";
import { RingSnapshot } from "../../../cluster/index.js";

function keys(n: number): string[] {
  return Array.from({ length: n }, (_, i) => RingSnapshot.key("patient", `bed-${i}`));
}

describe("RingSnapshot", () => {
  it("gives every key to the only node of a one-node ring", () => {
    const ring = new RingSnapshot(1n, ["a"]);
    assert.deepEqual(new Set(keys(100).map((k) => ring.ownerOf(k))), new Set(["a"]));
    assert.deepEqual(ring.replicasOf(RingSnapshot.key("patient", "bed-1"), 3), ["a"]);
  });

  it("returns the owner and distinct successors as replicas, capped at the cluster size", () => {
    const ring = new RingSnapshot(1n, ["a", "b", "c"]);
    for (const key of keys(50)) {
      const replicas = ring.replicasOf(key, 3);
      assert.equal(replicas.length, 3);
      assert.equal(new Set(replicas).size, 3);
      assert.equal(replicas[0], ring.ownerOf(key));
    }
    assert.equal(ring.replicasOf(RingSnapshot.key("k", "1"), 5).length, 3);
  });

  it("moves only keys to the joining node when a node joins (fixed virtual nodes)", () => {
    const before = new RingSnapshot(1n, ["a", "b", "c"]);
    const after = new RingSnapshot(2n, ["a", "b", "c", "d"]);
    let moved = 0;
    for (const key of keys(5_000)) {
      const was = before.ownerOf(key);
      const now = after.ownerOf(key);
      if (was !== now) {
        assert.equal(now, "d", `key ${key} moved from ${was} to ${now}, not to the new node`);
        moved++;
      }
    }
    // Roughly a quarter of the keys move to the new node.
    assert.ok(moved > 5_000 * 0.15 && moved < 5_000 * 0.35, `moved ${moved}`);
  });

  it("is the same ring whatever order the nodes are listed in", () => {
    const one = new RingSnapshot(1n, ["c", "a", "b"]);
    const two = new RingSnapshot(1n, ["a", "b", "c"]);
    for (const key of keys(200)) assert.equal(one.ownerOf(key), two.ownerOf(key));
  });
});
