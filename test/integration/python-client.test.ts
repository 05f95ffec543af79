import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { TwinmeshNode } from "../../server/index.js";
import { exampleTwins } from "../../twins/index.js";
import { unmet } from "../harness/requirement.js";

const run = promisify(execFile);
const ROOT = new URL("../../../", import.meta.url).pathname;
/**
 * The Python with grpcio and grpcio-tools: TWINMESH_PYTHON when set, else a virtual environment
 * in the clone (`python3 -m venv .venv && .venv/bin/pip install grpcio grpcio-tools`, as the
 * README says), else the system Python with Debian's python3-grpcio and python3-grpc-tools
 * (installed by .ci/run).
 */
const PYTHON = process.env.TWINMESH_PYTHON ?? (existsSync(join(ROOT, ".venv/bin/python3")) ? join(ROOT, ".venv/bin/python3") : "/usr/bin/python3");

function pythonHasGrpcTools(): boolean {
  try {
    execFileSync(PYTHON, ["-c", "import grpc, grpc_tools"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

describe("a Python client generated from proto/", () => {
  let dir: string | undefined;
  let node: TwinmeshNode | undefined;

  afterEach(async () => {
    await node?.close(1_000);
    node = undefined;
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it("publishes telemetry, reads the twin and lists alerts through the public contract", async function () {
    // CI installs python3-grpcio and python3-grpc-tools; elsewhere the skip says what is missing.
    if (!pythonHasGrpcTools())
      unmet(this, `${PYTHON} lacks grpc and grpc_tools: pip install grpcio grpcio-tools in a venv, or apt-get install python3-grpcio python3-grpc-tools`);
    dir = mkdtempSync(join(tmpdir(), "twinmesh-py-"));
    const generated = join(dir, "gen");
    execFileSync("mkdir", ["-p", generated]);
    execFileSync(
      PYTHON,
      [
        "-m",
        "grpc_tools.protoc",
        "-I",
        join(ROOT, "proto"),
        `--python_out=${generated}`,
        `--grpc_python_out=${generated}`,
        "twinmesh/v1/telemetry.proto",
        "twinmesh/v1/twin.proto",
        "twinmesh/v1/alert.proto",
      ],
      { cwd: ROOT },
    );
    node = await TwinmeshNode.start({ twins: [...exampleTwins], dataDir: join(dir, "data"), port: 0 });
    const { stdout } = await run(PYTHON, [join(ROOT, "test/fixtures/python/publish_client.py"), generated, node.address], { timeout: 30_000 });
    const seen = JSON.parse(stdout.trim()) as Record<string, unknown>;
    assert.deepEqual(seen, {
      statuses: ["EVENT_STATUS_ACCEPTED", "EVENT_STATUS_ACCEPTED", "EVENT_STATUS_ACCEPTED", "EVENT_STATUS_REJECTED"],
      reasons: ["", "", "", "UNKNOWN_KIND"],
      samples: 3,
      last_seq: 3,
      version: 3,
      cursor_present: true,
      not_found: "NOT_FOUND",
    });
  });
});
