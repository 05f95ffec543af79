import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { Consistency, MemberState } from "../../client/index.js";
import { HealthCheckResponse_ServingStatus } from "../../proto/gen/grpc/health/v1/health_pb.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { assertAllAcked, range } from "../harness/counters.js";
import { SeqWriter } from "../harness/seq-writer.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"] as const;
/**
 * How long the restarted node may take to finish catching up once its source froze (about 2 s
 * here: 1 s to mark the source down, then the rest from the partitions' new owners). A stream to
 * a frozen process (SIGSTOP: its kernel still accepts the connection and the data) ends only at
 * gRPC keepalive, 10 to 15 s after the connection opened, and a fetch started after that hangs
 * the same way: a node that waited for its streams to the frozen source would take 14 s or more.
 */
const CATCH_UP_BOUND_MS = 9_000;

describe("a node catching up from a peer that freezes (catch-up-frozen-source)", function () {
  this.timeout(120_000);
  const t = useTestScope();

  it("gives up the frozen peer once it is marked down, catches up from the partitions' new owners, and loses no seq acknowledged at QUORUM", async () => {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    const live = c.liveClients(5_000);
    const ids = range(200).map((i) => `f-${i}`);
    const writer = new SeqWriter({ kind: "counter", ids, clients: live, consistency: Consistency.QUORUM, maxAttempts: 400 });
    await writer.run({ untilSeq: 3 });
    assert.equal(writer.failure?.message, undefined, "the first load failed");
    await c.kill("n2");
    await writer.run({ untilSeq: 6 });
    assert.equal(writer.failure?.message, undefined, "the load without n2 failed");
    // n2 comes back and catches up partition by partition from each one's owner; n3, the owner
    // of about a third of them, freezes right as it starts.
    const n2 = await c.startMember("n2", { logLevel: "info" });
    await waitFor(() => /catching up from the partitions' owners/.test(n2.output()) || undefined, {
      timeoutMs: 15_000,
      what: "n2 to start catching up",
    });
    c.pause("n3");
    const caughtUpAlready = /"caught up"/.test(n2.output());
    assert.equal(caughtUpAlready, false, "n2 caught up before n3 froze: the test froze n3 too late");
    const frozenAt = Date.now();
    await c.waitForState("n3", MemberState.DOWN, 10_000);
    await waitFor(
      async () => {
        const health = await c
          .client("n2", 2_000)
          .health()
          .catch(() => undefined);
        return health?.status === HealthCheckResponse_ServingStatus.SERVING || undefined;
      },
      { timeoutMs: CATCH_UP_BOUND_MS, what: "n2 to finish catching up while n3 is frozen" },
    );
    process.stderr.write(`      n2 caught up ${Date.now() - frozenAt} ms after n3 froze\n`);
    assert.match(n2.output(), /gave up catching up from it/, "n2 caught up without giving up a catch-up from n3: the test froze n3 too late");
    // The partitions n3 owned moved to n1 and n2; the load goes on without n3.
    await writer.run({ untilSeq: 9 });
    assert.equal(writer.failure?.message, undefined, "the load while n3 was frozen failed");
    c.resume("n3");
    await c.formed(30_000);
    await assertAllAcked(c, MEMBERS, writer, "after n2 caught up while n3 was frozen");
  });
});
