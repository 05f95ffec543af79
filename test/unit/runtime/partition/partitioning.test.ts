import assert from "node:assert/strict";
import { Partitioning, twinHash } from "../../../../runtime/index.js";

describe("Partitioning", () => {
  it("hashes with the documented function (test vectors for clients in other languages)", () => {
    // fmix32(fnv1a32(utf8(kind + "\0" + id))): fixed forever, a ring-aware client relies on it.
    assert.deepEqual(
      [twinHash("patient", "bed-1"), twinHash("patient", "bed-2"), twinHash("vehicle", "truck-7"), twinHash("k", "zürich-€")],
      [TWIN_HASH_VECTORS[0], TWIN_HASH_VECTORS[1], TWIN_HASH_VECTORS[2], TWIN_HASH_VECTORS[3]],
    );
  });

  it("hashes non-ASCII ids by their UTF-8 bytes", () => {
    assert.equal(twinHash("k", "zürich-€"), twinHash("k", "zürich-€".normalize("NFC")));
    assert.notEqual(twinHash("k", "zürich"), twinHash("k", "zurich"));
  });

  it("keeps the kind and the id apart (a/bc and ab/c differ)", () => {
    assert.notEqual(twinHash("a", "bc"), twinHash("ab", "c"));
  });

  it("spreads sequential ids evenly over 256 partitions", () => {
    const p = new Partitioning(256);
    const counts = new Uint32Array(256);
    for (let i = 0; i < 256_000; i++) {
      const partition = p.partitionOf("patient", `bed-${i}`);
      counts[partition] = (counts[partition] ?? 0) + 1;
    }
    // 1,000 expected per partition; a uniform hash stays well within ±15 %.
    assert.ok(Math.min(...counts) > 850 && Math.max(...counts) < 1_150, `min ${Math.min(...counts)} max ${Math.max(...counts)}`);
  });

  it("refuses partition counts outside 1..65536", () => {
    for (const bad of [0, -1, 1.5, 65_537, Number.NaN]) assert.throws(() => new Partitioning(bad), RangeError);
    assert.equal(new Partitioning(1).partitionOf("k", "x"), 0);
    assert.equal(new Partitioning().partitions, 256);
  });
});

// Computed independently (Python: hashlib-free FNV-1a and fmix32 over the UTF-8 bytes).
const TWIN_HASH_VECTORS = [1421639514, 571037928, 470096929, 219167793];
