import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import {
  type ForwardBatch,
  ForwardClient,
  type ForwardClientOptions,
  type ForwardHandler,
  PeerCondition,
  PeerPool,
  parseNodeId,
  STATIC_EPOCH,
} from "../../../cluster/index.js";
import { Consistency, type EventResult, EventResultSchema, EventSchema, EventStatus } from "../../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { isTwinmeshError, UnavailableError } from "../../../runtime/index.js";
import { startPeerServer, type TestNode, testNode } from "../../harness/peer-server.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

const n2 = parseNodeId("n2");
const DOWN_AFTER_MS = 500;

/** A batch of events whose source ids are `sources`. */
function batch(...sources: string[]): ForwardBatch {
  return {
    epoch: STATIC_EPOCH,
    consistency: Consistency.QUORUM,
    events: sources.map((sourceId, i) => create(EventSchema, { kind: "pump", sourceId, seq: BigInt(i + 1) })),
  };
}

/** Each event answered ACCEPTED with its source id as the message, so a test sees which batch an answer belongs to. */
function echo(b: ForwardBatch): EventResult[] {
  return b.events.map((e) => create(EventResultSchema, { status: EventStatus.ACCEPTED, message: e.sourceId }));
}

const messages = (results: readonly EventResult[]) => results.map((r) => r.message);

/**
 * Forwards each batch in its own turn of the event loop, so each goes out as its own request
 * (batches handed over in one turn share one).
 */
async function oneTurnEach(forwarding: ForwardClient, batches: readonly ForwardBatch[]): Promise<Promise<EventResult[]>[]> {
  const sent: Promise<EventResult[]>[] = [];
  for (const b of batches) {
    sent.push(forwarding.forward(n2, b));
    await new Promise((resolve) => setImmediate(resolve));
  }
  return sent;
}

/** A forward handler that holds every batch until the test releases it; aborted with its call. */
class GatedForwarder implements ForwardHandler {
  readonly received: { batch: ForwardBatch; signal: AbortSignal; release: () => void }[] = [];
  forward(b: ForwardBatch, signal: AbortSignal): Promise<EventResult[]> {
    return new Promise((resolve, reject) => {
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      this.received.push({ batch: b, signal, release: () => resolve(echo(b)) });
    });
  }
  /** The first source id of each batch received, in arrival order. */
  get firsts(): string[] {
    return this.received.map((r) => r.batch.events[0]?.sourceId ?? "");
  }
  release(first: string): void {
    const entry = this.received.find((r) => r.batch.events[0]?.sourceId === first);
    assert.ok(entry, `no batch starting with ${first} was received`);
    entry.release();
  }
}

/** Resolves with how each promise settled, or fails the test when they take longer than `ms`. */
async function settledWithin<T>(promises: Promise<T>[], ms: number): Promise<PromiseSettledResult<T>[]> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the batches were still unanswered after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([Promise.allSettled(promises), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe("ForwardClient", () => {
  const t = useTestScope();

  /** n1's pool and forward client towards n2 at `port`, closed after the test. */
  function connect(port: number, options: ForwardClientOptions = {}) {
    const pool = new PeerPool(testNode("n1"), [{ id: n2, address: `127.0.0.1:${port}` }], {
      heartbeatIntervalMs: 100,
      failureDetector: { downAfterMs: DOWN_AFTER_MS },
    });
    pool.start();
    const forwarding = new ForwardClient(pool, options);
    t.defer(() => pool.close());
    t.defer(() => forwarding.close());
    return { pool, forwarding };
  }

  /** Waits until `node` has answered `count` more Pings: a round trip on the connection that also carries the Forward stream. */
  async function roundTrips(node: TestNode, count = 2): Promise<void> {
    const target = node.pings + count;
    await waitFor(() => node.pings >= target, { timeoutMs: 2_000, what: `${count} more pings answered by ${node.id}` });
  }

  it("matches answers that come out of order to their batches by batch_id", async () => {
    const gate = new GatedForwarder();
    const { port } = await startPeerServer(t, testNode("n2"), { forward: gate });
    const { forwarding } = connect(port);
    const order: string[] = [];
    const sent = (await oneTurnEach(forwarding, [batch("a1", "a2"), batch("b1"), batch("c1", "c2", "c3")])).map((p) =>
      p.then((results) => {
        order.push(results[0]?.message ?? "?");
        return messages(results);
      }),
    );
    await waitFor(() => gate.received.length === 3, { timeoutMs: 2_000, what: "three batches at n2" });
    gate.release("c1");
    await waitFor(() => order.length === 1, { timeoutMs: 2_000, what: "c's answer" });
    gate.release("a1");
    gate.release("b1");
    assert.deepEqual(await Promise.all(sent), [["a1", "a2"], ["b1"], ["c1", "c2", "c3"]]);
    assert.equal(order[0], "c1");
    assert.equal(forwarding.inFlight(n2), 0);
  });

  it("rejects every batch in flight with a retryable UNAVAILABLE error when the owner's server is forced down, and forwards again once it is back", async () => {
    const gate = new GatedForwarder();
    const first = await startPeerServer(t, testNode("n2"), { forward: gate });
    const { forwarding } = connect(first.port);
    const sent = await oneTurnEach(forwarding, [batch("a1"), batch("b1", "b2"), batch("c1")]);
    await waitFor(() => gate.received.length === 3, { timeoutMs: 2_000, what: "three batches at n2" });
    const brokenMs = performance.now();
    // Forced down, the server resets the stream (the sender sees CANCELLED, or UNAVAILABLE when the connection drops first).
    first.server.forceShutdown();
    const outcomes = await settledWithin(sent, 2_000);
    assert.ok(performance.now() - brokenMs < 1_000);
    for (const outcome of outcomes) {
      assert.equal(outcome.status, "rejected");
      const err: unknown = outcome.status === "rejected" ? outcome.reason : undefined;
      assert.ok(isTwinmeshError(err), `not a TwinmeshError: ${String(err)}`);
      assert.deepEqual(
        { name: err.name, code: err.code, reason: err.reason, retryable: err.retryable },
        {
          name: "PeerUnavailableError",
          code: 14,
          reason: "PEER_UNAVAILABLE",
          retryable: true,
        },
      );
      assert.match(err.message, /^the forward stream to n2 broke \([A-Z_]+: .*\) before the batch was answered/);
    }
    assert.equal(forwarding.inFlight(n2), 0);

    const back = testNode("n2");
    await startPeerServer(t, back, { forward: { forward: async (b) => echo(b) } }, first.port);
    await roundTrips(back, 1);
    assert.deepEqual(messages(await forwarding.forward(n2, batch("d1", "d2"))), ["d1", "d2"]);
  });

  it("rejects the batches in flight when the pool sees the owner go down, though its stream stays open", async () => {
    const gate = new GatedForwarder();
    const peer = testNode("n2");
    const { port } = await startPeerServer(t, peer, { forward: gate });
    const { pool, forwarding } = connect(port);
    await waitFor(() => pool.isUp(n2), { timeoutMs: 2_000, what: "n2 up" });
    const sent = forwarding.forward(n2, batch("a1"));
    await waitFor(() => gate.received.length === 1, { timeoutMs: 2_000, what: "the batch at n2" });
    peer.silent = true; // n2 stops answering Pings; its Forward stream stays open and silent
    const [outcome] = await settledWithin([sent], DOWN_AFTER_MS + 1_500);
    assert.equal(pool.state(n2).condition, PeerCondition.DOWN);
    assert.equal(outcome?.status, "rejected");
    const err: unknown = outcome?.status === "rejected" ? outcome.reason : undefined;
    assert.ok(isTwinmeshError(err) && err.retryable && err.code === 14);
    assert.match(err.message, /^n2 is down; the batch may or may not have been applied/);
  });

  it("gives up a stream whose owner keeps it open but does not answer within answerTimeoutMs, and the next batch opens a new one", async () => {
    let stuck = true;
    const calls = new Set<AbortSignal>();
    const { port } = await startPeerServer(t, testNode("n2"), {
      forward: {
        // Ignores cancellation on purpose: an owner stuck in a handler.
        forward: (b, signal) => {
          calls.add(signal);
          return stuck ? new Promise<never>(() => undefined) : Promise.resolve(echo(b));
        },
      },
    });
    const { forwarding } = connect(port, { answerTimeoutMs: 300 });
    const startedMs = performance.now();
    const [outcome] = await settledWithin([forwarding.forward(n2, batch("a1"))], 2_000);
    // Node timers may fire a millisecond early by performance.now().
    assert.ok(performance.now() - startedMs >= 295);
    const err: unknown = outcome?.status === "rejected" ? outcome.reason : undefined;
    assert.ok(isTwinmeshError(err) && err.retryable && err.code === 14, `not a retryable UNAVAILABLE error: ${String(err)}`);
    assert.match(err.message, /^n2 did not answer forwarded batch 1 within 300 ms; the batch may or may not have been applied/);
    stuck = false;
    assert.deepEqual(messages(await forwarding.forward(n2, batch("b1"))), ["b1"]);
    assert.equal(calls.size, 2);
  });

  it("keeps at most maxInflightBatches unanswered and sends the waiting batches, in order, as answers come", async () => {
    const gate = new GatedForwarder();
    const peer = testNode("n2");
    const { port } = await startPeerServer(t, peer, { forward: gate });
    const { forwarding } = connect(port, { maxInflightBatches: 2 });
    const sent = await oneTurnEach(
      forwarding,
      ["a", "b", "c", "d", "e"].map((s) => batch(s)),
    );
    await waitFor(() => gate.received.length === 2, { timeoutMs: 2_000, what: "two batches at n2" });
    await roundTrips(peer);
    assert.deepEqual(gate.firsts, ["a", "b"]);
    assert.equal(forwarding.inFlight(n2), 2);
    gate.release("b");
    await waitFor(() => gate.received.length === 3, { timeoutMs: 2_000, what: "a third batch at n2" });
    await roundTrips(peer);
    assert.deepEqual(gate.firsts, ["a", "b", "c"]);
    gate.release("a");
    gate.release("c");
    await waitFor(() => gate.received.length === 5, { timeoutMs: 2_000, what: "every batch at n2" });
    gate.release("d");
    gate.release("e");
    assert.deepEqual((await Promise.all(sent)).map(messages), [["a"], ["b"], ["c"], ["d"], ["e"]]);
    assert.deepEqual(gate.firsts, ["a", "b", "c", "d", "e"]);
  });

  it("sends the batches handed over in one turn as one request, in order, and answers each with its own results", async () => {
    const gate = new GatedForwarder();
    const { port } = await startPeerServer(t, testNode("n2"), { forward: gate });
    const { forwarding } = connect(port);
    const sent = [batch("a1", "a2"), batch("b1"), batch("c1", "c2", "c3")].map((b) => forwarding.forward(n2, b));
    await waitFor(() => gate.received.length === 1, { timeoutMs: 2_000, what: "a batch at n2" });
    assert.deepEqual(
      gate.received[0]?.batch.events.map((e) => e.sourceId),
      ["a1", "a2", "b1", "c1", "c2", "c3"],
    );
    gate.release("a1");
    assert.deepEqual((await Promise.all(sent)).map(messages), [["a1", "a2"], ["b1"], ["c1", "c2", "c3"]]);
    assert.equal(gate.received.length, 1);
    assert.equal(forwarding.inFlight(n2), 0);
  });

  it("merges only consecutive batches of one consistency, up to maxBatchEvents, and keeps their order across requests", async () => {
    const gate = new GatedForwarder();
    const { port } = await startPeerServer(t, testNode("n2"), { forward: gate });
    const { forwarding } = connect(port, { maxBatchEvents: 3 });
    const local = (...sources: string[]): ForwardBatch => ({ ...batch(...sources), consistency: Consistency.LOCAL });
    const sent = [batch("a1", "a2"), batch("b1"), local("c1"), batch("d1"), batch("e1", "e2", "e3"), batch("f1")].map((b) => forwarding.forward(n2, b));
    await waitFor(() => gate.received.length === 5, { timeoutMs: 2_000, what: "five batches at n2" });
    // a and b share a request; c (LOCAL) goes alone, and d does not join a over it (order); e
    // would take d, and f would take e, over 3 events.
    assert.deepEqual(
      gate.received.map((r) => r.batch.events.map((e) => e.sourceId)),
      [["a1", "a2", "b1"], ["c1"], ["d1"], ["e1", "e2", "e3"], ["f1"]],
    );
    assert.deepEqual(
      gate.received.map((r) => r.batch.consistency),
      [Consistency.QUORUM, Consistency.LOCAL, Consistency.QUORUM, Consistency.QUORUM, Consistency.QUORUM],
    );
    for (const first of ["a1", "c1", "d1", "e1", "f1"]) gate.release(first);
    assert.deepEqual((await Promise.all(sent)).map(messages), [["a1", "a2"], ["b1"], ["c1"], ["d1"], ["e1", "e2", "e3"], ["f1"]]);
  });

  it("merges batches only up to a megabyte of events: a batch that would take a request over it starts the next", async () => {
    const gate = new GatedForwarder();
    const { port } = await startPeerServer(t, testNode("n2"), { forward: gate });
    const { forwarding } = connect(port);
    // About 650 KB encoded each: two do not fit in one request.
    const channels = Object.fromEntries(Array.from({ length: 40_000 }, (_, i) => [`c${i}`, i]));
    const big = (sourceId: string): ForwardBatch => ({ ...batch(sourceId), events: [create(EventSchema, { kind: "pump", sourceId, seq: 1n, channels })] });
    const sent = [big("big1"), big("big2"), batch("s1")].map((b) => forwarding.forward(n2, b));
    await waitFor(() => gate.received.length === 2, { timeoutMs: 5_000, what: "two batches at n2" });
    assert.deepEqual(
      gate.received.map((r) => r.batch.events.map((e) => e.sourceId)),
      [["big1"], ["big2", "s1"]],
    );
    gate.release("big1");
    gate.release("big2");
    assert.deepEqual((await Promise.all(sent)).map(messages), [["big1"], ["big2"], ["s1"]]);
  });

  it("does not merge a batch into a request across one that cannot join it, nor batches of another epoch", async () => {
    const gate = new GatedForwarder();
    const { port } = await startPeerServer(t, testNode("n2"), { forward: gate });
    const { forwarding } = connect(port);
    const local = (...sources: string[]): ForwardBatch => ({ ...batch(...sources), consistency: Consistency.LOCAL });
    const later = (...sources: string[]): ForwardBatch => ({ ...batch(...sources), epoch: STATIC_EPOCH + 1n });
    const controller = new AbortController();
    const sent = [
      forwarding.forward(n2, batch("a1")),
      forwarding.forward(n2, local("b1")),
      forwarding.forward(n2, batch("c1")),
      forwarding.forward(n2, later("d1")),
      forwarding.forward(n2, batch("e1"), controller.signal),
      forwarding.forward(n2, batch("f1")),
      forwarding.forward(n2, batch("g1")),
    ];
    await waitFor(() => gate.received.length === 6, { timeoutMs: 2_000, what: "six batches at n2" });
    // c would join a over b (their order); d is of another epoch; e may be withdrawn, so it goes
    // alone and f does not join it; g joins f.
    assert.deepEqual(
      gate.received.map((r) => r.batch.events.map((e) => e.sourceId)),
      [["a1"], ["b1"], ["c1"], ["d1"], ["e1"], ["f1", "g1"]],
    );
    for (const first of ["a1", "b1", "c1", "d1", "e1", "f1"]) gate.release(first);
    assert.deepEqual((await Promise.all(sent)).map(messages), [["a1"], ["b1"], ["c1"], ["d1"], ["e1"], ["f1"], ["g1"]]);
  });

  it("rejects every batch of a merged request retryably when the stream breaks, and those still queued for the turn when it is closed", async () => {
    const gate = new GatedForwarder();
    const first = await startPeerServer(t, testNode("n2"), { forward: gate });
    const { forwarding } = connect(first.port);
    const merged = [batch("a1"), batch("b1", "b2")].map((b) => forwarding.forward(n2, b));
    await waitFor(() => gate.received.length === 1, { timeoutMs: 2_000, what: "the merged batch at n2" });
    first.server.forceShutdown();
    for (const outcome of await settledWithin(merged, 2_000)) {
      assert.equal(outcome.status, "rejected");
      const err: unknown = outcome.status === "rejected" ? outcome.reason : undefined;
      assert.ok(isTwinmeshError(err) && err.retryable, `not a retryable TwinmeshError: ${String(err)}`);
    }
    // Queued in this turn, then the client closes before the turn ends: rejected at once, never sent.
    const queued = [batch("c1"), batch("d1")].map((b) => forwarding.forward(n2, b));
    let settled = 0;
    for (const p of queued) p.catch(() => undefined).finally(() => settled++);
    await forwarding.close();
    // At once: before the turn ends (microtasks only), not when the turn's requests would have gone out.
    for (let i = 0; i < 10; i++) await Promise.resolve();
    assert.equal(settled, 2);
    for (const outcome of await settledWithin(queued, 100)) {
      assert.equal(outcome.status, "rejected");
      assert.equal(outcome.status === "rejected" && isTwinmeshError(outcome.reason) ? outcome.reason.reason : undefined, "FORWARD_CLOSED");
    }
    assert.equal(gate.received.length, 1);
  });

  it("withdraws a batch still waiting for a slot when its signal aborts, and sends the next one in its place", async () => {
    const gate = new GatedForwarder();
    const { port } = await startPeerServer(t, testNode("n2"), { forward: gate });
    const { forwarding } = connect(port, { maxInflightBatches: 1 });
    const first = forwarding.forward(n2, batch("a"));
    const controller = new AbortController();
    const withdrawn = forwarding.forward(n2, batch("b"), controller.signal);
    const third = forwarding.forward(n2, batch("c"));
    await waitFor(() => gate.received.length === 1, { timeoutMs: 2_000, what: "the first batch at n2" });
    controller.abort(new Error("the client went away"));
    await assert.rejects(withdrawn, /the client went away/);
    gate.release("a");
    await waitFor(() => gate.received.length === 2, { timeoutMs: 2_000, what: "the third batch at n2" });
    gate.release("c");
    assert.deepEqual([messages(await first), messages(await third)], [["a"], ["c"]]);
    assert.deepEqual(gate.firsts, ["a", "c"]);
  });

  it("answers a batch whose handler throws with a retryable rejection per event, and the stream carries on", async () => {
    const signals: AbortSignal[] = [];
    const { port } = await startPeerServer(t, testNode("n2"), {
      forward: {
        async forward(b, signal) {
          signals.push(signal);
          const first = b.events[0]?.sourceId;
          if (first === "bug") throw new Error("a twinmesh bug");
          if (first === "closing") throw new UnavailableError("SHUTTING_DOWN", "n2 is shutting down; retry on another node");
          return echo(b);
        },
      },
    });
    const { forwarding } = connect(port);
    const rejected = (reason: string, message: string) => ({ status: EventStatus.REJECTED, reason, message, retryable: true });
    const view = (results: EventResult[]) => results.map(({ status, reason, message, retryable }) => ({ status, reason, message, retryable }));
    const bug = rejected("FORWARD_FAILED", "node n2 failed to apply the forwarded batch (see its log); retry the events with the same seqs");
    assert.deepEqual(view(await forwarding.forward(n2, batch("bug", "x"))), [bug, bug]);
    const closing = rejected("SHUTTING_DOWN", "n2 is shutting down; retry on another node");
    assert.deepEqual(view(await forwarding.forward(n2, batch("closing"))), [closing]);
    assert.deepEqual(messages(await forwarding.forward(n2, batch("ok"))), ["ok"]);
    // One stream served all three: each call has its own signal.
    assert.equal(new Set(signals).size, 1);
  });
});
