import { InvalidArgumentError } from "../errors.js";
import type { TwinHost, TwinView } from "../host/twin-host.js";
import type { TwinRegistry } from "../host/twin-registry.js";
import type { Keys } from "../store/keys.js";
import type { KeyRange, RocksStore } from "../store/rocks-store.js";
import type { JsonObject } from "../util/json.js";
import { CelFilter, TWIN_FILTER_VARIABLES } from "./cel-filter.js";
import { compareTwins, type OrderBy, parseFieldPath, parseOrderBy, type TwinFields } from "./field-path.js";
import { type FilterJob, FilterOutcome, type FilterReply } from "./filter-job.js";
import type { FilterPool, FilterPoolStats } from "./filter-pool.js";
import { isIdPosition, type PageTokens, type PositionCheck } from "./page-token.js";
import { type ResolvedQueryOptions, resolveQueryOptions } from "./query-options.js";

/** A QueryTwins request. */
export interface TwinQuery {
  readonly kind: string;
  /** CEL over `id`, `kind`, `state`; empty matches all. */
  readonly filter?: string;
  /** `state.x` or `state.x desc`; empty orders by id. */
  readonly orderBy?: string;
  /** 0 or absent: {@link DEFAULT_QUERY_LIMIT}. */
  readonly limit?: number;
  readonly pageToken?: string;
}

/** What a query saw. */
export interface QuerySummary {
  /** Twins that matched, over the scanned range. */
  matched: number;
  scanned: number;
  evaluationErrors: number;
  firstEvaluationError?: string;
  /** Empty when there is nothing more. */
  nextPageToken: string;
}

/** An AggregateTwins request. */
export interface TwinAggregation {
  readonly kind: string;
  readonly filter?: string;
  /** Numeric field path, e.g. `state.ewma`. */
  readonly field: string;
  /** Field path to group by; empty for one group. */
  readonly groupBy?: string;
}

/** One group of an aggregation. */
export interface AggregateGroup {
  /** The group_by value (`null` for the single group or a missing field). */
  readonly key: unknown;
  readonly count: number;
  readonly sum: number;
  readonly avg: number;
  readonly min: number;
  readonly max: number;
}

/** The result of an aggregation. */
export interface AggregateResult {
  readonly groups: AggregateGroup[];
  readonly scanned: number;
  readonly matched: number;
  readonly evaluationErrors: number;
}

/** Page size when a query gives none. */
export const DEFAULT_QUERY_LIMIT = 1_000;
/** The largest page a query may ask for. */
export const MAX_QUERY_LIMIT = 10_000;
/** Most groups an aggregation returns. */
export const MAX_GROUPS = 10_000;

/** A matching twin: its state and its stored record, whose metadata is parsed only for the twins returned. */
interface Candidate extends TwinFields {
  readonly id: string;
  readonly state: JsonObject;
  readonly raw: string;
  /** Set when the scan was asked for views. */
  readonly view?: TwinView;
}

/**
 * Queries and aggregations over the twins a node owns, read from RocksDB in chunks (one
 * consistent snapshot per query; acknowledged events are always visible because an event is
 * acknowledged only after its commit). Memory is bounded by the page size, not the number of
 * twins: ordered queries keep only the best `limit` candidates.
 */
export class TwinQueries {
  constructor(
    private readonly store: RocksStore,
    private readonly keys: Keys,
    private readonly registry: TwinRegistry,
    private readonly host: TwinHost,
    private readonly tokens: PageTokens,
    private readonly pool: FilterPool,
    private readonly options: ResolvedQueryOptions = resolveQueryOptions(),
    /** True for the twins this node owns now (a cluster's partitions); absent: all. */
    private readonly ownsTwin?: (kind: string, id: string) => boolean,
  ) {}

  /**
   * The records of `range` (one kind's), without those of partitions this node does not own:
   * in a cluster its store also holds replicas, which their owners answer for.
   */
  private async *scanOwned(range: KeyRange, kind: string): AsyncGenerator<[string, string][]> {
    const owns = this.ownsTwin;
    if (owns === undefined) {
      yield* this.store.scan(range);
      return;
    }
    for await (const chunk of this.store.scan(range)) {
      const owned = chunk.filter(([key]) => owns(kind, this.keys.twinIdOf(key, kind)));
      if (owned.length > 0) yield owned;
    }
  }

  /** Counters of what this node's queries have done. */
  readonly stats: QueryStats = { scans: 0, stopped: 0, scanned: 0 };

  /** Filter jobs of costly scans waiting for a worker and running now. */
  get filterLoad(): { queued: number; running: number } {
    return this.pool.load;
  }

  /** Counters of the filter workers. */
  get workerStats(): Readonly<FilterPoolStats> {
    return this.pool.stats;
  }

  /**
   * Streams matching twins, then returns the summary.
   * @throws UnknownKindError, InvalidArgumentError (BAD_FILTER, BAD_FIELD, BAD_PAGE_TOKEN, BAD_LIMIT)
   */
  async *query(q: TwinQuery, signal?: AbortSignal): AsyncGenerator<TwinView, QuerySummary> {
    this.registry.get(q.kind);
    const filter = this.compile(q.filter);
    const order = q.orderBy !== undefined && q.orderBy.trim() !== "" ? parseOrderBy(q.orderBy, "order_by") : undefined;
    const limit = resolveLimit(q.limit);
    const identity = JSON.stringify([q.kind, q.filter ?? "", q.orderBy ?? ""]);
    const position = q.pageToken
      ? this.tokens.decode<string | OrderPosition>(q.pageToken, identity, order === undefined ? isIdPosition() : isOrderPosition)
      : undefined;
    const summary: QuerySummary = { matched: 0, scanned: 0, evaluationErrors: 0, nextPageToken: "" };
    const noteError = (error: string): void => {
      summary.evaluationErrors++;
      summary.firstEvaluationError ??= error;
    };
    if (order === undefined) {
      // Id order is the key order: stream while scanning and stop one past the page.
      const afterId = position as string | undefined;
      let emitted = 0;
      let lastId: string | undefined;
      // One twin past the page tells whether there is a next page.
      for await (const chunk of this.scan(q.kind, afterId, filter, summary, noteError, signal, { maxMatches: limit + 1, views: true })) {
        for (const candidate of chunk) {
          if (emitted === limit) {
            summary.matched--; // the look-ahead twin belongs to the next page
            summary.nextPageToken = this.tokens.encode(identity, lastId);
            return summary;
          }
          emitted++;
          lastId = candidate.id;
          yield candidate.view as TwinView;
        }
      }
      return summary;
    }
    const compare = compareTwins(order);
    const after = position as OrderPosition | undefined;
    const afterTwin: TwinFields | undefined = after === undefined ? undefined : { id: after.i, kind: q.kind, state: undefined };
    const best: Candidate[] = [];
    let more = false;
    for await (const chunk of this.scan(q.kind, undefined, filter, summary, noteError, signal)) {
      for (const candidate of chunk) {
        if (afterTwin !== undefined && compareAfter(order, candidate, after as OrderPosition, compare) <= 0) continue;
        if (best.length === limit) {
          more = true;
          if (compare(candidate, best[best.length - 1] as Candidate) >= 0) continue;
          best.pop();
        }
        insertSorted(best, candidate, compare);
      }
    }
    for (const candidate of best) {
      const view = this.viewOf(q.kind, candidate, summary, noteError);
      if (view !== undefined) yield view;
    }
    const last = best[best.length - 1];
    if (more && last !== undefined)
      summary.nextPageToken = this.tokens.encode(identity, { v: order.path.get(last) ?? null, i: last.id } satisfies OrderPosition);
    return summary;
  }

  /** Groups the matching twins by `groupBy` and summarises the numeric `field`. */
  async aggregate(a: TwinAggregation, signal?: AbortSignal): Promise<AggregateResult> {
    this.registry.get(a.kind);
    const filter = this.compile(a.filter);
    if (a.field.trim() === "")
      throw new InvalidArgumentError("BAD_FIELD", "field is empty; name a numeric state field such as state.ewma", [
        { field: "field", description: "required" },
      ]);
    const field = parseFieldPath(a.field, "field");
    const groupBy = a.groupBy !== undefined && a.groupBy.trim() !== "" ? parseFieldPath(a.groupBy, "group_by") : undefined;
    const groups = new Map<string, { key: unknown; count: number; sum: number; min: number; max: number }>();
    const summary: QuerySummary = { matched: 0, scanned: 0, evaluationErrors: 0, nextPageToken: "" };
    for await (const chunk of this.scan(a.kind, undefined, filter, summary, () => summary.evaluationErrors++, signal)) {
      for (const candidate of chunk) {
        const value = field.get(candidate);
        if (typeof value !== "number") {
          summary.evaluationErrors++;
          continue;
        }
        const key = groupBy === undefined ? null : (groupBy.get(candidate) ?? null);
        const id = typeof key === "string" ? `s${key}` : JSON.stringify(key);
        let group = groups.get(id);
        if (group === undefined) {
          if (groups.size >= MAX_GROUPS) {
            throw new InvalidArgumentError(
              "TOO_MANY_GROUPS",
              `group_by ${a.groupBy} has more than ${MAX_GROUPS} distinct values; group by a coarser field or add a filter`,
              [{ field: "group_by", description: `at most ${MAX_GROUPS} distinct values` }],
            );
          }
          group = { key, count: 0, sum: 0, min: value, max: value };
          groups.set(id, group);
        }
        group.count++;
        group.sum += value;
        if (value < group.min) group.min = value;
        if (value > group.max) group.max = value;
      }
    }
    return {
      groups: [...groups.values()].map((g) => ({ key: g.key, count: g.count, sum: g.sum, avg: g.sum / g.count, min: g.min, max: g.max })),
      scanned: summary.scanned,
      matched: summary.matched,
      evaluationErrors: summary.evaluationErrors,
    };
  }

  private compile(filter: string | undefined): CelFilter {
    return CelFilter.compile(filter ?? "", TWIN_FILTER_VARIABLES, "filter", { maxCost: this.options.maxFilterCost });
  }

  /** A matching twin's view; undefined, noted as an evaluation error, when its metadata is corrupt. */
  private viewOf(kind: string, candidate: Candidate, summary: QuerySummary, noteError: (error: string) => void): TwinView | undefined {
    try {
      return this.host.viewOf(kind, candidate.id, candidate.raw, candidate.state);
    } catch (err) {
      summary.matched--;
      noteError(`${candidate.id}: ${(err as Error).message}`);
      return undefined;
    }
  }

  /**
   * Scans one kind's records (after `afterId`), yielding the matching twins of each chunk the
   * store reads. A cheap filter (no comprehension, `matches()` or `cel.bind`: its cost is bounded
   * by its size and the state's) is evaluated here, a chunk at a time, so a scan costs one await
   * per chunk and still yields the event loop between chunks. A costly filter is evaluated by the
   * {@link FilterPool} on the raw chunks, up to {@link FILTER_CHUNKS_IN_FLIGHT} at once, and only
   * the matches are parsed here. Only the state is parsed, and the metadata of matches when
   * `views` asks for their views (a twin whose metadata is corrupt then counts as an evaluation
   * error, not a match). The scan ends at the `maxMatches`th match, so the summary counts only
   * what a page needed, and stops its work when `signal` aborts (a running worker is terminated).
   */
  private async *scan(
    kind: string,
    afterId: string | undefined,
    filter: CelFilter,
    summary: QuerySummary,
    noteError: (error: string) => void,
    signal: AbortSignal | undefined,
    { maxMatches = Number.POSITIVE_INFINITY, views = false }: { maxMatches?: number; views?: boolean } = {},
  ): AsyncGenerator<Candidate[]> {
    this.stats.scans++;
    let finished = false;
    try {
      yield* this.scanChunks(kind, afterId, filter, summary, noteError, signal, { maxMatches, views });
      finished = true;
    } finally {
      // Ended by the cancel (its own check, or a worker's job failing with the signal's reason).
      if (!finished && signal?.aborted === true) this.stats.stopped++;
    }
  }

  private async *scanChunks(
    kind: string,
    afterId: string | undefined,
    filter: CelFilter,
    summary: QuerySummary,
    noteError: (error: string) => void,
    signal: AbortSignal | undefined,
    { maxMatches, views }: { maxMatches: number; views: boolean },
  ): AsyncGenerator<Candidate[]> {
    // An `id.startsWith("…")` term narrows the scan to that key range.
    const range = this.keys.twinsOfKind(kind, afterId, filter.idPrefix());
    const accept = (matches: Candidate[], id: string, raw: string, state: JsonObject): boolean => {
      let view: TwinView | undefined;
      if (views) {
        try {
          view = this.host.viewOf(kind, id, raw, state);
        } catch (err) {
          noteError(`${id}: ${(err as Error).message}`);
          return false;
        }
      }
      summary.matched++;
      matches.push({ id, kind, state, raw, view });
      return summary.matched === maxMatches;
    };
    const stopped = (): boolean => signal?.aborted === true;

    if (!filter.costly) {
      for await (const chunk of this.scanOwned(range, kind)) {
        if (stopped()) return;
        const matches: Candidate[] = [];
        for (const [key, raw] of chunk) {
          const id = this.keys.twinIdOf(key, kind);
          let state: JsonObject | undefined;
          try {
            state = this.host.stateOf(kind, raw);
          } catch (err) {
            summary.scanned++;
            noteError(`${id}: ${(err as Error).message}`);
            continue;
          }
          if (state === undefined) continue;
          summary.scanned++;
          this.stats.scanned++;
          if (!filter.matchesAll) {
            const result = filter.evaluate({ id, kind, state });
            if ("error" in result) {
              noteError(result.error);
              continue;
            }
            if (!result.matched) continue;
          }
          if (accept(matches, id, raw, state)) break;
        }
        if (matches.length > 0) yield matches;
        if (summary.matched === maxMatches) return;
      }
      return;
    }

    const stateVersion = this.registry.get(kind).stateVersion;
    const job = { expression: filter.expression, variables: TWIN_FILTER_VARIABLES, maxCost: filter.maxCost };
    const inFlight: { entries: [string, string][]; reply: Promise<FilterReply> }[] = [];
    const chunks = this.scanOwned(range, kind);
    // The scan's own cancel, also fired by the caller's: however the scan ends (a page filled, a
    // job refused, the caller gone), no chunk it sent keeps a worker busy after it.
    const own = new AbortController();
    const cancel = (): void => own.abort(signal?.reason);
    signal?.addEventListener("abort", cancel, { once: true });
    const jobs = own.signal;
    try {
      let reading = true;
      while (reading || inFlight.length > 0) {
        // Keep a few chunks with the workers while the oldest is awaited, so they never wait on the store.
        while (reading && inFlight.length < FILTER_CHUNKS_IN_FLIGHT) {
          const next = await chunks.next();
          if (stopped()) return;
          if (next.done === true) {
            reading = false;
            break;
          }
          const entries = next.value.map(([key, raw]): [string, string] => [this.keys.twinIdOf(key, kind), raw]);
          const reply = this.pool.run({ ...job, records: { kind, stateVersion, entries } }, jobs);
          // Awaited below, or abandoned in `finally` when the scan ends early.
          reply.catch(() => undefined);
          inFlight.push({ entries, reply });
        }
        const head = inFlight.shift();
        if (head === undefined) break;
        const outcome = await head.reply;
        if (stopped()) return;
        if ("exceeded" in outcome) throw new Error("unreachable: the pool throws on an overrun");
        const matches = await this.settleChunk(kind, head.entries, outcome, job, summary, noteError, jobs, accept);
        if (matches.length > 0) yield matches;
        if (summary.matched === maxMatches) return;
      }
    } finally {
      signal?.removeEventListener("abort", cancel);
      // Chunks still with the workers belong to no one now: their jobs are withdrawn (a running
      // one's worker is replaced) and their results dropped.
      if (inFlight.length > 0) own.abort(new DOMException("the scan ended before this chunk was needed", "AbortError"));
      inFlight.length = 0;
      // Releases the store's iterator and snapshot.
      await chunks.return(undefined);
    }
  }

  /** The matches of one chunk a worker evaluated, in key order; migrated twins are evaluated by a second job. */
  private async settleChunk(
    kind: string,
    entries: readonly [string, string][],
    reply: { outcomes: Uint8Array; errors: readonly (readonly [number, string])[] },
    job: Pick<FilterJob, "expression" | "variables" | "maxCost">,
    summary: QuerySummary,
    noteError: (error: string) => void,
    signal: AbortSignal | undefined,
    accept: (matches: Candidate[], id: string, raw: string, state: JsonObject) => boolean,
  ): Promise<Candidate[]> {
    const errors = new Map(reply.errors);
    const outcomes = reply.outcomes;
    // States of an older version are migrated here (twin code) and evaluated by a worker again.
    const migrated = new Map<number, JsonObject>();
    for (let i = 0; i < outcomes.length; i++) {
      if (outcomes[i] !== FilterOutcome.MIGRATE) continue;
      const raw = (entries[i] as [string, string])[1];
      try {
        const state = this.host.stateOf(kind, raw);
        if (state !== undefined) migrated.set(i, state);
        else outcomes[i] = FilterOutcome.ABSENT;
      } catch (err) {
        outcomes[i] = FilterOutcome.CORRUPT;
        errors.set(i, (err as Error).message);
      }
    }
    if (migrated.size > 0) {
      const indexes = [...migrated.keys()];
      const second = await this.pool.run(
        { ...job, activations: indexes.map((i) => ({ id: (entries[i] as [string, string])[0], kind, state: migrated.get(i) })) },
        signal,
      );
      if ("exceeded" in second) throw new Error("unreachable: the pool throws on an overrun");
      const secondErrors = new Map(second.errors);
      indexes.forEach((i, j) => {
        outcomes[i] = second.outcomes[j] as number;
        const message = secondErrors.get(j);
        if (message !== undefined) errors.set(i, message);
      });
    }
    const matches: Candidate[] = [];
    for (let i = 0; i < outcomes.length; i++) {
      const outcome = outcomes[i];
      if (outcome === FilterOutcome.ABSENT) continue;
      const [id, raw] = entries[i] as [string, string];
      summary.scanned++;
      this.stats.scanned++;
      if (outcome === FilterOutcome.CORRUPT) noteError(`${id}: ${errors.get(i) ?? "unreadable record"}`);
      else if (outcome === FilterOutcome.ERROR) noteError(errors.get(i) ?? "evaluation error");
      else if (outcome === FilterOutcome.MATCHED) {
        let state: JsonObject | undefined;
        try {
          state = migrated.get(i) ?? this.host.stateOf(kind, raw);
        } catch (err) {
          noteError(`${id}: ${(err as Error).message}`);
          continue;
        }
        if (state !== undefined && accept(matches, id, raw, state)) break;
      }
    }
    return matches;
  }
}

/**
 * Chunks of one scan evaluated by filter workers at once: two keeps both default workers busy
 * while the event loop reads the next chunk and parses the matches of the last.
 */
export const FILTER_CHUNKS_IN_FLIGHT = 2;

/** What queries on this node have done, for tests and metrics. */
export interface QueryStats {
  /** Scans started. */
  scans: number;
  /** Scans that stopped because their query was cancelled or passed its deadline. */
  stopped: number;
  /** Twins scanned, over every scan. */
  scanned: number;
}

function resolveLimit(limit: number | undefined): number {
  if (limit === undefined || limit === 0) return DEFAULT_QUERY_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 0 || limit > MAX_QUERY_LIMIT) {
    throw new InvalidArgumentError("BAD_LIMIT", `limit ${limit} is out of range; use 1 to ${MAX_QUERY_LIMIT}, or 0 for ${DEFAULT_QUERY_LIMIT}`, [
      { field: "limit", description: `1 to ${MAX_QUERY_LIMIT}` },
    ]);
  }
  return limit;
}

/** Where an ordered page ended: the order_by value (`null` when absent) and the id of its last twin. */
interface OrderPosition {
  readonly v: unknown;
  readonly i: string;
}

const isOrderPosition: PositionCheck<OrderPosition> = (position): position is OrderPosition => {
  if (typeof position !== "object" || position === null || Array.isArray(position)) return false;
  const { v, i } = position as { v?: unknown; i?: unknown };
  return Object.keys(position).length === 2 && v !== undefined && typeof i === "string" && i.length <= 1024;
};

/** Orders a candidate against the page token's last (value, id): > 0 when it comes after. */
function compareAfter(order: OrderBy, candidate: Candidate, after: OrderPosition, compare: (a: TwinFields, b: TwinFields) => number): number {
  const pseudo: TwinFields = { id: after.i, kind: candidate.kind, state: undefined };
  // Build a twin whose ordered field holds the token's value, so the same comparator applies.
  const segments = order.path.segments;
  if (segments[0] === "state") {
    let state: unknown = after.v;
    for (let s = segments.length - 1; s >= 1; s--) state = { [segments[s] as string]: state };
    return compare(candidate, { ...pseudo, state });
  }
  return compare(candidate, pseudo);
}

function insertSorted(list: Candidate[], item: Candidate, compare: (a: TwinFields, b: TwinFields) => number): void {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compare(list[mid] as Candidate, item) <= 0) lo = mid + 1;
    else hi = mid;
  }
  list.splice(lo, 0, item);
}
