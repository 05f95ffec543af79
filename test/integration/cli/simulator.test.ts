import assert from "node:assert/strict";
import { runSimulator, type SimulatorProgress } from "../../../cli/simulator/index.js";
import { TwinmeshClient } from "../../../client/index.js";
import { NodeProcess } from "../../harness/node-process.js";
import { waitFor } from "../../harness/wait-for.js";

/** Ids of every twin of a kind, in id order. */
async function twinIds(client: TwinmeshClient, kind: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const message of client.queryTwins({ kind })) for (const twin of message.twins) ids.push(twin.id);
  return ids;
}

function numbered(prefix: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `${prefix}-${i + 1}`).sort();
}

describe("runSimulator against a node process", () => {
  let node: NodeProcess;
  let client: TwinmeshClient;

  beforeEach(async () => {
    node = await NodeProcess.start();
    client = new TwinmeshClient(node.address);
  });

  afterEach(async function () {
    client.close();
    node.reportIfFailed(this);
    await node.stop();
  });

  it("creates the twins of every kind in a one-second run of 20 sources, with nothing rejected", async () => {
    const stop = new AbortController();
    const progress: SimulatorProgress[] = [];
    const run = runSimulator({
      address: node.address,
      sources: 20,
      ratePerSecond: 200,
      signal: stop.signal,
      seed: 42,
      progressIntervalMs: 100,
      onProgress: (p) => progress.push(p),
    });
    // A second of sending: every device has reported about 10 times.
    await waitFor(() => (progress.at(-1)?.elapsedMs ?? 0) >= 1_000, { timeoutMs: 10_000, what: "the simulator to run for a second" });
    stop.abort();
    const totals = await run;

    assert.deepEqual(totals.devices, { patient: 12, vehicle: 6, pump: 2 });
    assert.equal(totals.rejected, 0, `rejections: ${JSON.stringify(totals.rejections)}`);
    assert.deepEqual(totals.rejections, []);
    assert.equal(totals.duplicate, 0);
    assert.equal(totals.pending, 0);
    assert.equal(totals.accepted, totals.pushed);
    assert.ok(totals.pushed >= 180 && totals.pushed <= 260, `about 200 events in about a second, got ${totals.pushed}`);

    assert.deepEqual(await twinIds(client, "patient"), numbered("patient", 12));
    assert.deepEqual(await twinIds(client, "vehicle"), numbered("vehicle", 6));
    assert.deepEqual(await twinIds(client, "pump"), numbered("pump", 2));
    // Patients report to their wards, and vehicles to their fleets, by message after their turn.
    await waitFor(async () => (await twinIds(client, "ward")).join() === "ward-a,ward-b,ward-c,ward-d", { timeoutMs: 10_000, what: "the four wards" });
    await waitFor(async () => (await twinIds(client, "fleet")).join() === "fleet-a,fleet-b", { timeoutMs: 10_000, what: "the two fleets" });

    // Every event of a device was applied once: its twin's last seq counts them.
    const { twin } = await client.getTwin({ kind: "patient", id: "patient-1" });
    assert.equal(twin?.state?.ward, "ward-a");
    assert.equal(Number(twin?.state?.samples), Number((twin?.lastSeq ?? 0n) % 1000n));
  });

  it("continues a restarted run above the previous run's seqs, so nothing is taken for a duplicate", async () => {
    for (let run = 0; run < 2; run++) {
      const stop = new AbortController();
      const done = runSimulator({
        address: node.address,
        sources: 3,
        ratePerSecond: 300,
        signal: stop.signal,
        progressIntervalMs: 50,
        onProgress: (p) => p.accepted >= 30 && stop.abort(),
      });
      const totals = await done;
      assert.equal(totals.duplicate, 0);
      assert.equal(totals.rejected, 0);
    }
    const { twin } = await client.getTwin({ kind: "patient", id: "patient-1" });
    assert.ok((twin?.state?.samples as number) >= 20, `patient-1 has the readings of both runs: ${JSON.stringify(twin?.state)}`);
  });
});
