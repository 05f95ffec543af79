import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState, type TwinmeshClient } from "../../client/index.js";
import { HealthCheckResponse_ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { assertAllAcked, range } from "../harness/counters.js";
import { SeqWriter } from "../harness/seq-writer.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"] as const;
/** Seqs acknowledged without the node before it comes back (about 15 s of this load). */
const DOWN_SEQS = Number(process.env.TWINMESH_CATCH_UP_DOWN_SEQS ?? "3000");

describe("a node killed with kill -9 while it catches up after a restart (catch-up-crash)", function () {
  this.timeout(120_000);
  const t = useTestScope();

  for (const round of range(Number(process.env.TWINMESH_CATCH_UP_ROUNDS ?? "1"), 1)) {
    it(`converges and loses no seq acknowledged at QUORUM, reporting CATCHING_UP meanwhile (round ${round})`, async () => {
      const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
      const clients = new Map(MEMBERS.map((id) => [id as string, c.client(id, 5_000)]));
      const live = (): TwinmeshClient[] => c.runningIds().map((id) => clients.get(id) as TwinmeshClient);
      const ids = range(300).map((i) => `k${round}-${i}`);
      const writer = new SeqWriter({ kind: "counter", ids, clients: live, consistency: Consistency.QUORUM, maxAttempts: 400 });
      const running = writer.run();
      await waitFor(() => writer.failure !== undefined || writer.ackedCount >= 600, { timeoutMs: 20_000, what: "600 seqs acknowledged" });
      await c.kill("n2");
      const before = writer.ackedCount;
      await waitFor(() => writer.failure !== undefined || writer.ackedCount >= before + DOWN_SEQS, {
        timeoutMs: 40_000,
        what: `${DOWN_SEQS} seqs acknowledged without n2`,
      });
      // Back, at info level: its log says when it starts catching up; kill it right then.
      const first = await c.startMember("n2", { logLevel: "info" });
      await waitFor(() => /catching up from the partitions' owners/.test(first.output()) || undefined, {
        timeoutMs: 15_000,
        what: "n2 to start catching up",
      });
      const health = await c.client("n2", 2_000).health();
      const seen = (await c.client("n1", 5_000).describeCluster()).members.find((m) => m.nodeId === "n2")?.state;
      const caughtUpAlready = /"caught up"/.test(first.output());
      await c.kill("n2");
      assert.equal(caughtUpAlready, false, "n2 caught up before it could be killed: make the load larger");
      assert.equal(HealthCheckResponse_ServingStatus[health.status], "NOT_SERVING", "n2's health while it caught up");
      process.stderr.write(`      n1 saw n2 ${MemberState[seen ?? 0]} while n2 caught up\n`);
      const restarted = Date.now();
      await c.startMember("n2");
      await c.waitForState("n2", MemberState.CATCHING_UP, 40_000).catch(() => undefined);
      process.stderr.write(`      n1 and n3 saw n2 CATCHING_UP ${Date.now() - restarted} ms after its second start (or never)\n`);
      await c.caughtUp("n2", 40_000);
      process.stderr.write(`      n2 caught up ${Date.now() - restarted} ms after its second start\n`);
      writer.stop();
      await running;
      assert.equal(writer.failure?.message, undefined, "the load failed");
      await assertAllAcked(c, MEMBERS, writer, "after n2 was killed while it caught up and restarted");
    });
  }
});
