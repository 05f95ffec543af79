import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import type { TwinmeshClient } from "../../client/index.js";
import { type Alert, AlertSeverity, AlertState, type WatchAlertsResponse } from "../../proto/gen/twinmesh/v1/alert_pb.js";
import { Partitioning } from "../../runtime/index.js";
import { ev } from "../harness/events.js";
import { clientError } from "../harness/grpc-status.js";
import { startNode } from "../harness/start-node.js";
import { type TestScope, useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

/** An alert, readable in assertion output. */
function brief(a: Alert | undefined): { id: string; twin: string; severity: string; state: string; message: string; count: number } | undefined {
  if (a === undefined) return undefined;
  return { id: a.id, twin: a.twinId, severity: AlertSeverity[a.severity], state: AlertState[a.state], message: a.message, count: Number(a.count) };
}

/** One WatchAlerts call read a change at a time. */
interface Watch {
  /** The next change; fails after `timeoutMs`. */
  next(timeoutMs?: number): Promise<WatchAlertsResponse>;
  close(): void;
}

function watch(t: TestScope, client: TwinmeshClient, cursor: string, filter = ""): Watch {
  const controller = new AbortController();
  const it = client.watchAlerts({ cursor, filter }, controller.signal)[Symbol.asyncIterator]();
  const close = (): void => controller.abort();
  t.defer(close);
  return {
    async next(timeoutMs = 5_000) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no alert change within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        const r = await Promise.race([it.next(), timeout]);
        if (r.done) throw new Error("the watch ended");
        return r.value;
      } finally {
        clearTimeout(timer);
      }
    },
    close,
  };
}

/** Alert changes grouped by twin, each twin's in the order seen: the order a watch promises (per partition). */
function byTwin(changes: ReturnType<typeof brief>[]): Record<string, unknown[]> {
  const groups: Record<string, unknown[]> = {};
  for (const c of changes) (groups[c?.twin ?? ""] ??= []).push(c);
  return groups;
}

/** The cursor part `<partition>-<seq>` (base 36) of an alarm twin's partition (256 partitions). */
function at(id: string, seq: number): string {
  return `${new Partitioning(256).partitionOf("alarm", id).toString(36)}-${seq.toString(36)}`;
}

/** Publishes `level` readings to alarm twins, one seq after another per twin. */
function levels(client: TwinmeshClient) {
  const seqs = new Map<string, number>();
  return async (...readings: [id: string, level: number][]): Promise<void> => {
    const events = readings.map(([id, level]) => {
      const seq = (seqs.get(id) ?? 0) + 1;
      seqs.set(id, seq);
      return ev("alarm", id, seq, { level });
    });
    const res = await client.publish(events);
    assert.deepEqual(
      res.results.map((r) => r.reason),
      events.map(() => ""),
    );
  };
}

/**
 * A-1's log keeps changes 6 on: a watch from `old` (before them) is refused CURSOR_EXPIRED with
 * the message that says so, and one from change 5 replays 6 and 7.
 */
async function assertTrimmedBeforeSix(t: TestScope, client: TwinmeshClient, old: string): Promise<void> {
  const err = await clientError(watch(t, client, old).next());
  assert.deepEqual([err.code, err.reason], [grpc.status.OUT_OF_RANGE, "CURSOR_EXPIRED"]);
  const p = new Partitioning(256).partitionOf("alarm", "a-1");
  assert.equal(
    err.message,
    `cursor "${old}" is older than partition ${p}'s retained alert log (its changes before 6 were trimmed); list alerts again to get a fresh cursor`,
  );
  const edge = watch(t, client, `c2.${at("a-1", 5)}`);
  assert.deepEqual([(await edge.next()).cursor, (await edge.next()).cursor], [`c2.${at("a-1", 6)}`, `c2.${at("a-1", 7)}`]);
}

describe("AlertService (alerts)", () => {
  const t = useTestScope();

  it("raises an alert once and bumps its count when it is raised again while open, never duplicating it", async () => {
    const { client } = await startNode(t);
    const publish = levels(client);
    await publish(["a-1", 120]);
    await publish(["a-1", 120], ["a-1", 130]);
    const { alerts, nextPageToken } = await client.listAlerts();
    assert.equal(nextPageToken, "");
    assert.deepEqual(alerts.map(brief), [{ id: "alarm/a-1/high@1", twin: "a-1", severity: "WARNING", state: "OPEN", message: "level 130", count: 3 }]);
    assert.equal(alerts[0]?.kind, "alarm");
    assert.equal(alerts[0]?.code, "high");
    assert.ok((alerts[0]?.updatedAt?.seconds ?? 0n) >= (alerts[0]?.raisedAt?.seconds ?? 1n));
    // Raised again after it resolved: a new alert with a new id.
    await publish(["a-1", 10], ["a-1", 160]);
    const after = await client.listAlerts();
    assert.deepEqual(after.alerts.map(brief), [
      { id: "alarm/a-1/high@1", twin: "a-1", severity: "WARNING", state: "RESOLVED", message: "level 130", count: 3 },
      { id: "alarm/a-1/high@5", twin: "a-1", severity: "CRITICAL", state: "OPEN", message: "level 160", count: 1 },
    ]);
  });

  it("lists only the alerts a CEL filter matches, page by page", async () => {
    const { client } = await startNode(t);
    const publish = levels(client);
    await publish(["a-1", 160], ["a-2", 120], ["a-3", 170], ["a-4", 200], ["a-5", 155]);
    await publish(["a-3", 10]);
    await client.acknowledgeAlert("alarm/a-4/high@1");
    const open = await client.listAlerts({ filter: 'state == "OPEN" && severity == "critical"' });
    assert.deepEqual(
      open.alerts.map((a) => a.id),
      ["alarm/a-1/high@1", "alarm/a-5/high@1"],
    );
    const first = await client.listAlerts({ pageSize: 2 });
    assert.deepEqual(
      first.alerts.map((a) => a.id),
      ["alarm/a-1/high@1", "alarm/a-2/high@1"],
    );
    const second = await client.listAlerts({ pageSize: 2, pageToken: first.nextPageToken });
    assert.deepEqual(
      second.alerts.map((a) => a.id),
      ["alarm/a-3/high@1", "alarm/a-4/high@1"],
    );
    const third = await client.listAlerts({ pageSize: 2, pageToken: second.nextPageToken });
    assert.deepEqual(
      third.alerts.map((a) => brief(a)),
      [{ id: "alarm/a-5/high@1", twin: "a-5", severity: "CRITICAL", state: "OPEN", message: "level 155", count: 1 }],
    );
    assert.equal(third.nextPageToken, "");
    const mismatched = await clientError(client.listAlerts({ pageSize: 2, pageToken: first.nextPageToken, filter: 'state == "OPEN"' }));
    assert.equal(mismatched.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(mismatched.reason, "BAD_PAGE_TOKEN");
  });

  it("streams, from the cursor ListAlerts returned, exactly the changes after the listing, each once and in order per twin", async () => {
    const { client } = await startNode(t);
    const publish = levels(client);
    await publish(["a-1", 120]);
    const { cursor } = await client.listAlerts();
    const w = watch(t, client, cursor);
    await publish(["a-2", 150]); // opens
    await client.acknowledgeAlert("alarm/a-1/high@1"); // acknowledged
    await publish(["a-1", 120]); // a bump alone is not a change
    await publish(["a-1", 140]); // new message
    await publish(["a-2", 10]); // resolves
    await publish(["a-9", 100]); // the sentinel
    const seen = [];
    for (let i = 0; i < 5; i++) seen.push(brief((await w.next()).alert));
    // Changes of one partition (so of one twin) come in commit order; partitions interleave.
    assert.deepEqual(byTwin(seen), {
      "a-2": [
        { id: "alarm/a-2/high@1", twin: "a-2", severity: "CRITICAL", state: "OPEN", message: "level 150", count: 1 },
        { id: "alarm/a-2/high@1", twin: "a-2", severity: "CRITICAL", state: "RESOLVED", message: "level 150", count: 1 },
      ],
      "a-1": [
        { id: "alarm/a-1/high@1", twin: "a-1", severity: "WARNING", state: "ACKNOWLEDGED", message: "level 120", count: 1 },
        { id: "alarm/a-1/high@1", twin: "a-1", severity: "WARNING", state: "ACKNOWLEDGED", message: "level 140", count: 3 },
      ],
      "a-9": [{ id: "alarm/a-9/high@1", twin: "a-9", severity: "WARNING", state: "OPEN", message: "level 100", count: 1 }],
    });
    // Nothing else is pending.
    await assert.rejects(w.next(200), /no alert change within 200 ms/);
  });

  it("resumes a watch from its last cursor without losing or repeating a change", async () => {
    const { client } = await startNode(t);
    const publish = levels(client);
    const { cursor: start } = await client.listAlerts();
    const first = watch(t, client, start);
    await publish(["a-1", 100], ["a-2", 100], ["a-3", 100]);
    const a = await first.next();
    const b = await first.next();
    const seenFirst = [a.alert?.twinId, b.alert?.twinId];
    first.close();
    await publish(["a-4", 100]);
    await publish(["a-1", 10]);
    const second = watch(t, client, b.cursor);
    const rest = [];
    for (let i = 0; i < 3; i++) rest.push(brief((await second.next()).alert));
    // Each change once: the two seen before, then the rest (in partition order, not commit order).
    assert.deepEqual([...seenFirst.map((id) => `${id} OPEN`), ...rest.map((r) => `${r?.twin} ${r?.state}`)].sort(), [
      "a-1 OPEN",
      "a-1 RESOLVED",
      "a-2 OPEN",
      "a-3 OPEN",
      "a-4 OPEN",
    ]);
    // Nothing else is pending: the next change seen is a new one.
    await publish(["a-5", 100]);
    assert.equal((await second.next()).alert?.twinId, "a-5");
  });

  it("answers WatchAlerts with a malformed cursor or one past the log with INVALID_ARGUMENT BAD_CURSOR", async () => {
    const { client } = await startNode(t);
    for (const [cursor, message] of [
      ["garbage", 'cursor "garbage" is not a cursor this node issued; pass one from ListAlerts or WatchAlerts, or none to start from now'],
      ["c2.0-zz", 'cursor "c2.0-zz" names changes of partition 0, which has logged none here; was it issued by another data directory?'],
      ["c2.0-1.0-2", 'cursor "c2.0-1.0-2" is not a cursor this node issued; pass one from ListAlerts or WatchAlerts, or none to start from now'],
    ] as const) {
      const err = await clientError(watch(t, client, cursor).next());
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.reason, "BAD_CURSOR");
      assert.equal(err.message, message);
      assert.deepEqual(
        err.violations.map((v) => v.field),
        ["cursor"],
      );
    }
  });

  it("answers WatchAlerts with a cursor older than the retained change log with OUT_OF_RANGE, and a fresh cursor works", async () => {
    const { client, node } = await startNode(t, { hostOptions: { alertLogRetention: 5 } });
    const publish = levels(client);
    const { cursor: old } = await client.listAlerts();
    assert.equal(old, "c2.");
    // Ten changes: with a retention of 5, the log is trimmed (in chunks of at least 5) to changes 6-10.
    for (let i = 0; i < 5; i++) await publish(["a-1", 120], ["a-1", 10]);
    await waitFor(() => node.runtime.host.idle, { timeoutMs: 5_000, what: "the alert changes to commit" });
    await assertTrimmedBeforeSix(t, client, old);
    const { cursor: fresh } = await client.listAlerts();
    assert.equal(fresh, `c2.${at("a-1", 10)}`);
    const w = watch(t, client, fresh);
    await publish(["a-2", 150]);
    const change = await w.next();
    // a-1's partition (118) sorts before a-2's (255); a-2's partition numbers its first change 1.
    assert.deepEqual([change.alert?.twinId, change.cursor], ["a-2", `c2.${at("a-1", 10)}.${at("a-2", 1)}`]);
  });

  it("trims a log over its budget when the node starts, without waiting for another alert change", async () => {
    const first = await startNode(t);
    const { cursor: old } = await first.client.listAlerts();
    const publish = levels(first.client);
    for (let i = 0; i < 5; i++) await publish(["a-1", 120], ["a-1", 10]);
    // Ten changes kept; restarted with a budget of 5, and no alert change after it.
    const { client, node } = await first.restart({ hostOptions: { alertLogRetention: 5 } });
    await node.runtime.host.whenIdle();
    await assertTrimmedBeforeSix(t, client, old);
  });

  it("answers WatchAlerts with a cursor of data format 2 (c1.) with OUT_OF_RANGE, telling to list again", async () => {
    const { client } = await startNode(t);
    const err = await clientError(watch(t, client, "c1.5").next());
    assert.equal(err.code, grpc.status.OUT_OF_RANGE);
    assert.equal(err.reason, "CURSOR_EXPIRED");
    assert.equal(
      err.message,
      'cursor "c1.5" was issued before this node numbered alert changes per partition (data format 3); list alerts again to get a fresh cursor',
    );
  });

  it("acknowledges and resolves an alert; acknowledging or resolving it again changes nothing", async () => {
    const { client } = await startNode(t);
    const publish = levels(client);
    await publish(["a-1", 150]);
    const id = "alarm/a-1/high@1";
    const acked = (await client.acknowledgeAlert(id)).alert;
    assert.equal(brief(acked)?.state, "ACKNOWLEDGED");
    const { cursor } = await client.listAlerts();
    const ackedAgain = (await client.acknowledgeAlert(id)).alert;
    assert.deepEqual(ackedAgain, acked);
    const resolved = (await client.resolveAlert(id)).alert;
    assert.deepEqual(brief(resolved), { id, twin: "a-1", severity: "CRITICAL", state: "RESOLVED", message: "level 150", count: 1 });
    const resolvedAgain = (await client.resolveAlert(id)).alert;
    assert.deepEqual(resolvedAgain, resolved);
    await publish(["a-2", 100]); // the sentinel
    const w = watch(t, client, cursor);
    assert.deepEqual([brief((await w.next()).alert)?.state, brief((await w.next()).alert)?.twin], ["RESOLVED", "a-2"]);
    // The twin raises it again: a new alert, since the old one is resolved.
    await publish(["a-1", 150]);
    const open = await client.listAlerts({ filter: 'twin_id == "a-1" && state == "OPEN"' });
    assert.deepEqual(
      open.alerts.map((a) => a.id),
      ["alarm/a-1/high@4"], // the acknowledgement and the resolution changed the record too: versions 2 and 3
    );
  });

  it("answers AcknowledgeAlert and ResolveAlert of an unknown alert with NOT_FOUND", async () => {
    const { client } = await startNode(t);
    for (const call of [client.acknowledgeAlert("alarm/a-1/high@1"), client.resolveAlert("alarm/a-1/high@1")]) {
      const err = await clientError(call);
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.equal(err.reason, "ALERT_NOT_FOUND");
      assert.equal(err.message, 'alert "alarm/a-1/high@1" does not exist; list alerts to find its id');
    }
  });

  it("resolves a twin's open alerts when the twin is deleted", async () => {
    const { client } = await startNode(t);
    const publish = levels(client);
    await publish(["a-1", 150], ["a-2", 150]);
    const { cursor } = await client.listAlerts();
    const w = watch(t, client, cursor);
    await client.deleteTwin({ kind: "alarm", id: "a-1" });
    assert.deepEqual(brief((await w.next()).alert), {
      id: "alarm/a-1/high@1",
      twin: "a-1",
      severity: "CRITICAL",
      state: "RESOLVED",
      message: "level 150",
      count: 1,
    });
    const open = await client.listAlerts({ filter: 'state != "RESOLVED"' });
    assert.deepEqual(
      open.alerts.map((a) => a.id),
      ["alarm/a-2/high@1"],
    );
  });
});
