import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type CliResult, runCli } from "../../harness/cli-process.js";
import { EXAMPLE_TWINS, NodeProcess } from "../../harness/node-process.js";

/** The counter fixture, a twin module outside the example twins (kind "counter"). */
const COUNTER_TWIN = fileURLToPath(new URL("../../fixtures/counter-twin.js", import.meta.url));

/** A user's own module with one kind named like an example kind, as the README's tour writes it. */
const USER_PATIENT_TWIN = `
import { Twin } from "twinmesh";
export class PatientTwin extends Twin {
  static kind = "patient";
  initial() { return { ewma: 0, samples: 0 }; }
  onTelemetry(t, ctx) {
    const bpm = t.channels.bpm;
    if (bpm === undefined) return;
    ctx.state.ewma = ctx.state.samples === 0 ? bpm : 0.9 * ctx.state.ewma + 0.1 * bpm;
    ctx.state.samples += 1;
  }
}
`;

function assertResult(actual: CliResult, expected: { code: number; stdout?: string; stderr?: string }): void {
  const shown = JSON.stringify({ code: actual.code, stdout: actual.stdout, stderr: actual.stderr }, null, 2);
  assert.equal(actual.code, expected.code, `exit code; the command printed ${shown}`);
  if (expected.stdout !== undefined) assert.equal(actual.stdout, expected.stdout, `stdout; the command printed ${shown}`);
  if (expected.stderr !== undefined) assert.equal(actual.stderr, expected.stderr, `stderr; the command printed ${shown}`);
}

describe("twinmesh CLI as a first user meets it", () => {
  let dir: string;
  const nodes: NodeProcess[] = [];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "twinmesh-first-user-"));
  });

  afterEach(async function () {
    for (const node of nodes.splice(0)) {
      node.reportIfFailed(this);
      await node.stop();
    }
    await rm(dir, { recursive: true, force: true });
  });

  async function startNode(twins: readonly string[], dataDir?: string): Promise<NodeProcess> {
    const node = await NodeProcess.start({ twins, dataDir });
    nodes.push(node);
    return node;
  }

  it("exits 2 with one USAGE line for an unknown command, a misspelt one, and ports out of range", async () => {
    const [unknown, misspelt, badPort, badAddress, badEnvAddress] = await Promise.all([
      runCli(["frobnicate"]),
      runCli(["sned", "patient"]),
      runCli(["start", "--demo", "--port", "70000", "--data", join(dir, "never")]),
      runCli(["get", "patient", "bed-1", "--address", "127.0.0.1:99999"]),
      runCli(["get", "patient", "bed-1"], { env: { TWINMESH_ADDRESS: "127.0.0.1:0" } }),
    ]);
    assertResult(unknown, { code: 2, stdout: "", stderr: "twinmesh: unknown command 'frobnicate'; see 'twinmesh --help' (USAGE)\n" });
    assertResult(misspelt, { code: 2, stdout: "", stderr: "twinmesh: unknown command 'sned' (Did you mean send?); see 'twinmesh --help' (USAGE)\n" });
    assertResult(badPort, {
      code: 2,
      stdout: "",
      stderr: `twinmesh: option '--port <port>' argument '70000' is invalid. --port must be a whole number from 0 to 65535, got "70000"; see 'twinmesh start --help' (USAGE)\n`,
    });
    const addressError = (value: string, from = `argument '${value}'`): string =>
      `twinmesh: option '--address <host:port>' ${from} is invalid. expected host:port with a port from 1 to 65535, e.g. "127.0.0.1:7420"; see 'twinmesh get --help' (USAGE)\n`;
    assertResult(badAddress, { code: 2, stdout: "", stderr: addressError("127.0.0.1:99999") });
    assertResult(badEnvAddress, { code: 2, stdout: "", stderr: addressError("127.0.0.1:0", "value '127.0.0.1:0' from env 'TWINMESH_ADDRESS'") });
    assert.equal(existsSync(join(dir, "never")), false);
  });

  it("fails with one line and exit 1 when the port is in use, leaving no data directory behind", async () => {
    const node = await startNode([COUNTER_TWIN]);
    const port = node.address.split(":").pop() ?? "";
    const fresh = join(dir, "fresh");
    await writeFile(join(dir, "placeholder"), "");
    const intoFresh = await runCli(["start", "--twins", COUNTER_TWIN, "--port", port, "--data", fresh]);
    assertResult(intoFresh, {
      code: 1,
      stdout: "",
      stderr: `twinmesh: cannot listen on 127.0.0.1:${port}: the address is in use (EADDRINUSE); pick another --port or stop the process using it (LISTEN_FAILED)\n`,
    });
    assert.equal(existsSync(fresh), false, "the data directory the failed start created is removed");
    assert.deepEqual((await readdir(dir)).sort(), ["placeholder"]);
  });

  it("warns on stderr and in the log when the data directory holds twins of kinds it does not load", async () => {
    const data = join(dir, "data");
    const demo = await startNode([EXAMPLE_TWINS], data);
    assertResult(await runCli(["send", "vehicle", "truck-1", "speed_kmh=50", "--address", demo.address]), { code: 0 });
    assertResult(await runCli(["send", "pump", "pump-1", "flow_lpm=50", "--address", demo.address]), { code: 0 });
    assert.equal(await demo.stop(), 0);
    nodes.splice(0);

    const mine = await startNode([COUNTER_TWIN], data);
    const output = mine.output();
    assert.match(
      output,
      new RegExp(
        `^twinmesh: warning: ${data} holds twins of kinds this node does not load \\(pump, vehicle\\): their events are rejected UNKNOWN_KIND and their timers wait; load their modules with --twins, or give these twins their own --data directory$`,
        "m",
      ),
    );
    const entry = output
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === "stored twins of kinds not loaded");
    assert.deepEqual({ level: entry?.level, kinds: entry?.kinds, loaded: entry?.loaded }, { level: 40, kinds: ["pump", "vehicle"], loaded: ["counter"] });

    // The same directory with every kind loaded: no warning.
    assert.equal(await mine.stop(), 0);
    nodes.splice(0);
    const all = await startNode([EXAMPLE_TWINS, COUNTER_TWIN], data);
    assert.doesNotMatch(all.output(), /warning|not loaded/);
  });

  it("simulates only the kinds the node serves, and says so when it serves none the simulator plays", async () => {
    const module = join(dir, "my-twins.mjs");
    await writeFile(module, USER_PATIENT_TWIN);
    const patients = await startNode([module]);
    const run = await runCli(["simulate", "--sources", "5", "--rate", "50", "--duration", "1", "--json", "--address", patients.address]);
    assert.equal(run.code, 0, run.stderr);
    const totals = JSON.parse(run.stdout) as Record<string, unknown>;
    assert.deepEqual(totals.devices, { patient: 5 });
    assert.equal(totals.rejected, 0);
    assert.ok((totals.accepted as number) > 0);

    const counters = await startNode([COUNTER_TWIN]);
    assertResult(await runCli(["simulate", "--duration", "1", "--address", counters.address]), {
      code: 1,
      stdout: "",
      stderr: `twinmesh: the node at ${counters.address} serves kinds counter; the simulator plays only patient, vehicle, pump, so it has nothing to send there (send your own kinds with 'twinmesh send') (NOTHING_TO_SIMULATE)\n`,
    });
  });

  it("prints --json counts as numbers and enums by name, names the node in ring, and explains consistency on one node", async () => {
    const node = await startNode([EXAMPLE_TWINS]);
    const sent = await runCli(["send", "patient", "bed-1", "bpm=150", "--seq", "1", "--consistency", "quorum", "--json", "--address", node.address]);
    assert.equal(sent.code, 0, sent.stderr);
    assert.deepEqual(JSON.parse(sent.stdout), {
      event: { kind: "patient", sourceId: "bed-1", seq: 1, channels: { bpm: 150 } },
      result: { status: "EVENT_STATUS_ACCEPTED", reason: "", message: "", retryable: false },
    });
    const got = JSON.parse((await runCli(["get", "patient", "bed-1", "--json", "--address", node.address])).stdout) as Record<string, unknown>;
    assert.deepEqual([got.version, got.lastSeq], [1, 1]);
    const alerts = JSON.parse((await runCli(["alerts", "list", "--json", "--address", node.address])).stdout) as { alerts: Record<string, unknown>[] };
    assert.deepEqual(
      alerts.alerts.map((a) => [a.id, a.severity, a.state, a.count]),
      [["patient/bed-1/tachycardia@1", "ALERT_SEVERITY_CRITICAL", "ALERT_STATE_OPEN", 1]],
    );

    const ring = await runCli(["ring", "--address", node.address]);
    const width = Math.max("ADDRESS".length, node.address.length);
    assertResult(ring, {
      code: 0,
      stderr: "",
      stdout: [
        `NODE   ${"ADDRESS".padEnd(width)}  STATE  OWNS  REPLICATES`,
        `local  ${node.address.padEnd(width)}  self   256   0`,
        "epoch 1, 256 partitions, replication factor 1 (1 copy of each twin); local is SERVING; kinds fleet, patient, pump, vehicle, ward",
        "",
      ].join("\n"),
    });
    const ringJson = JSON.parse((await runCli(["ring", "--json", "--address", node.address])).stdout) as Record<string, unknown>;
    assert.deepEqual(ringJson, {
      epoch: 1,
      partitions: 256,
      replicationFactor: 1,
      health: "SERVING",
      kinds: ["fleet", "patient", "pump", "vehicle", "ward"],
      nodes: [{ nodeId: "local", address: node.address, state: "self", owns: 256, replicates: 0 }],
    });

    const help = await runCli(["send", "--help"]);
    assert.match(
      help.stdout.replace(/\s+/g, " "),
      /a single node keeps one copy \(replication factor 1\), so there quorum and all are met by that copy, as local is/,
    );
  });
});
