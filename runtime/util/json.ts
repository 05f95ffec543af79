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
  // This runs on every turn: check without building paths, and build them only to say what is wrong.
  if (!isCleanJson(value, 0)) checkJson(value, what, 0);
  return JSON.stringify(value);
}

const MAX_DEPTH = 64;

/** True when {@link checkJson} would accept `value`; allocates nothing. */
function isCleanJson(value: unknown, depth: number): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(value);
    case "object": {
      if (value === null) return true;
      if (depth >= MAX_DEPTH) return false;
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (item === undefined || !isCleanJson(item, depth + 1)) return false;
        }
        return true;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) return false;
      for (const key in value) {
        const field = (value as Record<string, unknown>)[key];
        if (field !== undefined && !isCleanJson(field, depth + 1)) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

/** Throws a TypeError naming the path of the first value JSON cannot hold; the slow twin of {@link isCleanJson}. */
function checkJson(value: unknown, path: string, depth: number): void {
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (!Number.isFinite(value)) throw new TypeError(`${path} is ${value}, which JSON cannot hold`);
      return;
    case "object": {
      if (value === null) return;
      if (depth >= MAX_DEPTH) throw new TypeError(`${path} is nested deeper than ${MAX_DEPTH} levels (a cycle?)`);
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const item: unknown = value[i];
          if (item === undefined) throw new TypeError(`${path}[${i}] is undefined, which JSON cannot hold`);
          checkJson(item, `${path}[${i}]`, depth + 1);
        }
        return;
      }
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        const name = (value as { constructor?: { name?: string } }).constructor?.name ?? "unknown";
        throw new TypeError(`${path} is a ${name}, not a plain object; store ${name === "Date" ? "an ISO string or epoch ms" : "plain JSON"} instead`);
      }
      for (const key in value) {
        const field = (value as Record<string, unknown>)[key];
        if (field !== undefined) checkJson(field, `${path}.${key}`, depth + 1);
      }
      return;
    }
    case "undefined":
      throw new TypeError(`${path} is undefined, which JSON cannot hold`);
    default:
      throw new TypeError(`${path} is a ${typeof value}, which JSON cannot hold`);
  }
}

/** True for a plain JSON object (not an array, not null, not a class instance). */
export function isPlainObject(value: unknown): value is JsonObject {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}
