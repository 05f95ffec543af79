/** A JSON primitive. */
export type JsonPrimitive = string | number | boolean | null;
/** Any JSON value. */
export type JsonValue = JsonPrimitive | JsonValue[] | { [key: string]: JsonValue };
/** A JSON object, as stored for twin state and sent as messages. */
export type JsonObject = { [key: string]: JsonValue };

/**
 * `JsonShape<T>` is `T` when every field of `T` is JSON-serialisable, and otherwise turns the
 * offending fields into `never`, so `class X extends Twin<{ at: Date }>` does not compile.
 * It accepts interfaces (which have no index signature), unlike `T extends JsonObject`.
 */
export type JsonShape<T> = { [K in keyof T]: JsonField<T[K]> };
type JsonField<T> = T extends JsonValue | undefined
  ? T
  : T extends (...args: never[]) => unknown
    ? never
    : T extends Date | Map<unknown, unknown> | Set<unknown> | bigint | symbol
      ? never
      : T extends readonly unknown[]
        ? { [I in keyof T]: JsonField<T[I]> }
        : T extends object
          ? { [K in keyof T]: JsonField<T[K]> }
          : never;

/**
 * Serialises `value` as JSON, refusing what JSON would silently change: `undefined` inside
 * arrays, functions, symbols, bigints, NaN and infinities, class instances such as Date or Map,
 * and cycles. Object fields holding `undefined` are dropped, as `JSON.stringify` does (that is
 * how optional fields are cleared). Throws a TypeError naming the path of the first bad value.
 */
export function stringifyJson(value: unknown, what = "state"): string {
  const problem = jsonProblem(value, 0);
  if (problem !== undefined) throw new TypeError(`${what}${problem.path}${problem.why}`);
  return JSON.stringify(value);
}

const MAX_DEPTH = 64;

/**
 * The first value JSON cannot hold in `value`: its path below `value` and what is wrong with it;
 * undefined when there is none. It runs on every turn, so it allocates only when it finds one.
 */
function jsonProblem(value: unknown, depth: number): { path: string; why: string } | undefined {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined;
    case "number":
      return Number.isFinite(value) ? undefined : { path: "", why: ` is ${value}, which JSON cannot hold` };
    case "object": {
      if (value === null) return undefined;
      if (depth >= MAX_DEPTH) return { path: "", why: ` is nested deeper than ${MAX_DEPTH} levels (a cycle?)` };
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (item === undefined) return { path: `[${i}]`, why: " is undefined, which JSON cannot hold" };
          const problem = jsonProblem(item, depth + 1);
          if (problem !== undefined) return { path: `[${i}]${problem.path}`, why: problem.why };
        }
        return undefined;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        const name = (value as { constructor?: { name?: string } }).constructor?.name ?? "unknown";
        return { path: "", why: ` is a ${name}, not a plain object; store ${name === "Date" ? "an ISO string or epoch ms" : "plain JSON"} instead` };
      }
      for (const key in value) {
        const field = (value as Record<string, unknown>)[key];
        const problem = field === undefined ? undefined : jsonProblem(field, depth + 1);
        if (problem !== undefined) return { path: `.${key}${problem.path}`, why: problem.why };
      }
      return undefined;
    }
    case "undefined":
      return { path: "", why: " is undefined, which JSON cannot hold" };
    default:
      return { path: "", why: ` is a ${typeof value}, which JSON cannot hold` };
  }
}

/** True for a plain JSON object (not an array, not null, not a class instance). */
export function isPlainObject(value: unknown): value is JsonObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
