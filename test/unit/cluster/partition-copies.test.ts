import assert from "node:assert/strict";
import { PartitionCopies, PartitionCopy, parseCopyState } from "../../../cluster/partition-copies.js";
import type { BatchOp, PartitionId, TwinRuntime } from "../../../runtime/index.js";

const PARTITION = 5 as PartitionId;

/** A store holding `ops`' result, scanned in one chunk. */
function storeOf(ops: readonly BatchOp[]): TwinRuntime["store"] {
  const data = new Map<string, string>();
  for (const op of ops) {
    if (op.type === "put") data.set(op.key, typeof op.value === "string" ? op.value : Buffer.from(op.value).toString());
    else data.delete(op.key);
  }
  return {
    async *scan() {
      yield [...data].sort(([a], [b]) => (a < b ? -1 : 1));
    },
  } as unknown as TwinRuntime["store"];
}

describe("PartitionCopy promise", () => {
  it("stores a promise newer than the epoch it follows, loads it back, and keeps it through a whole-range copy", async () => {
    const copy = new PartitionCopy(PARTITION);
    copy.adopt({ epoch: 257, position: 4 }, [{ epoch: 257, start: 1 }]);
    copy.promised = 514;
    assert.equal(copy.fenced, true);
    let loaded = (await PartitionCopies.load(storeOf([copy.op()]), 16)).get(PARTITION);
    assert.deepEqual([loaded.promised, loaded.point], [514, { epoch: 257, position: 4 }]);
    copy.clear();
    loaded = (await PartitionCopies.load(storeOf([copy.op()]), 16)).get(PARTITION);
    assert.equal(loaded.promised, 514, "an empty copy's promise was dropped");
    assert.equal(parseCopyState('{"e":257,"p":4,"h":[[257,1]],"c":"514"}'), undefined, "a damaged promise read as none");
  });
});

describe("PartitionCopy rebuilding mark", () => {
  it("stores the mark of an empty copy, which is otherwise deleted, and loads it back", async () => {
    const copy = new PartitionCopy(PARTITION);
    assert.equal(copy.op().type, "del");
    copy.rebuilding = true;
    const op = copy.op();
    assert.equal(op.type, "put");
    assert.deepEqual(parseCopyState(op.type === "put" ? String(op.value) : ""), {
      point: { epoch: 0, position: 0 },
      history: [],
      rebuilding: true,
      promised: 0,
    });
    const loaded = await PartitionCopies.load(storeOf([op]), 16);
    assert.equal(loaded.get(PARTITION).rebuilding, true);
    assert.equal(loaded.get(0 as PartitionId).rebuilding, false);
  });

  it("keeps the mark through a whole-range copy, and drops it from the stored state once cleared", async () => {
    const copy = new PartitionCopy(PARTITION);
    copy.rebuilding = true;
    copy.adopt({ epoch: 257, position: 4 }, [{ epoch: 257, start: 1 }]);
    copy.clear();
    copy.adopt({ epoch: 513, position: 9 }, [
      { epoch: 257, start: 1 },
      { epoch: 513, start: 6 },
    ]);
    assert.equal(copy.rebuilding, true);
    let loaded = await PartitionCopies.load(storeOf([copy.op()]), 16);
    assert.deepEqual([loaded.get(PARTITION).rebuilding, loaded.get(PARTITION).point], [true, { epoch: 513, position: 9 }]);
    copy.rebuilding = false;
    loaded = await PartitionCopies.load(storeOf([copy.op()]), 16);
    assert.deepEqual([loaded.get(PARTITION).rebuilding, loaded.get(PARTITION).point], [false, { epoch: 513, position: 9 }]);
  });
});
