import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { freePorts } from "../harness/cluster-harness.js";
import { ev, statuses } from "../harness/events.js";
import { PrometheusServer, prometheusInstalled, requireTool } from "../harness/prometheus-server.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

/** The shipped dashboard and scrape config (the source tree's, beside dist/). */
const DASHBOARD = fileURLToPath(new URL("../../../docs/metrics/grafana-dashboard.json", import.meta.url));
const SCRAPE_CONFIG = fileURLToPath(new URL("../../../docs/metrics/prometheus.yml", import.meta.url));

interface Dashboard {
  readonly panels: readonly { readonly title: string; readonly targets?: readonly { readonly expr: string }[] }[];
}

describe("a real Prometheus scraping a node (prometheus)", function () {
  this.timeout(60_000);
  const t = useTestScope();
  let server: PrometheusServer | undefined;
  afterEach(function () {
    if (this.currentTest?.state === "failed" && server !== undefined) process.stderr.write(`\n----- prometheus output -----\n${server.log()}\n`);
    server = undefined;
  });

  it("stores the contract's series with the values the node answered", async function () {
    requireTool(this, prometheusInstalled(), "prometheus", "apt-get install prometheus");
    const { client, node } = await startNode(t, { metrics: { port: 0 } });
    const sent = await client.publish([ev("counter", "p-1", 1), ev("counter", "p-1", 2), ev("counter", "p-2", 1)]);
    assert.deepEqual(statuses(sent.results), ["ACCEPTED", "ACCEPTED", "ACCEPTED"]);
    const dup = await client.publish([ev("counter", "p-1", 2), ev("counter", "", 1)]);
    assert.deepEqual(statuses(dup.results), ["DUPLICATE", "REJECTED"]);
    // One critical alert and one timer pending, counted in the store at each scrape.
    const alarm = await client.publish([ev("alarm", "p-3", 1, { level: 160, timerMs: 3_600_000 })]);
    assert.deepEqual(statuses(alarm.results), ["ACCEPTED"]);

    const [port] = await freePorts(1);
    server = await PrometheusServer.start(t, { targets: [node.metricsAddress as string], port: port as number, scrapeIntervalS: 1 });
    const prom = server;
    // A few scrapes: the target is up and the latest scrape holds everything sent above.
    await waitFor(async () => ((await prom.query("count_over_time(up[1m])"))[0]?.value ?? 0) >= 3, { timeoutMs: 20_000, what: "three scrapes of the node" });
    assert.deepEqual(await prom.targetHealth(), ["up"]);
    const one = async (promql: string): Promise<number | undefined> => {
      const result = await prom.query(promql);
      assert.ok(result.length <= 1, `${promql} matched ${result.length} series`);
      return result[0]?.value;
    };
    assert.equal(await one('twinmesh_events_total{kind="counter",outcome="accepted"}'), 3);
    assert.equal(await one('twinmesh_events_total{kind="counter",outcome="duplicate"}'), 1);
    assert.equal(await one('twinmesh_events_total{kind="counter",outcome="rejected",reason="BAD_FIELD"}'), 1);
    assert.equal(await one("twinmesh_twins_active"), 3);
    assert.equal(await one('twinmesh_alerts_unresolved{severity="critical",state="open"}'), 1);
    assert.equal(await one('sum(twinmesh_alerts_unresolved{severity!="critical"})'), 0);
    assert.equal(await one("twinmesh_timers_pending"), 1);
    assert.equal(await one("twinmesh_dead_letters_stored"), 0);
    assert.ok(((await one("twinmesh_commit_duration_seconds_count")) ?? 0) > 0, "no commit histogram in Prometheus");
    assert.equal(await one('twinmesh_commit_duration_seconds_bucket{le="+Inf"}'), await one("twinmesh_commit_duration_seconds_count"));
    // Prometheus took the types from the exposition: the histogram quantile works on the buckets.
    const p99 = await one("histogram_quantile(0.99, twinmesh_commit_duration_seconds_bucket)");
    assert.ok(p99 !== undefined && p99 > 0 && p99 <= 2.5, `p99 commit duration ${p99}`);
  });

  it("answers every query of the shipped Grafana dashboard, and the shipped scrape config is valid", async function () {
    requireTool(this, prometheusInstalled(), "prometheus", "apt-get install prometheus");
    execFileSync("promtool", ["check", "config", SCRAPE_CONFIG], { stdio: "pipe" });
    const { client, node } = await startNode(t, { metrics: { port: 0 } });
    // Something in every single-node panel: events of each outcome, a handler error, an alert.
    await client.publish([
      ev("counter", "d-1", 1),
      ev("counter", "d-1", 1),
      ev("counter", "", 1),
      ev("faulty", "d-2", 1, { boom: 1 }),
      ev("alarm", "d-3", 1, { level: 200 }),
    ]);
    const [port] = await freePorts(1);
    server = await PrometheusServer.start(t, { targets: [node.metricsAddress as string], port: port as number, scrapeIntervalS: 1 });
    const prom = server;
    await waitFor(async () => ((await prom.query("count_over_time(up[1m])"))[0]?.value ?? 0) >= 3, { timeoutMs: 20_000, what: "three scrapes of the node" });

    const dashboard = JSON.parse(readFileSync(DASHBOARD, "utf8")) as Dashboard;
    const queries = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel: panel.title, expr: target.expr })));
    assert.ok(queries.length >= 20, `only ${queries.length} queries in the dashboard`);
    for (const { panel, expr } of queries) {
      // Grafana fills in $__rate_interval; a few 1 s scrapes fit in 30 s.
      const result = await prom.query(expr.replaceAll("$__rate_interval", "30s"));
      // A single node has no cluster series, and sheds nothing here; every other panel shows data.
      if (!/cluster|replication|shed/.test(expr)) assert.ok(result.length > 0, `panel "${panel}": ${expr} found no series`);
    }
  });
});
