import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { SpanName } from "../../runtime/index.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { range } from "../harness/counters.js";
import { ev, statuses } from "../harness/events.js";
import { OtlpReceiver, type ReceivedSpan } from "../harness/otlp-receiver.js";
import { useTestScope } from "../harness/test-scope.js";
import { clientSpan, tracedPublish } from "../harness/traced-publish.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

/** The one span named `name` on `node`, failing with every span of the trace when there is not exactly one. */
function spanOf(spans: readonly ReceivedSpan[], node: string, name: string): ReceivedSpan {
  const found = spans.filter((s) => s.instance === node && s.name === name);
  assert.equal(
    found.length,
    1,
    `expected one ${name} span on ${node}, got ${found.length}; the trace has ${spans.map((s) => `${s.instance}:${s.name}`).join(", ")}`,
  );
  return found[0] as ReceivedSpan;
}

describe("tracing across a cluster (3 child processes, OTLP/HTTP to an in-test receiver)", () => {
  const t = useTestScope();

  it("follows one event from the client through the receiving node, the owner's forward, turn and commit, to every replica, in one trace", async () => {
    const receiver = await OtlpReceiver.start(t);
    const cluster = await ClusterHarness.start(t, {
      size: 3,
      twins: [FIXTURES],
      args: ["--replication-factor", "3"],
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY: "50" },
    });
    // A twin n2 owns, published through n1: one forward hop, then replication to n1 and n3.
    const [id] = await cluster.ownedBy(
      "n2",
      "counter",
      range(50).map((i) => `traced-${i}`),
    );
    assert.ok(id !== undefined, "none of 50 ids is owned by n2");
    const client = clientSpan();

    const res = await tracedPublish(cluster.members[0]?.address as string, [ev("counter", id, 1, { v: 1 })], client.traceparent);
    assert.deepEqual(statuses(res.results), ["ACCEPTED"]);

    // Each node exports on its own schedule: wait for every span the path makes.
    const expected = [
      `n1:${SpanName.publish}`,
      `n1:${SpanName.forward}`,
      `n2:${SpanName.forwardApply}`,
      `n2:${SpanName.turn}`,
      `n2:${SpanName.commit}`,
      `n2:${SpanName.replicate}`,
      `n1:${SpanName.replicaApply}`,
      `n3:${SpanName.replicaApply}`,
    ];
    const spans = await waitFor(
      () => {
        const trace = receiver.trace(client.traceId);
        const seen = new Set(trace.map((s) => `${s.instance}:${s.name}`));
        return expected.every((e) => seen.has(e)) ? trace : undefined;
      },
      { timeoutMs: 15_000, what: `the spans of trace ${client.traceId} on n1, n2 and n3` },
    );
    assert.ok(spans !== undefined);
    const publish = spanOf(spans, "n1", SpanName.publish);
    const forward = spanOf(spans, "n1", SpanName.forward);
    const apply = spanOf(spans, "n2", SpanName.forwardApply);
    const turn = spanOf(spans, "n2", SpanName.turn);
    const commit = spanOf(spans, "n2", SpanName.commit);
    const replicate = spanOf(spans, "n2", SpanName.replicate);
    const onN1 = spanOf(spans, "n1", SpanName.replicaApply);
    const onN3 = spanOf(spans, "n3", SpanName.replicaApply);
    const parents: [ReceivedSpan, string][] = [
      [publish, client.spanId],
      [forward, publish.spanId],
      [apply, forward.spanId],
      [turn, apply.spanId],
      [commit, turn.spanId],
      [replicate, commit.spanId],
      [onN1, replicate.spanId],
      [onN3, replicate.spanId],
    ];
    for (const [span, parent] of parents) assert.equal(span.parentSpanId, parent, `${span.instance}:${span.name} has the wrong parent`);
    assert.ok(
      spans.every((s) => s.service === "twinmesh"),
      "a span without service.name twinmesh",
    );
    assert.deepEqual(
      commit.links.map((l) => l.spanId),
      [apply.spanId],
    );
    assert.equal(forward.attributes["twinmesh.peer"], "n2");
    assert.equal(turn.attributes["twinmesh.twin.id"], id);
  });
});
