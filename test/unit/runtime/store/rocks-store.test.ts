import assert from "node:assert/strict";
import { RocksStore } from "../../../../runtime/store/rocks-store.js";
import { useTestScope } from "../../../harness/test-scope.js";

describe("RocksStore reopen and close", () => {
  const t = useTestScope();

  it("keeps every write across a reopen", async () => {
    const dir = t.tempDir("reopen");
    const store = await RocksStore.open(dir);
    t.defer(() => store.close());
    await store.write([{ type: "put", key: "k", value: "v" }]);
    await store.reopen();
    assert.equal(await store.get("k"), "v");
  });

  it("closes the reopened handle when close() is called while a reopen runs, releasing the directory", async () => {
    const dir = t.tempDir("reopen-close");
    const store = await RocksStore.open(dir);
    await store.write([{ type: "put", key: "k", value: "v" }]);
    const reopening = store.reopen();
    await store.close();
    await reopening;
    // The directory's lock is free only if the handle the reopen opened was closed.
    const again = await RocksStore.open(dir);
    t.defer(() => again.close());
    assert.equal(await again.get("k"), "v");
  });

  it("closes only once the reads, writes and scan steps under way have called back, and refuses new ones: none reaches the closed handle", async () => {
    const store = await RocksStore.open(t.tempDir("close-busy"));
    const key = (i: number) => `k${String(i).padStart(5, "0")}`;
    await store.write(Array.from({ length: 5_000 }, (_, i) => ({ type: "put" as const, key: key(i), value: "x".repeat(100) })));
    for (let round = 0; round < 20; round++) {
      // Each round reopens the store under load (as a full disk's probe does), the last one closes it.
      const reads = Array.from({ length: 50 }, (_, i) => store.get(key(i * 97)));
      const many = store.getMany([key(1), key(2)]);
      const scanned = (async () => {
        let n = 0;
        try {
          for await (const chunk of store.scan({ gte: "k", lt: "l" })) n += chunk.length;
        } catch (err) {
          assert.match((err as Error).message, /store is (closed|reopening)/);
        }
        return n;
      })();
      const written = store.write([{ type: "put", key: `z${round}`, value: "1" }]);
      if (round < 19) await store.reopen();
      else await store.close();
      assert.deepEqual(
        (await Promise.all(reads)).map((v) => v?.length),
        reads.map(() => 100),
      );
      assert.deepEqual(await many, ["x".repeat(100), "x".repeat(100)]);
      await written;
      assert.ok((await scanned) <= 5_000 + round + 1);
    }
    await assert.rejects(store.get(key(0)), /store is closed/);
    await assert.rejects(store.getMany([key(0)]), /store is closed/);
    await assert.rejects(store.write([{ type: "put", key: "late", value: "1" }]), /store is closed/);
  });

  it("shares one reopen between concurrent callers and refuses a reopen after close", async () => {
    const store = await RocksStore.open(t.tempDir("reopen-twice"));
    await Promise.all([store.reopen(), store.reopen()]);
    await store.close();
    await store.close();
    await assert.rejects(store.reopen(), /closed/);
  });
});
