import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { CliProcess, type CliResult, runCli } from "../../harness/cli-process.js";
import { cleanEnv, NodeProcess } from "../../harness/node-process.js";
import { waitFor } from "../../harness/wait-for.js";

const run = promisify(execFile);
/** The clone (the package root), two levels above dist/test. */
const ROOT = fileURLToPath(new URL("../../../../", import.meta.url));
/** Packing and installing may fetch from the npm registry when its cache is cold. */
const INSTALL_TIMEOUT_MS = 180_000;

/** The ```ts block of the README whose first line is `// <name>`. */
function readmeBlock(readme: string, name: string): string {
  const block = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1] ?? "").find((code) => code.startsWith(`// ${name}`));
  assert.ok(block !== undefined, `the README has a \`\`\`ts block starting with "// ${name}"`);
  return block;
}

function assertOk(result: CliResult, what: string): void {
  assert.equal(result.code, 0, `${what}: ${JSON.stringify(result, null, 2)}`);
}

/**
 * The README's tour, as a new user walks it: the package packed from this clone and installed
 * into a folder outside it, a twin module copied from the README that imports "twinmesh", the
 * installed `twinmesh` command for everything, and the README's client and hosting examples run
 * with the installed tsx.
 */
describe("the README tour from a folder outside the clone (readme-tour)", function () {
  this.timeout(INSTALL_TIMEOUT_MS + 120_000);
  let work: string;
  let app: string;
  let cliMain: string;
  let node: NodeProcess | undefined;
  let watcher: CliProcess | undefined;
  let sendTs: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "twinmesh-tour-"));
    app = join(work, "my-twins");
    // --ignore-scripts: pack the dist/ these tests run from, without rebuilding it under them.
    const { stdout } = await run("npm", ["pack", "--ignore-scripts", "--silent", "--pack-destination", work], { cwd: ROOT, timeout: INSTALL_TIMEOUT_MS });
    const tarball = join(work, stdout.trim().split("\n").pop() ?? "");
    await run("mkdir", [app]);
    await run("npm", ["init", "-y"], { cwd: app, timeout: 30_000 });
    await run("npm", ["pkg", "set", "type=module"], { cwd: app, timeout: 30_000 });
    await run("npm", ["install", tarball, "--prefer-offline", "--no-audit", "--no-fund"], { cwd: app, timeout: INSTALL_TIMEOUT_MS });
    cliMain = join(app, "node_modules", "twinmesh", "dist", "cli", "main.js");
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    await writeFile(join(app, "my-twins.ts"), readmeBlock(readme, "my-twins.ts"));
    sendTs = readmeBlock(readme, "send.ts");
    // The hosting example listens on a fixed port; the test takes any free one.
    await writeFile(join(app, "host.ts"), readmeBlock(readme, "host.ts").replace("{ port: 7421 }", "{ port: 0 }"));
  });

  after(async () => {
    await watcher?.dispose();
    await node?.stop();
    if (work !== undefined) await rm(work, { recursive: true, force: true });
  });

  afterEach(function () {
    node?.reportIfFailed(this);
  });

  /** `npx twinmesh <args>` in the user's folder, against the tour's node. */
  function twinmesh(...args: string[]): Promise<CliResult> {
    return runCli([...args, "--address", node?.address ?? ""], { cliMain, cwd: app });
  }

  it("starts a node from the installed package with the user's TypeScript twin and its own data directory", async () => {
    node = await NodeProcess.start({ cliMain, cwd: app, twins: ["./my-twins.ts"], dataDir: "./my-data", logLevel: "info" });
    assert.match(node.output(), /^twinmesh node local serving on 127\.0\.0\.1:\d+ \(data \.\/my-data, wal, kinds patient\)$/m);
    assert.doesNotMatch(node.output(), /warning/);
  });

  it("sends telemetry with the installed CLI, a retry answered DUPLICATE, and reads the twin back", async () => {
    assert.equal((await twinmesh("send", "patient", "bed-4", "bpm=72", "--seq", "1")).stdout, "ACCEPTED patient/bed-4 seq 1\n");
    assert.equal((await twinmesh("send", "patient", "bed-4", "bpm=75", "--seq", "2")).stdout, "ACCEPTED patient/bed-4 seq 2\n");
    assert.equal(
      (await twinmesh("send", "patient", "bed-4", "bpm=75", "--seq", "2")).stdout,
      "DUPLICATE patient/bed-4 seq 2: already applied, not applied again\n",
    );
    const got = await twinmesh("get", "patient", "bed-4", "--json");
    assertOk(got, "get");
    const twin = JSON.parse(got.stdout) as { state: { ewma: number; samples: number }; version: number; lastSeq: number };
    assert.deepEqual([twin.state.samples, twin.version, twin.lastSeq], [2, 2, 2]);
    assert.ok(Math.abs(twin.state.ewma - 72.3) < 1e-9, `ewma ${twin.state.ewma}`);
  });

  it("simulates only the user's kind", async () => {
    const simulated = await twinmesh("simulate", "--sources", "5", "--rate", "50", "--duration", "1", "--json");
    assertOk(simulated, "simulate");
    const totals = JSON.parse(simulated.stdout) as { devices: unknown; rejected: number };
    assert.deepEqual([totals.devices, totals.rejected], [{ patient: 5 }, 0]);
  });

  it("raises an alert that a watch sees opened, acknowledged and resolved, under the id the README explains", async () => {
    const listed = JSON.parse((await twinmesh("alerts", "list", "--json")).stdout) as { cursor: string };
    watcher = CliProcess.spawn(["alerts", "watch", "--json", "--cursor", listed.cursor, "--address", node?.address ?? ""], { cliMain, cwd: app });
    assertOk(await twinmesh("send", "patient", "bed-9", "bpm=150", "--seq", "1"), "send 150 bpm");
    const open = await twinmesh("alerts", "list", "--filter", 'state == "OPEN"');
    assert.match(open.stdout.split("\n")[1] ?? "", /^patient\/bed-9\/tachycardia@1 {2}critical {2}OPEN {3}1 /);
    assertOk(await twinmesh("alerts", "ack", "patient/bed-9/tachycardia@1"), "ack");
    for (let seq = 2; seq <= 7; seq++) assertOk(await twinmesh("send", "patient", "bed-9", "bpm=60", "--seq", String(seq)), `send seq ${seq}`);

    const w = watcher;
    const states = (): string[] =>
      w
        .stdout()
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => {
          const { alert } = JSON.parse(l) as { alert: { id: string; state: string } };
          return `${alert.id} ${alert.state}`;
        });
    await waitFor(() => states().includes("patient/bed-9/tachycardia@1 ALERT_STATE_RESOLVED"), {
      timeoutMs: 20_000,
      what: "the watch to see the alert resolved",
    });
    const seen = states();
    assert.equal(seen[0], "patient/bed-9/tachycardia@1 ALERT_STATE_OPEN");
    assert.equal(seen[1], "patient/bed-9/tachycardia@1 ALERT_STATE_ACKNOWLEDGED");
    assert.equal(seen.at(-1), "patient/bed-9/tachycardia@1 ALERT_STATE_RESOLVED");
    const stopped = await w.signal("SIGINT");
    assert.equal(stopped.code, 0, stopped.stderr);
  });

  it("runs the README's TypeScript client, which publishes over a PublishStream", async () => {
    await writeFile(join(app, "send.ts"), sendTs.replace('"127.0.0.1:7420"', JSON.stringify(node?.address)));
    const { stdout } = await run(process.execPath, [join(app, "node_modules", "tsx", "dist", "cli.mjs"), "send.ts"], {
      cwd: app,
      env: { ...cleanEnv() },
      timeout: 60_000,
    }).catch((err: unknown) => {
      throw new Error(`send.ts failed: ${String(err)}`);
    });
    assert.equal(stdout, "ACCEPTED\n");
  });

  it("runs the README's hosting example: a runtime in the user's process, served over gRPC", async () => {
    const { stdout } = await run(process.execPath, [join(app, "node_modules", "tsx", "dist", "cli.mjs"), "host.ts"], {
      cwd: app,
      env: { ...cleanEnv() },
      timeout: 60_000,
    });
    assert.match(stdout, /^accepted \{ ewma: 72, samples: 1 \} 127\.0\.0\.1:\d+\n$/);
  });
});
