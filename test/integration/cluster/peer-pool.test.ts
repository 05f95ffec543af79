import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { PeerCondition, PeerPool, type PeerPoolOptions, type PeerState, parseNodeId } from "../../../cluster/index.js";
import { capturingLogger, freePort, startPeerServer, type TestNode, testNode } from "../../harness/peer-server.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

const n2 = parseNodeId("n2");
const DOWN_AFTER_MS = 500;
const HEARTBEAT_MS = 100;

describe("PeerPool", () => {
  const t = useTestScope();

  /** A pool of n1 with peer n2 at `port`, started, closed after the test; every state change recorded. */
  function startPool(port: number, n1: TestNode = testNode("n1"), options: PeerPoolOptions = {}) {
    const pool = new PeerPool(n1, [{ id: n2, address: `127.0.0.1:${port}` }], {
      heartbeatIntervalMs: HEARTBEAT_MS,
      failureDetector: { downAfterMs: DOWN_AFTER_MS },
      ...options,
    });
    const changes: PeerState[] = [];
    pool.onChange((s) => changes.push(s));
    pool.start();
    t.defer(() => pool.close());
    return { pool, changes };
  }

  const condition = (pool: PeerPool) => pool.state(n2).condition;

  it("shows a peer up with the epoch and catching-up flag of its last Ping answer", async () => {
    const peer = testNode("n2");
    peer.catching = true;
    const { port } = await startPeerServer(t, peer);
    const { pool } = startPool(port);
    await waitFor(() => pool.isUp(n2), { timeoutMs: 2_000, what: "n2 to be up" });
    const state = pool.state(n2);
    assert.equal(state.condition, PeerCondition.UP);
    assert.equal(state.catchingUp, true);
    assert.equal(state.problem, undefined);
    assert.ok(state.epoch !== undefined && state.epoch >= 1n);
    peer.catching = false;
    await waitFor(() => !pool.state(n2).catchingUp, { timeoutMs: 2_000, what: "n2's catching-up flag to clear" });
  });

  const mismatches: [string, Partial<TestNode["settings"]>, string][] = [
    ["partitions", { partitions: 128 }, "n2 has 128 partitions, this node (n1) 256"],
    ["replication factor", { replicationFactor: 1 }, "n2 has replication factor 1, this node (n1) 3"],
    ["twin kinds", { kinds: ["patient"] }, "this node (n1) runs twin kinds pump that n2 does not"],
  ];
  for (const [what, settings, expected] of mismatches) {
    it(`shows a peer with other ${what} as incompatible, naming the difference, never down, and logs it once`, async () => {
      const { port } = await startPeerServer(t, testNode("n2", settings));
      const { log, entries } = capturingLogger();
      const { pool, changes } = startPool(port, testNode("n1"), { log });
      await waitFor(() => condition(pool) === PeerCondition.INCOMPATIBLE, { timeoutMs: 2_000, what: "n2 to be incompatible" });
      assert.equal(pool.state(n2).problem, `${expected}; start every node with the same --partitions, --replication-factor and --twins`);
      // The scenario: n2 keeps refusing for twice downAfterMs, long enough for the failure
      // detector to judge its silence and for several more refused Pings.
      await delay(DOWN_AFTER_MS * 2);
      assert.equal(condition(pool), PeerCondition.INCOMPATIBLE);
      assert.deepEqual(
        changes.map((c) => c.condition),
        [PeerCondition.INCOMPATIBLE],
      );
      const logged = entries.filter((e) => e.msg === "peer cannot join this cluster");
      assert.equal(logged.length, 1);
      assert.equal(logged[0]?.level, 50);
    });
  }

  it("shows a peer that is not listening at start as down, then up within about a second after it starts listening", async () => {
    const port = await freePort();
    const { pool } = startPool(port);
    assert.equal(condition(pool), PeerCondition.DOWN);
    // The scenario: n2 stays away long enough for the retry waits (its own and grpc-js's
    // reconnect backoff) to reach their bound; unbounded, they would be several seconds by now.
    await delay(3_000);
    assert.equal(condition(pool), PeerCondition.DOWN);
    await startPeerServer(t, testNode("n2"), {}, port);
    const startedMs = performance.now();
    await waitFor(() => pool.isUp(n2), { timeoutMs: 1_100, what: "n2 to be up once it listens" });
    assert.ok(performance.now() - startedMs < 1_100);
  });

  it("marks a peer down about downAfterMs after its server shuts down", async () => {
    const { server, port } = await startPeerServer(t, testNode("n2"));
    const { pool } = startPool(port);
    await waitFor(() => pool.isUp(n2), { timeoutMs: 2_000, what: "n2 to be up" });
    server.forceShutdown();
    const stoppedMs = performance.now();
    await waitFor(() => condition(pool) === PeerCondition.DOWN, { timeoutMs: DOWN_AFTER_MS + 1_000, what: "n2 to be down" });
    const elapsedMs = performance.now() - stoppedMs;
    // The last answer came at most one heartbeat before the shutdown; silence is checked every 100 ms.
    assert.ok(elapsedMs >= DOWN_AFTER_MS - HEARTBEAT_MS - 10 && elapsedMs <= DOWN_AFTER_MS + 300, `down after ${elapsedMs} ms`);
  });

  it("keeps a live peer up while this node's event loop is blocked for twice downAfterMs", async () => {
    const peer = testNode("n2");
    const { port } = await startPeerServer(t, peer);
    const { pool, changes } = startPool(port);
    await waitFor(() => pool.isUp(n2), { timeoutMs: 2_000, what: "n2 to be up" });
    await waitFor(() => peer.pings >= 3, { timeoutMs: 2_000, what: "a few heartbeats" });
    const spinUntil = performance.now() + 2 * DOWN_AFTER_MS;
    while (performance.now() < spinUntil) {
      // A synchronous stall of this whole process: no timer, no socket read.
    }
    const pingsAfterStall = peer.pings;
    // Past downAfterMs after the stall, with heartbeats answered meanwhile, the detector has judged.
    const resumedMs = performance.now();
    await waitFor(() => peer.pings >= pingsAfterStall + 3 && performance.now() - resumedMs > DOWN_AFTER_MS, {
      timeoutMs: 3_000,
      what: "heartbeats to go on past downAfterMs after the stall",
    });
    assert.deepEqual(
      changes.filter((c) => c.condition !== PeerCondition.UP),
      [],
    );
    assert.equal(condition(pool), PeerCondition.UP);
  });
});
