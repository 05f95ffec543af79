import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { type TwinmeshClient, TwinmeshClientError } from "../../client/index.js";
import { ClusterPageTokens } from "../../cluster/scatter-token.js";
import { ClusterHarness } from "../harness/cluster-harness.js";
import { range } from "../harness/counters.js";
import { ev, statuses } from "../harness/events.js";
import { useTestScope } from "../harness/test-scope.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));

/** The gRPC status name and reason a call failed with, or `OK`. */
async function outcomeOf(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
    return "OK";
  } catch (err) {
    if (err instanceof TwinmeshClientError)
      return `${err.code === 3 ? "INVALID_ARGUMENT" : err.code === 13 ? "INTERNAL" : err.code} ${err.reason ?? ""}`.trim();
    throw err;
  }
}

/** Every twin of a QueryTwins call, or the error. */
async function queryAll(client: TwinmeshClient, req: Parameters<TwinmeshClient["queryTwins"]>[0]): Promise<number> {
  let n = 0;
  for await (const res of client.queryTwins(req)) n += res.twins.length;
  return n;
}

describe("cluster-wide reads through a non-owner node given hostile input (scatter-hostile)", function () {
  this.timeout(60_000);
  const t = useTestScope();

  async function start(): Promise<{ c: ClusterHarness; n2: TwinmeshClient }> {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    const n2 = c.client("n2", 10_000);
    const events = range(60).map((i) => ev("counter", `c-${i}`, 1, { v: i }));
    assert.deepEqual(new Set(statuses((await n2.publish(events)).results)), new Set(["ACCEPTED"]));
    return { c, n2 };
  }

  it("refuses INVALID_ARGUMENT (not INTERNAL) a forged order_by page token whose position nests 50,000 arrays deep", async () => {
    const { n2 } = await start();
    // The query hash of a genuine token for this query, with a position no node ever wrote.
    const genuine = ClusterPageTokens.encode(JSON.stringify(["counter", "", "state.total"]), { v: 1, i: "c-1" });
    const { q } = JSON.parse(Buffer.from(genuine.slice(3), "base64url").toString("utf8")) as { q: string };
    const depth = 50_000;
    const body = `{"q":${JSON.stringify(q)},"p":{"v":${"[".repeat(depth)}${"]".repeat(depth)},"i":"c-1"}}`;
    const forged = `s1.${Buffer.from(body).toString("base64url")}`;
    assert.ok(forged.length < 256 * 1024, "the token is within the documented length limit");
    assert.equal(await outcomeOf(() => queryAll(n2, { kind: "counter", orderBy: "state.total", pageToken: forged })), "INVALID_ARGUMENT BAD_PAGE_TOKEN");
  });

  it("refuses INVALID_ARGUMENT a WatchAlerts cursor that is not one (it does not replay every alert from the start)", async () => {
    const { n2 } = await start();
    const raised = range(6).map((i) => ev("alarm", `a-${i}`, 1, { level: 120 }));
    assert.deepEqual(new Set(statuses((await n2.publish(raised)).results)), new Set(["ACCEPTED"]));
    for (const cursor of ["garbage", "c2.1--5", "c2.x"]) {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 5_000);
      const got = await outcomeOf(async () => {
        for await (const change of n2.watchAlerts({ cursor }, controller.signal))
          throw new Error(`delivered ${change.alert?.id} from cursor ${JSON.stringify(cursor)}`);
      }).catch((err: Error) => err.message);
      clearTimeout(timer);
      assert.equal(got, "INVALID_ARGUMENT BAD_CURSOR", `cursor ${JSON.stringify(cursor)}`);
    }
  });

  it("answers a query through a non-owner during kill -9 of an owner with every twin or UNAVAILABLE, never a partial page", async () => {
    const { c, n2 } = await start();
    const answers = new Map<string, number>();
    const killed = c.kill("n1");
    const until = Date.now() + 6_000;
    while (Date.now() < until) {
      const started = Date.now();
      const got = await queryAll(n2, { kind: "counter" }).then(
        (n) => `OK ${n}`,
        (err: unknown) => (err instanceof TwinmeshClientError ? `code ${err.code} ${err.reason ?? ""}` : String(err)),
      );
      assert.ok(Date.now() - started < 11_000, `a query took ${Date.now() - started} ms (deadline 10 s)`);
      answers.set(got, (answers.get(got) ?? 0) + 1);
    }
    await killed;
    const wrong = [...answers.keys()].filter((a) => a !== "OK 60" && !a.startsWith("code 14 "));
    assert.deepEqual(wrong, [], `answers: ${JSON.stringify([...answers])}`);
  });
});
