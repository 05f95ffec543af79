import assert from "node:assert/strict";
import { ClusterPageTokens, LocalRouter, type NodeId, ScatterReads, type TwinRouter } from "../../../cluster/index.js";
import {
  type Alert,
  type AlertPage,
  AlertState,
  type DeadLetter,
  type DeadLetterPage,
  type PartitionId,
  type QuerySummary,
  silentLogger,
  type TwinView,
} from "../../../runtime/index.js";

const ALERTS = JSON.stringify(["alerts", ""]);

function alert(id: string): Alert {
  return { id, kind: "alarm", twinId: id, code: "high", severity: "warning", message: "", state: AlertState.OPEN, raisedAt: 0, updatedAt: 0, count: 1 };
}

const DEAD_LETTERS = JSON.stringify(["dead-letters", "", "", "", "", ""]);

function letter(partition: number, seq: number): DeadLetter {
  return {
    id: `${partition}-${seq}`,
    partition: partition as PartitionId,
    reason: "HANDLER_FAILED",
    errorMessage: "",
    deadAtMs: 0,
    fromKind: "a",
    fromId: "a-1",
    toKind: "b",
    toId: "b-1",
    message: {},
    outboxSeq: seq,
  };
}

function twin(id: string, total: number): TwinView {
  return { kind: "counter", id, state: { total }, version: 1, lastSeq: 1, lastEventTime: undefined, ownerNodeId: "" };
}

/** Two members, n1 (this node) owning partition 0 and n2 owning partition 1, each answering from a fixed page. */
type Page = AlertPage | TwinView[] | DeadLetterPage;

function reads(pages: { n1: Page; n2: Page }, limit: number): ScatterReads {
  const part = (page: Page) => ({
    listAlerts: async (): Promise<AlertPage> => page as AlertPage,
    listDeadLetters: async (): Promise<DeadLetterPage> => page as DeadLetterPage,
    queryTwins: async (): Promise<{ twins: TwinView[]; summary: QuerySummary }> => {
      const twins = page as TwinView[];
      const more = twins.length > limit;
      return {
        twins: twins.slice(0, limit),
        summary: { matched: Math.min(limit, twins.length), scanned: twins.length, evaluationErrors: 0, nextPageToken: more ? "more" : "" },
      };
    },
  });
  const local = part(pages.n1);
  const remote = part(pages.n2);
  const localRouter = Object.assign(Object.create(LocalRouter.prototype) as TwinRouter, {
    listAlerts: local.listAlerts,
    listDeadLetters: local.listDeadLetters,
    queryTwins: async function* (): AsyncGenerator<TwinView, QuerySummary> {
      const { twins, summary } = await local.queryTwins();
      for (const t of twins) yield t;
      return summary;
    },
  });
  return new ScatterReads({
    self: "n1" as NodeId,
    localFor: () => localRouter,
    calls: {
      listAlerts: remote.listAlerts,
      queryTwins: remote.queryTwins,
      watchAlerts: () => {
        throw new Error("not used");
      },
      aggregateTwins: () => Promise.reject(new Error("not used")),
      listDeadLetters: remote.listDeadLetters,
      retryDeadLetters: () => Promise.reject(new Error("not used")),
      deleteDeadLetters: () => Promise.reject(new Error("not used")),
    },
    partitions: () => [0, 1] as PartitionId[],
    ownerOfPartition: (p) => (p === 0 ? "n1" : "n2") as NodeId,
    isUp: () => true,
    shuttingDown: () => false,
    log: silentLogger(),
  });
}

async function page(it: AsyncGenerator<TwinView, QuerySummary>): Promise<{ ids: string[]; summary: QuerySummary }> {
  const ids: string[] = [];
  for (;;) {
    const next = await it.next();
    if (next.done === true) return { ids, summary: next.value };
    ids.push(next.value.id);
  }
}

describe("ScatterReads (merging the members' pages)", () => {
  it("ends a merged alert page at a member's position when that member's page was cut short by its scan budget, so no alert after it is skipped", async () => {
    const s = reads(
      {
        n1: { alerts: [alert("k1"), alert("k9")], nextPageToken: "", cursor: "c2.0-2" },
        // n2 scanned up to k5 and found nothing yet; its k7 comes on a later page.
        n2: { alerts: [], nextPageToken: ClusterPageTokens.encode(ALERTS, "k5"), cursor: "c2.1-4" },
      },
      10,
    );
    const merged = await s.listAlerts({ pageSize: 10 });
    assert.deepEqual(
      merged.alerts.map((a) => a.id),
      ["k1"],
    );
    assert.equal(merged.nextPageToken, ClusterPageTokens.encode(ALERTS, "k5"));
    assert.equal(merged.cursor, "c2.0-2.1-4");
  });

  it("merges dead letter pages by partition, then seq as a number, ending at a member's cut-short position or at the page's last letter", async () => {
    const cut = reads(
      {
        n1: { deadLetters: [letter(0, 9), letter(0, 10)], nextPageToken: "" },
        n2: { deadLetters: [letter(1, 2)], nextPageToken: ClusterPageTokens.encode(DEAD_LETTERS, [1, 7]) },
      },
      10,
    );
    const merged = await cut.listDeadLetters({ pageSize: 10 });
    assert.deepEqual(
      merged.deadLetters.map((d) => d.id),
      ["0-9", "0-10", "1-2"],
    );
    assert.equal(merged.nextPageToken, ClusterPageTokens.encode(DEAD_LETTERS, [1, 7]));
    const full = reads({ n1: { deadLetters: [letter(0, 9), letter(0, 10)], nextPageToken: "" }, n2: { deadLetters: [letter(1, 2)], nextPageToken: "" } }, 10);
    const first = await full.listDeadLetters({ pageSize: 2 });
    assert.deepEqual(
      first.deadLetters.map((d) => d.id),
      ["0-9", "0-10"],
    );
    assert.equal(first.nextPageToken, ClusterPageTokens.encode(DEAD_LETTERS, [0, 10]));
    await assert.rejects(full.listDeadLetters({ pageToken: ClusterPageTokens.encode(DEAD_LETTERS, "k5") }), { reason: "BAD_PAGE_TOKEN" });
  });

  it("merges ordered pages exactly: the best `limit` of the union, a token at the last one, the members' look-ahead not counted", async () => {
    const s = reads({ n1: [twin("a", 9), twin("c", 5), twin("e", 1)], n2: [twin("b", 8), twin("d", 4), twin("f", 0)] }, 2);
    const { ids, summary } = await page(s.queryTwins({ kind: "counter", orderBy: "state.total desc", limit: 2 }));
    assert.deepEqual(ids, ["a", "b"]);
    assert.equal(summary.nextPageToken, ClusterPageTokens.encode(JSON.stringify(["counter", "", "state.total desc"]), { v: 8, i: "b" }));
    assert.equal(summary.matched, 2);
  });

  it("refuses a token of another query or a forged one BAD_PAGE_TOKEN before asking any member", async () => {
    const s = reads({ n1: [], n2: [] }, 2);
    const token = ClusterPageTokens.encode(JSON.stringify(["counter", "", ""]), "x");
    await assert.rejects(page(s.queryTwins({ kind: "counter", filter: "id != 'y'", pageToken: token })), { reason: "BAD_PAGE_TOKEN" });
    await assert.rejects(page(s.queryTwins({ kind: "counter", pageToken: "s1.bm90IGpzb24" })), { reason: "BAD_PAGE_TOKEN" });
    await assert.rejects(page(s.queryTwins({ kind: "counter", orderBy: "state.total", pageToken: token })), { reason: "BAD_PAGE_TOKEN" });
  });

  it("ends a watch that waits for a partition's owner UNAVAILABLE (SHUTTING_DOWN), with its cursor, once this node shuts down", async () => {
    let shuttingDown = false;
    const notUsed = () => Promise.reject(new Error("not used"));
    const s = new ScatterReads({
      self: "n1" as NodeId,
      localFor: () => {
        throw new Error("not used");
      },
      calls: {
        listAlerts: notUsed,
        queryTwins: notUsed,
        watchAlerts: () => {
          throw new Error("not used");
        },
        aggregateTwins: notUsed,
        listDeadLetters: notUsed,
        retryDeadLetters: notUsed,
        deleteDeadLetters: notUsed,
      },
      partitions: () => [0, 1] as PartitionId[],
      // Partition 1 has no live owner: the watch waits (up to 15 s) for a failover.
      ownerOfPartition: (p) => (p === 0 ? ("n1" as NodeId) : undefined),
      isUp: () => true,
      shuttingDown: () => shuttingDown,
      log: silentLogger(),
    });
    const watch = s.watchAlerts("c2.0-5.1-7", "", new AbortController().signal);
    const ended = watch.next();
    shuttingDown = true;
    await assert.rejects(ended, {
      reason: "SHUTTING_DOWN",
      retryable: true,
      message: "the node is shutting down; reconnect through another node with cursor c2.0-5.1-7 to continue where this watch stopped",
    });
  });
});
