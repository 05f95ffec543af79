import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import type { Alert, TwinmeshClient } from "../../client/index.js";
import { AlertState } from "../../client/index.js";
import { ev } from "../harness/events.js";
import { clientError } from "../harness/grpc-status.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

/** Every alert matching `filter`, following the page tokens; also returns how many pages it took. */
async function listAll(client: TwinmeshClient, filter = "", pageSize = 0): Promise<{ alerts: Alert[]; pages: number; cursor: string }> {
  const alerts: Alert[] = [];
  let pageToken = "";
  let pages = 0;
  let cursor = "";
  do {
    const page = await client.listAlerts({ filter, pageSize, pageToken });
    alerts.push(...page.alerts);
    if (pages === 0) cursor = page.cursor;
    pages++;
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return { alerts, pages, cursor };
}

/** Raises alert `high` on alarm twins `ids` (seq 1). */
async function raise(client: TwinmeshClient, ids: string[], seq = 1, level = 120): Promise<void> {
  for (let i = 0; i < ids.length; i += 5_000) {
    const res = await client.publish(ids.slice(i, i + 5_000).map((id) => ev("alarm", id, seq, { level })));
    assert.ok(
      res.results.every((r) => r.reason === ""),
      "every event accepted",
    );
  }
}

describe("AlertService paging and resolved-alert retention", () => {
  const t = useTestScope();

  it("pages through many alerts with every page size, returning every alert exactly once, in id order", async () => {
    const { client } = await startNode(t);
    const ids = Array.from({ length: 250 }, (_, i) => `a-${i}`);
    await raise(client, ids);
    for (const pageSize of [3, 7, 100, 250, 1_000]) {
      const { alerts, pages } = await listAll(client, "", pageSize);
      assert.equal(alerts.length, 250, `page size ${pageSize}`);
      assert.equal(new Set(alerts.map((a) => a.id)).size, 250);
      const sorted = alerts.map((a) => a.id).sort();
      assert.deepEqual(
        alerts.map((a) => a.id),
        sorted,
      );
      assert.equal(pages, Math.ceil(250 / pageSize), `page size ${pageSize}: full pages, and no empty one at the end`);
    }
  });

  it("answers a rarely matching filter with short pages and a next token, reading a bounded number of alerts per page", async function () {
    this.timeout(60_000);
    const { client } = await startNode(t);
    // More alerts than one page reads (10,000): the only match sorts last.
    const ids = Array.from({ length: 10_050 }, (_, i) => `b-${String(i).padStart(5, "0")}`);
    await raise(client, ids);
    const first = await client.listAlerts({ filter: 'twin_id == "b-10049"', pageSize: 10 });
    assert.deepEqual(first.alerts, [], "the first page read its budget without a match");
    assert.notEqual(first.nextPageToken, "");
    const second = await client.listAlerts({ filter: 'twin_id == "b-10049"', pageSize: 10, pageToken: first.nextPageToken });
    assert.deepEqual(
      second.alerts.map((a) => a.twinId),
      ["b-10049"],
    );
    assert.equal(second.nextPageToken, "");
  });

  it("trims resolved alerts past the retention, keeping open and acknowledged ones, so ListAlerts no longer returns them", async () => {
    const node = await startNode(t, { hostOptions: { resolvedAlertRetentionMs: 300, retentionSweepMs: 20 } });
    const { client } = node;
    await raise(client, ["r-1", "r-2", "r-3"]);
    const { alerts } = await listAll(client);
    const ackId = alerts.find((a) => a.twinId === "r-2")?.id ?? "";
    await client.acknowledgeAlert(ackId);
    // r-1 resolves (level below 50); r-3 stays open.
    await client.publish([ev("alarm", "r-1", 2, { level: 10 })]);
    const resolvedId = alerts.find((a) => a.twinId === "r-1")?.id ?? "";
    assert.equal((await listAll(client)).alerts.find((a) => a.id === resolvedId)?.state, AlertState.RESOLVED);
    await waitFor(async () => !(await listAll(client)).alerts.some((a) => a.id === resolvedId), {
      timeoutMs: 10_000,
      what: "the resolved alert to be trimmed",
    });
    assert.deepEqual(
      (await listAll(client)).alerts.map((a) => [a.twinId, AlertState[a.state]]),
      [
        ["r-2", "ACKNOWLEDGED"],
        ["r-3", "OPEN"],
      ],
    );
    const gone = await clientError(client.resolveAlert(resolvedId));
    assert.equal(gone.code, grpc.status.NOT_FOUND);
    // The change log keeps its own retention: a watch from before still sees the resolution.
    // A new raise on the same twin opens a new alert, kept while open.
    await raise(client, ["r-1"], 3);
    assert.deepEqual(
      (await listAll(client)).alerts.map((a) => a.twinId),
      ["r-1", "r-2", "r-3"],
    );
  });

  it("keeps resolved alerts within the retention", async () => {
    const node = await startNode(t, { hostOptions: { resolvedAlertRetentionMs: 60_000 } });
    const { client } = node;
    await raise(client, ["k-1"]);
    await client.publish([ev("alarm", "k-1", 2, { level: 10 })]);
    const resolved = (await listAll(client)).alerts;
    assert.deepEqual(
      resolved.map((a) => AlertState[a.state]),
      ["RESOLVED"],
    );
    assert.equal(await node.node.runtime.alertRetention.trim(), 0);
    assert.deepEqual((await listAll(client)).alerts, resolved);
  });
});
