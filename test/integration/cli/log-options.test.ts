import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { CliProcess } from "../../harness/cli-process.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../../fixtures/index.js", import.meta.url));
const READY_LINE = /^twinmesh node \S+ serving on \S+ /m;

describe("twinmesh start --log-level and --log-format (log-options)", () => {
  const t = useTestScope();

  /** Starts a node with `args`, waits for its ready line, stops it and returns what it printed. */
  async function outputOf(args: readonly string[], env: Record<string, string> = {}): Promise<string> {
    const node = CliProcess.spawn(["start", "--twins", FIXTURES, "--data", t.tempDir("node"), "--port", "0", "--metrics-port", "0", ...args], {
      env,
      timeoutMs: 60_000,
    });
    t.defer(() => node.dispose());
    await waitFor(() => READY_LINE.test(node.stdout()), { timeoutMs: 20_000, what: "the node's ready line" });
    const stopped = await node.signal("SIGTERM");
    assert.equal(stopped.code, 0, stopped.stderr);
    return node.stdout();
  }

  it("logs lifecycle lines as JSON with their component at --log-level info, and none at warn even when TWINMESH_LOG_LEVEL says info", async () => {
    const info = await outputOf(["--log-level", "info"]);
    const lines = info
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      lines.filter((l) => l.msg === "node stopping: draining twins").map((l) => [l.level, l.component]),
      [[30, "server"]],
    );
    const warn = await outputOf(["--log-level", "warn"], { TWINMESH_LOG_LEVEL: "info" });
    assert.doesNotMatch(warn, /node stopping/);
  });

  it("writes pretty lines with --log-format pretty", async () => {
    const out = await outputOf(["--log-level", "info", "--log-format", "pretty"]);
    assert.match(out, /INFO.*node stopping: draining twins/);
    assert.doesNotMatch(out, /"msg":"node stopping/);
  });
});
