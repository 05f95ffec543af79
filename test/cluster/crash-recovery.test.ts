import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { TwinmeshClient, TwinmeshClientError } from "../../client/index.js";
import { ev, statuses } from "../harness/events.js";
import { assertRecovered, StreamLoad } from "../harness/stream-load.js";
import { SupervisedNode } from "../harness/supervised-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

describe("crash recovery of a node process (crash-recovery)", () => {
  const t = useTestScope();
  const processes: SupervisedNode[] = [];
  afterEach(function () {
    const failed = this.currentTest?.state === "failed";
    for (const p of processes.splice(0)) if (failed) process.stderr.write(`\n----- node ${p.address} -----\n${p.output()}\n-----\n`);
  });

  async function spawnNode(dataDir: string, args: readonly string[] = []): Promise<{ node: SupervisedNode; client: TwinmeshClient }> {
    const node = await SupervisedNode.start(t, FIXTURES, dataDir, args);
    processes.push(node);
    const client = new TwinmeshClient(node.address, { deadlineMs: 20_000 });
    t.defer(() => client.close());
    return { node, client };
  }

  for (const durability of ["wal", "fsync"] as const) {
    it(`keeps every acknowledged event across kill -9 during a sustained PublishStream (${durability}), and a retry applies each unacknowledged event once`, async () => {
      const dataDir = t.tempDir("crash");
      const first = await spawnNode(dataDir, ["--durability", durability]);
      const load = new StreamLoad(first.client, { sources: 10, perSource: 5, inflight: 8 });
      const running = load.run();
      await waitFor(() => load.ackedCount >= 3_000 || load.stoppedBy, { timeoutMs: 30_000, what: "3,000 events to be acknowledged" });
      assert.equal(load.stoppedBy, undefined, `the load stopped early: ${load.failure?.message}`);
      first.node.signal("SIGKILL");
      await running;
      assert.deepEqual(await first.node.exited, { code: null, signal: "SIGKILL" });
      assert.equal(load.stoppedBy, "stream failed");
      assert.ok(load.failure instanceof TwinmeshClientError, String(load.failure));
      assert.equal(load.failure.code, grpc.status.UNAVAILABLE);
      assert.deepEqual([...load.answers.keys()], ["ACCEPTED"]);

      const second = await spawnNode(dataDir, ["--durability", durability]);
      const recovery = await assertRecovered(second.client, load);
      assert.ok(recovery.acknowledged >= 3_000);
      assert.ok(recovery.appliedUnacknowledged + recovery.lost > 0, "no event was in flight when the node was killed");
    });
  }

  it("delivers the ctx.send messages of acknowledged turns after kill -9, each exactly once", async () => {
    const dataDir = t.tempDir("crash-outbox");
    const first = await spawnNode(dataDir);
    const events = Array.from({ length: 20 }, (_, r) => [1, 2, 3, 4, 5].map((seq) => ev("relay", `r-${r}`, seq))).flat();
    assert.deepEqual(new Set(statuses((await first.client.publish(events)).results)), new Set(["ACCEPTED"]));
    first.node.signal("SIGKILL");
    await first.node.exited;
    const second = await spawnNode(dataDir);
    await waitFor(async () => ((await second.client.getTwin({ kind: "sink", id: "sink-1" }).catch(() => undefined))?.twin?.state?.received ?? 0) === 100, {
      timeoutMs: 10_000,
      what: "sink-1 to receive all 100 relayed messages",
    });
    const state = (await second.client.getTwin({ kind: "sink", id: "sink-1" })).twin?.state as { received: number; seen: string[] };
    assert.equal(new Set(state.seen).size, 100);
    // A retry after the crash sends nothing again: the relays' own dedupe marks survived.
    assert.deepEqual(new Set(statuses((await second.client.publish(events)).results)), new Set(["DUPLICATE"]));
  });

  it("fires a timer after kill -9 that was set before it", async () => {
    const dataDir = t.tempDir("crash-timer");
    const first = await spawnNode(dataDir);
    // Due in 1 s: the node is killed well before the timer could fire.
    assert.deepEqual(statuses((await first.client.publish([ev("alarm", "a-1", 1, { timerMs: 1_000 })])).results), ["ACCEPTED"]);
    first.node.signal("SIGKILL");
    await first.node.exited;
    const second = await spawnNode(dataDir);
    const fired = await waitFor(
      async () => {
        const s = (await second.client.getTwin({ kind: "alarm", id: "a-1" })).twin?.state as { fired: number; firedNames: string[] };
        return s.fired > 0 ? s : undefined;
      },
      { timeoutMs: 10_000, what: "the timer to fire after the restart" },
    );
    assert.deepEqual(fired?.firedNames, ["ping"]);
  });
});
