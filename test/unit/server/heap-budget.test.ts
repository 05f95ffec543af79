import assert from "node:assert/strict";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { pino } from "pino";
import { growthPercentFor, HeapBudget } from "../../../server/heap-budget.js";

const MiB = 2 ** 20;

/** A full collection, as V8 runs one under pressure. */
function collectGarbage(): void {
  setFlagsFromString("--expose-gc");
  (runInNewContext("gc") as () => void)();
}

async function until(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(check(), what);
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

  it("sets the growth after a full collection and gives V8 its policy back when stopped", async () => {
    const tight = new HeapBudget(1, pino({ level: "silent" }));
    const roomy = new HeapBudget(64 * 1024 * MiB, pino({ level: "silent" }));
    try {
      assert.equal(tight.growthPercent, 100, "until a full collection tells what is live, the heap may double");
      collectGarbage();
      await until(() => tight.growthPercent === 20, "a heap over its budget grows by the least step");
      assert.equal(roomy.growthPercent, 0, "a heap well inside its budget keeps V8's policy");
    } finally {
      tight.stop();
      roomy.stop();
    }
    assert.equal(tight.growthPercent, 0);
  });
});
