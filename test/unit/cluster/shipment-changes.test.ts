import assert from "node:assert/strict";
import { MalformedChanges, packChanges, unpackChanges } from "../../../cluster/shipment-changes.js";
import type { BatchOp } from "../../../runtime/index.js";

/** The ops as plain values (keys, and values as text), for comparing. */
const plain = (ops: readonly BatchOp[]) => ops.map((op) => (op.type === "del" ? ["del", op.key] : ["put", op.key, Buffer.from(op.value).toString("utf8")]));

describe("packed shipment changes", () => {
  it("give back every put and delete in order, with UTF-8 keys, empty values and lengths of several bytes", () => {
    const big = "x".repeat(300_000);
    const ops: BatchOp[] = [
      { type: "put", key: "t\u0000bench\u0000ü-001", value: Buffer.from('{"sv":1}') },
      { type: "del", key: "o\u0000001f\u000000000000000000a1" },
      { type: "put", key: "empty", value: new Uint8Array() },
      { type: "put", key: "as text", value: "snow ❄" },
      { type: "put", key: "k".repeat(200), value: big },
    ];
    assert.deepEqual(plain(unpackChanges(packChanges(ops))), plain(ops));
    assert.deepEqual(unpackChanges(packChanges([])), []);
  });

  it("read values as views into the bytes received, not copies", () => {
    const packed = packChanges([{ type: "put", key: "k", value: Buffer.from("value") }]);
    const [op] = unpackChanges(packed);
    packed[packed.length - 1] = "E".charCodeAt(0);
    assert.equal(op?.type === "put" && Buffer.from(op.value).toString("utf8"), "valuE");
  });

  it("refuse a list cut short, a length past the end, or an endless length", () => {
    const packed = packChanges([{ type: "put", key: "key", value: Buffer.from("value") }]);
    for (let cut = 1; cut < packed.length; cut++) {
      assert.throws(() => unpackChanges(packed.subarray(0, cut)), MalformedChanges, `cut at ${cut} of ${packed.length}`);
    }
    assert.throws(() => unpackChanges(Uint8Array.from([5, 0x6b])), /its key runs past the end/);
    assert.throws(() => unpackChanges(Uint8Array.from([1, 0x6b, 9, 0x76])), /its value runs past the end/);
    assert.throws(() => unpackChanges(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])), /longer than 7 bytes/);
  });
});
