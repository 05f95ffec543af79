import assert from "node:assert/strict";
import { closeSync, openSync, rmSync, statfsSync, writeSync } from "node:fs";
import { join } from "node:path";
import { RocksStore } from "../../../runtime/store/rocks-store.js";
import { useTestScope } from "../../harness/test-scope.js";
import { mountTmpfs } from "../../harness/tmpfs.js";

/** Writes zeros into `path` until the filesystem refuses (ENOSPC). */
function fillUp(path: string): void {
  const fd = openSync(path, "a");
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
}

describe("RocksStore on a full disk", () => {
  const t = useTestScope();

  it("refuses writes and scans, without crashing, after a reopen that could not open because the disk is still full, and takes writes after a reopen once space returns", async function () {
    const mountPoint = mountTmpfs(t, this, "16m");
    const store = await RocksStore.open(join(mountPoint, "data"));
    t.defer(() => store.close());
    await store.write([{ type: "put", key: "k0", value: "before" }]);
    const fs = statfsSync(mountPoint);
    const filler = join(mountPoint, "filler");
    fillUp(filler);
    assert.ok(fs.bavail > 0n);

    await assert.rejects(store.write([{ type: "put", key: "k1", value: "x".repeat(100_000) }]), /no space|IO error/i);
    // The disk is still full: the reopen's open fails and leaves no open handle.
    await assert.rejects(store.reopen(), /no space|IO error/i);
    // Reached the closed handle before (SIGSEGV): now each is refused.
    await assert.rejects(store.write([{ type: "put", key: "k2", value: "y" }]), /store is reopening/);
    await assert.rejects(async () => {
      for await (const _ of store.scan({ gte: "", lt: "\u{10FFFF}" })) assert.fail("a scan read a closed store");
    }, /store is reopening/);
    // A second failed reopen does not close the closed handle again.
    await assert.rejects(store.reopen(), /no space|IO error/i);

    rmSync(filler);
    await store.reopen();
    await store.write([{ type: "put", key: "k3", value: "after" }]);
    assert.equal(await store.get("k0"), "before");
    assert.equal(await store.get("k1"), undefined);
    assert.equal(await store.get("k3"), "after");
  });
});
