import assert from "node:assert/strict";
import { CelFilter, TWIN_FILTER_VARIABLES } from "../../../../runtime/query/cel-filter.js";
import { compilePattern, MAX_CACHED_PATTERNS, PatternSyntaxError, patternProblem, re2Matches } from "../../../../runtime/query/re2-patterns.js";

describe("re2Matches", () => {
  it("answers the catastrophic-backtracking pattern ^(a+)+$ against 31 a's and a ! at once, and false", () => {
    const text = `${"a".repeat(31)}!`;
    // No timing threshold: a backtracking engine would take minutes here (each extra a doubles it).
    assert.equal(re2Matches(text, "^(a+)+$"), false);
    assert.equal(re2Matches("a".repeat(31), "^(a+)+$"), true);
  });

  it("follows CEL's matches(): true when the pattern matches any part of the text, RE2 syntax", () => {
    assert.equal(re2Matches("bed-12", "^bed-[0-9]+$"), true);
    assert.equal(re2Matches("ward bed-12 north", "bed-[0-9]+"), true);
    assert.equal(re2Matches("ward-a", "^bed-[0-9]+$"), false);
    assert.equal(re2Matches("BED-1", "(?i)^bed"), true);
    assert.equal(re2Matches("é", "^\\pL$"), true);
  });

  it("refuses backreferences and lookarounds with the RE2 reason", () => {
    assert.equal(patternProblem("(a)\\1"), "invalid escape sequence: `\\1` (RE2 has no backreferences)");
    assert.equal(patternProblem("(?=a)"), "invalid or unsupported Perl syntax: `(?=`");
    assert.equal(patternProblem("^bed-[0-9]+$"), undefined);
    assert.throws(() => re2Matches("a", "a{1001}"), PatternSyntaxError);
  });

  it("caches a compiled pattern and keeps at most MAX_CACHED_PATTERNS, dropping the least recently used", () => {
    const first = compilePattern("^cache-0$");
    assert.equal(compilePattern("^cache-0$"), first);
    for (let i = 1; i <= MAX_CACHED_PATTERNS; i++) compilePattern(`^cache-${i}$`);
    assert.notEqual(compilePattern("^cache-0$"), first, "the oldest pattern was evicted");
    const recent = compilePattern(`^cache-${MAX_CACHED_PATTERNS}$`);
    assert.equal(compilePattern(`^cache-${MAX_CACHED_PATTERNS}$`), recent);
  });

  it("backs CEL matches() in filters, for a dynamic receiver and pattern too", () => {
    const twin = { id: `${"a".repeat(31)}!`, kind: "Pump", state: { name: "bed-12", pattern: "^bed-" } };
    assert.deepEqual(CelFilter.compile('id.matches("^(a+)+$")', TWIN_FILTER_VARIABLES).evaluate(twin), { matched: false });
    assert.deepEqual(CelFilter.compile("state.name.matches(state.pattern)", TWIN_FILTER_VARIABLES).evaluate(twin), { matched: true });
    const bad = CelFilter.compile('state.name.matches(state.name + "(")', TWIN_FILTER_VARIABLES).evaluate(twin);
    assert.ok("error" in bad);
    assert.match(bad.error, /matches\(\): "bed-12\(" is not a valid RE2 pattern: missing closing \)/);
  });
});
