/**
 * The regular-expression engine of CEL's `matches()`: RE2 semantics in linear time, as the CEL
 * specification asks, so no pattern can make a filter backtrack exponentially.
 *
 * Built on `re2js` (a pure-JS port of RE2), chosen by measurement on Node 20 against `re2-wasm`
 * and the native `re2` binding (see docs/architecture.md, "Queries"): `^bed-[0-9]+$` matches in
 * about 0.1–1.3 µs and compiles in about 60–160 µs (so compiled patterns are cached), and
 * `^(a+)+$` against 31 `a`s and `!` answers in about 3 µs where JavaScript's backtracking `RegExp`
 * takes minutes.
 */
import { RE2JS } from "re2js";

/** The most compiled patterns kept; the least recently used goes first. */
export const MAX_CACHED_PATTERNS = 256;

/** A pattern RE2 cannot compile (a backreference, a lookahead, a bad repeat count…). */
export class PatternSyntaxError extends Error {
  override readonly name = "PatternSyntaxError";
  constructor(
    readonly pattern: string,
    /** What RE2 objects to, e.g. ``invalid escape sequence: `\1` ``. */
    readonly problem: string,
  ) {
    super(`${JSON.stringify(pattern)} is not a valid RE2 pattern: ${problem}`);
  }
}

// Insertion order is recency order: a hit moves its entry to the end.
const cache = new Map<string, RE2JS | PatternSyntaxError>();
// A filter evaluates the same literal pattern on every twin: the last one skips the map.
let last: { pattern: string; compiled: RE2JS } | undefined;

/**
 * The compiled form of `pattern`, from a bounded cache.
 * @throws PatternSyntaxError when RE2 cannot compile it (cached too: a bad pattern in a filter
 *   fails on every twin, and should cost one compilation).
 */
export function compilePattern(pattern: string): RE2JS {
  if (last !== undefined && last.pattern === pattern) return last.compiled;
  let entry = cache.get(pattern);
  if (entry === undefined) {
    try {
      entry = RE2JS.compile(pattern);
    } catch (err) {
      entry = new PatternSyntaxError(pattern, describeSyntaxError(err));
    }
    if (cache.size >= MAX_CACHED_PATTERNS) cache.delete(cache.keys().next().value as string);
  } else {
    cache.delete(pattern);
  }
  cache.set(pattern, entry);
  if (entry instanceof PatternSyntaxError) throw entry;
  last = { pattern, compiled: entry };
  return entry;
}

/**
 * CEL `text.matches(pattern)`: true when the pattern matches any part of `text` (anchor it with
 * `^…$` to match the whole).
 * @throws PatternSyntaxError for an invalid pattern.
 */
export function re2Matches(text: string, pattern: string): boolean {
  return compilePattern(pattern).test(text);
}

/** The reason of a pattern RE2 refuses, or undefined when it compiles. */
export function patternProblem(pattern: string): string | undefined {
  try {
    compilePattern(pattern);
    return undefined;
  } catch (err) {
    if (err instanceof PatternSyntaxError) return err.problem;
    throw err;
  }
}

function describeSyntaxError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  // re2js says "error parsing regexp: invalid escape sequence: `\1`"; the prefix adds nothing.
  const problem = message.replace(/^error parsing regexp: /, "");
  return /invalid escape sequence: `\\[1-9]/.test(message) ? `${problem} (RE2 has no backreferences)` : problem;
}
