import assert from "node:assert/strict";
import { InMemorySpanExporter, type ReadableSpan, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { SpanName } from "../../runtime/index.js";
import { samplerFromEnv, tracingFromEnv } from "../../server/telemetry/index.js";
import { ev, statuses } from "../harness/events.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { clientSpan, tracedPublish } from "../harness/traced-publish.js";
import { waitFor } from "../harness/wait-for.js";

function only(spans: readonly ReadableSpan[], name: string): ReadableSpan {
  const found = spans.filter((s) => s.name === name);
  assert.equal(found.length, 1, `expected one ${name} span, got ${found.length}: ${spans.map((s) => s.name).join(", ")}`);
  return found[0] as ReadableSpan;
}

describe("tracing on one node (in-memory exporter)", () => {
  const t = useTestScope();

  it("chains the client's span, the publish batch, the event's turn and its commit in one trace", async () => {
    const exporter = new InMemorySpanExporter();
    const { node } = await startNode(t, { tracing: { spanProcessor: new SimpleSpanProcessor({ exporter }) } });
    const client = clientSpan();

    const res = await tracedPublish(node.address, [ev("counter", "trace-1", 1, { value: 2 })], client.traceparent);
    assert.deepEqual(statuses(res.results), ["ACCEPTED"]);

    await waitFor(() => exporter.getFinishedSpans().length >= 3, { timeoutMs: 5_000, what: "the publish, turn and commit spans" });
    const spans = exporter.getFinishedSpans();
    const publish = only(spans, SpanName.publish);
    const turn = only(spans, SpanName.turn);
    const commit = only(spans, SpanName.commit);
    for (const span of [publish, turn, commit]) assert.equal(span.spanContext().traceId, client.traceId, `${span.name} is in another trace`);
    assert.equal(publish.parentSpanContext?.spanId, client.spanId);
    assert.equal(turn.parentSpanContext?.spanId, publish.spanContext().spanId);
    assert.equal(commit.parentSpanContext?.spanId, turn.spanContext().spanId);
    // One commit serves many batches: it links to each (here the one).
    assert.deepEqual(
      commit.links.map((l) => l.context.spanId),
      [publish.spanContext().spanId],
    );
    assert.equal(publish.attributes["rpc.method"], "Publish");
    assert.equal(publish.attributes["twinmesh.batch.events"], 1);
    assert.deepEqual(
      [turn.attributes["twinmesh.twin.kind"], turn.attributes["twinmesh.twin.id"], turn.attributes["twinmesh.turn.trigger"]],
      ["counter", "trace-1", "telemetry"],
    );
    assert.equal(commit.attributes["twinmesh.commit.events"], 1);
    assert.equal(publish.resource.attributes["service.name"], "twinmesh");
    assert.equal(publish.resource.attributes["service.instance.id"], "local");
  });

  it("makes no span for a batch whose caller's trace is not sampled, and still applies it", async () => {
    const exporter = new InMemorySpanExporter();
    const { node, client } = await startNode(t, { tracing: { spanProcessor: new SimpleSpanProcessor({ exporter }) } });

    const res = await tracedPublish(node.address, [ev("counter", "trace-2", 1, { value: 2 })], clientSpan(false).traceparent);
    assert.deepEqual(statuses(res.results), ["ACCEPTED"]);
    // A traced batch after it: once its spans are in, the unsampled one's would be too.
    const sampled = clientSpan();
    await tracedPublish(node.address, [ev("counter", "trace-2", 2, { value: 2 })], sampled.traceparent);
    await waitFor(() => exporter.getFinishedSpans().some((s) => s.name === SpanName.commit), { timeoutMs: 5_000, what: "the traced batch's commit span" });
    assert.deepEqual([...new Set(exporter.getFinishedSpans().map((s) => s.spanContext().traceId))], [sampled.traceId]);
    const { twin } = await client.getTwin({ kind: "counter", id: "trace-2" });
    assert.equal(twin?.version, 2n);
  });

  it("is off with no OTEL_EXPORTER_OTLP_ENDPOINT: no tracing is built, and a traced request is served as any other", async () => {
    assert.equal(tracingFromEnv({}), undefined);
    assert.equal(tracingFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318", OTEL_SDK_DISABLED: "true" }), undefined);
    assert.notEqual(tracingFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4318" }), undefined);
    const saved = { ...process.env };
    for (const key of Object.keys(process.env)) if (key.startsWith("OTEL_")) delete process.env[key];
    try {
      const { node, client } = await startNode(t);
      assert.equal(node.tracingOn, false);
      const res = await tracedPublish(node.address, [ev("counter", "trace-3", 1, { value: 2 })], clientSpan().traceparent);
      assert.deepEqual(statuses(res.results), ["ACCEPTED"]);
      const { twin } = await client.getTwin({ kind: "counter", id: "trace-3" });
      assert.equal(twin?.version, 1n);
    } finally {
      Object.assign(process.env, saved);
    }
  });

  it("reads the standard sampler variables and refuses an unknown sampler or a ratio outside 0..1", () => {
    assert.match(samplerFromEnv({}).toString(), /ParentBased\{root=AlwaysOnSampler/);
    assert.match(
      samplerFromEnv({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.01" }).toString(),
      /ParentBased\{root=TraceIdRatioBased\{0\.01\}/,
    );
    assert.throws(() => samplerFromEnv({ OTEL_TRACES_SAMPLER: "sometimes" }), /OTEL_TRACES_SAMPLER is "sometimes"/);
    assert.throws(() => samplerFromEnv({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" }), /OTEL_TRACES_SAMPLER_ARG is "2"/);
  });
});
