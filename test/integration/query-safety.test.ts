import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { TwinmeshClient } from "../../client/index.js";
import { ListAlertsRequestSchema } from "../../proto/gen/twinmesh/v1/alert_pb.js";
import { type QuerySummary, TwinService } from "../../proto/gen/twinmesh/v1/twin_pb.js";
import { type EventInit, ev, outcomes } from "../harness/events.js";
import { clientError, methodPath, rawClient } from "../harness/grpc-status.js";
import { type StartedNode, startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

/** `[0, 1, …, 19]`: a list literal to nest comprehensions over. */
const LIST = `[${Array.from({ length: 20 }, (_, i) => i).join(", ")}]`;
/** 168,420 units per twin: over the default budget of 100,000. */
const FOUR_NESTED = `${LIST}.exists(a, ${LIST}.exists(b, ${LIST}.exists(c, ${LIST}.exists(d, id == "never"))))`;
/** Under a budget of {@link SLOW_BUDGET}, several ms per twin: seconds for a chunk of twins. */
const SLOW_FILTER = FOUR_NESTED;
const SLOW_BUDGET = { maxFilterCost: 1_000_000 };
const HOSTILE_ID = `${"a".repeat(31)}!`;

/** Reads a QueryTwins stream to its end and returns the summary. */
async function summaryOf(stream: AsyncIterable<{ summary?: QuerySummary }>): Promise<QuerySummary> {
  let summary: QuerySummary | undefined;
  for await (const res of stream) if (res.summary !== undefined) summary = res.summary;
  assert.ok(summary !== undefined, "the stream ended without a summary");
  return summary;
}

/** `count` counter twins s-0000, s-0001, … with one event each. */
async function seed(client: TwinmeshClient, count: number, extra: string[] = []): Promise<void> {
  const ids = [...Array.from({ length: count }, (_, i) => `s-${String(i).padStart(4, "0")}`), ...extra];
  const events: EventInit[] = ids.map((id) => ev("counter", id, 1, { v: 1 }));
  const res = await client.publish(events);
  assert.deepEqual(
    outcomes(res.results).filter((o) => o.status !== "ACCEPTED"),
    [],
  );
}

/** A QueryTwins call through a raw grpc-js client with a deadline; resolves with the status it ended with. */
function rawQuery(node: StartedNode, filter: string, deadlineMs: number): Promise<grpc.StatusObject> {
  const client = rawClient(node.address);
  return new Promise((resolve) => {
    const request = Buffer.from(encodeQuery("counter", filter));
    const call = client.makeServerStreamRequest(
      methodPath(TwinService.method.queryTwins),
      (b: Buffer) => b,
      (b: Buffer) => b,
      request,
      {
        deadline: Date.now() + deadlineMs,
      },
    );
    call.on("data", () => undefined);
    call.on("error", () => undefined);
    call.on("status", (status: grpc.StatusObject) => {
      client.close();
      resolve(status);
    });
  });
}

/** A QueryTwinsRequest with `kind` (field 1) and `filter` (field 2), encoded by hand. */
function encodeQuery(kind: string, filter: string): Uint8Array {
  const field = (tag: number, text: string): Buffer => {
    const value = Buffer.from(text, "utf8");
    const length: number[] = [];
    let n = value.length;
    while (n > 127) {
      length.push((n & 127) | 128);
      n >>>= 7;
    }
    length.push(n);
    return Buffer.concat([Buffer.from([(tag << 3) | 2, ...length]), value]);
  };
  return Buffer.concat([field(1, kind), field(2, filter)]);
}

describe("TwinService query safety (queries)", () => {
  const t = useTestScope();

  it("answers id.matches('^(a+)+$') over an id of 31 a's and a '!' at once (RE2), for queries, aggregates and alerts", async () => {
    const { client } = await startNode(t);
    await seed(client, 3, [HOSTILE_ID, "a".repeat(31)]);
    // A backtracking engine takes minutes on the first id (each extra a doubles it).
    const query = summaryOf(client.queryTwins({ kind: "counter", filter: 'id.matches("^(a+)+$")' }));
    const publish = client.publish([ev("counter", "late-1", 1, { v: 1 })]);
    assert.deepEqual(
      outcomes((await publish).results).map((o) => o.status),
      ["ACCEPTED"],
    );
    const summary = await query;
    assert.deepEqual([summary.matched, summary.evaluationErrors], [1n, 0n]);
    const aggregate = await client.aggregateTwins({ kind: "counter", filter: 'id.matches("^(a+)+$")', field: "state.count" });
    assert.deepEqual([aggregate.matched, aggregate.groups[0]?.count], [1n, 1n]);
    const alerts = await client.listAlerts({ filter: 'message.matches("^(a+)+$")' });
    assert.equal(alerts.alerts.length, 0);
  });

  it("refuses a matches() pattern RE2 does not support with INVALID_ARGUMENT BAD_FILTER naming the problem", async () => {
    const { client } = await startNode(t);
    const err = await clientError(summaryOf(client.queryTwins({ kind: "counter", filter: 'id.matches("(a)\\\\1")' })));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(err.reason, "BAD_FILTER");
    assert.match(err.message, /not a valid RE2 regular expression \(invalid escape sequence: `\\1` \(RE2 has no backreferences\)\)/);
    const alertErr = await clientError(client.listAlerts({ filter: 'message.matches("a(?=b)")' }));
    assert.deepEqual([alertErr.code, alertErr.reason], [grpc.status.INVALID_ARGUMENT, "BAD_FILTER"]);
  });

  it("stops a filter over its cost budget with RESOURCE_EXHAUSTED FILTER_COST_EXCEEDED naming the limit and the option", async () => {
    const { client } = await startNode(t);
    await seed(client, 2);
    for (const call of [
      summaryOf(client.queryTwins({ kind: "counter", filter: FOUR_NESTED })),
      client.aggregateTwins({ kind: "counter", filter: FOUR_NESTED, field: "state.count" }),
    ]) {
      const err = await clientError(call);
      assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(err.reason, "FILTER_COST_EXCEEDED");
      assert.match(err.message, /costs more than 100000 units on one input/);
      assert.match(err.message, /maxFilterCost \(twinmesh start --max-filter-cost\)/);
    }
  });

  it("takes the cost budget from the node's query options", async () => {
    const { client } = await startNode(t, { queryOptions: { maxFilterCost: 19 } });
    await seed(client, 2);
    const err = await clientError(summaryOf(client.queryTwins({ kind: "counter", filter: `${LIST}.exists(x, x == 100)` })));
    assert.deepEqual([err.code, err.reason], [grpc.status.RESOURCE_EXHAUSTED, "FILTER_COST_EXCEEDED"]);
    assert.match(err.message, /costs more than 19 units/);
    const ok = await summaryOf(client.queryTwins({ kind: "counter", filter: `${LIST.replace(", 19]", "]")}.exists(x, x == 100)` }));
    assert.deepEqual([ok.scanned, ok.matched], [2n, 0n]);
  });

  it("acknowledges a Publish while a costly filter is still being evaluated, and a cancelled query stops its scan and its worker", async () => {
    const node = await startNode(t, { queryOptions: SLOW_BUDGET });
    const { client } = node;
    await seed(client, 1_000);
    const queries = node.node.runtime.queries;
    const cancel = new AbortController();
    const query = summaryOf(client.queryTwins({ kind: "counter", filter: SLOW_FILTER }, cancel.signal)).catch((err: unknown) => err);
    await waitFor(() => queries.stats.scans === 1, { timeoutMs: 10_000, what: "the scan to start" });

    const res = await client.publish([ev("counter", "during-query", 1, { v: 1 })]);
    assert.deepEqual(
      outcomes(res.results).map((o) => o.status),
      ["ACCEPTED"],
    );
    // The chunks of 1,000 twins (about 168 M comprehension steps) are still with the workers: the
    // event loop acknowledged the event meanwhile, which it could not while evaluating the filter.
    // (The store's first chunk may be a small one that a worker has already answered.)
    assert.ok(queries.stats.scanned < 1_000, `the publish was answered only after the filter had run on ${queries.stats.scanned} twins`);

    cancel.abort();
    await query;
    await waitFor(() => queries.stats.stopped === 1, { timeoutMs: 10_000, what: "the scan to stop" });
    assert.ok(queries.workerStats.terminated >= 1, "the running worker was terminated");
    assert.ok(queries.stats.scanned < 1_000, "the scan went on after the cancel");
  });

  it("stops the scan when the client's deadline passes (DEADLINE_EXCEEDED), and the next costly query gets a new worker", async () => {
    const node = await startNode(t, { queryOptions: SLOW_BUDGET });
    await seed(node.client, 1_000);
    const queries = node.node.runtime.queries;
    const status = await rawQuery(node, SLOW_FILTER, 1_000);
    assert.equal(status.code, grpc.status.DEADLINE_EXCEEDED);
    await waitFor(() => queries.stats.stopped === 1, { timeoutMs: 10_000, what: "the scan to stop" });
    assert.ok(queries.workerStats.terminated >= 1, "the running worker was terminated");
    assert.ok(queries.stats.scanned < 1_000, "the scan went on after the deadline");
    const replaced = queries.workerStats.started;

    const next = await summaryOf(node.client.queryTwins({ kind: "counter", filter: 'id.matches("^s-000[0-4]$")' }));
    assert.deepEqual([next.scanned, next.matched], [1_000n, 5n]);
    assert.ok(queries.workerStats.started > replaced, "a terminated worker is replaced");
  });

  it("withdraws the filter jobs of scans that fail on a full queue: no worker stays busy for a call that has ended", async () => {
    const node = await startNode(t, { queryOptions: { ...SLOW_BUDGET, filterWorkers: 2, maxQueuedFilterChunks: 2 } });
    await seed(node.client, 3_000);
    const queries = node.node.runtime.queries;
    const calls = Array.from({ length: 6 }, () =>
      node.client.aggregateTwins({ kind: "counter", filter: SLOW_FILTER, field: "state.count" }).then(
        () => "OK",
        (err: unknown) => (err as { reason?: string }).reason ?? String(err),
      ),
    );
    // The calls that get a slot are cancelled by closing the client's channel below; the others fail at once.
    await waitFor(() => queries.stats.scans >= 6, { timeoutMs: 10_000, what: "the six scans to start" });
    const refused = await Promise.race([Promise.all(calls.slice(2)), new Promise<string[]>((resolve) => setTimeout(() => resolve([]), 5_000))]);
    assert.ok(refused.includes("QUERY_QUEUE_FULL"), `no call was refused QUERY_QUEUE_FULL: ${refused.join()}`);
    node.client.close();
    await Promise.all(calls);
    await waitFor(() => queries.filterLoad.queued === 0 && queries.filterLoad.running === 0, {
      timeoutMs: 3_000,
      what: "the filter workers to be free once every call has ended",
    });
  });

  it("answers a Publish while a costly ListAlerts filter is evaluated, and stops the listing at the call's deadline", async () => {
    const node = await startNode(t, { queryOptions: SLOW_BUDGET });
    const alarms = Array.from({ length: 300 }, (_, i) => ev("alarm", `a-${String(i).padStart(3, "0")}`, 1, { level: 120 }));
    assert.deepEqual(
      outcomes((await node.client.publish(alarms)).results).filter((o) => o.status !== "ACCEPTED"),
      [],
    );
    const listing = node.client.listAlerts({ filter: SLOW_FILTER }).then(
      () => "done",
      () => "failed",
    );
    const order: string[] = [];
    // The listing runs for seconds (300 alerts at ~160k units each): publish once it is under way.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const publish = node.client.publish([ev("counter", "during-listing", 1)]).then(() => order.push("publish"));
    await Promise.all([publish, listing.then(() => order.push("listing"))]);
    assert.deepEqual(order, ["publish", "listing"], "the Publish waited for the whole listing");

    const raw = rawClient(node.address);
    t.defer(() => raw.close());
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      const call = raw.makeUnaryRequest(
        "/twinmesh.v1.AlertService/ListAlerts",
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from(toBinary(ListAlertsRequestSchema, create(ListAlertsRequestSchema, { filter: SLOW_FILTER }))),
        new grpc.Metadata(),
        { deadline: Date.now() + 200 },
        () => undefined,
      );
      call.on("status", resolve);
    });
    assert.equal(status.code, grpc.status.DEADLINE_EXCEEDED);
  });

  it("refuses a forged or altered page token with INVALID_ARGUMENT BAD_PAGE_TOKEN, and accepts its own after a restart", async () => {
    const node = await startNode(t);
    await seed(node.client, 10);
    const ordered = { kind: "counter", filter: "", orderBy: "state.count desc" };
    const first = await summaryOf(node.client.queryTwins({ ...ordered, limit: 3 }));
    assert.notEqual(first.nextPageToken, "");

    // The query hash in the old tokens was not secret: anyone could build one.
    const hash = (q: unknown[]): string => createHash("sha256").update(JSON.stringify(q)).digest("base64url").slice(0, 12);
    const forge = (q: unknown[], p: unknown): string => Buffer.from(JSON.stringify({ q: hash(q), p })).toString("base64url");
    const [payload, mac] = first.nextPageToken.split(".") as [string, string];
    const altered = `${Buffer.from(Buffer.from(payload, "base64url").toString().replace('"i":"', '"i":"z')).toString("base64url")}.${mac}`;
    const cases: [Record<string, unknown>, string][] = [
      [{ ...ordered, pageToken: forge(["counter", "", "state.count desc"], "s-0003") }, "forged, order_by"],
      [{ ...ordered, pageToken: forge(["counter", "", "state.count desc"], { v: 1 }) }, "forged, no id"],
      [{ kind: "counter", pageToken: forge(["counter", "", ""], "s-0005") }, "forged, id order"],
      [{ ...ordered, pageToken: altered }, "altered"],
      [{ ...ordered, pageToken: `${first.nextPageToken}x` }, "bad mac"],
      [{ ...ordered, pageToken: "x".repeat(300_000) }, "too long"],
      [{ kind: "counter", pageToken: first.nextPageToken }, "another query's"],
    ];
    for (const [req, what] of cases) {
      const err = await clientError(summaryOf(node.client.queryTwins(req)));
      assert.deepEqual([err.code, err.reason, err.violations.map((v) => v.field)], [grpc.status.INVALID_ARGUMENT, "BAD_PAGE_TOKEN", ["page_token"]], what);
    }
    const alertErr = await clientError(node.client.listAlerts({ pageToken: forge(["alerts", ""], "a") }));
    assert.deepEqual([alertErr.code, alertErr.reason], [grpc.status.INVALID_ARGUMENT, "BAD_PAGE_TOKEN"]);

    const restarted = await node.restart();
    const second = await summaryOf(restarted.client.queryTwins({ ...ordered, limit: 3, pageToken: first.nextPageToken }));
    assert.deepEqual([second.matched, second.nextPageToken !== ""], [10n, true], "the token still works after a restart");
  });
});
