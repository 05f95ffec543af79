import { CursorExpiredError, UnavailableError } from "../errors.js";
import type { PartitionId } from "../partition/partitioning.js";
import { CelFilter, type CelVariables } from "../query/cel-filter.js";
import { isIdPosition, type PageTokens } from "../query/page-token.js";
import { type ResolvedQueryOptions, resolveQueryOptions } from "../query/query-options.js";
import type { Keys } from "../store/keys.js";
import type { RocksStore } from "../store/rocks-store.js";
import type { Alert } from "./alert.js";
import { type AlertCursor, AlertFeed } from "./alert-feed.js";

/** The variables an alert filter may use. */
export const ALERT_FILTER_VARIABLES: CelVariables = Object.freeze({
  id: "string",
  kind: "string",
  twin_id: "string",
  code: "string",
  severity: "string",
  message: "string",
  state: "string",
  count: "double",
  raised_at: "timestamp",
  updated_at: "timestamp",
});

/** A ListAlerts request. */
export interface AlertListing {
  readonly filter?: string;
  /** 0 or absent: 100. */
  readonly pageSize?: number;
  readonly pageToken?: string;
}

/** A page of alerts and the cursor to watch from. */
export interface AlertPage {
  readonly alerts: Alert[];
  readonly nextPageToken: string;
  /** WatchAlerts from here sees exactly the changes after this listing. */
  readonly cursor: string;
}

/** A change as a watcher sees it. */
export interface AlertEvent {
  readonly alert: Alert;
  readonly cursor: string;
  /** The partition whose log holds the change, and its number there: a change delivered again carries the same pair. */
  readonly partition: PartitionId;
  readonly seq: number;
}

const DEFAULT_PAGE = 100;
/** Longer than any alert id (a kind, an escaped twin id of up to 256 bytes, a code, a version). */
const MAX_ALERT_ID_LENGTH = 4096;
const MAX_PAGE = 1_000;
/** Alerts one ListAlerts page reads at most, whatever its filter. */
export const ALERT_SCAN_PER_PAGE = 10_000;
/** Times a page is read again when changes committed while it was read (then its cursor may repeat one). */
const CURSOR_ATTEMPTS = 3;

/** Stored alerts carry the log seq of their last logged change, which listings use for cursors. */
type StoredAlert = Alert & { readonly seq?: number };

function activation(alert: Alert): Record<string, unknown> {
  return {
    id: alert.id,
    kind: alert.kind,
    twin_id: alert.twinId,
    code: alert.code,
    severity: alert.severity,
    message: alert.message,
    state: alert.state,
    count: alert.count,
    raised_at: alert.raisedAt,
    updated_at: alert.updatedAt,
  };
}

function strip(alert: StoredAlert): Alert {
  const { seq: _seq, ...rest } = alert;
  return rest;
}

/**
 * ListAlerts and WatchAlerts over the alert records and the per-partition alert change logs in
 * RocksDB, reading only the partitions this node owns (`owns`). A watcher reads the logs
 * themselves, so it sees committed changes, each once, in commit order within a partition;
 * changes of different partitions may reach it in another order than they committed.
 */
export class AlertQueries {
  constructor(
    private readonly store: RocksStore,
    private readonly keys: Keys,
    private readonly feed: AlertFeed,
    private readonly tokens: PageTokens,
    private readonly options: ResolvedQueryOptions = resolveQueryOptions(),
    /** True for the partitions this node owns now; absent: all. */
    private readonly owns: (p: PartitionId) => boolean = () => true,
    /** The partition of an alert's twin. */
    private readonly partitionOf: (kind: string, twinId: string) => PartitionId = () => 0 as PartitionId,
  ) {}

  /**
   * Lists alerts matching `filter`, ordered by id, resuming after the page token's id without
   * reading what came before it. A page reads at most {@link ALERT_SCAN_PER_PAGE} alerts: a
   * filter that rarely matches returns a short (even empty) page with a `nextPageToken`, so every
   * call makes progress in bounded time; follow the token until it is empty.
   *
   * The cursor is the alert log's last committed position read before the page: watching from
   * it misses no change after the listing; it may repeat a change that committed while the page
   * was read (the page is re-read, up to a few times, to make that rare).
   * @throws InvalidArgumentError (BAD_FILTER, BAD_PAGE_TOKEN)
   */
  async list(req: AlertListing, signal?: AbortSignal): Promise<AlertPage> {
    const filter = CelFilter.compile(req.filter ?? "", ALERT_FILTER_VARIABLES, "filter", { maxCost: this.options.maxFilterCost });
    const pageSize = req.pageSize === undefined || req.pageSize === 0 ? DEFAULT_PAGE : Math.min(req.pageSize, MAX_PAGE);
    const identity = JSON.stringify(["alerts", req.filter ?? ""]);
    const afterId = req.pageToken ? this.tokens.decode(req.pageToken, identity, isIdPosition(MAX_ALERT_ID_LENGTH)) : undefined;
    let page: { alerts: Alert[]; nextId: string | undefined } = { alerts: [], nextId: undefined };
    let cursor = "";
    for (let attempt = 0; attempt < CURSOR_ATTEMPTS; attempt++) {
      cursor = AlertFeed.cursor(await this.logEnds());
      page = await this.readPage(filter, pageSize, afterId, signal);
      // No change committed while the page was read: the page and the cursor agree exactly.
      if (AlertFeed.cursor(await this.logEnds()) === cursor) break;
    }
    return {
      alerts: page.alerts,
      nextPageToken: page.nextId === undefined ? "" : this.tokens.encode(identity, page.nextId),
      cursor,
    };
  }

  /** One page from after `afterId`; `nextId` is where the next page resumes, undefined at the end. */
  private async readPage(
    filter: CelFilter,
    pageSize: number,
    afterId: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<{ alerts: Alert[]; nextId: string | undefined }> {
    const slice = new TimeSlice(filter.costly, signal);
    const alerts: Alert[] = [];
    let scanned = 0;
    let lastId = afterId;
    // One more than the budget is read, so a page that used it all knows whether any follow.
    for await (const chunk of this.store.scan({ ...this.keys.alertsAfter(afterId), limit: ALERT_SCAN_PER_PAGE + 1 })) {
      for (const [key, raw] of chunk) {
        const id = this.keys.alertIdOf(key);
        if (scanned === ALERT_SCAN_PER_PAGE) return { alerts, nextId: lastId };
        const alert = JSON.parse(raw) as StoredAlert;
        await slice.yieldIfDue();
        if (this.partitionOwned(alert) && (filter.matchesAll || matches(filter, alert))) {
          // A match beyond a full page: there is a next page, and it starts after the page's last alert.
          if (alerts.length === pageSize) return { alerts, nextId: lastId };
          alerts.push(strip(alert));
        }
        scanned++;
        lastId = id;
      }
    }
    return { alerts, nextId: undefined };
  }

  private partitionOwned(alert: Alert): boolean {
    return this.owns(this.partitionOf(alert.kind, alert.twinId));
  }

  /**
   * Each owned partition's last committed log position (at least what the feed knows; the
   * store's tail where a commit is in flight, so a listing's cursor repeats fewer changes).
   */
  private async logEnds(): Promise<Map<PartitionId, number>> {
    const at = this.feed.now(this.owns);
    for (const [p, log] of this.feed.partitions()) {
      if (log.allocated <= log.last || !this.owns(p)) continue;
      for await (const chunk of this.store.scan({ ...this.keys.alertLogRange(p, log.last), limit: 1, reverse: true }, { values: false })) {
        const key = chunk[0]?.[0];
        if (key !== undefined) at.set(p, Math.max(at.get(p) ?? 0, this.keys.alertLogSeqOf(key)));
      }
    }
    return at;
  }

  /**
   * Streams alert changes after `cursor` (or after now), each with its resume cursor, until
   * `signal` aborts. Reads only the partitions this node owns. Order: within a partition, commit
   * order; across partitions, no order is promised. Back-pressure: the next chunk is read only
   * when the consumer asks.
   * @throws InvalidArgumentError (BAD_CURSOR, BAD_FILTER), CursorExpiredError
   */
  async *watch(cursor: string | undefined, filterText: string | undefined, signal: AbortSignal): AsyncGenerator<AlertEvent> {
    const filter = CelFilter.compile(filterText ?? "", ALERT_FILTER_VARIABLES, "filter", { maxCost: this.options.maxFilterCost });
    const at = cursor ? this.feed.parseCursor(cursor, this.owns) : this.feed.now(this.owns);
    const slice = new TimeSlice(filter.costly, signal);
    while (!signal.aborted) {
      const generation = this.feed.changes;
      let progressed = false;
      for (const [p, log] of [...this.feed.partitions()]) {
        const seen = at.get(p) ?? 0;
        // Nothing was handed out after `seen` in this partition, or another node owns it.
        if (log.allocated <= seen || !this.owns(p)) continue;
        for await (const event of this.readPartition(p, at, filter, slice)) {
          progressed = true;
          if (event !== undefined) yield event;
          if (signal.aborted) return;
        }
      }
      if (progressed) continue;
      if (this.feed.closed)
        throw new UnavailableError(
          "SHUTTING_DOWN",
          `the node is shutting down; reconnect with cursor ${AlertFeed.cursor(at)} to continue where this watch stopped`,
        );
      await this.feed.waitBeyond(generation, signal);
    }
  }

  /**
   * Reads up to one chunk of partition `p`'s changes after `at`, advancing `at`; yields each
   * change, or undefined for one the filter drops.
   */
  private async *readPartition(p: PartitionId, at: Map<PartitionId, number>, filter: CelFilter, slice: TimeSlice): AsyncGenerator<AlertEvent | undefined> {
    let seen = at.get(p) ?? 0;
    for await (const chunk of this.store.scan({ ...this.keys.alertLogRange(p, seen), limit: WATCH_CHUNK })) {
      for (const [key, raw] of chunk) {
        const next = this.keys.alertLogSeqOf(key);
        const first = this.feed.positions(p).first;
        if (next !== seen + 1 && seen + 1 < first) {
          throw new CursorExpiredError(
            `the watch fell behind partition ${p}'s retained alert log (its changes before ${first} were trimmed); list alerts again and watch from the new cursor`,
          );
        }
        seen = next;
        at.set(p, seen);
        const alert = strip(JSON.parse(raw) as StoredAlert);
        await slice.yieldIfDue();
        yield filter.matchesAll || matches(filter, alert) ? { alert, cursor: AlertFeed.cursor(at as AlertCursor), partition: p, seq: seen } : undefined;
      }
    }
  }
}

/** Changes one watch reads from one partition before it looks at the next. */
const WATCH_CHUNK = 256;

function matches(filter: CelFilter, alert: Alert): boolean {
  const result = filter.evaluate(activation(alert));
  return "matched" in result && result.matched;
}

/** How long a costly filter may run on the event loop before it lets other work in. */
const SLICE_MS = 5;

/**
 * Cooperative time slicing for alert filters, which run on the event loop: a costly filter
 * (comprehensions, `matches()`) lets the loop run other work (acknowledging telemetry) every
 * {@link SLICE_MS}, and stops when the call's signal aborts (its deadline passed, the client
 * went away), so one listing cannot hold the node for longer than a slice at a time.
 */
class TimeSlice {
  private started = performance.now();

  constructor(
    private readonly costly: boolean,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** Yields to the event loop when the slice is used up. @throws the signal's reason once it aborts */
  async yieldIfDue(): Promise<void> {
    if (!this.costly || performance.now() - this.started < SLICE_MS) return;
    await new Promise((resolve) => setImmediate(resolve));
    this.signal?.throwIfAborted();
    this.started = performance.now();
  }
}
