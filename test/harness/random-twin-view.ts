import { Prng } from "../../cli/simulator/index.js";
import type { JsonObject, JsonValue, TwinView } from "../../runtime/index.js";

/** A bench twin's view, the shape most snapshots in the benchmark have. */
export const BENCH_VIEW: TwinView = {
  kind: "bench",
  id: "t-123456",
  state: { value: 97.3, ewma: 96.1, count: 1234, min: 1.5, max: 140.2, group: "g-07", lastMs: 1795462404082 },
  version: 1234,
  lastSeq: 1234,
  lastEventTime: 1795462404082,
  ownerNodeId: "node-1",
};

/**
 * Seeded TwinViews for property tests of the QueryTwins codec: states that nest objects and
 * lists (some empty), with nulls, booleans, awkward numbers (-0, fractions, 2^53 and beyond,
 * subnormals, the largest double), strings with multi-byte and astral characters, a leading
 * U+FEFF, control characters, `__proto__` and integer-like keys, and now and then a string long
 * enough to need a two- or three-byte length; scalar fields at and around their varint boundaries.
 */
export function randomTwinViews(seed: string, count: number): TwinView[] {
  const rng = Prng.from(seed);
  return Array.from({ length: count }, () => randomTwinView(rng));
}

const NUMBERS = [
  0,
  -0,
  1,
  -1,
  0.5,
  -1.5,
  97.3,
  1795462404082,
  2 ** 31,
  2 ** 32 + 1,
  Number.MAX_SAFE_INTEGER,
  2 ** 53,
  2 ** 64,
  -(2 ** 63),
  1e-7,
  Number.MIN_VALUE,
  Number.MAX_VALUE,
  -Number.MAX_VALUE,
  Number.EPSILON,
];
const COUNTERS = [0, 1, 127, 128, 16_383, 16_384, 2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 49, Number.MAX_SAFE_INTEGER];
const EVENT_TIMES = [0, 1, 999, 1000, 1001, 1795462404000, 1795462404082, 253402300799999, Number.MAX_SAFE_INTEGER];
const WORDS = [
  "",
  "a",
  "ewma",
  "g-07",
  "north",
  "bed-4",
  "__proto__",
  "0",
  "12",
  "constructor",
  "toString",
  "with space",
  "tab\there",
  "nul\u0000",
  "new\nline",
];
const UNICODE = ["é", "ß", "€", "日本語", "Ελληνικά", "😀", "𝄞", "👩‍👩‍👧", "\u00a0", "\u2028", "\uFEFF", "\uFFFD", "\u07ff", "\u0800", "\uffff"];

function randomTwinView(rng: Prng): TwinView {
  const view = {
    kind: pickString(rng, 0.1),
    id: pickString(rng, 0.1),
    state: randomObject(rng, 0),
    version: randomCounter(rng),
    lastSeq: randomCounter(rng),
    ownerNodeId: rng.chance(0.2) ? "" : "node-1",
  };
  if (rng.chance(0.2)) return view;
  return { ...view, lastEventTime: rng.chance(0.5) ? pick(rng, EVENT_TIMES) : rng.int(0, 2 ** 45) };
}

function randomCounter(rng: Prng): number {
  return rng.chance(0.5) ? pick(rng, COUNTERS) : rng.int(0, 2 ** rng.int(1, 53) - 1);
}

function randomObject(rng: Prng, depth: number): JsonObject {
  const size = rng.chance(0.1) ? 0 : rng.int(1, depth === 0 ? 9 : 5);
  // fromEntries defines `__proto__` as an own key, as JSON.parse does.
  return Object.fromEntries(Array.from({ length: size }, () => [randomKey(rng), randomValue(rng, depth + 1)]));
}

function randomValue(rng: Prng, depth: number): JsonValue {
  const r = rng.next();
  if (r < 0.3) return rng.chance(0.4) ? pick(rng, NUMBERS) : randomNumber(rng);
  if (r < 0.5) return randomString(rng);
  if (r < 0.58) return rng.chance(0.5);
  if (r < 0.64) return null;
  if (depth >= 5) return randomString(rng);
  if (r < 0.82) return randomObject(rng, depth);
  const length = rng.chance(0.15) ? 0 : rng.int(1, 6);
  return Array.from({ length }, () => randomValue(rng, depth + 1));
}

function randomNumber(rng: Prng): number {
  switch (rng.int(0, 3)) {
    case 0:
      return rng.int(-1_000_000, 1_000_000);
    case 1:
      return rng.range(-1e6, 1e6);
    case 2:
      return rng.normal(0, 1) * 10 ** rng.int(-300, 300);
    default:
      return Math.round(rng.range(0, 1000) * 10) / 10;
  }
}

function randomKey(rng: Prng): string {
  if (rng.chance(0.3)) return pick(rng, WORDS);
  if (rng.chance(0.1)) return randomString(rng);
  return `k${rng.int(0, 40)}`;
}

function randomString(rng: Prng): string {
  const r = rng.next();
  // 200 and 20,000 bytes: lengths of two and three varint bytes, for the string and each field around it.
  if (r < 0.02) return "x".repeat(rng.int(128, 300));
  if (r < 0.025) return "é".repeat(rng.int(8_200, 10_000));
  return pickString(rng, 0.05);
}

function pickString(rng: Prng, emptyChance: number): string {
  if (rng.chance(emptyChance)) return "";
  let s = "";
  for (let i = rng.int(1, 4); i > 0; i--) s += rng.chance(0.3) ? pick(rng, UNICODE) : pick(rng, WORDS);
  return s;
}

function pick<T>(rng: Prng, values: readonly T[]): T {
  const value = values[rng.int(0, values.length - 1)];
  if (value === undefined) throw new Error("pick from an empty list");
  return value;
}
