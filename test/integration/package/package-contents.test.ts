import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { LOADED_MODULES_SCRIPT, traceModules } from "../../harness/module-trace.js";
import { CLI_MAIN } from "../../harness/node-process.js";

const run = promisify(execFile);
/** The clone (the package root), two levels above dist/test. */
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
/** Packages only a node needs: the RocksDB binding, the TypeScript loader, the logger, OpenTelemetry. */
const SERVER_ONLY = /\/node_modules\/(rocksdb|leveldown|tsx|esbuild|pino[^/]*|@marcbachmann|@opentelemetry)\/|\/dist\/(runtime|server|cluster)\//;

/**
 * The partition function is part of the contract (a ring-aware client computes it, as design §5
 * and the README say) and has no imports: the client may load it from the runtime's tree.
 */
const SHARED = /\/dist\/runtime\/partition\/partitioning\.js$/;

function serverOnly(urls: readonly string[]): string[] {
  return urls.filter((u) => SERVER_ONLY.test(u) && !SHARED.test(u));
}

describe("the twinmesh package", () => {
  it("loads no server code, RocksDB, tsx or pino for an import of twinmesh/client", async () => {
    const trace = await traceModules(["--input-type=module", "-e", `await import("twinmesh/client");${LOADED_MODULES_SCRIPT}`], { cwd: ROOT });
    assert.ok(
      trace.urls.some((u) => u.endsWith("/dist/client/index.js")),
      `the trace saw the client itself: ${trace.urls.join("\n")}`,
    );
    assert.deepEqual(serverOnly(trace.urls), []);
    const loaded = JSON.parse(trace.stdout) as { cjs: string[]; native: string[] };
    assert.deepEqual(serverOnly(loaded.cjs), []);
    assert.deepEqual(loaded.native, []);
  });

  it("loads no server code, RocksDB, tsx or pino for a client command of the CLI", async () => {
    const trace = await traceModules([CLI_MAIN, "get", "--help"]);
    assert.ok(trace.stdout.startsWith("Usage: twinmesh get "), trace.stdout);
    assert.deepEqual(serverOnly(trace.urls), []);
  });

  it("packs the built library, the contract and the example twins, and no tests, bench or results", async () => {
    const { stdout } = await run("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: ROOT, timeout: 60_000 });
    const [pack] = JSON.parse(stdout) as { files: { path: string }[] }[];
    const paths = (pack?.files ?? []).map((f) => f.path).sort();
    for (const needed of [
      "package.json",
      "README.md",
      "dist/index.js",
      "dist/index.d.ts",
      "dist/cli/main.js",
      "dist/client/index.js",
      "dist/runtime/testing/index.js",
      "dist/proto/gen/twinmesh/v1/telemetry_pb.js",
      "proto/twinmesh/v1/telemetry.proto",
      "twins/patient-twin.ts",
    ]) {
      assert.ok(paths.includes(needed), `the package holds ${needed}`);
    }
    const unwanted = paths.filter((p) => /^(dist\/)?(test|bench)\//.test(p) || /^(runtime|server|cluster|cli|client)\//.test(p) || p.endsWith(".tgz"));
    assert.deepEqual(unwanted, []);
  });

  it("keeps in git none of what the README's Python steps and the tour generate in the clone", async () => {
    const paths = ["gen/twinmesh/v1/telemetry_pb2.py", ".venv/bin/python3", "data/CURRENT"];
    const { stdout } = await run("git", ["check-ignore", "--no-index", ...paths], { cwd: ROOT });
    assert.deepEqual(stdout.trim().split("\n"), paths);
  });
});
