import assert from "node:assert/strict";
import { serializeRecord } from "../../../../runtime/host/twin-record.js";
import { silentLogger } from "../../../../runtime/index.js";
import { TWIN_FILTER_VARIABLES } from "../../../../runtime/query/cel-filter.js";
import { FilterOutcome } from "../../../../runtime/query/filter-job.js";
import { FilterPool } from "../../../../runtime/query/filter-pool.js";

function pool(): FilterPool {
  return new FilterPool({ workers: 1, maxQueued: 4, heapMb: 64, log: silentLogger() });
}

const twin = (id: string, value: number): readonly [string, string] => [id, serializeRecord({ sv: 1, ver: 1, hw: 1 }, JSON.stringify({ value }))];

describe("FilterPool", () => {
  it("evaluates a chunk of stored twins on a worker, one outcome per twin", async () => {
    const p = pool();
    try {
      const reply = await p.run({
        expression: "state.value > 1.0",
        variables: TWIN_FILTER_VARIABLES,
        maxCost: 10_000,
        records: { kind: "k", stateVersion: 1, entries: [twin("a", 2), twin("b", 0)] },
      });
      assert.ok("outcomes" in reply);
      assert.deepEqual([...reply.outcomes], [FilterOutcome.MATCHED, FilterOutcome.NOT_MATCHED]);
    } finally {
      await p.close();
    }
  });

  it("answers work it can no longer do after close with a retryable SHUTTING_DOWN, not an internal error", async () => {
    const p = pool();
    const job = { expression: "true", variables: TWIN_FILTER_VARIABLES, maxCost: 10_000, activations: [{ id: "a", kind: "k", state: {} }] };
    const running = p.run(job);
    const closing = p.close();
    await assert.rejects(running, { name: "UnavailableError", reason: "SHUTTING_DOWN", retryable: true });
    await closing;
    await assert.rejects(p.run(job), { name: "UnavailableError", reason: "SHUTTING_DOWN" });
  });

  it("terminates the worker of a cancelled job and answers the next job on a new one", async () => {
    const p = pool();
    try {
      const controller = new AbortController();
      const runaway = p.run(
        {
          expression: "state.xs.exists(a, state.xs.exists(b, state.xs.exists(c, state.xs.exists(d, a + b + c + d < 0))))",
          variables: TWIN_FILTER_VARIABLES,
          maxCost: Number.MAX_SAFE_INTEGER,
          activations: [{ id: "a", kind: "k", state: { xs: Array.from({ length: 60 }, (_, i) => i) } }],
        },
        controller.signal,
      );
      setTimeout(() => controller.abort(new Error("deadline")), 50);
      await assert.rejects(runaway, /deadline/);
      assert.equal(p.stats.terminated, 1);
      const reply = await p.run({ expression: "true", variables: TWIN_FILTER_VARIABLES, maxCost: 10_000, activations: [{ id: "b", kind: "k", state: {} }] });
      assert.ok("outcomes" in reply);
      assert.equal(p.stats.started, 2);
    } finally {
      await p.close();
    }
  });
});
