import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { TwinmeshClient } from "../../client/index.js";
import { encodePartitions, PARTITIONS_HEADER, RingSnapshot, ROUTED_BY_HEADER } from "../../cluster/index.js";
import { AlertService, ListAlertsRequestSchema, ListAlertsResponseSchema } from "../../proto/gen/twinmesh/v1/alert_pb.js";
import { Partitioning } from "../../runtime/index.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { range } from "../harness/counters.js";
import { ev, statuses } from "../harness/events.js";
import { clientError, rawClient, statusDetails } from "../harness/grpc-status.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"] as const;

/** One QueryTwins page: the ids in the order they came, and the next token. */
async function queryPage(
  client: TwinmeshClient,
  req: { kind: string; orderBy?: string; limit?: number; pageToken?: string },
): Promise<{ ids: string[]; next: string }> {
  const ids: string[] = [];
  let next = "";
  for await (const res of client.queryTwins(req)) {
    for (const twin of res.twins) ids.push(twin.id);
    if (res.summary !== undefined) next = res.summary.nextPageToken;
  }
  return { ids, next };
}

/** Every page of a query, each through the next client of `via` in turn (so tokens cross nodes). */
async function queryAll(via: readonly TwinmeshClient[], req: { kind: string; orderBy?: string; limit: number }): Promise<{ ids: string[]; pages: number }> {
  const ids: string[] = [];
  let pageToken = "";
  for (let pages = 0; ; pages++) {
    const client = via[pages % via.length] as TwinmeshClient;
    const page = await queryPage(client, { ...req, pageToken });
    assert.ok(page.ids.length <= req.limit, `page ${pages} has ${page.ids.length} twins; the limit is ${req.limit}`);
    ids.push(...page.ids);
    if (page.next === "") return { ids, pages: pages + 1 };
    pageToken = page.next;
  }
}

/** Every alert id of every ListAlerts page, pages read through the clients of `via` in turn. */
async function listAll(via: readonly TwinmeshClient[], pageSize: number): Promise<string[]> {
  const ids: string[] = [];
  let pageToken = "";
  for (let pages = 0; ; pages++) {
    const page = await (via[pages % via.length] as TwinmeshClient).listAlerts({ pageSize, pageToken });
    assert.ok(page.alerts.length <= pageSize);
    ids.push(...page.alerts.map((a) => a.id));
    if (page.nextPageToken === "") return ids;
    pageToken = page.nextPageToken;
  }
}

/** The reason a call failed with, or "" when it answered. */
function reasonOf(call: Promise<unknown>): Promise<string> {
  return call.then(
    () => "",
    (err: { reason?: string }) => err.reason ?? "no reason",
  );
}

/** Reads `n` changes of a WatchAlerts call through `client` from `cursor`, each within `timeoutMs`, then ends the call. */
async function watchN(client: TwinmeshClient, cursor: string, n: number, what: string, timeoutMs = 10_000): Promise<{ changes: string[]; cursor: string }> {
  const controller = new AbortController();
  const it = client.watchAlerts({ cursor }, controller.signal)[Symbol.asyncIterator]();
  const changes: string[] = [];
  let last = cursor;
  try {
    while (changes.length < n) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: ${changes.length} of ${n} changes came within ${timeoutMs} ms: ${changes.join(", ")}`)), timeoutMs);
      });
      const r = await Promise.race([it.next(), timeout]).finally(() => clearTimeout(timer));
      if (r.done === true) throw new Error(`${what}: the watch ended after ${changes.length} changes`);
      changes.push(`${r.value.alert?.id} ${r.value.alert?.state}`);
      last = r.value.cursor;
    }
    return { changes, cursor: last };
  } finally {
    controller.abort();
  }
}

describe("cluster-wide reads through any node of three (scatter-reads)", function () {
  this.timeout(60_000);
  const t = useTestScope();

  async function start(rf: number, logLevel?: string): Promise<{ c: ClusterHarness; clients: TwinmeshClient[] }> {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", String(rf)], logLevel });
    return { c, clients: MEMBERS.map((id) => c.client(id, 5_000)) };
  }

  it("answers GetTwin, QueryTwins (id order and order_by, paged), AggregateTwins and ListAlerts the same through every node, over every node's twins", async () => {
    const { c, clients } = await start(3);
    const ids = range(40).map((i) => `s-${String(i).padStart(2, "0")}`);
    const alarms = range(12).map((i) => `al-${String(i).padStart(2, "0")}`);
    const [n1] = clients as [TwinmeshClient];
    assert.deepEqual(
      statuses((await n1.publish(ids.map((id, i) => ev("counter", id, 1, { v: (i * 7) % 40 })))).results),
      ids.map(() => "ACCEPTED"),
    );
    assert.deepEqual(
      statuses((await n1.publish(alarms.map((id) => ev("alarm", id, 1, { level: 120 })))).results),
      alarms.map(() => "ACCEPTED"),
    );
    const owners = new Set(await Promise.all(ids.map((id) => c.ownerOf("counter", id))));
    assert.equal(owners.size, 3, "the twins did not spread over the three nodes");

    // Totals are (i * 7) % 40: all distinct, so the order by total is exact.
    const byTotalDesc = [...ids].sort((a, b) => ((ids.indexOf(b) * 7) % 40) - ((ids.indexOf(a) * 7) % 40));
    const alertIds = alarms.map((id) => `alarm/${id}/high@1`);
    for (const [k, client] of clients.entries()) {
      const via = `through ${MEMBERS[k]}`;
      const { twin } = await client.getTwin({ kind: "counter", id: "s-05" });
      assert.equal((twin?.state as { total?: number } | undefined)?.total, 35, `GetTwin ${via}`);
      assert.deepEqual((await queryPage(client, { kind: "counter" })).ids, ids, `QueryTwins in one page ${via}`);
      assert.deepEqual(await queryAll([client], { kind: "counter", limit: 7 }), { ids, pages: 6 }, `QueryTwins by pages of 7 ${via}`);
      assert.deepEqual((await queryAll([client], { kind: "counter", orderBy: "state.total desc", limit: 6 })).ids, byTotalDesc, `ordered ${via}`);
      const agg = await client.aggregateTwins({ kind: "counter", field: "state.total" });
      assert.deepEqual([agg.matched, agg.groups.map((g) => [g.count, g.sum, g.min, g.max])], [40n, [[40n, 780, 0, 39]]], `AggregateTwins ${via}`);
      assert.deepEqual(await listAll([client], 5), alertIds, `ListAlerts by pages of 5 ${via}`);
    }
    // A token one node issued is continued by any other.
    assert.deepEqual(await queryAll(clients, { kind: "counter", limit: 9 }), { ids, pages: 5 }, "pages read through n1, n2, n3 in turn");
    assert.deepEqual((await queryAll(clients, { kind: "counter", orderBy: "state.total desc", limit: 4 })).ids, byTotalDesc);
    assert.deepEqual(await listAll(clients, 3), alertIds);
  });

  it("watches every node's alerts through one node, and a cursor it gave continues through another node with exactly the changes after it", async () => {
    const { c, clients } = await start(3);
    const [n1, n2, n3] = clients as [TwinmeshClient, TwinmeshClient, TwinmeshClient];
    const alarms = range(12).map((i) => `w-${String(i).padStart(2, "0")}`);
    assert.equal(new Set(await Promise.all(alarms.map((id) => c.ownerOf("alarm", id)))).size, 3, "the alarms did not spread over the three nodes");
    const { cursor } = await n1.listAlerts({});
    const first = alarms.slice(0, 6);
    assert.deepEqual(
      statuses((await n2.publish(first.map((id) => ev("alarm", id, 1, { level: 120 })))).results),
      first.map(() => "ACCEPTED"),
    );
    const seen = await watchN(n1, cursor, 6, "the first raises through n1");
    assert.deepEqual(
      [...seen.changes].sort(),
      first.map((id) => `alarm/${id}/high@1 1`),
    );
    const later = [...alarms.slice(6).map((id) => ev("alarm", id, 1, { level: 120 })), ...first.slice(0, 3).map((id) => ev("alarm", id, 2, { level: 10 }))];
    assert.deepEqual(
      statuses((await n2.publish(later)).results),
      later.map(() => "ACCEPTED"),
    );
    const resumed = await watchN(n3, seen.cursor, 9, "the later changes through n3");
    assert.deepEqual(
      [...resumed.changes].sort(),
      [...alarms.slice(6).map((id) => `alarm/${id}/high@1 1`), ...first.slice(0, 3).map((id) => `alarm/${id}/high@1 3`)].sort(),
    );
  });

  it("ends a watch through a node that shuts down UNAVAILABLE, with the cursor to continue from through another node, and the node's peers' streams once it drained", async () => {
    // Info: the server says at that level when its shutdown grace closes calls still open.
    const { c, clients } = await start(3, "info");
    const [n1, n2] = clients as [TwinmeshClient, TwinmeshClient, TwinmeshClient];
    // Twins n1 does not own, so they are written through n2 at once after n1 stopped.
    const candidates = range(30).map((i) => `s-${String(i).padStart(2, "0")}`);
    const owners = await Promise.all(candidates.map((id) => c.ownerOf("alarm", id)));
    const [raised, ...later] = candidates.filter((_, i) => owners[i] !== "n1").slice(0, 3) as [string, ...string[]];
    assert.equal(later.length, 2, "fewer than 3 of 30 alarms are owned by n2 or n3");
    const { cursor } = await n1.listAlerts({});
    const controller = new AbortController();
    t.defer(() => controller.abort());
    const watch = n1.watchAlerts({ cursor }, controller.signal)[Symbol.asyncIterator]();
    assert.deepEqual(statuses((await n2.publish([ev("alarm", raised, 1, { level: 120 })])).results), ["ACCEPTED"]);
    const change = await watch.next();
    assert.equal(change.value?.alert?.twinId, raised, "the watch through n1 is not open");
    const resumeAt = change.value?.cursor;
    assert.ok(resumeAt);

    const stopping = c.stop("n1");
    // A client retries UNAVAILABLE; the CANCELLED of a call closed at the end of the grace would be final.
    const err = await clientError(watch.next());
    assert.deepEqual(
      [err.code, err.reason, err.message],
      [
        grpc.status.UNAVAILABLE,
        "SHUTTING_DOWN",
        `the node is shutting down; reconnect through another node with cursor ${resumeAt} to continue where this watch stopped`,
      ],
    );
    assert.equal(await stopping, 0);
    assert.doesNotMatch(c.node("n1").output(), /calls still open after the shutdown grace/, "the peers' streams were left for the end of the grace");

    const more = later.map((id) => ev("alarm", id, 1, { level: 120 }));
    assert.deepEqual(
      statuses((await n2.publish(more)).results),
      more.map(() => "ACCEPTED"),
    );
    const after = await watchN(n2, resumeAt, 2, "the changes after the cursor the stopped node gave, through n2");
    assert.deepEqual(
      [...after.changes].sort(),
      later.map((id) => `alarm/${id}/high@1 1`),
    );
  });

  it("continues a page token after a failover moved the killed owner's partitions to the survivors, missing no twin and repeating none", async () => {
    const { c, clients } = await start(3);
    const ids = range(60).map((i) => `f-${String(i).padStart(2, "0")}`);
    const [n1, , n3] = clients as [TwinmeshClient, TwinmeshClient, TwinmeshClient];
    assert.deepEqual(
      statuses((await n1.publish(ids.map((id, i) => ev("counter", id, 1, { v: i })))).results),
      ids.map(() => "ACCEPTED"),
    );
    const victimTwins = await c.ownedBy("n2", "counter", ids);
    assert.ok(victimTwins.length >= 10, `n2 owns only ${victimTwins.length} of the 60 twins`);
    const first = await queryPage(n1, { kind: "counter", limit: 20 });
    const ordered = await queryPage(n1, { kind: "counter", orderBy: "state.total desc", limit: 20 });
    await c.kill("n2");
    await waitFor(async () => (await reasonOf(queryPage(n3, { kind: "counter", limit: 1 }))) === "", {
      timeoutMs: 15_000,
      what: "a query through n3 to be answered once n2's partitions were taken",
    });
    const rest = await queryPage(n3, { kind: "counter", limit: 100, pageToken: first.next });
    assert.deepEqual([...first.ids, ...rest.ids], ids);
    assert.equal(rest.next, "");
    const orderedRest = await queryPage(n3, { kind: "counter", orderBy: "state.total desc", limit: 100, pageToken: ordered.next });
    assert.deepEqual([...ordered.ids, ...orderedRest.ids], [...ids].reverse());
    assert.deepEqual(await listAll([n3], 100), []);
  });

  it("refuses a member's part of a read, retryably, when it names a partition the member does not serve, and answers the part naming only its own", async () => {
    const { c, clients } = await start(3);
    const alarms = range(30).map((i) => `m-${String(i).padStart(2, "0")}`);
    assert.deepEqual(
      statuses((await (clients[0] as TwinmeshClient).publish(alarms.map((id) => ev("alarm", id, 1, { level: 120 })))).results),
      alarms.map(() => "ACCEPTED"),
    );
    const partitioning = new Partitioning(256);
    const ring = new RingSnapshot(1n, [...MEMBERS], partitioning, 3);
    const own = partitioning.all().filter((p) => ring.preferenceList(p)[0] === "n1");
    const raw = rawClient(c.members[0]?.address ?? "");
    t.defer(() => raw.close());
    const listPart = (partitions: readonly number[]): Promise<{ alerts: string[] } | grpc.ServiceError> => {
      const metadata = new grpc.Metadata();
      metadata.set(ROUTED_BY_HEADER, "n3");
      metadata.set(PARTITIONS_HEADER, encodePartitions(partitions));
      return new Promise((resolve) => {
        raw.makeUnaryRequest(
          `/${AlertService.typeName}/${AlertService.method.listAlerts.name}`,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from(toBinary(ListAlertsRequestSchema, create(ListAlertsRequestSchema, {}))),
          metadata,
          { deadline: Date.now() + 10_000 },
          (e, res) => resolve(e ? (e as grpc.ServiceError) : { alerts: fromBinary(ListAlertsResponseSchema, res as Buffer).alerts.map((a) => a.id) }),
        );
      });
    };
    const refused = await listPart(partitioning.all());
    assert.ok("code" in refused, "a part naming every partition was answered by n1 alone");
    const { code, errorInfo } = statusDetails(refused);
    assert.deepEqual([code, errorInfo?.reason, errorInfo?.metadata.retryable], [grpc.status.UNAVAILABLE, "PARTITION_MOVING", "true"]);
    const answered = await listPart(own);
    assert.ok(!("code" in answered), `n1 refused its own partitions: ${"details" in answered ? String(answered.details) : ""}`);
    const mine = (await Promise.all(alarms.map(async (id) => ((await c.ownerOf("alarm", id)) === "n1" ? `alarm/${id}/high@1` : undefined)))).filter(
      (id) => id !== undefined,
    );
    assert.ok(mine.length > 0);
    assert.deepEqual(answered.alerts, mine);
  });

  it("refuses a cluster-wide read UNAVAILABLE, retryably, while a partition has no live copy, rather than answer a partial page", async () => {
    const { c, clients } = await start(1);
    const ids = range(30).map((i) => `u-${String(i).padStart(2, "0")}`);
    const [n1] = clients as [TwinmeshClient];
    assert.deepEqual(
      statuses((await n1.publish(ids.map((id) => ev("counter", id, 1, { v: 1 })))).results),
      ids.map(() => "ACCEPTED"),
    );
    assert.deepEqual((await queryPage(n1, { kind: "counter" })).ids, ids);
    await c.kill("n3");
    // At replication factor 1 n3's partitions have no other copy: every read must say so, never answer without them.
    await waitFor(async () => (await reasonOf(queryPage(n1, { kind: "counter" }))) === "PARTITION_UNAVAILABLE", {
      timeoutMs: 15_000,
      what: "QueryTwins through n1 to be refused PARTITION_UNAVAILABLE once n3 is known down",
    });
    const err = await queryPage(n1, { kind: "counter" }).then(
      () => undefined,
      (e: { code?: number; reason?: string }) => e,
    );
    assert.deepEqual([err?.code, err?.reason], [14, "PARTITION_UNAVAILABLE"]);
    assert.equal(await reasonOf(n1.listAlerts({})), "PARTITION_UNAVAILABLE");
    assert.equal(await reasonOf(n1.aggregateTwins({ kind: "counter", field: "state.total" })), "PARTITION_UNAVAILABLE");
    await c.startMember("n3");
    await c.formed();
    await waitFor(async () => (await reasonOf(queryPage(n1, { kind: "counter" }))) === "", { timeoutMs: 15_000, what: "n3's partitions back" });
    assert.deepEqual((await queryPage(n1, { kind: "counter" })).ids, ids);
  });
});
