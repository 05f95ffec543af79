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

  it("shares one reopen between concurrent callers and refuses a reopen after close", async () => {
    const store = await RocksStore.open(t.tempDir("reopen-twice"));
    await Promise.all([store.reopen(), store.reopen()]);
    await store.close();
    await store.close();
    await assert.rejects(store.reopen(), /closed/);
  });
});
