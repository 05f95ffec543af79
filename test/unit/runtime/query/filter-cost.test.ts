import assert from "node:assert/strict";
import { isTwinmeshError } from "../../../../runtime/errors.js";
import { CelFilter, TWIN_FILTER_VARIABLES } from "../../../../runtime/query/cel-filter.js";
import { DEFAULT_MAX_FILTER_COST } from "../../../../runtime/query/query-options.js";

const LIST = Array.from({ length: 20 }, (_, i) => i);
const TWIN = { id: "t-1", kind: "Pump", state: { a: LIST, b: LIST, c: LIST, d: LIST, m: { x: 1, y: 2 }, name: "n".repeat(1000) } };
const FOUR_NESTED = "state.a.exists(w, state.b.exists(x, state.c.exists(y, state.d.exists(z, z < 0.0))))";
const THREE_NESTED = "state.a.exists(w, state.b.exists(x, state.c.exists(y, y < 0.0)))";

/** The QueryLimitError an evaluation throws. */
function costError(expression: string, maxCost?: number): Error & { reason: string; limit: string; code: number } {
  const filter = CelFilter.compile(expression, TWIN_FILTER_VARIABLES, "filter", { maxCost });
  try {
    filter.evaluate(TWIN);
  } catch (err) {
    assert.ok(isTwinmeshError(err));
    return err as unknown as Error & { reason: string; limit: string; code: number };
  }
  assert.fail(`expected ${expression} to run over its budget`);
}

describe("CelFilter cost budget", () => {
  it("stops four nested exists over 20-element lists (168,420 units) with FILTER_COST_EXCEEDED naming the option", () => {
    const err = costError(FOUR_NESTED);
    assert.equal(err.code, 8);
    assert.equal(err.reason, "FILTER_COST_EXCEEDED");
    assert.equal(err.limit, "maxFilterCost");
    assert.match(err.message, new RegExp(`costs more than ${DEFAULT_MAX_FILTER_COST} units on one input`));
    assert.match(err.message, /--max-filter-cost/);
  });

  it("evaluates three nested exists (8,420 units) under the default budget", () => {
    assert.deepEqual(CelFilter.compile(THREE_NESTED, TWIN_FILTER_VARIABLES).evaluate(TWIN), { matched: false });
  });

  it("counts one unit per element of every comprehension macro, maps' keys included", () => {
    // 20 + 20 * 20 = 420 units: exactly at a budget of 420 it passes, at 419 it stops.
    const nested = "state.a.all(x, state.b.map(y, y).size() == 20)";
    assert.deepEqual(CelFilter.compile(nested, TWIN_FILTER_VARIABLES, "filter", { maxCost: 420 }).evaluate(TWIN), { matched: true });
    assert.equal(costError(nested, 419).reason, "FILTER_COST_EXCEEDED");
    for (const macro of ["state.a.filter(x, x > 1.0).size() > 0", "state.a.exists_one(x, x == 1.0)", "state.a.map(x, x * 2.0).size() > 0"]) {
      assert.deepEqual(CelFilter.compile(macro, TWIN_FILTER_VARIABLES, "filter", { maxCost: 20 }).evaluate(TWIN), { matched: true }, macro);
      assert.equal(costError(macro, 19).reason, "FILTER_COST_EXCEEDED", macro);
    }
    assert.equal(costError("state.m.exists(k, k == 'z')", 1).reason, "FILTER_COST_EXCEEDED");
  });

  it("charges matches() one unit plus one per 10 characters of text", () => {
    // 1 + 1000 / 10 = 101 units.
    assert.deepEqual(CelFilter.compile('state.name.matches("^n+$")', TWIN_FILTER_VARIABLES, "filter", { maxCost: 101 }).evaluate(TWIN), { matched: true });
    assert.equal(costError('state.name.matches("^n+$")', 100).reason, "FILTER_COST_EXCEEDED");
  });

  it("reports the overrun even where || or exists would absorb the error, and starts each evaluation afresh", () => {
    assert.equal(costError(`${FOUR_NESTED} || true`).reason, "FILTER_COST_EXCEEDED");
    assert.equal(costError(`state.a.exists(q, ${FOUR_NESTED})`).reason, "FILTER_COST_EXCEEDED");
    const filter = CelFilter.compile("state.a.exists(x, x == 19.0)", TWIN_FILTER_VARIABLES, "filter", { maxCost: 20 });
    for (let i = 0; i < 3; i++) assert.deepEqual(filter.evaluate(TWIN), { matched: true });
  });

  it("marks filters with a comprehension, matches() or cel.bind as costly, and plain comparisons as not", () => {
    const costly = (e: string): boolean => CelFilter.compile(e, TWIN_FILTER_VARIABLES).costly;
    assert.equal(costly('state.count > 1.0 && id.startsWith("p-") && state.name.contains("x")'), false);
    assert.equal(costly("has(state.name)"), false);
    assert.equal(costly('id.matches("^p")'), true);
    assert.equal(costly("state.a.exists(x, x > 1.0)"), true);
    assert.equal(costly("cel.bind(x, id, x.size() > 1)"), true);
  });
});
