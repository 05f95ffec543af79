import { CursorExpiredError, UnavailableError } from "../errors.js";
import { CelFilter, type CelVariables } from "../query/cel-filter.js";
import { isIdPosition, type PageTokens } from "../query/page-token.js";
import { type ResolvedQueryOptions, resolveQueryOptions } from "../query/query-options.js";
import type { Keys } from "../store/keys.js";
import type { RocksStore } from "../store/rocks-store.js";
import type { Alert } from "./alert.js";
import { AlertFeed } from "./alert-feed.js";

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
 * ListAlerts and WatchAlerts over the alert records and the alert change log in RocksDB.
 * A watcher reads the log itself, so it sees committed changes, in commit order, each once.
 */
export class AlertQueries {
  constructor(
    private readonly store: RocksStore,
    private readonly keys: Keys,
    private readonly feed: AlertFeed,
    private readonly tokens: PageTokens,
    private readonly options: ResolvedQueryOptions = resolveQueryOptions(),
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
    let cursorSeq = 0;
    for (let attempt = 0; attempt < CURSOR_ATTEMPTS; attempt++) {
      cursorSeq = await this.lastLogSeq();
      page = await this.readPage(filter, pageSize, afterId, signal);
      // No change committed while the page was read: the page and the cursor agree exactly.
      if ((await this.lastLogSeq()) === cursorSeq) break;
    }
    return {
      alerts: page.alerts,
      nextPageToken: page.nextId === undefined ? "" : this.tokens.encode(identity, page.nextId),
      cursor: AlertFeed.cursor(cursorSeq),
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
        if (filter.matchesAll || matches(filter, alert)) {
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

  /** The alert log's last committed position (at least what the feed knows). */
  private async lastLogSeq(): Promise<number> {
    let seq = this.feed.lastSeq;
    for await (const chunk of this.store.scan({ ...this.keys.alertLogRange(0), limit: 1, reverse: true }, { values: false })) {
      const key = chunk[0]?.[0];
      if (key !== undefined) seq = Math.max(seq, this.keys.alertLogSeqOf(key));
    }
    return seq;
  }

  /**
   * Streams alert changes after `cursor` (or after now), each with its resume cursor, until
   * `signal` aborts. Back-pressure: the next chunk is read only when the consumer asks.
   * @throws InvalidArgumentError (BAD_CURSOR, BAD_FILTER), CursorExpiredError
   */
  async *watch(cursor: string | undefined, filterText: string | undefined, signal: AbortSignal): AsyncGenerator<AlertEvent> {
    const filter = CelFilter.compile(filterText ?? "", ALERT_FILTER_VARIABLES, "filter", { maxCost: this.options.maxFilterCost });
    let seq = cursor ? this.feed.parseCursor(cursor) : this.feed.lastSeq;
    const slice = new TimeSlice(filter.costly, signal);
    while (!signal.aborted) {
      let progressed = false;
      for await (const chunk of this.store.scan({ ...this.keys.alertLogRange(seq), limit: 1_000 })) {
        for (const [key, raw] of chunk) {
          const next = this.keys.alertLogSeqOf(key);
          if (next !== seq + 1 && seq + 1 < this.feed.firstSeq) {
            throw new CursorExpiredError(
              `the watch fell behind the retained alert log (changes before ${this.feed.firstSeq} were trimmed); list alerts again and watch from the new cursor`,
            );
          }
          seq = next;
          progressed = true;
          const alert = strip(JSON.parse(raw) as StoredAlert);
          await slice.yieldIfDue();
          if (filter.matchesAll || matches(filter, alert)) yield { alert, cursor: AlertFeed.cursor(seq) };
          if (signal.aborted) return;
        }
      }
      if (progressed) continue;
      if (this.feed.closed)
        throw new UnavailableError(
          "SHUTTING_DOWN",
          `the node is shutting down; reconnect with cursor ${AlertFeed.cursor(seq)} to continue where this watch stopped`,
        );
      await this.feed.waitBeyond(seq, signal);
    }
  }
}

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
