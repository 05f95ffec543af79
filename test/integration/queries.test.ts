import assert from "node:assert/strict";
import { toJson } from "@bufbuild/protobuf";
import { timestampFromDate, ValueSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import type { TwinmeshClient } from "../../client/index.js";
import type { AggregateTwinsResponse, QuerySummary } from "../../proto/gen/twinmesh/v1/twin_pb.js";
import { type EventInit, ev } from "../harness/events.js";
import { clientError } from "../harness/grpc-status.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

const TWINS = 20;

/** The fields of a QueryTwinsRequest besides its kind. */
interface QueryPage {
  filter?: string;
  orderBy?: string;
  limit?: number;
  pageToken?: string;
}

/** Twin q-NN gets (NN % 5) + 1 events with v = NN; from q-04 on, ward is "north" (even) or "south" (odd). */
function fleet(): { events: EventInit[]; expected: { id: string; count: number; total: number; ward: string | null }[] } {
  const events: EventInit[] = [];
  const expected = [];
  for (let i = 0; i < TWINS; i++) {
    const id = `q-${String(i).padStart(2, "0")}`;
    const count = (i % 5) + 1;
    const ward = i < 4 ? null : i % 2 === 0 ? "north" : "south";
    for (let seq = 1; seq <= count; seq++) events.push(ev("counter", id, seq, { v: i }, ward === null ? {} : { attributes: { ward } }));
    expected.push({ id, count, total: i * count, ward });
  }
  return { events, expected };
}

/** Runs one QueryTwins page: the twins' ids and the summary. */
async function page(client: TwinmeshClient, req: QueryPage): Promise<{ ids: string[]; summary: QuerySummary }> {
  const ids: string[] = [];
  let summary: QuerySummary | undefined;
  for await (const res of client.queryTwins({ kind: "counter", ...req })) {
    assert.equal(summary, undefined, "the summary must be the last message");
    for (const twin of res.twins) ids.push(twin.id);
    if (res.summary !== undefined) summary = res.summary;
  }
  assert.ok(summary !== undefined, "the stream ended without a summary");
  return { ids, summary };
}

function counts(s: QuerySummary): { matched: number; scanned: number; evaluationErrors: number; more: boolean } {
  return { matched: Number(s.matched), scanned: Number(s.scanned), evaluationErrors: Number(s.evaluationErrors), more: s.nextPageToken !== "" };
}

function groups(res: AggregateTwinsResponse): { key: unknown; count: number; sum: number; avg: number; min: number; max: number }[] {
  return res.groups
    .map((g) => ({ key: g.key === undefined ? undefined : toJson(ValueSchema, g.key), count: Number(g.count), sum: g.sum, avg: g.avg, min: g.min, max: g.max }))
    .sort((a, b) => String(a.key).localeCompare(String(b.key)));
}

describe("TwinService queries (queries)", () => {
  const t = useTestScope();
  const { events, expected } = fleet();

  async function seeded(): Promise<TwinmeshClient> {
    const { client } = await startNode(t);
    const res = await client.publish(events);
    assert.equal(res.results.filter((r) => r.reason !== "").length, 0);
    return client;
  }

  it("pages through every match of a filter exactly once, in order_by order, limit twins a page", async () => {
    const client = await seeded();
    const want = expected
      .filter((e) => e.count >= 3)
      .sort((a, b) => b.count - a.count || (a.id < b.id ? -1 : 1))
      .map((e) => e.id);
    assert.equal(want.length, 12);
    const req = { filter: "state.count >= 3.0", orderBy: "state.count desc", limit: 5 };
    const pages = [];
    let pageToken = "";
    do {
      const p = await page(client, { ...req, pageToken });
      pages.push(p);
      pageToken = p.summary.nextPageToken;
    } while (pageToken !== "" && pages.length < 10);
    assert.deepEqual(
      pages.map((p) => p.ids),
      [want.slice(0, 5), want.slice(5, 10), want.slice(10)],
    );
    // An ordered query scans the whole kind for every page.
    assert.deepEqual(
      pages.map((p) => counts(p.summary)),
      [
        { matched: 12, scanned: 20, evaluationErrors: 0, more: true },
        { matched: 12, scanned: 20, evaluationErrors: 0, more: true },
        { matched: 12, scanned: 20, evaluationErrors: 0, more: false },
      ],
    );
  });

  it("pages by a string field that some twins lack, descending, with the twins lacking it last, each twin exactly once", async () => {
    const client = await seeded();
    const ids = (ward: string | null) => expected.filter((e) => e.ward === ward).map((e) => e.id);
    const want = [...ids("south"), ...ids("north"), ...ids(null)];
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const p = await page(client, { orderBy: "state.ward desc", limit: 3, pageToken });
      seen.push(...p.ids);
      pageToken = p.summary.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 20);
    assert.equal(pages, 7);
    assert.deepEqual(seen, want);
  });

  it("pages in id order without order_by, each page scanning only as far as it needs", async () => {
    const client = await seeded();
    const first = await page(client, { limit: 7 });
    const second = await page(client, { limit: 7, pageToken: first.summary.nextPageToken });
    const third = await page(client, { limit: 7, pageToken: second.summary.nextPageToken });
    assert.deepEqual(
      [...first.ids, ...second.ids, ...third.ids],
      expected.map((e) => e.id),
    );
    assert.deepEqual(
      [first, second, third].map((p) => counts(p.summary)),
      [
        { matched: 7, scanned: 8, evaluationErrors: 0, more: true },
        { matched: 7, scanned: 8, evaluationErrors: 0, more: true },
        { matched: 6, scanned: 6, evaluationErrors: 0, more: false },
      ],
    );
  });

  it("leaves out a twin whose stored metadata is corrupt, as an evaluation error, and still pages through the rest", async () => {
    const { client, node } = await startNode(t);
    assert.equal((await client.publish(events)).results.filter((r) => r.reason !== "").length, 0);
    const { store, host } = node.runtime;
    const key = host.keys.twin("counter", "q-03");
    const raw = (await store.get(key)) ?? "";
    await store.write([{ type: "put", key, value: `{"sv":1,"ver":oops${raw.slice(raw.indexOf("\n"))}` }]);
    const first = await page(client, { limit: 7 });
    const second = await page(client, { limit: 7, pageToken: first.summary.nextPageToken });
    const third = await page(client, { limit: 7, pageToken: second.summary.nextPageToken });
    assert.deepEqual(
      [...first.ids, ...second.ids, ...third.ids],
      expected.map((e) => e.id).filter((id) => id !== "q-03"),
    );
    assert.deepEqual(
      [first, second, third].map((p) => counts(p.summary)),
      [
        { matched: 7, scanned: 9, evaluationErrors: 1, more: true },
        { matched: 7, scanned: 8, evaluationErrors: 0, more: true },
        { matched: 5, scanned: 5, evaluationErrors: 0, more: false },
      ],
    );
    assert.match(first.summary.firstEvaluationError, /^q-03: /);
  });

  it("returns each twin's snapshot with its committed state", async () => {
    const client = await seeded();
    const twins = [];
    for await (const res of client.queryTwins({ kind: "counter", filter: 'id == "q-07"' })) twins.push(...res.twins);
    assert.equal(twins.length, 1);
    assert.deepEqual(twins[0]?.state, { count: 3, lastSeq: 3, total: 21, messages: 0, ward: "south" });
    assert.deepEqual([twins[0]?.version, twins[0]?.lastSeq, twins[0]?.ownerNodeId], [3n, 3n, "local"]);
  });

  it("streams each twin's snapshot exactly as GetTwin returns it", async () => {
    // QueryTwins encodes and decodes snapshots by hand; GetTwin goes through protobuf-es both ways.
    const client = await seeded();
    const twins = [];
    for await (const res of client.queryTwins({ kind: "counter" })) twins.push(...res.twins);
    assert.equal(twins.length, TWINS);
    for (const twin of twins) assert.deepEqual(twin, (await client.getTwin({ kind: "counter", id: twin.id })).twin);
  });

  it("counts twins the filter cannot be evaluated on in the summary, and leaves them out", async () => {
    const client = await seeded();
    const { ids, summary } = await page(client, { filter: 'state.ward == "north"' });
    assert.deepEqual(
      ids,
      expected.filter((e) => e.ward === "north").map((e) => e.id),
    );
    assert.deepEqual(counts(summary), { matched: 8, scanned: 20, evaluationErrors: 4, more: false });
    assert.match(summary.firstEvaluationError, /ward/);
  });

  it("aggregates a numeric state field per group_by value", async () => {
    const client = await seeded();
    const res = await client.aggregateTwins({ kind: "counter", field: "state.total", groupBy: "state.ward" });
    const expect = (ward: string | null, filter: (e: (typeof expected)[number]) => boolean = () => true) => {
      const members = expected.filter((e) => e.ward === ward && filter(e)).map((e) => e.total);
      const sum = members.reduce((a, b) => a + b, 0);
      return { key: ward, count: members.length, sum, avg: sum / members.length, min: Math.min(...members), max: Math.max(...members) };
    };
    assert.deepEqual(groups(res), [expect("north"), expect(null), expect("south")]);
    assert.deepEqual([res.scanned, res.matched, res.evaluationErrors], [20n, 20n, 0n]);

    const filtered = await client.aggregateTwins({ kind: "counter", filter: "state.count >= 3.0", field: "state.count", groupBy: "" });
    const big = expected.filter((e) => e.count >= 3).map((e) => e.count);
    const sum = big.reduce((a, b) => a + b, 0);
    assert.deepEqual(groups(filtered), [{ key: null, count: 12, sum, avg: sum / 12, min: 3, max: 5 }]);

    const missing = await client.aggregateTwins({ kind: "counter", field: "state.nothing" });
    assert.deepEqual([missing.groups.length, missing.matched, missing.evaluationErrors], [0, 20n, 20n]);
  });

  it("rejects a bad order_by, limit or page token with INVALID_ARGUMENT naming the field", async () => {
    const client = await seeded();
    const cases: [QueryPage, string, string][] = [
      [{ orderBy: "state.count sideways" }, "BAD_FIELD", "order_by"],
      [{ limit: 10_001 }, "BAD_LIMIT", "limit"],
      [{ pageToken: "not-a-token" }, "BAD_PAGE_TOKEN", "page_token"],
      [{ filter: "state.count > 1.0", pageToken: (await page(client, { limit: 1 })).summary.nextPageToken }, "BAD_PAGE_TOKEN", "page_token"],
    ];
    for (const [req, reason, field] of cases) {
      const err = await clientError(page(client, req));
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.reason, reason);
      assert.deepEqual(
        err.violations.map((v) => v.field),
        [field],
      );
    }
  });
  it("reads a twin whose stored last event time is outside what a Timestamp holds as having none", async () => {
    // Nodes before BAD_TIME took any event time; a year-50,000 time cannot be a valid Timestamp.
    let node = await startNode(t);
    const at = timestampFromDate(new Date("2026-03-01T00:00:00Z"));
    await node.client.publish([ev("counter", "old-1", 1, { v: 1 }, { time: at }), ev("counter", "old-2", 1, { v: 2 }, { time: at })]);
    const { store, host } = node.node.runtime;
    for (const [id, stored] of [
      ["old-1", "1e20"],
      ["old-2", "-62135596800001"],
    ] as const) {
      const key = host.keys.twin("counter", id);
      const raw = (await store.get(key)) ?? "";
      assert.match(raw, /"let":\d+/);
      await store.write([{ type: "put", key, value: raw.replace(/"let":\d+/, `"let":${stored}`) }]);
    }
    node = await node.restart();
    for (const id of ["old-1", "old-2"]) {
      const { twin } = await node.client.getTwin({ kind: "counter", id });
      assert.equal(twin?.lastEventTime, undefined, `GetTwin ${id}`);
      assert.equal(twin?.version, 1n);
    }
    const listed = [];
    for await (const res of node.client.queryTwins({ kind: "counter", filter: 'id.startsWith("old-")' })) listed.push(...res.twins);
    assert.deepEqual(
      listed.map((tw) => [tw.id, tw.lastEventTime]),
      [
        ["old-1", undefined],
        ["old-2", undefined],
      ],
    );
  });
});
