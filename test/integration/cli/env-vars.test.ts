import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { CliProcess, runCli } from "../../harness/cli-process.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../../fixtures/index.js", import.meta.url));
const READY_LINE = /^twinmesh node (\S+) serving on (\S+) \(data (.+), (wal|fsync), kinds (.+)\)$/m;

describe("TWINMESH_* environment variables (env-vars)", () => {
  const t = useTestScope();

  it("starts a node configured by environment variables alone, and client commands reach it through TWINMESH_ADDRESS", async () => {
    const dataDir = t.tempDir("env");
    const node = CliProcess.spawn(["start"], {
      env: {
        TWINMESH_TWINS: FIXTURES,
        TWINMESH_DATA: dataDir,
        TWINMESH_HOST: "127.0.0.1",
        TWINMESH_PORT: "0",
        TWINMESH_NODE_ID: "env-node",
        TWINMESH_DURABILITY: "fsync",
        TWINMESH_LOG_LEVEL: "info",
        TWINMESH_MAX_ACTIVE: "5",
        TWINMESH_CACHE_MB: "8",
        TWINMESH_HEAP_BUDGET_MB: "0",
      },
      timeoutMs: 60_000,
    });
    t.defer(() => node.dispose());
    const ready = (await waitFor(() => READY_LINE.exec(node.stdout()), { timeoutMs: 20_000, what: "the node's ready line" })) as RegExpExecArray;
    assert.deepEqual([ready[1], ready[3], ready[4], ready[5]], ["env-node", dataDir, "fsync", "alarm, counter, faulty, gate, relay, sink"]);
    const address = ready[2] as string;
    assert.match(address, /^127\.0\.0\.1:\d+$/);
    // TWINMESH_LOG_LEVEL=info: the lifecycle line is logged (the default level of the tests' nodes is warn).
    assert.match(node.stdout(), /"msg":"node serving"/);

    const missing = await runCli(["get", "counter", "c-1"], { env: { TWINMESH_ADDRESS: address } });
    assert.equal(missing.code, 1, missing.stderr);
    assert.match(missing.stderr, /TWIN_NOT_FOUND/);
    const stopped = await node.signal("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
  });

  it("refuses a bad value of each start option's variable with a usage error naming the variable", async () => {
    const cases: [string, string][] = [
      ["TWINMESH_MAX_ACTIVE", "0"],
      ["TWINMESH_CACHE_MB", "5000"],
      ["TWINMESH_HEAP_BUDGET_MB", "x"],
      ["TWINMESH_DURABILITY", "sometimes"],
      ["TWINMESH_LOG_LEVEL", "loud"],
    ];
    const results = await Promise.all(cases.map(([name, value]) => runCli(["start", "--twins", FIXTURES, "--port", "0"], { env: { [name]: value } })));
    for (const [i, [name, value]] of cases.entries()) {
      const result = results[i];
      assert.equal(result?.code, 2, `${name}=${value}: ${result?.stderr}`);
      assert.ok(result?.stderr.includes(`value '${value}' from env '${name}' is invalid`), `${name}=${value}: ${result?.stderr}`);
    }
  });

  it("lets a command-line option win over its environment variable", async () => {
    const result = await runCli(["get", "counter", "c-1", "--address", "127.0.0.1:1"], { env: { TWINMESH_ADDRESS: "not an address" } });
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /UNAVAILABLE/);
    assert.ok(result.stderr.includes("127.0.0.1:1"), result.stderr);
  });
});
