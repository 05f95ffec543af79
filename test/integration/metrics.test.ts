import assert from "node:assert/strict";
import { ev, statuses } from "../harness/events.js";
import { Scrape } from "../harness/prometheus-text.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

const PUBLISH = "/twinmesh.v1.TelemetryService/Publish";

describe("a node's Prometheus endpoint (metrics)", () => {
  const t = useTestScope();

  it("counts accepted, duplicate and rejected events by kind and reason exactly as they were answered", async () => {
    const { client, node } = await startNode(t, { metrics: { port: 0 } });
    const address = node.metricsAddress as string;
    const before = await Scrape.of(address);

    const first = await client.publish([
      ev("counter", "c-1", 1),
      ev("counter", "c-1", 2),
      ev("counter", "c-1", 3),
      ev("counter", "c-2", 1),
      ev("faulty", "f-1", 1),
    ]);
    assert.deepEqual(statuses(first.results), ["ACCEPTED", "ACCEPTED", "ACCEPTED", "ACCEPTED", "ACCEPTED"]);
    // The same seqs again: duplicates, not applied twice.
    const again = await client.publish([ev("counter", "c-1", 2), ev("counter", "c-1", 3)]);
    assert.deepEqual(statuses(again.results), ["DUPLICATE", "DUPLICATE"]);
    // Bad events: an empty source id, a kind this node does not run, a handler that throws.
    const bad = await client.publish([ev("counter", "", 1), ev("no-such-kind", "x", 1), ev("faulty", "f-1", 2, { boom: 1 })]);
    assert.deepEqual(
      bad.results.map((r) => r.reason),
      ["BAD_FIELD", "UNKNOWN_KIND", "HANDLER_FAILED"],
    );
    // An alert raised (warning from 100, critical from 150).
    assert.deepEqual(statuses((await client.publish([ev("alarm", "a-1", 1, { level: 120 })])).results), ["ACCEPTED"]);

    const after = await Scrape.of(address);
    const moved = (name: string, labels: Record<string, string> = {}): number => after.count(name, labels) - before.count(name, labels);
    assert.equal(moved("twinmesh_events_total", { kind: "counter", outcome: "accepted" }), 4);
    assert.equal(moved("twinmesh_events_total", { kind: "faulty", outcome: "accepted" }), 1);
    assert.equal(moved("twinmesh_events_total", { kind: "alarm", outcome: "accepted" }), 1);
    assert.equal(moved("twinmesh_events_total", { kind: "counter", outcome: "duplicate" }), 2);
    assert.equal(moved("twinmesh_events_total", { kind: "counter", outcome: "rejected", reason: "BAD_FIELD" }), 1);
    // A kind the node does not run is counted under one label, however many names clients send.
    assert.equal(moved("twinmesh_events_total", { kind: "_other", outcome: "rejected", reason: "UNKNOWN_KIND" }), 1);
    assert.equal(moved("twinmesh_events_total", { kind: "faulty", outcome: "rejected", reason: "HANDLER_FAILED" }), 1);
    // Nothing else moved: every event is in exactly one series.
    assert.equal(after.sum("twinmesh_events_total") - before.sum("twinmesh_events_total"), 11);
    assert.equal(moved("twinmesh_handler_errors_total", { kind: "faulty" }), 1);
    assert.equal(moved("twinmesh_alerts_raised_total", { severity: "warning" }), 1);
    assert.equal(moved("twinmesh_alerts_raised_total", { severity: "critical" }), 0);
    assert.equal(moved("twinmesh_alerts_changes_total"), 1);

    // Every accepted event was in some commit group; commits took measurable time.
    assert.ok(moved("twinmesh_commit_duration_seconds_count") > 0, "no commit recorded");
    assert.ok(moved("twinmesh_commit_duration_seconds_sum") > 0, "commits took no time");
    assert.equal(moved("twinmesh_commit_batch_size_sum"), 6);
    assert.equal(after.value("twinmesh_commit_duration_seconds_bucket", { le: "+Inf" }), after.value("twinmesh_commit_duration_seconds_count"));
    // A single node has no replicas: no replication series at all, not even empty ones.
    assert.doesNotMatch(after.text, /twinmesh_replication_/);

    // A turn per event that reached its twin: the six applied, the two duplicates, the one that threw.
    assert.equal(moved("twinmesh_turn_duration_seconds_count"), 9);

    // c-1, c-2, f-1 and a-1 are in memory; the rejected events activated nobody.
    assert.equal(after.value("twinmesh_twins_active"), 4);
    assert.equal(moved("twinmesh_twins_activated_total"), 4);
    assert.equal(after.value("twinmesh_ingest_queue_depth"), 0);
    // Four Publish calls, each answered OK (an event's rejection is in its result, not the call's status).
    assert.equal(moved("twinmesh_grpc_server_calls_total", { method: PUBLISH, status: "OK" }), 4);
  });

  it("answers 404 outside /metrics, and serves no endpoint unless asked", async () => {
    const { node } = await startNode(t, { metrics: { port: 0 } });
    const res = await fetch(`http://${node.metricsAddress}/other`);
    assert.equal(res.status, 404);
    await res.text();
    const plain = await startNode(t);
    assert.equal(plain.node.metricsAddress, undefined);
  });
});
