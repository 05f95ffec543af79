import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { isTwinmeshError, TwinRuntime } from "../../runtime/index.js";
import { type BatchOp, DATA_FORMAT_VERSION, RocksStore } from "../../runtime/store/rocks-store.js";
import { TwinmeshNode } from "../../server/index.js";
import { fixtureTwins } from "../fixtures/index.js";
import { ev, statuses } from "../harness/events.js";
import { NodeProcess } from "../harness/node-process.js";
import { startNode, twinState } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

const FORMAT_KEY = "\u0000meta\u0000format";
const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

/** Every file under `dir` (recursively) with the SHA-256 of its bytes. */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  const walk = (at: string): void => {
    for (const name of readdirSync(at)) {
      const path = join(at, name);
      if (statSync(path).isDirectory()) walk(path);
      else files[relative(dir, path)] = createHash("sha256").update(readFileSync(path)).digest("hex");
    }
  };
  walk(dir);
  return files;
}

/** Starting a node on `dataDir` fails with this reason and message. */
async function refusal(dataDir: string): Promise<{ reason: string; message: string }> {
  try {
    const node = await TwinmeshNode.start({ twins: fixtureTwins, dataDir, port: 0 });
    await node.close();
  } catch (err) {
    assert.ok(isTwinmeshError(err), `expected a TwinmeshError, got ${String(err)}`);
    return { reason: err.reason, message: err.message };
  }
  assert.fail(`the node started on ${dataDir}`);
}

describe("the data directory (data-dir)", () => {
  const t = useTestScope();

  /** A data directory a node wrote twin counter/c-1 into. */
  async function usedDataDir(): Promise<string> {
    const node = await startNode(t);
    assert.deepEqual(statuses((await node.client.publish([ev("counter", "c-1", 1), ev("counter", "c-1", 2)])).results), ["ACCEPTED", "ACCEPTED"]);
    await node.stop();
    return node.dataDir;
  }

  it("refuses a directory whose CURRENT file is garbage with DATA_DIR_CORRUPT and leaves every file as it was", async () => {
    const dir = await usedDataDir();
    writeFileSync(join(dir, "CURRENT"), "garbage \u0000\u0001 garbage");
    const before = snapshot(dir);
    assert.deepEqual(await refusal(dir), {
      reason: "DATA_DIR_CORRUPT",
      message: `data directory ${dir} is corrupt (Corruption: CURRENT file does not end with newline); restore it from a replica or backup, or move it aside and start empty`,
    });
    assert.deepEqual(snapshot(dir), before);
  });

  it("refuses a directory whose MANIFEST is garbage with DATA_DIR_CORRUPT and leaves every file as it was", async () => {
    const dir = await usedDataDir();
    const manifest = readdirSync(dir).find((f) => f.startsWith("MANIFEST-"));
    assert.ok(manifest !== undefined);
    writeFileSync(join(dir, manifest), Buffer.alloc(4096, 0x5a));
    const before = snapshot(dir);
    const { reason, message } = await refusal(dir);
    assert.equal(reason, "DATA_DIR_CORRUPT");
    assert.match(
      message,
      new RegExp(`^data directory ${dir} is corrupt \\(Corruption: .+\\); restore it from a replica or backup, or move it aside and start empty$`),
    );
    assert.deepEqual(snapshot(dir), before);
  });

  it("refuses a non-empty directory of other files with DATA_DIR_FOREIGN and leaves it as it was", async () => {
    const dir = t.tempDir("foreign");
    writeFileSync(join(dir, "notes.txt"), "my notes");
    mkdirSync(join(dir, "photos"));
    writeFileSync(join(dir, "photos", "cat.jpg"), Buffer.from([0xff, 0xd8, 0xff, 0xe0]));
    const before = snapshot(dir);
    assert.deepEqual(await refusal(dir), {
      reason: "DATA_DIR_FOREIGN",
      message: `${dir} is not empty and holds no twinmesh data (no RocksDB CURRENT file); refusing to touch it. Pass --data an empty or twinmesh data directory`,
    });
    assert.deepEqual(snapshot(dir), before);
  });

  it("refuses a path that is a file with DATA_DIR_FOREIGN", async () => {
    const dir = t.tempDir("file");
    const file = join(dir, "data");
    writeFileSync(file, "not a directory");
    assert.deepEqual(await refusal(file), {
      reason: "DATA_DIR_FOREIGN",
      message: `data directory ${file} is a file, not a directory; pass --data a directory path`,
    });
    assert.equal(readFileSync(file, "utf8"), "not a directory");
  });

  it("refuses a RocksDB database that is not twinmesh's with DATA_DIR_FOREIGN and leaves every file as it was", async () => {
    const dir = await usedDataDir();
    const store = await RocksStore.open(dir);
    await store.write([{ type: "del", key: "\u0000meta\u0000format" }]);
    await store.close();
    const before = snapshot(dir);
    assert.deepEqual(await refusal(dir), {
      reason: "DATA_DIR_FOREIGN",
      message: `${dir} is a RocksDB database but not a twinmesh one (no format marker); refusing to use it. Pass --data an empty or twinmesh data directory`,
    });
    assert.deepEqual(snapshot(dir), before);
  });

  it("refuses a directory of a newer data format with DATA_DIR_FORMAT and leaves every file as it was", async () => {
    const dir = await usedDataDir();
    const store = await RocksStore.open(dir);
    const newer = DATA_FORMAT_VERSION + 1;
    await store.write([{ type: "put", key: FORMAT_KEY, value: JSON.stringify({ format: "twinmesh-data", version: newer }) }]);
    await store.close();
    const before = snapshot(dir);
    assert.deepEqual(await refusal(dir), {
      reason: "DATA_DIR_FORMAT",
      message: `${dir} holds data format ${newer}, newer than this twinmesh reads (${DATA_FORMAT_VERSION}); run a newer twinmesh`,
    });
    assert.deepEqual(snapshot(dir), before);
  });

  it("keeps the partition count a directory was created with, and refuses to open it with another", async () => {
    const dir = t.tempDir("partitions");
    const first = await TwinRuntime.open({ dataDir: dir, twins: fixtureTwins, partitions: 64 });
    assert.equal(first.partitioning.partitions, 64);
    await first.close();
    const again = await TwinRuntime.open({ dataDir: dir, twins: fixtureTwins });
    assert.equal(again.partitioning.partitions, 64, "a node started without --partitions takes the directory's count");
    await again.close();
    await assert.rejects(TwinRuntime.open({ dataDir: dir, twins: fixtureTwins, partitions: 256 }), {
      reason: "DATA_DIR_PARTITIONS",
      message: `${dir} was created with 64 partitions, and this node was started with --partitions 256; the count is fixed when a data directory is created: start with --partitions 64, or use a new data directory`,
    });
    const fresh = await TwinRuntime.open({ dataDir: t.tempDir("default-partitions"), twins: fixtureTwins });
    assert.equal(fresh.partitioning.partitions, 256);
    await fresh.close();
  });

  it("refuses a bad cache or memtable size with BAD_OPTION before creating the directory", async () => {
    const dir = join(t.tempDir("parent"), "data");
    for (const [storeOptions, message] of [
      [{ cacheBytes: -1 }, "cacheBytes is -1; use a whole number of bytes from 0 to 4294967295, or omit it for the default"],
      [{ writeBufferBytes: 1.5 }, "writeBufferBytes is 1.5; use a whole number of bytes from 65536 to 4294967295, or omit it for the default"],
    ] as const) {
      await assert.rejects(TwinmeshNode.start({ twins: fixtureTwins, dataDir: dir, port: 0, storeOptions }), { reason: "BAD_OPTION", message });
    }
    assert.throws(() => statSync(dir), { code: "ENOENT" });
  });

  it("reads a directory of data format 1 (records as one JSON object), keeps every twin's dedupe marks and stamps it with the current format", async () => {
    const dir = await usedDataDir();
    // Rewrite the twin records the way format 1 stored them: the state inside the metadata object.
    let store = await RocksStore.open(dir);
    const ops: BatchOp[] = [{ type: "put", key: FORMAT_KEY, value: JSON.stringify({ format: "twinmesh-data", version: 1 }) }];
    for await (const chunk of store.scan({ gte: "", lt: "\uffff" })) {
      for (const [key, value] of chunk) {
        const split = value.indexOf("\n");
        if (!value.startsWith('{"sv":') || split === -1) continue;
        ops.push({ type: "put", key, value: `${value.slice(0, split - 1)},"state":${value.slice(split + 1)}}` });
      }
    }
    assert.equal(ops.length, 2, "one twin record to rewrite");
    await store.write(ops);
    await store.close();

    const node = await startNode(t, { dataDir: dir });
    const expected = { count: 2, lastSeq: 2, total: 0, messages: 0 };
    assert.deepEqual(await twinState(node.client, "counter", "c-1"), expected);
    const found = [];
    for await (const msg of node.client.queryTwins({ kind: "counter", filter: "state.count == 2" })) for (const twin of msg.twins) found.push(twin.id);
    assert.deepEqual(found, ["c-1"]);
    assert.deepEqual(statuses((await node.client.publish([ev("counter", "c-1", 2), ev("counter", "c-1", 3)])).results), ["DUPLICATE", "ACCEPTED"]);
    assert.deepEqual(await twinState(node.client, "counter", "c-1"), { ...expected, count: 3, lastSeq: 3 });
    await node.stop();

    store = await RocksStore.open(dir);
    try {
      assert.deepEqual(JSON.parse((await store.get(FORMAT_KEY)) ?? "null"), { format: "twinmesh-data", version: DATA_FORMAT_VERSION });
    } finally {
      await store.close();
    }
  });

  it("refuses a directory another node in this process holds with DATA_DIR_LOCKED, while the first node keeps serving", async () => {
    const first = await startNode(t);
    await first.client.publish([ev("counter", "c-1", 1)]);
    const { reason, message } = await refusal(first.dataDir);
    assert.equal(reason, "DATA_DIR_LOCKED");
    assert.match(
      message,
      new RegExp(`^data directory ${first.dataDir} is in use by another process \\(.*lock.*\\); stop that node or pass a different --data$`, "i"),
    );
    assert.deepEqual(statuses((await first.client.publish([ev("counter", "c-1", 2)])).results), ["ACCEPTED"]);
    assert.deepEqual(await twinState(first.client, "counter", "c-1"), { count: 2, lastSeq: 2, total: 0, messages: 0 });
    // Once the first node is gone, the directory opens with everything in it.
    const second = await first.restart();
    assert.deepEqual(await twinState(second.client, "counter", "c-1"), { count: 2, lastSeq: 2, total: 0, messages: 0 });
  });

  it("makes `twinmesh start` on a directory another process holds exit 1 with DATA_DIR_LOCKED, while the first node keeps serving", async () => {
    const first = await startNode(t);
    await first.client.publish([ev("counter", "c-1", 1)]);
    await assert.rejects(NodeProcess.start({ twins: [FIXTURES], dataDir: first.dataDir }), (err: Error) => {
      assert.match(err.message, /the node exited \(code 1\) before it was ready/);
      assert.match(
        err.message,
        new RegExp(
          `twinmesh: data directory ${first.dataDir} is in use by another process \\(.+\\); stop that node or pass a different --data \\(DATA_DIR_LOCKED\\)`,
        ),
      );
      return true;
    });
    assert.deepEqual(statuses((await first.client.publish([ev("counter", "c-1", 2)])).results), ["ACCEPTED"]);
    assert.deepEqual(await twinState(first.client, "counter", "c-1"), { count: 2, lastSeq: 2, total: 0, messages: 0 });
  });
  it("makes `twinmesh start` on a directory with a corrupt table file exit 1 with DATA_DIR_CORRUPT and what to do, leaving every file as it was", async () => {
    const first = await startNode(t);
    await first.client.publish([ev("counter", "c-1", 1)]);
    // Reopening replays the write-ahead log into a table file.
    await (await first.restart()).stop();
    const dir = first.dataDir;
    const tables = readdirSync(dir).filter((f) => f.endsWith(".sst"));
    assert.ok(tables.length > 0, `no .sst in ${readdirSync(dir).join(", ")}`);
    for (const table of tables) {
      const bytes = readFileSync(join(dir, table));
      bytes.fill(0x5a, 0, Math.min(bytes.length, 256));
      writeFileSync(join(dir, table), bytes);
    }
    const before = snapshot(dir);
    await assert.rejects(NodeProcess.start({ twins: [FIXTURES], dataDir: dir }), (err: Error) => {
      assert.match(err.message, /the node exited \(code 1\) before it was ready/);
      assert.match(
        err.message,
        new RegExp(
          `twinmesh: data directory ${dir} is corrupt \\(Corruption: [^\\n]*\\.sst[^\\n]*\\); restore it from a replica or backup, or move it aside and start empty \\(DATA_DIR_CORRUPT\\)`,
        ),
      );
      return true;
    });
    assert.deepEqual(snapshot(dir), before);
  });
});
