/**
 * Field paths into a twin (`id`, `kind`, `state.ewma`, `state.vitals.bpm`), as used by QueryTwins
 * `order_by` and AggregateTwins `field` and `group_by`, and the total order that `order_by` sorts by.
 */
import { InvalidArgumentError } from "../errors.js";

/** The most segments after `state.` a field path may have. */
export const MAX_FIELD_PATH_DEPTH = 16;
/** The longest field path accepted, in characters. */
export const MAX_FIELD_PATH_LENGTH = 256;

/** What a field path reads from: a twin's id, kind and JSON state. */
export interface TwinFields {
  readonly id: string;
  readonly kind: string;
  readonly state: unknown;
}

/** Reads one field of a twin; `undefined` when the field is absent. */
export type FieldGetter = (twin: TwinFields) => unknown;

/** A validated field path and its getter. */
export interface FieldPath {
  /** The path as written, without surrounding whitespace, e.g. `state.vitals.bpm`. */
  readonly path: string;
  /** Its segments, e.g. `["state", "vitals", "bpm"]`. */
  readonly segments: readonly string[];
  /**
   * Reads the field. It follows only the state's own properties through plain objects, so a path
   * through a number, a list or null, or to an inherited name such as `constructor`, is
   * `undefined`, as a missing key is.
   */
  readonly get: FieldGetter;
}

/** A parsed `order_by`: one field, ascending unless `descending`. */
export interface OrderBy {
  readonly path: FieldPath;
  readonly descending: boolean;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Parses a field path: `id`, `kind`, or `state.` followed by one or more identifier segments
 * (`[A-Za-z_][A-Za-z0-9_]*`), at most {@link MAX_FIELD_PATH_DEPTH} of them and
 * {@link MAX_FIELD_PATH_LENGTH} characters in all. Surrounding whitespace is ignored.
 *
 * @param path - The path from the request.
 * @param field - The request field that holds it (`field`, `group_by`, `order_by`), named in the error.
 * @throws InvalidArgumentError with reason `BAD_FIELD` and one violation on `field` when the path is
 *   not of that form.
 * @example
 * ```ts
 * const bpm = parseFieldPath("state.vitals.bpm", "field");
 * bpm.get({ id: "bed-4", kind: "Patient", state: { vitals: { bpm: 72 } } }); // 72
 * ```
 */
export function parseFieldPath(path: string, field: string): FieldPath {
  const text = path.trim();
  if (text.length > MAX_FIELD_PATH_LENGTH) {
    throw badField(field, path, `it is ${text.length} characters long and the limit is ${MAX_FIELD_PATH_LENGTH}`);
  }
  if (text === "id") return { path: text, segments: ["id"], get: getId };
  if (text === "kind") return { path: text, segments: ["kind"], get: getKind };

  const segments = text.split(".");
  if (segments[0] !== "state" || segments.length < 2) {
    throw badField(field, path, `it must be "id", "kind" or "state.<field>", e.g. "state.ewma" or "state.vitals.bpm"`);
  }
  const keys = segments.slice(1);
  if (keys.length > MAX_FIELD_PATH_DEPTH) {
    throw badField(field, path, `it has ${keys.length} segments after "state" and the limit is ${MAX_FIELD_PATH_DEPTH}`);
  }
  for (const key of keys) {
    if (!IDENTIFIER.test(key)) {
      throw badField(field, path, `segment ${JSON.stringify(key)} is not an identifier; segments are letters, digits and _ and do not start with a digit`);
    }
  }
  return { path: text, segments, get: stateGetter(keys) };
}

/**
 * Parses `order_by`: a field path ({@link parseFieldPath}) optionally followed by `asc` or `desc`
 * (any case), separated by whitespace. An empty `order_by` orders by `id` ascending, the order
 * pagination needs anyway.
 *
 * @param orderBy - The `order_by` text from the request.
 * @param field - The request field, named in the error.
 * @defaultValue `field` is `"order_by"`
 * @throws InvalidArgumentError with reason `BAD_FIELD` when the path is invalid, the direction is
 *   neither `asc` nor `desc`, or more than one field is given.
 * @example
 * ```ts
 * parseOrderBy("state.ewma desc"); // { path: { path: "state.ewma", ... }, descending: true }
 * ```
 */
export function parseOrderBy(orderBy: string, field = "order_by"): OrderBy {
  const words = orderBy.trim().split(/\s+/);
  const [pathText = "", direction, ...rest] = words;
  if (pathText === "") return { path: parseFieldPath("id", field), descending: false };
  if (orderBy.includes(",") || rest.length > 0) {
    throw badField(field, orderBy, `it must be one field path with an optional "asc" or "desc", e.g. "state.ewma desc"`);
  }
  let descending = false;
  if (direction !== undefined) {
    const lower = direction.toLowerCase();
    if (lower !== "asc" && lower !== "desc") {
      throw badField(field, orderBy, `the direction ${JSON.stringify(direction)} must be "asc" or "desc"`);
    }
    descending = lower === "desc";
  }
  return { path: parseFieldPath(pathText, field), descending };
}

/**
 * Compares two field values in ascending order across JSON types: numbers (by value), then strings
 * (by UTF-16 code units, the same on every node and in every locale), then booleans (false before
 * true), then everything else (null, absent, NaN, lists, maps), which compare equal.
 *
 * @returns A negative number, zero or a positive number, as `Array.prototype.sort` expects.
 */
export function compareFieldValues(a: unknown, b: unknown): number {
  const rankA = rank(a);
  const rankB = rank(b);
  return rankA !== rankB ? rankA - rankB : compareSameRank(rankA, a, b);
}

/**
 * A total order over twins for `order`: by the field's value as in {@link compareFieldValues},
 * reversed within each type when descending, then by `id`, then by `kind`. The type order does not
 * reverse, so twins without the field come last in both directions.
 */
export function compareTwins(order: OrderBy): (a: TwinFields, b: TwinFields) => number {
  const get = order.path.get;
  const sign = order.descending ? -1 : 1;
  return (a, b) => {
    const valueA = get(a);
    const valueB = get(b);
    const rankA = rank(valueA);
    const rankB = rank(valueB);
    if (rankA !== rankB) return rankA - rankB;
    const byValue = compareSameRank(rankA, valueA, valueB);
    if (byValue !== 0) return sign * byValue;
    // The tie-breaks make the order total, so pages and merged node results never disagree.
    if (a.id !== b.id) return a.id < b.id ? -1 : 1;
    return a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0;
  };
}

const RANK_NUMBER = 0;
const RANK_STRING = 1;
const RANK_BOOLEAN = 2;
const RANK_OTHER = 3;

function rank(value: unknown): number {
  switch (typeof value) {
    case "number":
      return Number.isNaN(value) ? RANK_OTHER : RANK_NUMBER;
    case "string":
      return RANK_STRING;
    case "boolean":
      return RANK_BOOLEAN;
    default:
      return RANK_OTHER;
  }
}

function compareSameRank(valueRank: number, a: unknown, b: unknown): number {
  if (valueRank === RANK_OTHER) return 0;
  // Same rank, so both are numbers, both strings or both booleans; `<` orders each (false < true).
  const x = a as number | string | boolean;
  const y = b as number | string | boolean;
  return x < y ? -1 : x > y ? 1 : 0;
}

function getId(twin: TwinFields): unknown {
  return twin.id;
}

function getKind(twin: TwinFields): unknown {
  return twin.kind;
}

/** The value of own property `key` of a plain JSON object; `undefined` for anything else. */
function child(value: unknown, key: string): unknown {
  return typeof value === "object" && value !== null && !Array.isArray(value) && Object.hasOwn(value, key)
    ? (value as Record<string, unknown>)[key]
    : undefined;
}

// The getter runs once per twin per comparison, so the common depths get a closure without a loop.
function stateGetter(keys: readonly string[]): FieldGetter {
  const [first = "", second = "", third = ""] = keys;
  switch (keys.length) {
    case 1:
      return (twin) => child(twin.state, first);
    case 2:
      return (twin) => child(child(twin.state, first), second);
    case 3:
      return (twin) => child(child(child(twin.state, first), second), third);
    default:
      return (twin) => {
        let value = twin.state;
        for (const key of keys) {
          value = child(value, key);
          if (value === undefined) return undefined;
        }
        return value;
      };
  }
}

function badField(field: string, path: string, detail: string): InvalidArgumentError {
  const shown = path.length > 120 ? `${path.slice(0, 120)}…` : path;
  return new InvalidArgumentError("BAD_FIELD", `${field} ${JSON.stringify(shown)} is not a valid field path: ${detail}`, [{ field, description: detail }]);
}
