import assert from "node:assert/strict";
import { CliProcess, type CliResult, runCli } from "../../harness/cli-process.js";
import { freePorts } from "../../harness/cluster-harness.js";
import { ev, statuses } from "../../harness/events.js";
import { startNode } from "../../harness/start-node.js";
import { useTestScope } from "../../harness/test-scope.js";

/** Asserts the exit code, showing everything the command printed when it differs. */
function assertExit(result: CliResult, code: number): CliResult {
  assert.equal(result.code, code, `exit code; the command printed ${JSON.stringify({ stdout: result.stdout, stderr: result.stderr }, null, 2)}`);
  return result;
}

/** The JSON `twinmesh status --json` prints. */
interface StatusJson {
  healthy: boolean;
  problems: string[];
  askedNodeId: string;
  nodes: {
    nodeId: string;
    address: string;
    seenAs: string;
    answered: boolean;
    error?: string;
    ratesPerSecond?: { accepted: number; duplicate: number; rejected: number };
    status?: Record<string, unknown> & { events: { accepted: number }; services: { service: string; serving: boolean }[] };
  }[];
}

describe("twinmesh status (status-cli)", () => {
  const t = useTestScope();

  it("prints a single node's health and exact counts as JSON and as text, and exits 0", async () => {
    const node = await startNode(t, { nodeId: "solo" });
    const sent = await node.client.publish([
      ev("counter", "c-1", 1),
      ev("counter", "c-1", 2),
      ev("counter", "c-1", 2),
      ev("no-such-kind", "x", 1),
      ev("alarm", "a-1", 1, { level: 120 }),
      ev("alarm", "a-2", 1, { level: 170 }),
      ev("alarm", "t-1", 1, { timerMs: 3_600_000 }),
    ]);
    assert.deepEqual(statuses(sent.results), ["ACCEPTED", "ACCEPTED", "DUPLICATE", "REJECTED", "ACCEPTED", "ACCEPTED", "ACCEPTED"]);
    const address = ["--address", node.address];

    const json = JSON.parse(assertExit(await runCli(["status", "--json", "--interval", "0", ...address]), 0).stdout) as StatusJson;
    assert.equal(json.healthy, true);
    assert.deepEqual(json.problems, []);
    assert.equal(json.nodes.length, 1);
    const [solo] = json.nodes;
    assert.deepEqual([solo?.nodeId, solo?.address, solo?.seenAs, solo?.answered, solo?.ratesPerSecond], ["solo", node.address, "self", true, undefined]);
    const s = solo?.status as NonNullable<StatusJson["nodes"][number]["status"]>;
    assert.deepEqual(
      {
        serving: s.serving,
        epoch: s.epoch,
        partitionProgress: s.partitionProgress,
        events: s.events,
        twinsActive: s.twinsActive,
        openAlerts: s.openAlerts,
        acknowledgedAlerts: s.acknowledgedAlerts,
        timersPending: s.timersPending,
        outbox: s.outbox,
        deadLetters: s.deadLetters,
        replicationLag: s.replicationLag,
      },
      {
        serving: true,
        epoch: 1,
        partitionProgress: { owned: 256, taking: 0, catchingUp: 0, waitingForPreviousOwner: 0, rebuilding: 0, stuck: 0 },
        events: { accepted: 5, duplicate: 1, rejected: 1, rejectedByReason: { UNKNOWN_KIND: 1 } },
        twinsActive: 4,
        openAlerts: { info: 0, warning: 1, critical: 1 },
        acknowledgedAlerts: { info: 0, warning: 0, critical: 0 },
        timersPending: 1,
        outbox: { queued: 0, inflight: 0, parked: 0, held: 0 },
        deadLetters: 0,
        replicationLag: [],
      },
    );
    assert.equal(s.services.length, 6);
    assert.ok(
      s.services.every((x) => x.serving),
      JSON.stringify(s.services),
    );

    const text = assertExit(await runCli(["status", "--interval", "0", ...address]), 0);
    const lines = text.stdout.trimEnd().split("\n");
    assert.match(lines[0] ?? "", /^node solo \(twinmesh \d+\.\d+\.\d+\S*\), up \d+s, SERVING$/);
    assert.deepEqual(lines.slice(1), [
      "  health        all 6 services SERVING",
      "  ring          epoch 1, 256 partitions, replication factor 1; solo self",
      "  partitions    owned 256, taking 0, catching up 0, waiting for previous owner 0, stuck 0, rebuilding 0",
      "  events        accepted 5, duplicate 1, rejected 1 [UNKNOWN_KIND 1]",
      "  twins         4 active",
      "  alerts        open: critical 1, warning 1, info 0; acknowledged: critical 0, warning 0, info 0",
      "  timers        1 pending",
      "  outbox        0 queued, 0 in flight, 0 parked, 0 held",
      "  dead letters  0",
      "healthy: the node serves",
    ]);
    assert.equal(text.stderr, "");
  });

  it("computes rates from two samples --interval apart: 0/s without traffic, the load's rate under load", async () => {
    const node = await startNode(t);
    const address = ["--address", node.address];
    await node.client.publish(Array.from({ length: 10 }, (_, i) => ev("counter", "r-1", i + 1)));
    const idle = JSON.parse(assertExit(await runCli(["status", "--json", "--interval", "300", ...address]), 0).stdout) as StatusJson;
    assert.deepEqual(idle.nodes[0]?.ratesPerSecond, { accepted: 0, duplicate: 0, rejected: 0 });
    assert.equal(idle.nodes[0]?.status?.events.accepted, 10);

    // Traffic while the command samples, counted by the test: batches of 20 until it exits.
    const cli = CliProcess.spawn(["status", "--json", "--interval", "1000", ...address]);
    let done = false;
    void cli.exited.then(() => {
      done = true;
    });
    const started = performance.now();
    let seq = 10;
    while (!done) await node.client.publish(Array.from({ length: 20 }, () => ev("counter", "r-1", ++seq)));
    const loadRate = (seq - 10) / ((performance.now() - started) / 1000);
    const result = assertExit(await cli.exited, 0);
    const rates = (JSON.parse(result.stdout) as StatusJson).nodes[0]?.ratesPerSecond;
    assert.ok(rates !== undefined, result.stdout);
    assert.deepEqual([rates.duplicate, rates.rejected], [0, 0]);
    // The command's window (1 s) lies inside the load's (its whole run): the two rates agree
    // within the unevenness of a load on a shared machine.
    assert.ok(rates.accepted > loadRate / 4 && rates.accepted < loadRate * 4, `status says ${rates.accepted}/s, the load ran at ${loadRate.toFixed(1)}/s`);
  });

  it("exits 1 with one line when the node cannot be reached, and refuses a bad --interval with exit 2", async () => {
    const [port] = await freePorts(1);
    const down = assertExit(await runCli(["status", "--interval", "0", "--address", `127.0.0.1:${port}`]), 1);
    assert.equal(down.stdout, "");
    assert.match(
      down.stderr,
      /^twinmesh: cannot reach a twinmesh node at 127\.0\.0\.1:\d+ \(connect ECONNREFUSED 127\.0\.0\.1:\d+\); start one with 'twinmesh start --demo', or pass --address \(UNAVAILABLE\)\n$/,
    );
    const bad = assertExit(await runCli(["status", "--interval", "-1"]), 2);
    assert.match(bad.stderr, /--interval/);
  });
});
