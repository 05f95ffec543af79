import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { TwinmeshClient } from "../../client/index.js";
import { ev, statuses } from "../harness/events.js";
import { assertRecovered, StreamLoad } from "../harness/stream-load.js";
import { SupervisedNode } from "../harness/supervised-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

describe("a node process across kill -9 and SIGINT (restart-recovery)", () => {
  const t = useTestScope();
  const processes: SupervisedNode[] = [];
  afterEach(function () {
    const failed = this.currentTest?.state === "failed";
    for (const p of processes.splice(0)) if (failed) process.stderr.write(`\n----- node ${p.address} -----\n${p.output()}\n-----\n`);
  });

  async function spawnNode(dataDir: string): Promise<{ node: SupervisedNode; client: TwinmeshClient }> {
    const node = await SupervisedNode.start(t, FIXTURES, dataDir);
    processes.push(node);
    const client = new TwinmeshClient(node.address, { deadlineMs: 20_000 });
    t.defer(() => client.close());
    return { node, client };
  }

  /** Sends `signal` and waits (at most 15 s) for the exit. */
  async function stopWith(node: SupervisedNode, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    node.signal(signal);
    let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    void node.exited.then((e) => {
      exit = e;
    });
    return (await waitFor(() => exit, { timeoutMs: 15_000, what: `the node to exit after ${signal}` })) as {
      code: number | null;
      signal: NodeJS.Signals | null;
    };
  }

  it("fires, once and late, a timer that came due while the node was down after kill -9", async () => {
    const dataDir = t.tempDir("down-timer");
    const first = await spawnNode(dataDir);
    const armedAt = Date.now();
    assert.deepEqual(statuses((await first.client.publish([ev("alarm", "a-1", 1, { timerMs: 300 })])).results), ["ACCEPTED"]);
    assert.deepEqual(await stopWith(first.node, "SIGKILL"), { code: null, signal: "SIGKILL" });
    // The timer comes due while no node runs: the restart waits for its due time to pass.
    const dueBy = armedAt + 300 + 200;
    await waitFor(() => Date.now() > dueBy, { timeoutMs: 5_000, what: "the timer's due time to pass while the node is down" });
    const restartedAt = Date.now();
    const second = await spawnNode(dataDir);
    const state = await waitFor(
      async () => {
        const s = (await second.client.getTwin({ kind: "alarm", id: "a-1" })).twin?.state as { fired: number; firedNames: string[]; lastFiredAt?: number };
        return s.fired > 0 ? s : undefined;
      },
      { timeoutMs: 10_000, what: "the overdue timer to fire after the restart" },
    );
    assert.deepEqual([state?.fired, state?.firedNames], [1, ["ping"]]);
    assert.ok((state?.lastFiredAt ?? 0) >= restartedAt, "it fired before the restart");
    assert.deepEqual(await stopWith(second.node, "SIGTERM"), { code: 0, signal: null });
  });

  it("drains on SIGINT under a PublishStream load, exits 0, and every ACCEPTED event's effect is there after a restart", async () => {
    const dataDir = t.tempDir("sigint");
    const first = await spawnNode(dataDir);
    const load = new StreamLoad(first.client);
    const running = load.run();
    await waitFor(() => load.ackedCount >= 500 || load.stoppedBy, { timeoutMs: 20_000, what: "500 events to be acknowledged" });
    assert.equal(load.stoppedBy, undefined, `the load stopped early: ${load.failure?.message}`);
    const exit = stopWith(first.node, "SIGINT");
    await running;
    assert.deepEqual(await exit, { code: 0, signal: null });
    assert.equal(load.stoppedBy, "retryable rejection");
    assert.ok(load.answers.has("SHUTTING_DOWN"), `answers: ${JSON.stringify([...load.answers])}`);
    first.client.close();

    const second = await spawnNode(dataDir);
    const recovery = await assertRecovered(second.client, load);
    assert.equal(recovery.appliedUnacknowledged, 0);
    assert.ok(recovery.acknowledged >= 500);
    assert.deepEqual(await stopWith(second.node, "SIGTERM"), { code: 0, signal: null });
  });
});
