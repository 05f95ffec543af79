import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { Consistency, MemberState, type TwinmeshClient, TwinmeshClientError, type WatchAlertsResponse } from "../../client/index.js";
import { Partitioning } from "../../runtime/index.js";
import { ClusterHarness, freePorts } from "../harness/cluster-harness.js";
import { describeOutcome, ev, outcomes, statuses } from "../harness/events.js";
import { Scrape } from "../harness/prometheus-text.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const RETENTION = 20;

/** The cursor of one partition's alert log, just after change `seq`. */
function cursorAt(partition: number, seq: number): string {
  return `c2.${partition.toString(36)}-${seq.toString(36)}`;
}

/**
 * The first `count` changes a watch from `cursor` through `client` delivers, or the error it ends
 * with. Bounded: a watch that goes quiet fails after 10 s.
 */
async function watchFrom(client: TwinmeshClient, cursor: string, count: number): Promise<WatchAlertsResponse[] | TwinmeshClientError> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 10_000);
  const seen: WatchAlertsResponse[] = [];
  try {
    for await (const change of client.watchAlerts({ cursor }, controller.signal)) {
      seen.push(change);
      if (seen.length === count) break;
    }
    return seen;
  } catch (err) {
    if (err instanceof TwinmeshClientError) return err;
    throw err;
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

/** An alarm twin (of `<prefix>-0` … `<prefix>-59`) that `owner` owns. */
async function alarmOwnedBy(c: ClusterHarness, owner: string, prefix: string): Promise<string> {
  const [twin] = await c.ownedBy(
    owner,
    "alarm",
    Array.from({ length: 60 }, (_, i) => `${prefix}-${i}`),
  );
  assert.ok(twin !== undefined, `${owner} owns none of 60 alarm twins`);
  return twin;
}

describe("alert retention in a cluster (alert-retention)", function () {
  this.timeout(90_000);
  const t = useTestScope();

  it("trims a partition's alert log on its owner and ships the trim: after a failover the new owner holds the same changes, not the ones trimmed", async () => {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3", "--alert-log-retention", String(RETENTION)] });
    const owner = "n2";
    const twin = await alarmOwnedBy(c, owner, "t");
    const partition = new Partitioning(256).partitionOf("alarm", twin);
    const n1 = c.client("n1");
    // 60 changes of one twin (raised, resolved, raised again …), each on every copy (ALL). With a
    // retention of 20 the owner trims its log to its last 20-39 changes.
    for (let seq = 1; seq <= 60; seq++) {
      const res = await c.client(owner).publish([ev("alarm", twin, seq, { level: seq % 2 === 1 ? 120 : 10 })], Consistency.ALL);
      assert.deepEqual(outcomes(res.results).map(describeOutcome), ["ACCEPTED"], `seq ${seq}`);
    }
    const expired = (result: WatchAlertsResponse[] | TwinmeshClientError, where: string): void => {
      assert.ok(
        result instanceof TwinmeshClientError,
        `a watch from change 1 through ${where} delivered ${Array.isArray(result) ? result.length : 0} changes: the log was not trimmed there`,
      );
      assert.equal(result.code, grpc.status.OUT_OF_RANGE, result.message);
      assert.equal(result.reason, "CURSOR_EXPIRED");
    };
    expired(await watchFrom(n1, cursorAt(partition, 1), 1), "n1, from the owner");
    const last5 = await watchFrom(n1, cursorAt(partition, 55), 5);
    assert.ok(Array.isArray(last5), `a watch from change 55 failed: ${(last5 as Error).message}`);
    assert.deepEqual(
      last5.map((w) => Number(w.change)),
      [56, 57, 58, 59, 60],
    );

    // The owner dies; a replica takes the partition with its copy of the log.
    await c.kill(owner);
    await c.waitForState(owner, MemberState.DOWN, 10_000);
    const afterFailover = await waitFor(
      async () => {
        const r = await watchFrom(n1, cursorAt(partition, 1), 1);
        // Retryable while the partition moves.
        return r instanceof TwinmeshClientError && r.code === grpc.status.UNAVAILABLE ? undefined : r;
      },
      { timeoutMs: 20_000, what: `a survivor to serve partition ${partition}'s alert log` },
    );
    assert.ok(afterFailover !== undefined);
    expired(afterFailover, "n1, from the new owner");
    const again = await watchFrom(n1, cursorAt(partition, 55), 5);
    assert.ok(Array.isArray(again), `a watch from change 55 after the failover failed: ${(again as Error).message}`);
    assert.deepEqual(
      again.map((w) => [Number(w.change), w.alert?.id]),
      last5.map((w) => [Number(w.change), w.alert?.id]),
      "the changes after 55, on the new owner",
    );
  });

  it("removes a resolved alert past the owner's retention from every copy: another node taking the partition does not bring it back", async () => {
    // The owner keeps resolved alerts 3 s, the others an hour: before, each node removed them
    // from its own copies by its own setting, so the new owner still had what the old one removed.
    const ports = await freePorts(3);
    const c = await ClusterHarness.start(t, {
      size: 3,
      twins: [FIXTURES],
      args: ["--replication-factor", "3"],
      argsOf: {
        n1: ["--resolved-alert-retention", "1h", "--metrics-port", String(ports[0])],
        n2: ["--resolved-alert-retention", "3s", "--metrics-port", String(ports[1])],
        n3: ["--resolved-alert-retention", "1h", "--metrics-port", String(ports[2])],
      },
    });
    const owner = "n2";
    const twin = await alarmOwnedBy(c, owner, "r");
    const n1 = c.client("n1");
    for (const [seq, level] of [
      [1, 120],
      [2, 10],
    ] as const) {
      assert.deepEqual(statuses((await c.client(owner).publish([ev("alarm", twin, seq, { level })], Consistency.ALL)).results), ["ACCEPTED"]);
    }
    const filter = `twin_id == "${twin}"`;
    assert.deepEqual(
      (await n1.listAlerts({ filter })).alerts.map((a) => a.id),
      [`alarm/${twin}/high@1`],
      "the resolved alert, before its retention",
    );
    await waitFor(async () => (await n1.listAlerts({ filter })).alerts.length === 0 || undefined, {
      timeoutMs: 15_000,
      what: `${owner} to remove the resolved alert past its 3 s retention`,
    });
    // The removal is on the owner's disk; it is on the replicas once they confirmed every shipment.
    await waitFor(
      async () => {
        const s = await Scrape.of(c.node(owner).metricsAddress);
        return ["n1", "n3"].every((peer) => s.value("twinmesh_replication_lag", { peer }) === 0) || undefined;
      },
      { timeoutMs: 10_000, what: `n1 and n3 to confirm every shipment of ${owner}` },
    );

    await c.kill(owner);
    await c.waitForState(owner, MemberState.DOWN, 10_000);
    const listed = await waitFor(
      async () => {
        try {
          return await n1.listAlerts({ filter });
        } catch (err) {
          // Retryable while the partition moves.
          if (err instanceof TwinmeshClientError && err.code === grpc.status.UNAVAILABLE) return undefined;
          throw err;
        }
      },
      { timeoutMs: 20_000, what: "a survivor to serve the twin's partition" },
    );
    assert.deepEqual(
      listed?.alerts.map((a) => a.id),
      [],
      "the resolved alert, after the node that removed it died",
    );
  });
});
