import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CliProcess, type CliResult, runCli } from "../../harness/cli-process.js";
import { NodeProcess } from "../../harness/node-process.js";
import { waitFor } from "../../harness/wait-for.js";

/** A fixed event time, so states (which keep it) print the same on every run. */
const T0 = "2025-01-31T12:00:00Z";
const T0_MS = Date.parse(T0);
const KNOWN_KINDS = '"fleet", "patient", "pump", "vehicle", "ward"';

/** Asserts a command's exit code and output, showing all of it when one differs. */
function assertResult(actual: CliResult, expected: { code: number; stdout?: string; stderr?: string }): void {
  const shown = { code: actual.code, stdout: actual.stdout, stderr: actual.stderr };
  assert.equal(actual.code, expected.code, `exit code; the command printed ${JSON.stringify(shown, null, 2)}`);
  if (expected.stdout !== undefined) assert.equal(actual.stdout, expected.stdout, `stdout; the command printed ${JSON.stringify(shown, null, 2)}`);
  if (expected.stderr !== undefined) assert.equal(actual.stderr, expected.stderr, `stderr; the command printed ${JSON.stringify(shown, null, 2)}`);
}

/** JSON lines of a stream command. */
function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

/** A patient's event file: `calm` readings at 70 bpm, then `fast` at 160 bpm (seq 1, 2, …). */
function tachycardiaLines(sourceId: string, calm: number, fast: number): string {
  const lines: string[] = [];
  for (let seq = 1; seq <= calm + fast; seq++) {
    const time = new Date(T0_MS + seq * 1000).toISOString();
    lines.push(JSON.stringify({ kind: "patient", source_id: sourceId, seq, channels: { bpm: seq <= calm ? 70 : 160 }, time }));
  }
  return `${lines.join("\n")}\n`;
}

describe("twinmesh CLI without a node", () => {
  it("prints usage and exits 0 for --help on every client command", async () => {
    const commands = [
      ["send"],
      ["get"],
      ["query"],
      ["aggregate"],
      ["message"],
      ["delete"],
      ["alerts"],
      ["alerts", "list"],
      ["alerts", "watch"],
      ["alerts", "ack"],
      ["alerts", "resolve"],
      ["simulate"],
      ["ring"],
    ];
    const results = await Promise.all(commands.map((c) => runCli([...c, "--help"])));
    for (const [i, result] of results.entries()) {
      const name = (commands[i] as string[]).join(" ");
      assertResult(result, { code: 0, stderr: "" });
      assert.ok(result.stdout.startsWith(`Usage: twinmesh ${name} `), `help of ${name} starts with its usage: ${result.stdout}`);
      if (name !== "alerts") assert.match(result.stdout, /--address <host:port>/, `help of ${name} names --address`);
    }
    const send = results[0] as CliResult;
    assert.ok(send.stdout.startsWith("Usage: twinmesh send [options] [kind] [source-id] [channels...]\n"));
  });

  it("exits 2 with one USAGE line for a missing reading, a bad number, a bad option value and a missing argument", async () => {
    const [noReading, badNumber, badSeq, noKind, badKinds] = await Promise.all([
      runCli(["send", "patient", "bed-1"]),
      runCli(["send", "patient", "bed-1", "bpm=fast"]),
      runCli(["send", "patient", "bed-1", "bpm=72", "--seq", "-1"]),
      runCli(["get"]),
      runCli(["simulate", "--kinds", "patient,ward"]),
    ]);
    assertResult(noReading, {
      code: 2,
      stdout: "",
      stderr: "twinmesh: give at least one reading as channel=value, e.g. bpm=72; see 'twinmesh send --help' (USAGE)\n",
    });
    assertResult(badNumber, {
      code: 2,
      stdout: "",
      stderr: `twinmesh: channel bpm: "fast" is not a finite number; write it as bpm=72.5; see 'twinmesh send --help' (USAGE)\n`,
    });
    assertResult(badSeq, {
      code: 2,
      stdout: "",
      stderr: "twinmesh: option '--seq <n>' argument '-1' is invalid. expected a whole number from 0 to 9007199254740991; see 'twinmesh send --help' (USAGE)\n",
    });
    assertResult(noKind, { code: 2, stdout: "", stderr: "twinmesh: missing required argument 'kind'; see 'twinmesh get --help' (USAGE)\n" });
    assertResult(badKinds, {
      code: 2,
      stdout: "",
      stderr: `twinmesh: --kinds "patient,ward": the simulator plays patient, vehicle, pump, not ward; see 'twinmesh simulate --help' (USAGE)\n`,
    });
  });

  it("refuses to start a node, exiting 2 with one USAGE line, without twin classes or with a bad size", async () => {
    const [noTwins, badActive, badCache, badGrowth] = await Promise.all([
      runCli(["start"]),
      runCli(["start", "--demo", "--max-active", "0"]),
      runCli(["start", "--demo", "--cache-mb", "-1"]),
      runCli(["start", "--demo", "--heap-budget-mb", "lots"]),
    ]);
    const usage = "; see 'twinmesh start --help' (USAGE)\n";
    assertResult(noTwins, { code: 2, stdout: "", stderr: `twinmesh: no twin classes to run: pass --twins <module> (or --demo for the example twins)${usage}` });
    assertResult(badActive, {
      code: 2,
      stdout: "",
      stderr: `twinmesh: option '--max-active <n>' argument '0' is invalid. --max-active must be a whole number >= 1, got "0"${usage}`,
    });
    assertResult(badCache, {
      code: 2,
      stdout: "",
      stderr: `twinmesh: option '--cache-mb <MiB>' argument '-1' is invalid. --cache-mb must be a whole number from 0 to 4095, got "-1"${usage}`,
    });
    assertResult(badGrowth, {
      code: 2,
      stdout: "",
      stderr: `twinmesh: option '--heap-budget-mb <MiB>' argument 'lots' is invalid. --heap-budget-mb must be a whole number from 0 to 1048576, got "lots"${usage}`,
    });
  });

  it("exits 1 with one UNAVAILABLE line when no node listens at --address", async () => {
    const result = await runCli(["get", "patient", "bed-1", "--address", "127.0.0.1:1"]);
    assertResult(result, {
      code: 1,
      stdout: "",
      stderr:
        "twinmesh: cannot reach a twinmesh node at 127.0.0.1:1 (connect ECONNREFUSED 127.0.0.1:1); start one with 'twinmesh start --demo', or pass --address (UNAVAILABLE)\n",
    });
  });
});

describe("twinmesh CLI against a node process", () => {
  let node: NodeProcess;
  let dir: string;
  let watcher: CliProcess | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "twinmesh-cli-"));
    node = await NodeProcess.start();
  });

  afterEach(async function () {
    await watcher?.dispose();
    watcher = undefined;
    node.reportIfFailed(this);
    const code = await node.stop();
    await rm(dir, { recursive: true, force: true });
    assert.equal(code, 0, `the node exits 0 on SIGTERM; its output:\n${node.output()}`);
  });

  /** Runs a client command against the test's node. */
  function cli(...args: string[]): Promise<CliResult> {
    return runCli([...args, "--address", node.address]);
  }

  it("prints ACCEPTED for a new seq, DUPLICATE for the same seq again, and exits 0 for both", async () => {
    assertResult(await cli("send", "patient", "bed-1", "bpm=72", "--seq", "1"), { code: 0, stdout: "ACCEPTED patient/bed-1 seq 1\n", stderr: "" });
    assertResult(await cli("send", "patient", "bed-1", "bpm=72", "--seq", "1"), {
      code: 0,
      stdout: "DUPLICATE patient/bed-1 seq 1: already applied, not applied again\n",
      stderr: "",
    });
  });

  it("exits 1 with the rejection's reason on one stderr line for an event of an unknown kind", async () => {
    assertResult(await cli("send", "patinet", "bed-1", "bpm=72", "--seq", "1"), {
      code: 1,
      stdout: "",
      stderr: `twinmesh: event patinet/bed-1 seq 1 was rejected: unknown twin kind "patinet"; this node knows ${KNOWN_KINDS} (UNKNOWN_KIND)\n`,
    });
    const json = await cli("send", "patinet", "bed-1", "bpm=72", "--seq", "1", "--json");
    assert.equal(json.code, 1);
    assert.deepEqual(JSON.parse(json.stdout), {
      event: { kind: "patinet", sourceId: "bed-1", seq: 1, channels: { bpm: 72 } },
      result: {
        status: "EVENT_STATUS_REJECTED",
        reason: "UNKNOWN_KIND",
        message: `unknown twin kind "patinet"; this node knows ${KNOWN_KINDS}`,
        retryable: false,
      },
    });
  });

  it("prints a twin's snapshot with get, as text and JSON, and exits 1 with TWIN_NOT_FOUND for a twin with no events", async () => {
    assertResult(await cli("send", "patient", "bed-2", "bpm=72", "spo2=97", "--seq", "3", "--time", T0, "--attr", "ward=ward-a"), { code: 0 });

    const text = await cli("get", "patient", "bed-2");
    assert.equal(text.code, 0, text.stderr);
    const [first, ...rest] = text.stdout.split("\n");
    assert.equal(first, "patient/bed-2  version 1  last seq 3  last event 2025-01-31T12:00:00.000Z  owner local");
    const state = { ewma: 72, samples: 1, lastBpm: 72, spo2: 97, ward: "ward-a", lastSeenMs: T0_MS, alerts: [] };
    assert.deepEqual(JSON.parse(rest.join("\n")), state);

    const json = await cli("get", "patient", "bed-2", "--json");
    assert.deepEqual(JSON.parse(json.stdout), {
      kind: "patient",
      id: "bed-2",
      state,
      version: 1,
      lastSeq: 3,
      lastEventTime: "2025-01-31T12:00:00Z",
      ownerNodeId: "local",
    });

    assertResult(await cli("get", "patient", "bed-404"), {
      code: 1,
      stdout: "",
      stderr: "twinmesh: twin patient/bed-404 has no state: it never received an event, or it was deleted (TWIN_NOT_FOUND)\n",
    });
  });

  it("queries with a filter and an order as a table, as JSON lines, page by page with --all, and cut to COLUMNS", async () => {
    for (const [id, bpm] of [
      ["bed-1", 60],
      ["bed-2", 90],
      ["bed-3", 120],
    ] as const) {
      assertResult(await cli("send", "patient", id, `bpm=${bpm}`, "--seq", "1", "--time", T0), { code: 0 });
    }
    const state = (bpm: number): string => `{"ewma":${bpm},"samples":1,"alerts":[],"lastSeenMs":${T0_MS},"lastBpm":${bpm}}`;

    assertResult(await cli("query", "patient", "--filter", "state.ewma > 70.0", "--order-by", "state.ewma desc"), {
      code: 0,
      stderr: "",
      stdout: ["ID     VERSION  STATE", `bed-3  1        ${state(120)}`, `bed-2  1        ${state(90)}`, "2 matched, 3 scanned, 0 evaluation errors", ""].join(
        "\n",
      ),
    });

    const json = await cli("query", "patient", "--filter", "state.ewma > 70.0", "--order-by", "state.ewma desc", "--json");
    const lines = jsonLines(json.stdout);
    assert.deepEqual(
      lines.map((l) => (l.twin as { id: string } | undefined)?.id ?? "summary"),
      ["bed-3", "bed-2", "summary"],
    );
    assert.deepEqual(lines[2], { summary: { matched: 2, scanned: 3, evaluationErrors: 0, nextPageToken: "", firstEvaluationError: "" } });

    const paged = await cli("query", "patient", "--limit", "1", "--all");
    assertResult(paged, {
      code: 0,
      stdout: [
        "ID     VERSION  STATE",
        `bed-1  1        ${state(60)}`,
        `bed-2  1        ${state(90)}`,
        `bed-3  1        ${state(120)}`,
        "3 matched in 3 pages, 0 evaluation errors",
        "",
      ].join("\n"),
    });

    const onePage = await cli("query", "patient", "--limit", "2");
    assert.equal(onePage.code, 0);
    assert.match(onePage.stdout.split("\n")[3] ?? "", /^2 matched, 3 scanned, 0 evaluation errors; next page: --page-token \S+$/);

    const narrow = await runCli(["query", "patient", "--filter", 'id == "bed-1"', "--address", node.address], { env: { COLUMNS: "40" } });
    assertResult(narrow, {
      code: 0,
      stdout: ["ID     VERSION  STATE", `bed-1  1        {"ewma":60,"samples":1,…`, "1 matched, 3 scanned, 0 evaluation errors", ""].join("\n"),
    });

    assertResult(await cli("query", "patient", "--filter", "state.ewma >"), { code: 1, stdout: "" });
  });

  it("aggregates a state field by group", async () => {
    const readings = [
      ["bed-1", 60, "ward-a"],
      ["bed-2", 90, "ward-a"],
      ["bed-3", 120, "ward-b"],
    ] as const;
    for (const [id, bpm, ward] of readings) assertResult(await cli("send", "patient", id, `bpm=${bpm}`, "--attr", `ward=${ward}`), { code: 0 });
    assertResult(await cli("aggregate", "patient", "--field", "state.ewma", "--group-by", "state.ward"), {
      code: 0,
      stderr: "",
      stdout: [
        "GROUP   COUNT  SUM  AVG  MIN  MAX",
        "ward-a  2      150  75   60   90",
        "ward-b  1      120  120  120  120",
        "3 matched, 3 scanned, 0 evaluation errors",
        "",
      ].join("\n"),
    });
    const json = await cli("aggregate", "patient", "--field", "state.ewma", "--filter", "state.ewma >= 90.0", "--json");
    assert.deepEqual(JSON.parse(json.stdout), {
      groups: [{ key: null, count: 2, sum: 210, avg: 105, min: 90, max: 120 }],
      scanned: 3,
      matched: 2,
      evaluationErrors: 0,
    });
  });

  it("delivers a message once per idempotency key, and deletes a twin", async () => {
    const report = JSON.stringify({ bed: "bed-9", ewma: 80, spo2: 97, alerts: [], critical: false, atMs: 1 });
    assertResult(await cli("message", "ward", "ward-z", report, "--idempotency-key", "m-1"), {
      code: 0,
      stdout: "DELIVERED ward/ward-z: version 1\n",
      stderr: "",
    });
    assertResult(await cli("message", "ward", "ward-z", report, "--idempotency-key", "m-1"), {
      code: 0,
      stdout: "DUPLICATE ward/ward-z: idempotency key m-1 was used before; not delivered again (version 1)\n",
      stderr: "",
    });
    assertResult(await cli("message", "ward", "ward-z", "{not json"), { code: 2, stdout: "" });

    assertResult(await cli("delete", "ward", "ward-z", "--keep-tombstone"), {
      code: 0,
      stdout: "DELETED ward/ward-z: 0 timers cancelled, 0 alerts resolved; tombstone keeps out earlier idempotency keys\n",
      stderr: "",
    });
    assertResult(await cli("message", "ward", "ward-z", report, "--idempotency-key", "m-1"), {
      code: 1,
      stdout: "",
      stderr:
        'twinmesh: idempotency key "m-1" was used before twin ward/ward-z was deleted with a tombstone: its effect was deleted, so the message is not delivered again; use a new key (TWIN_DELETED)\n',
    });
    assertResult(await cli("message", "ward", "ward-z", report), { code: 0, stdout: "DELIVERED ward/ward-z: version 3\n", stderr: "" });
    assertResult(await cli("delete", "ward", "ward-z"), { code: 0, stdout: "DELETED ward/ward-z: 0 timers cancelled, 0 alerts resolved\n", stderr: "" });
    assertResult(await cli("get", "ward", "ward-z"), {
      code: 1,
      stderr: "twinmesh: twin ward/ward-z has no state: it never received an event, or it was deleted (TWIN_NOT_FOUND)\n",
    });
    const json = await cli("delete", "ward", "ward-z", "--json");
    assertResult(json, { code: 0, stderr: "" });
    assert.deepEqual([JSON.parse(json.stdout).existed, JSON.parse(json.stdout).tombstone], [false, false]);
  });

  it("streams a JSON-lines file, and stops at a bad line after the events before it were answered", async () => {
    const file = join(dir, "events.jsonl");
    await writeFile(file, `${tachycardiaLines("bed-5", 3, 0)}{"kind": "patinet", "source_id": "x", "seq": 1, "channels": {"bpm": 1}}\n`);
    const sent = await cli("send", "--file", file, "--json");
    assert.equal(sent.code, 1);
    const summary = JSON.parse(sent.stdout) as Record<string, unknown>;
    delete summary.elapsedMs;
    assert.deepEqual(summary, {
      file,
      events: 4,
      accepted: 3,
      duplicate: 0,
      rejected: 1,
      retried: 0,
      rejections: [{ reason: "UNKNOWN_KIND", count: 1, firstLine: 4, firstMessage: `unknown twin kind "patinet"; this node knows ${KNOWN_KINDS}` }],
    });
    assert.equal(sent.stderr, "twinmesh: 1 of 4 events were rejected (UNKNOWN_KIND)\n");

    const again = await cli("send", "--file", file);
    assert.equal(again.code, 1);
    assert.match(again.stdout, /^.*events\.jsonl: 4 events in [\d.]+ s \(\d+ events\/s\): 0 accepted, 3 duplicate, 1 rejected\n/);

    const bad = join(dir, "bad.jsonl");
    await writeFile(bad, `${tachycardiaLines("bed-6", 2, 0)}{"source_id": "bed-6", "seq": 3}\n${tachycardiaLines("bed-6", 5, 0)}`);
    const stopped = await cli("send", "--file", bad, "--json");
    assert.equal(stopped.code, 1);
    assert.equal((JSON.parse(stopped.stdout) as { accepted: number }).accepted, 2);
    assert.equal(stopped.stderr, `twinmesh: ${bad} line 3: "kind" must be a non-empty string; the 2 events before it were sent (BAD_LINE)\n`);

    assertResult(await cli("send", "--file", join(dir, "missing.jsonl")), {
      code: 1,
      stdout: "",
      stderr: `twinmesh: cannot read the events file ${join(dir, "missing.jsonl")}: no such file or directory (ENOENT)\n`,
    });
  });

  it("lists, watches, acknowledges and resolves the alert of a patient driven into tachycardia", async () => {
    const listed = await cli("alerts", "list", "--json");
    assert.equal(listed.code, 0, listed.stderr);
    const before = JSON.parse(listed.stdout) as { alerts: unknown[]; cursor: string };
    assert.deepEqual(before.alerts, []);

    // Watch from the listing's cursor while the alert opens and changes.
    watcher = CliProcess.spawn(["alerts", "watch", "--json", "--cursor", before.cursor, "--address", node.address]);

    // The EWMA (10 % per reading) passes 120 bpm on the 8th reading at 160 after 10 at 70: seq 18.
    const file = join(dir, "tachycardia.jsonl");
    await writeFile(file, tachycardiaLines("bed-7", 10, 30));
    const sent = await cli("send", "--file", file, "--json");
    assert.equal(sent.code, 0, sent.stderr);
    assert.deepEqual((JSON.parse(sent.stdout) as Record<string, unknown>).accepted, 40);

    const id = "patient/bed-7/tachycardia@18";
    const open = await cli("alerts", "list", "--filter", 'state == "OPEN"');
    assert.equal(open.code, 0, open.stderr);
    const [header, row, footer] = open.stdout.split("\n");
    assert.equal(header, "ID                            SEVERITY  STATE  COUNT  UPDATED                   MESSAGE");
    assert.match(row ?? "", /^patient\/bed-7\/tachycardia@18 {2}critical {2}OPEN {3}1 {6}\d{4}-\d\d-\d\dT[\d:.]+Z {2}heart-rate EWMA 121 bpm$/);
    assert.match(footer ?? "", /^1 alert; watch from here: twinmesh alerts watch --cursor \S+$/);

    const acked = await cli("alerts", "ack", id);
    assert.equal(acked.code, 0, acked.stderr);
    assert.match(
      acked.stdout,
      /^\S+Z {2}critical {2}ACKNOWLEDGED {2}patient\/bed-7 {2}tachycardia {2}heart-rate EWMA 121 bpm {2}\[patient\/bed-7\/tachycardia@18\]\n$/,
    );
    const resolved = await cli("alerts", "resolve", id, "--json");
    assert.equal(resolved.code, 0, resolved.stderr);
    const alert = JSON.parse(resolved.stdout) as Record<string, unknown>;
    assert.deepEqual(
      { ...alert, raisedAt: undefined, updatedAt: undefined },
      {
        id,
        kind: "patient",
        twinId: "bed-7",
        code: "tachycardia",
        severity: "ALERT_SEVERITY_CRITICAL",
        message: "heart-rate EWMA 121 bpm",
        state: "ALERT_STATE_RESOLVED",
        raisedAt: undefined,
        updatedAt: undefined,
        count: 1,
      },
    );
    assertResult(await cli("alerts", "list", "--filter", 'state == "OPEN"', "--json"), { code: 0 });
    assertResult(await cli("alerts", "ack", "patient/bed-7/nothing@1"), {
      code: 1,
      stdout: "",
      stderr: 'twinmesh: alert "patient/bed-7/nothing@1" does not exist; list alerts to find its id (ALERT_NOT_FOUND)\n',
    });

    const w = watcher;
    await waitFor(() => jsonLines(w.stdout()).length >= 3, { timeoutMs: 10_000, what: "three alert changes from alerts watch" });
    const stopped = await w.signal("SIGINT");
    const changes = jsonLines(stopped.stdout) as { alert: { id: string; state: string }; cursor: string }[];
    assert.deepEqual(
      changes.map((c) => [c.alert.id, c.alert.state]),
      [
        [id, "ALERT_STATE_OPEN"],
        [id, "ALERT_STATE_ACKNOWLEDGED"],
        [id, "ALERT_STATE_RESOLVED"],
      ],
    );
    const lastCursor = changes[2]?.cursor;
    assertResult(stopped, { code: 0, stderr: `twinmesh: stopped; resume with: twinmesh alerts watch --cursor ${lastCursor}\n` });

    // Resuming from the last cursor repeats nothing.
    watcher = CliProcess.spawn(["alerts", "watch", "--json", "--cursor", lastCursor ?? "", "--address", node.address]);
    const resumed = watcher;
    assertResult(await cli("send", "patient", "bed-8", "spo2=85", "--seq", "1"), { code: 0 });
    await waitFor(() => jsonLines(resumed.stdout()).length >= 1, { timeoutMs: 10_000, what: "the low-oxygen alert on the resumed watch" });
    const end = await resumed.signal("SIGINT");
    assert.deepEqual(
      jsonLines(end.stdout).map((c) => [(c.alert as { id: string }).id, (c.alert as { state: string }).state]),
      [["patient/bed-8/low-oxygen@1", "ALERT_STATE_OPEN"]],
    );
    assert.equal(end.code, 0);
  });

  it("shows the single node owning every partition", async () => {
    assertResult(await cli("send", "patient", "bed-1", "bpm=72"), { code: 0 });
    const ring = await cli("ring");
    const addressWidth = Math.max("ADDRESS".length, node.address.length);
    assertResult(ring, {
      code: 0,
      stderr: "",
      stdout: [
        `NODE   ${"ADDRESS".padEnd(addressWidth)}  STATE  OWNS  REPLICATES`,
        `local  ${node.address.padEnd(addressWidth)}  self   256   0`,
        "epoch 1, 256 partitions, replication factor 1 (1 copy of each twin); local is SERVING; kinds fleet, patient, pump, vehicle, ward",
        "",
      ].join("\n"),
    });
  });

  it("runs the simulator for a given duration and prints its totals", async () => {
    const result = await cli("simulate", "--sources", "6", "--rate", "60", "--duration", "1", "--seed", "3", "--json");
    assert.equal(result.code, 0, result.stderr);
    const totals = JSON.parse(result.stdout) as Record<string, unknown>;
    assert.deepEqual(totals.devices, { patient: 3, vehicle: 2, pump: 1 });
    assert.equal(totals.rejected, 0);
    assert.equal(totals.duplicate, 0);
    assert.equal(totals.accepted, totals.sent);
    assert.ok((totals.sent as number) >= 50 && (totals.sent as number) <= 70, `about 60 events in 1 s, got ${totals.sent}`);
  });
});
