import assert from "node:assert/strict";
import { toBinary } from "@bufbuild/protobuf";
import type { TwinmeshClient } from "../../client/index.js";
import { type QueryTwinsResponse, QueryTwinsResponseSchema, type TwinSnapshot } from "../../proto/gen/twinmesh/v1/twin_pb.js";
import { MAX_PAGE_BYTES, MAX_PAGE_TWINS } from "../../server/snapshot-encoder.js";
import { ev } from "../harness/events.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

/** More twins than one chunk of a scan (1,000 records), so a scan of them pauses between chunks. */
const TWINS = 2_500;

function idOf(i: number): string {
  return `p-${String(i).padStart(4, "0")}`;
}

/** The messages of one QueryTwins call, as the client decoded them. */
async function messages(client: TwinmeshClient, req: { filter?: string; limit?: number }): Promise<QueryTwinsResponse[]> {
  const list: QueryTwinsResponse[] = [];
  for await (const message of client.queryTwins({ kind: "counter", ...req })) list.push(message);
  return list;
}

/** Twins per message, and "summary" for a message that carries the summary. */
function shape(list: readonly QueryTwinsResponse[]): (number | string)[] {
  return list.map((m) => (m.summary === undefined ? m.twins.length : m.twins.length === 0 ? "summary" : `${m.twins.length} + summary`));
}

describe("QueryTwins pages (query-pages)", () => {
  const t = useTestScope();

  async function seeded(): Promise<TwinmeshClient> {
    const { client } = await startNode(t);
    for (let from = 0; from < TWINS; from += 500) {
      const events = Array.from({ length: 500 }, (_, k) => ev("counter", idOf(from + k), 1, { v: from + k }));
      const res = await client.publish(events);
      assert.deepEqual(
        res.results.filter((r) => r.reason !== ""),
        [],
      );
    }
    return client;
  }

  it("sends many twins in pages of at most 500 twins or 64 KiB, in id order, each exactly once, the summary alone last", async () => {
    const client = await seeded();
    const list = await messages(client, { limit: 2_000 });
    const pages = list.slice(0, -1);
    const last = list.at(-1);
    assert.deepEqual(
      pages.flatMap((m) => m.twins.map((twin: TwinSnapshot) => twin.id)),
      Array.from({ length: 2_000 }, (_, i) => idOf(i)),
    );
    for (const page of pages) {
      assert.equal(page.summary, undefined);
      assert.ok(page.twins.length >= 1 && page.twins.length <= MAX_PAGE_TWINS, `a page of ${page.twins.length} twins`);
      const bytes = toBinary(QueryTwinsResponseSchema, page).length;
      const oneTwin = toBinary(QueryTwinsResponseSchema, { ...page, twins: page.twins.slice(-1) }).length;
      assert.ok(bytes < MAX_PAGE_BYTES + oneTwin, `a page of ${bytes} bytes`);
    }
    // 2,000 twins need at least 4 pages; the scan's chunk ends may split a few more.
    assert.ok(pages.length >= 4 && pages.length <= 10, `2,000 twins came in ${pages.length} pages: ${shape(list).join(", ")}`);
    assert.deepEqual([last?.twins.length, Number(last?.summary?.matched), last?.summary?.nextPageToken !== ""], [0, 2_000, true]);
  });

  it("sends the twins a scan has found when it pauses between chunks, before the scan goes on", async () => {
    const client = await seeded();
    // Ten matches at the start of the kind, ten at its end: the scan reads more than one chunk in between.
    const list = await messages(client, { filter: 'id.startsWith("p-000") || id.startsWith("p-249")' });
    assert.deepEqual(
      list.flatMap((m) => m.twins.map((twin) => twin.id)),
      [...Array.from({ length: 10 }, (_, i) => idOf(i)), ...Array.from({ length: 10 }, (_, i) => idOf(2_490 + i))],
    );
    // No message holds twins of both ends: the first ten went out before the scan read on. (The
    // store's first read returns a single record, so the first ten may come as 1 + 9.)
    const groups = list.map((m) => [...new Set(m.twins.map((twin) => twin.id.slice(0, 5)))].join("+"));
    assert.ok(!groups.includes("p-000+p-249"), `messages by id group: ${groups.join(", ")}`);
    assert.equal(groups.at(-1), "", "the summary comes alone");
    const summary = list.at(-1)?.summary;
    assert.deepEqual([Number(summary?.matched), Number(summary?.scanned)], [20, TWINS]);
  });

  it("answers a query that matches nothing with the summary alone", async () => {
    const client = await seeded();
    assert.deepEqual(shape(await messages(client, { filter: 'id == "none"' })), ["summary"]);
  });
});
