import assert from "node:assert/strict";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { pino } from "pino";
import { growthPercentFor, HeapBudget } from "../../../server/heap-budget.js";
import { waitFor } from "../../harness/wait-for.js";

const MiB = 2 ** 20;

/** A full collection, as V8 runs one under pressure. */
function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

describe("HeapBudget", () => {
  it("leaves V8's policy while even its largest growth stays inside the budget, and otherwise grows only as far as the budget", () => {
    assert.equal(growthPercentFor(320 * MiB, 50 * MiB), 0);
    assert.equal(growthPercentFor(320 * MiB, 80 * MiB), 0);
    assert.equal(growthPercentFor(320 * MiB, 160 * MiB), 100);
    assert.equal(growthPercentFor(320 * MiB, 200 * MiB), 60);
    assert.equal(growthPercentFor(320 * MiB, 300 * MiB), 20, "never below 20 %, or full collections would follow each other");
    assert.equal(growthPercentFor(320 * MiB, 900 * MiB), 20);
    assert.equal(growthPercentFor(320 * MiB, 0), 0);
  });

  it("asks for at most double until a full collection, then sets the growth from what survived, and gives V8 its policy back when closed", async () => {
    const budget = HeapBudget.start(1, pino({ level: "silent" }));
    try {
      assert.equal(budget.growthPercent, 100);
      assert.throws(() => HeapBudget.start(64 * MiB, pino({ level: "silent" })), { reason: "BAD_OPTION", message: /already running/ });
      collectGarbage();
      await waitFor(() => budget.growthPercent === 20, { timeoutMs: 2_000, what: "the least growth for a heap over its budget" });
    } finally {
      budget.close();
      budget.close();
    }
    assert.equal(budget.growthPercent, 0);
    const roomy = HeapBudget.start(64 * 1024 * MiB, pino({ level: "silent" }));
    try {
      collectGarbage();
      await waitFor(() => roomy.growthPercent === 0, { timeoutMs: 2_000, what: "V8's own policy for a heap well inside its budget" });
    } finally {
      roomy.close();
    }
  });

  it("refuses a budget that is not a positive whole number of bytes", () => {
    for (const bytes of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => HeapBudget.start(bytes, pino({ level: "silent" })), {
        reason: "BAD_OPTION",
        message: `heap budget is ${bytes}; use a whole number of bytes above 0`,
      });
    }
  });
});
