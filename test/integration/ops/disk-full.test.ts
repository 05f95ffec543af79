import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type Telemetry, Twin, type TwinContext } from "twinmesh";
import { TwinmeshClient } from "twinmesh/client";
import { HealthCheckResponse_ServingStatus as Serving } from "../../../proto/gen/grpc/health/v1/health_pb.js";
import { EventStatus } from "../../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { TwinmeshNode } from "../../../server/index.js";
import { rawClient } from "../../harness/grpc-status.js";
import { healthWatch } from "../../harness/health-watch.js";
import { useTestScope } from "../../harness/test-scope.js";
import { fillLeaving, mountTmpfs } from "../../harness/tmpfs.js";
import { waitFor } from "../../harness/wait-for.js";

interface BlobState {
  blob: string;
  n: number;
}
/** Each event rewrites ~20 KB of state, so a small disk fills fast. */
class BlobTwin extends Twin<BlobState> {
  static readonly kind = "blob";
  initial(): BlobState {
    return { blob: "", n: 0 };
  }
  override onTelemetry(t: Telemetry, ctx: TwinContext<BlobState>): void {
    ctx.state.blob = `${"x".repeat(20_000)}${t.seq}`;
    ctx.state.n += 1;
  }
}

describe("a node on a full disk", () => {
  let node: TwinmeshNode | undefined;
  let client: TwinmeshClient | undefined;

  afterEach(async () => {
    client?.close();
    await node?.close(1_000);
    node = undefined;
  });
  // Registered after the afterEach above: the node is closed before its tmpfs is unmounted.
  const t = useTestScope();

  it("goes read-only and NOT_SERVING without half-writing, then serves again with every acknowledged event when space returns", async function () {
    // A real full disk needs a small filesystem of the test's own (see mountTmpfs).
    const mountPoint = mountTmpfs(t, this, "24m");
    const dataDir = join(mountPoint, "data");
    mkdirSync(dataDir);
    node = await TwinmeshNode.start({ twins: [BlobTwin], dataDir, port: 0 });
    client = new TwinmeshClient(node.address);
    const raw = rawClient(node.address);
    t.defer(() => raw.close());
    const watch = healthWatch(raw, "");
    await waitFor(() => watch.seen.at(-1) === Serving.SERVING || undefined, { timeoutMs: 5_000, what: "the health watch to say SERVING" });
    // Leave ~6 MiB: enough to start, soon too little for the WAL.
    const filler = fillLeaving(mountPoint, 6 * 1024 * 1024);

    const acknowledged = new Map<string, number>();
    const reasons = new Map<string, number>();
    let seq = 0;
    for (let round = 0; round < 500; round++) {
      const events = Array.from({ length: 10 }, (_, i) => ({ kind: "blob", sourceId: `b${i}`, seq: BigInt(++seq) }));
      const { results } = await client.publish(events);
      results.forEach((r, i) => {
        const id = events[i]?.sourceId as string;
        if (r.status === EventStatus.ACCEPTED) acknowledged.set(id, (acknowledged.get(id) ?? 0) + 1);
        else reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1);
        if (r.status === EventStatus.REJECTED) assert.equal(r.retryable, true, `rejection ${r.reason} must be retryable`);
      });
      if (reasons.size > 0) break;
    }
    assert.ok(reasons.has("COMMIT_FAILED") || reasons.has("NOT_SERVING"), `expected the disk to fill, got ${JSON.stringify([...reasons])}`);
    const health = await client.health();
    assert.equal(health.status, Serving.NOT_SERVING);
    await waitFor(() => watch.seen.at(-1) === Serving.NOT_SERVING || undefined, { timeoutMs: 5_000, what: "the health watch to say NOT_SERVING" });
    const status = await client.getNodeStatus();
    assert.equal(status.serving, false);
    assert.match(status.problem, /^disk refuses writes \(.*\); read-only and NOT_SERVING until space is freed in /);
    const rejected = await client.publish([{ kind: "blob", sourceId: "b0", seq: BigInt(++seq) }]);
    assert.equal(rejected.results[0]?.reason, "NOT_SERVING");

    rmSync(filler);
    await waitFor(async () => (await client?.health())?.status === Serving.SERVING, {
      timeoutMs: 10_000,
      what: "the node to serve again after space returned",
    });
    // The watch follows: SERVING again, with nothing left over from the outage.
    await waitFor(() => watch.seen.at(-1) === Serving.SERVING || undefined, { timeoutMs: 5_000, what: "the health watch to say SERVING again" });
    assert.deepEqual([(await client.getNodeStatus()).serving, (await client.getNodeStatus()).problem], [true, ""]);
    watch.cancel();
    for (const [id, count] of acknowledged) {
      const { twin } = await client.getTwin({ kind: "blob", id });
      const n = (twin?.state as { n?: number } | undefined)?.n ?? 0;
      // Every acknowledged event is there; an event answered COMMIT_FAILED may have reached the
      // WAL (a retry then says DUPLICATE), so n may exceed the acknowledged count by that one group.
      assert.ok(n >= count && n <= count + 1, `${id}: state counts ${n} events, ${count} were acknowledged`);
    }
    const after = await client.publish([{ kind: "blob", sourceId: "b0", seq: BigInt(++seq) }]);
    assert.equal(after.results[0]?.status, EventStatus.ACCEPTED);
  });
});
