import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { TwinmeshClient } from "../../../client/index.js";
import { fixtureTwins } from "../../fixtures/index.js";
import { MAIL_TWINS } from "../../fixtures/mail-twins.js";
import { type CliResult, runCli } from "../../harness/cli-process.js";
import { ev } from "../../harness/events.js";
import { NodeProcess } from "../../harness/node-process.js";
import { type StartedNode, startNode, twinState } from "../../harness/start-node.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../../fixtures/index.js", import.meta.url));
const MAIL_FIXTURES = fileURLToPath(new URL("../../fixtures/mail-twins.js", import.meta.url));

/** Asserts the exit code, showing everything the command printed when it differs. */
function assertExit(result: CliResult, code: number): CliResult {
  assert.equal(result.code, code, `exit code; the command printed ${JSON.stringify({ stdout: result.stdout, stderr: result.stderr }, null, 2)}`);
  return result;
}

/**
 * Two posters' messages to picky-1, which refuses them: two dead letters, each in its sender's
 * partition (of 256): `252-1` from p-1 and `212-1` from p-2, listed by partition.
 */
async function twoDeadLetters(node: StartedNode): Promise<void> {
  await node.client.publish([ev("poster", "p-1", 1), ev("poster", "p-2", 1)]);
  await waitFor(() => node.node.runtime.host.metrics.deadLetters === 2, { timeoutMs: 10_000, what: "two dead letters" });
  await node.node.runtime.host.whenIdle();
}

describe("twinmesh dead-letters", () => {
  const t = useTestScope();

  it("lists dead letters as a table and as JSON, and shows one", async () => {
    const node = await startNode(t, { twins: [...fixtureTwins, ...MAIL_TWINS] });
    await twoDeadLetters(node);
    const address = ["--address", node.address];
    const table = assertExit(await runCli(["dead-letters", "list", ...address]), 0);
    const lines = table.stdout.trimEnd().split("\n");
    assert.match(lines[0] ?? "", /^ID\s+DIED\s+REASON\s+FROM\s+TO\s+MESSAGE$/);
    assert.match(lines[1] ?? "", /^212-1\s+\d{4}-\d\d-\d\dT\S+Z\s+HANDLER_FAILED\s+poster\/p-2\s+picky\/picky-1\s+\{"from":"p-2","seq":1\}$/);
    assert.equal(lines[3], "2 dead letters");
    assert.equal(table.stderr, "");

    const json = JSON.parse(assertExit(await runCli(["dead-letters", "list", "--from", "poster/p-2", "--json", ...address]), 0).stdout) as {
      deadLetters: Record<string, unknown>[];
      nextPageToken: string;
    };
    assert.deepEqual(
      json.deadLetters.map((d) => [d.id, d.reason, d.fromId, d.toKind, d.toId, d.message, d.outboxSeq]),
      [["212-1", "HANDLER_FAILED", "p-2", "picky", "picky-1", { from: "p-2", seq: 1 }, 1]],
    );
    assert.equal(json.nextPageToken, "");

    const shown = assertExit(await runCli(["dead-letters", "show", "252-1", ...address]), 0);
    assert.match(
      shown.stdout,
      /^id: {6}252-1\ndied: {4}\S+\nreason: {2}HANDLER_FAILED\nerror: {3}picky\/picky-1 onMessage failed: picky picky-1 refuses messages\nfrom: {4}poster\/p-1\nto: {6}picky\/picky-1\nmessage: \{"from":"p-1","seq":1\}\n$/,
    );
  });

  it("retries after the cause is fixed, deletes, and answers mistakes with one line and exit 1 or 2", async function () {
    this.timeout(60_000); // eight commands, each a process
    const node = await startNode(t, { twins: [...fixtureTwins, ...MAIL_TWINS] });
    await twoDeadLetters(node);
    const address = ["--address", node.address];
    await node.client.publish([ev("picky", "picky-1", 1, { accept: 1 })]);
    const retried = assertExit(await runCli(["dead-letters", "retry", "252-1", ...address]), 0);
    assert.equal(retried.stdout, "requeued 1 dead letter for delivery\n");
    await waitFor(async () => ((await twinState(node.client, "picky", "picky-1")).seen as string[]).join(), { timeoutMs: 10_000, what: "the retried message" });
    assert.deepEqual((await twinState(node.client, "picky", "picky-1")).seen, ["p-1#1"]);

    const missing = assertExit(await runCli(["dead-letters", "show", "252-1", ...address]), 1);
    assert.match(missing.stderr, /^twinmesh: dead letter "252-1" does not exist: .* \(DEAD_LETTER_NOT_FOUND\)\n$/);
    const usage = assertExit(await runCli(["dead-letters", "retry", ...address]), 2);
    assert.match(usage.stderr, /^twinmesh: name the dead letters to retry .*\n$/);
    assert.equal(usage.stderr.split("\n").length, 2, "one line");
    const badTo = assertExit(await runCli(["dead-letters", "list", "--to", "picky/", ...address]), 2);
    assert.match(badTo.stderr, /--to/);

    const deleted = assertExit(await runCli(["dead-letters", "delete", "--all", "--to", "picky", "--json", ...address]), 0);
    assert.deepEqual(JSON.parse(deleted.stdout), { deletedCount: 1 });
    assert.equal(
      assertExit(await runCli(["dead-letters", "list", ...address]), 0)
        .stdout.trimEnd()
        .split("\n")
        .at(-1),
      "0 dead letters",
    );
    assertExit(await runCli(["dead-letters", "retry", "--help"]), 0);
  });

  it("trims dead letters and resolved alerts with the retentions given to 'twinmesh start'", async () => {
    const node = await NodeProcess.start({
      twins: [FIXTURES, MAIL_FIXTURES],
      args: ["--dead-letter-retention", "3s", "--resolved-alert-retention", "300ms"],
    });
    t.defer(() => node.stop());
    const client = new TwinmeshClient(node.address);
    t.defer(() => client.close());
    await client.publish([ev("poster", "p-1", 1), ev("alarm", "a-1", 1, { level: 120 }), ev("alarm", "a-1", 2, { level: 10 })]);
    assert.equal((await client.listAlerts()).alerts.length, 1);
    await waitFor(async () => (await client.listAlerts()).alerts.length === 0, { timeoutMs: 10_000, what: "the resolved alert to be trimmed" });
    await waitFor(async () => (await client.listDeadLetters()).deadLetters.length === 1, {
      timeoutMs: 2_500,
      what: "the dead letter, before its retention ends",
    });
    await waitFor(async () => (await client.listDeadLetters()).deadLetters.length === 0, { timeoutMs: 10_000, what: "the dead letter to be trimmed" });
    const bad = assertExit(await runCli(["start", "--twins", FIXTURES, "--dead-letter-retention", "soon"]), 2);
    assert.match(bad.stderr, /--dead-letter-retention must be a duration such as 500ms, 90s, 30m, 12h or 7d, got "soon"/);
  });
});
