import assert from "node:assert/strict";
import { isTwinmeshError } from "../../../../runtime/errors.js";
import { CelFilter, type CelVariables, type FilterResult, MAX_FILTER_BYTES, TWIN_FILTER_VARIABLES } from "../../../../runtime/query/cel-filter.js";

/** A twin as queries see it: state parsed from stored JSON, so every number is a double. */
function twin(id: string, stateJson: string): { id: string; kind: string; state: unknown } {
  return { id, kind: "Pump", state: JSON.parse(stateJson) };
}

const PUMP = twin("p-12", '{"count":3,"ewma":130.5,"samples":7,"name":"north","alarm":true,"vitals":{"bpm":72},"tags":["a","b"],"empty":null}');

function run(expression: string, activation: Readonly<Record<string, unknown>> = PUMP): FilterResult {
  return CelFilter.compile(expression, TWIN_FILTER_VARIABLES).evaluate(activation);
}

/** Asserts that compiling fails with BAD_FILTER and returns the one violation's description. */
function compileError(expression: string, variables: CelVariables = TWIN_FILTER_VARIABLES, field?: string): string {
  try {
    CelFilter.compile(expression, variables, field);
  } catch (err) {
    assert.ok(isTwinmeshError(err));
    assert.equal(err.name, "InvalidArgumentError");
    assert.equal(err.reason, "BAD_FILTER");
    assert.equal(err.code, 3);
    assert.equal(err.violations.length, 1);
    const [violation] = err.violations;
    assert.ok(violation !== undefined);
    assert.equal(violation.field, field ?? "filter");
    return violation.description;
  }
  assert.fail(`expected ${JSON.stringify(expression)} not to compile`);
}

describe("CelFilter", () => {
  describe("compile", () => {
    it("matches every input, even one without variables, when the expression is empty or whitespace", () => {
      for (const expression of ["", "   ", "\n\t "]) {
        const filter = CelFilter.compile(expression, TWIN_FILTER_VARIABLES);
        assert.equal(filter.matchesAll, true);
        assert.deepEqual(filter.evaluate({}), { matched: true });
      }
    });

    it("reports a non-empty filter as not matching everything", () => {
      assert.equal(CelFilter.compile("true", TWIN_FILTER_VARIABLES).matchesAll, false);
    });

    it("rejects an undeclared variable with the CEL error, its position and the declared variables", () => {
      assert.equal(compileError("stat.x > 1.0"), "Unknown variable: stat at line 1, column 1; the filter may use id (string), kind (string), state (map)");
    });

    it("puts the expression and the CEL error in the message and names the request field in the violation", () => {
      try {
        CelFilter.compile("state.ewma >", TWIN_FILTER_VARIABLES, "query.filter");
        assert.fail("expected a BAD_FILTER error");
      } catch (err) {
        assert.ok(isTwinmeshError(err));
        assert.equal(err.message, 'query.filter "state.ewma >" is not a valid filter: Unexpected token: EOF at line 1, column 13');
        assert.deepEqual(err.violations, [{ field: "query.filter", description: "Unexpected token: EOF at line 1, column 13" }]);
      }
    });

    it("reports the line and column of an error on a later line of a multi-line filter", () => {
      assert.equal(
        compileError("state.ewma > 1.0 &&\n  foo"),
        "Unknown variable: foo at line 2, column 3; the filter may use id (string), kind (string), state (map)",
      );
    });

    it("rejects comparing a string variable with an int, which CEL does not define", () => {
      assert.equal(compileError("id == 3"), "no such overload: string == int at line 1, column 1");
    });

    it("rejects a filter whose static type is not bool", () => {
      assert.equal(
        compileError("state.count + 1.0"),
        "a filter must evaluate to a bool, but this one has type double; make it a comparison or a test, e.g. `state.ewma > 120.0`",
      );
    });

    it("rejects an invalid matches() pattern literal at compile time rather than on every twin", () => {
      assert.equal(
        compileError('id.matches("[")'),
        'matches() pattern "[" is not a valid RE2 regular expression (missing closing ]: `[`) at line 1, column 12',
      );
    });

    it("rejects a pattern RE2 does not support (a backreference, a lookahead), naming the problem", () => {
      assert.equal(
        compileError('id.matches("(a)\\\\1")'),
        'matches() pattern "(a)\\\\1" is not a valid RE2 regular expression (invalid escape sequence: `\\1` (RE2 has no backreferences)) at line 1, column 12',
      );
      assert.match(
        compileError('state.tags.exists(t, t.matches("a(?=b)"))'),
        /pattern "a\(\?=b\)" is not a valid RE2 regular expression \(invalid or unsupported Perl syntax/,
      );
    });

    it("accepts an expression of exactly the byte limit", () => {
      const expression = `id == "${"x".repeat(MAX_FILTER_BYTES - 'id == ""'.length)}"`;
      assert.equal(Buffer.byteLength(expression), MAX_FILTER_BYTES);
      assert.deepEqual(CelFilter.compile(expression, TWIN_FILTER_VARIABLES).evaluate(PUMP), { matched: false });
    });

    it("rejects an expression one byte over the limit", () => {
      assert.equal(
        compileError(`id == "${"x".repeat(MAX_FILTER_BYTES - 'id == ""'.length + 1)}"`),
        "it is 4097 bytes long and the limit is 4096 bytes; shorten it",
      );
    });

    it("counts the limit in UTF-8 bytes, so fewer than 4096 multi-byte characters can exceed it", () => {
      const expression = `id == "${"é".repeat(2100)}"`;
      assert.ok(expression.length < MAX_FILTER_BYTES);
      assert.equal(compileError(expression), "it is 4208 bytes long and the limit is 4096 bytes; shorten it");
    });

    it("rejects an expression with more AST nodes than the limit even when it is under the byte limit", () => {
      assert.equal(
        compileError(`${"1+".repeat(1100)}1 > 1`),
        "it is too complex (Exceeded maxAstNodes (1024)): a filter may have at most 1024 AST nodes, nested at most 32 deep; simplify it",
      );
    });

    it("rejects an expression nested deeper than the limit", () => {
      assert.equal(
        compileError(`${"(".repeat(40)}true${")".repeat(40)}`),
        "it is too complex (Exceeded maxDepth (32)): a filter may have at most 1024 AST nodes, nested at most 32 deep; simplify it",
      );
    });

    it("accepts a 200-clause && chain, so the node limit leaves room for long real filters", () => {
      const expression = Array.from({ length: 200 }, (_, i) => `state.f${i} > 1.0`).join(" && ");
      assert.deepEqual(CelFilter.compile(expression, TWIN_FILTER_VARIABLES).evaluate(twin("t", '{"f0":0}')), {
        matched: false,
      });
    });
  });

  describe("evaluate on JSON state", () => {
    it("compares a JSON number with a double literal", () => {
      assert.deepEqual(run("state.ewma > 120.0"), { matched: true });
      assert.deepEqual(run("state.ewma > 130.5"), { matched: false });
    });

    it("compares a JSON number with an int literal, as CEL's heterogeneous numeric comparison defines", () => {
      assert.deepEqual(run("state.samples >= 5"), { matched: true });
      assert.deepEqual(run("state.samples >= 8"), { matched: false });
      assert.deepEqual(run("state.samples < 8"), { matched: true });
    });

    it("treats a JSON 3 as equal to the int literal 3 and a JSON 3.5 as not equal", () => {
      assert.deepEqual(run("state.count == 3"), { matched: true });
      assert.deepEqual(run("state.count != 3"), { matched: false });
      assert.deepEqual(run("state.count == 3", twin("p-1", '{"count":3.5}')), { matched: false });
      assert.deepEqual(run("state.count == 3", twin("p-1", '{"count":3.0}')), { matched: true });
    });

    it("finds a JSON number in a list of int literals with in", () => {
      assert.deepEqual(run("state.count in [1, 2, 3]"), { matched: true });
      assert.deepEqual(run("state.count in [4, 5]"), { matched: false });
    });

    it("evaluates the benchmark filter over many twins and matches exactly the expected ids", () => {
      const filter = CelFilter.compile('state.count >= 5.0 && id.startsWith("p-1")', TWIN_FILTER_VARIABLES);
      const twins = Array.from({ length: 20 }, (_, i) => twin(`p-${i}`, JSON.stringify({ count: i % 10 })));
      const matched = twins.filter((t) => {
        const result = filter.evaluate(t);
        assert.ok(!("error" in result));
        return result.matched;
      });
      assert.deepEqual(
        matched.map((t) => t.id),
        ["p-15", "p-16", "p-17", "p-18", "p-19"],
      );
    });

    it("supports startsWith, endsWith, contains and matches on strings", () => {
      assert.deepEqual(run('id.startsWith("p-1")'), { matched: true });
      assert.deepEqual(run('id.endsWith("12")'), { matched: true });
      assert.deepEqual(run('state.name.contains("ort")'), { matched: true });
      assert.deepEqual(run('id.matches("^p-[0-9]+$")'), { matched: true });
      assert.deepEqual(run('kind.matches("^Valve")'), { matched: false });
    });

    it("supports in over a state list, has() on present and absent fields, and size()", () => {
      assert.deepEqual(run('"a" in state.tags'), { matched: true });
      assert.deepEqual(run('"z" in state.tags'), { matched: false });
      assert.deepEqual(run("has(state.ewma)"), { matched: true });
      assert.deepEqual(run("has(state.pressure)"), { matched: false });
      assert.deepEqual(run("size(state.tags) == 2"), { matched: true });
      assert.deepEqual(run('kind in ["Pump", "Valve"]'), { matched: true });
    });

    it("reads nested state fields and list macros", () => {
      assert.deepEqual(run("state.vitals.bpm > 70"), { matched: true });
      assert.deepEqual(run('state.tags.exists(t, t == "b")'), { matched: true });
      assert.deepEqual(run("state.empty == null"), { matched: true });
    });

    it("accepts a bool-valued state field as the whole filter", () => {
      assert.deepEqual(run("state.alarm"), { matched: true });
    });

    it("does not expose inherited properties of the state object as fields", () => {
      assert.deepEqual(run("has(state.constructor)"), { matched: false });
      assert.deepEqual(run('"toString" in state'), { matched: false });
    });
  });

  describe("evaluate errors", () => {
    it("returns an error naming the key and its position when a state field is missing", () => {
      assert.deepEqual(run("state.missing > 1.0"), { error: "No such key: missing at line 1, column 7" });
    });

    it("returns an error when a state field has a type the comparison does not accept", () => {
      assert.deepEqual(run("state.name > 1.0"), { error: "no such overload: dyn<string> > double at line 1, column 1" });
    });

    it("returns an error with a hint when int and double meet in arithmetic", () => {
      assert.deepEqual(run("state.count + 1 > 2.0"), {
        error:
          "no such overload: dyn<double> + int at line 1, column 1; state numbers are doubles and CEL does not mix int and double in arithmetic, so write 1.0 rather than 1",
      });
      assert.deepEqual(run("state.count + 1.0 > 3.5"), { matched: true });
    });

    it("returns an error rather than a match when a dyn filter evaluates to a non-bool", () => {
      assert.deepEqual(run("state.ewma"), { error: "filter must evaluate to a bool, got double (130.5)" });
      assert.deepEqual(run("state.tags"), { error: "filter must evaluate to a bool, got list" });
      assert.deepEqual(run("state.vitals"), { error: "filter must evaluate to a bool, got map" });
      assert.deepEqual(run("state.name"), { error: "filter must evaluate to a bool, got string" });
      assert.deepEqual(run("state.empty"), { error: "filter must evaluate to a bool, got null" });
    });

    it("lets || and && absorb an error when the other side decides the result", () => {
      assert.deepEqual(run('state.missing > 1.0 || id == "p-12"'), { matched: true });
      assert.deepEqual(run("state.missing > 1.0 && state.count == 4"), { matched: false });
      assert.deepEqual(run("has(state.missing) && state.missing > 1.0"), { matched: false });
    });

    it("returns an error instead of throwing when a variable is absent or has the wrong type", () => {
      assert.deepEqual(run("kind == 'x'", { id: "p-1", state: {} }), {
        error: "Unknown variable: kind at line 1, column 1",
      });
      assert.deepEqual(run("id == 'x'", { id: 1, kind: "Pump", state: {} }), {
        error: "Variable 'id' is not of type 'string', got 'double' at line 1, column 1",
      });
      assert.deepEqual(run("has(state.x)", { id: "p-1", kind: "Pump", state: null }), {
        error: "Variable 'state' is not of type 'map<dyn, dyn>', got 'null' at line 1, column 5",
      });
    });

    it("restores Error.stackTraceLimit after an evaluation that fails and after one that succeeds", () => {
      const before = Error.stackTraceLimit;
      assert.deepEqual(run("state.missing > 1.0"), { error: "No such key: missing at line 1, column 7" });
      assert.equal(Error.stackTraceLimit, before);
      assert.deepEqual(run("state.count == 3"), { matched: true });
      assert.equal(Error.stackTraceLimit, before);
    });

    it("returns an error for a division by zero", () => {
      assert.deepEqual(run("int(state.ewma) / 0 > 1"), { error: "division by zero at line 1, column 1" });
    });
  });

  describe("other variable types", () => {
    const ALERT_VARIABLES: CelVariables = {
      state: "string",
      severity: "string",
      count: "int",
      raised_at: "timestamp",
      acknowledged: "bool",
    };
    const raisedAt = Date.parse("2025-03-01T12:00:00Z");

    it("filters alert fields declared as strings", () => {
      const filter = CelFilter.compile('state == "OPEN" && severity == "critical"', ALERT_VARIABLES);
      const alert = { state: "OPEN", severity: "critical", count: 1n, raised_at: new Date(raisedAt), acknowledged: false };
      assert.deepEqual(filter.evaluate(alert), { matched: true });
      assert.deepEqual(filter.evaluate({ ...alert, severity: "warning" }), { matched: false });
    });

    it("binds an integral JS number to an int variable without modifying the caller's object", () => {
      const filter = CelFilter.compile("count >= 3 && !acknowledged", ALERT_VARIABLES);
      const alert = { state: "OPEN", severity: "info", count: 5, raised_at: raisedAt, acknowledged: false };
      assert.deepEqual(filter.evaluate(alert), { matched: true });
      assert.deepEqual(filter.evaluate({ ...alert, count: 2n }), { matched: false });
      assert.equal(alert.count, 5);
      assert.equal(alert.raised_at, raisedAt);
    });

    it("returns an error when an int variable gets a fractional number", () => {
      const filter = CelFilter.compile("count >= 3", ALERT_VARIABLES);
      assert.deepEqual(filter.evaluate({ count: 2.5 }), {
        error: "Variable 'count' is not of type 'int', got 'double' at line 1, column 1",
      });
    });

    it("binds a timestamp variable from a Date or from epoch milliseconds", () => {
      const filter = CelFilter.compile('raised_at > timestamp("2025-01-01T00:00:00Z")', ALERT_VARIABLES);
      assert.deepEqual(filter.evaluate({ raised_at: new Date(raisedAt) }), { matched: true });
      assert.deepEqual(filter.evaluate({ raised_at: raisedAt }), { matched: true });
      assert.deepEqual(filter.evaluate({ raised_at: Date.parse("2024-12-31T23:59:59Z") }), { matched: false });
    });

    it("rejects a twin variable in an alert filter at compile time", () => {
      assert.equal(
        compileError("id == 'x'", ALERT_VARIABLES),
        "Unknown variable: id at line 1, column 1; the filter may use state (string), severity (string), count (int), raised_at (timestamp), acknowledged (bool)",
      );
    });

    it("keeps variable sets apart when filters for twins and alerts compile alternately", () => {
      assert.deepEqual(run('state.name == "north"'), { matched: true });
      assert.deepEqual(CelFilter.compile('state == "OPEN"', ALERT_VARIABLES).evaluate({ state: "OPEN" }), {
        matched: true,
      });
      assert.deepEqual(run('state.name == "north"'), { matched: true });
    });
  });
});
