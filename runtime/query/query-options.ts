import { ConfigError } from "../errors.js";

/**
 * Limits of QueryTwins, AggregateTwins and alert filters on one node. Every field is optional;
 * see {@link resolveQueryOptions} for the defaults.
 */
export interface QueryOptions {
  /**
   * The cost one evaluation of a filter (on one twin or alert) may spend: one unit per element a
   * comprehension (`exists`, `all`, `exists_one`, `map`, `filter`) visits, and for `matches()` one
   * unit plus one per 10 characters of the text. Over it, the query stops with
   * `RESOURCE_EXHAUSTED` (`FILTER_COST_EXCEEDED`). Four nested `exists` over 20-element lists cost
   * 168,420; three cost 8,420. @defaultValue 100_000
   */
  readonly maxFilterCost?: number;
  /**
   * Worker threads that evaluate costly filters (those with a comprehension or `matches()`), so
   * the event loop that acknowledges telemetry never runs them. @defaultValue 2
   */
  readonly filterWorkers?: number;
  /** Chunks of filter work waiting for a worker; more are refused `QUERY_QUEUE_FULL`. @defaultValue 64 */
  readonly maxQueuedFilterChunks?: number;
  /** Heap limit of one filter worker in MiB; a filter that needs more stops with `FILTER_MEMORY_EXCEEDED`. @defaultValue 256 */
  readonly filterWorkerHeapMb?: number;
}

/** {@link QueryOptions} with every default applied. */
export type ResolvedQueryOptions = { readonly [K in keyof QueryOptions]-?: number };

/** The default of {@link QueryOptions.maxFilterCost}. */
export const DEFAULT_MAX_FILTER_COST = 100_000;

const DEFAULTS: ResolvedQueryOptions = {
  maxFilterCost: DEFAULT_MAX_FILTER_COST,
  filterWorkers: 2,
  maxQueuedFilterChunks: 64,
  filterWorkerHeapMb: 256,
};

/**
 * Applies defaults and checks every limit is a whole number >= 1.
 * @throws ConfigError naming the bad option.
 */
export function resolveQueryOptions(options: QueryOptions = {}): ResolvedQueryOptions {
  const resolved: Record<string, number> = { ...DEFAULTS };
  for (const [name, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (!(name in DEFAULTS)) throw new ConfigError("BAD_OPTION", `unknown query option "${name}"`);
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
      throw new ConfigError("BAD_OPTION", `query option ${name} is ${JSON.stringify(value)}; use a whole number >= 1`);
    }
    resolved[name] = value;
  }
  return resolved as ResolvedQueryOptions;
}
