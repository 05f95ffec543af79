import {
  type AggregateResult,
  type AlertEvent,
  type AlertListing,
  type AlertPage,
  compareTwins,
  DEFAULT_DEAD_LETTER_PAGE,
  type DeadLetter,
  type DeadLetterListing,
  type DeadLetterPage,
  type DeadLetterRetry,
  type DeadLetterSelection,
  deadLetterListingIdentity,
  InvalidArgumentError,
  isLetterPosition,
  isTwinmeshError,
  type Logger,
  MAX_DEAD_LETTER_PAGE,
  type PartitionId,
  parseDeadLetterId,
  parseOrderBy,
  type QuerySummary,
  StatusCode,
  type TwinAggregation,
  type TwinQuery,
  type TwinView,
  UnavailableError,
} from "../runtime/index.js";
import { mergeAggregates } from "./merge-aggregates.js";
import type { NodeId } from "./node-id.js";
import { RoutedCallError, type RoutedCalls } from "./routed-calls.js";
import { alertListingIdentity, ClusterPageTokens, isIdPosition, isOrderPosition, type OrderPosition, twinQueryIdentity } from "./scatter-token.js";
import type { TwinRouter } from "./twin-router.js";

/** What {@link ScatterReads} reads through. */
export interface ScatterReadsConfig {
  readonly self: NodeId;
  /** This node's part of a read: the partitions given, with cluster tokens. */
  readonly localFor: (partitions: readonly PartitionId[]) => TwinRouter;
  readonly calls: Pick<
    RoutedCalls,
    "queryTwins" | "listAlerts" | "watchAlerts" | "aggregateTwins" | "listDeadLetters" | "retryDeadLetters" | "deleteDeadLetters"
  >;
  /** Every partition of the cluster. */
  readonly partitions: () => readonly PartitionId[];
  /** The node serving a partition now, or undefined while no copy of it is live. */
  readonly ownerOfPartition: (p: PartitionId) => NodeId | undefined;
  /** Whether a peer answers now. */
  readonly isUp: (peer: NodeId) => boolean;
  /** True once this node is shutting down: watches through it end, telling where to continue. */
  readonly shuttingDown: () => boolean;
  readonly log: Logger;
}

/** Page size of a query that gives none, and the largest (as one node's). */
const DEFAULT_QUERY_LIMIT = 1_000;
/** How often a cluster-wide watch checks whether the partitions' owners changed. */
const OWNERS_CHECK_MS = 250;
/** How long a watch waits for every partition to have a live owner again before it fails. */
const WATCH_OWNERLESS_MS = 15_000;

/**
 * Cluster-wide reads (design §5, scatter-gather): each read goes to every node that owns a
 * partition now, each answers over the partitions it owns (its part of the read, marked routed),
 * and the parts are merged here exactly. Every partition is read by its one owner, so no twin or
 * alert is counted twice; while a partition has no live owner, or an owner does not answer, the
 * read fails `UNAVAILABLE` (retryable) rather than answer without it.
 *
 * Page tokens name a position (the last id, or `order_by` value and id), not a node, so any node
 * continues a page another began, also after a failover.
 */
export class ScatterReads {
  constructor(private readonly config: ScatterReadsConfig) {}

  /**
   * One page of a query over every twin of the cluster, in id order or `order_by` order, exactly
   * as one node holding every twin would page it: each owner returns its best `limit` after the
   * token's position, and the best `limit` of their union is the page.
   */
  async *queryTwins(query: TwinQuery, signal?: AbortSignal): AsyncGenerator<TwinView, QuerySummary> {
    const ordered = query.orderBy !== undefined && query.orderBy.trim() !== "";
    const order = parseOrderBy(ordered ? (query.orderBy as string) : "", "order_by");
    const identity = twinQueryIdentity(query);
    // Checked here first, so a bad token is refused before anything is scattered.
    if (query.pageToken) ClusterPageTokens.decode<unknown>(query.pageToken, identity, ordered ? isOrderPosition : isIdPosition);
    const limit = query.limit === undefined || query.limit === 0 ? DEFAULT_QUERY_LIMIT : query.limit;
    const parts = await this.each(async (member, partitions) => {
      if (member === this.config.self) {
        const twins: TwinView[] = [];
        const results = this.config.localFor(partitions).queryTwins(query, signal);
        for (;;) {
          const next = await results.next();
          if (next.done === true) return { twins, summary: next.value };
          twins.push(next.value);
        }
      }
      return this.config.calls.queryTwins(member, query, partitions, signal);
    });
    const compare = compareTwins(order);
    const all = parts.flatMap((p) => p.twins).sort(compare);
    const page = all.slice(0, limit);
    // A member with more returned a whole page, so the union's first `limit` are exact.
    const more = all.length > limit || parts.some((p) => p.summary.nextPageToken !== "");
    const summary: QuerySummary = { matched: 0, scanned: 0, evaluationErrors: 0, nextPageToken: "" };
    for (const { summary: s } of parts) {
      summary.matched += s.matched;
      summary.scanned += s.scanned;
      summary.evaluationErrors += s.evaluationErrors;
      summary.firstEvaluationError ??= s.firstEvaluationError;
    }
    // The members' look-ahead beyond the page belongs to the next one.
    summary.matched -= all.length - page.length;
    const last = page[page.length - 1];
    if (more && last !== undefined) {
      const position: string | OrderPosition = ordered ? { v: order.path.get(last) ?? null, i: last.id } : last.id;
      summary.nextPageToken = ClusterPageTokens.encode(identity, position);
    }
    for (const twin of page) yield twin;
    return summary;
  }

  /**
   * Aggregates over every twin: each owner aggregates the partitions it serves (each twin has one
   * owner, so none is counted twice) and the partial results are combined exactly.
   */
  async aggregateTwins(aggregation: TwinAggregation, signal?: AbortSignal): Promise<AggregateResult> {
    const parts = await this.each((member, partitions) =>
      member === this.config.self
        ? this.config.localFor(partitions).aggregateTwins(aggregation, signal)
        : this.config.calls.aggregateTwins(member, aggregation, partitions),
    );
    return mergeAggregates(parts);
  }

  /**
   * One page of the alerts of every twin, by id. A member whose page was cut short by its scan
   * budget bounds the merged page (nothing after its position is returned yet), so no alert is
   * skipped. The cursor names each partition's log end as its owner read it.
   */
  async listAlerts(listing: AlertListing, signal?: AbortSignal): Promise<AlertPage> {
    const identity = alertListingIdentity(listing);
    if (listing.pageToken) ClusterPageTokens.decode(listing.pageToken, identity, isIdPosition);
    const pageSize = listing.pageSize === undefined || listing.pageSize === 0 ? 100 : Math.min(listing.pageSize, 1_000);
    const parts = await this.each((member, partitions) =>
      member === this.config.self ? this.config.localFor(partitions).listAlerts(listing, signal) : this.config.calls.listAlerts(member, listing, partitions),
    );
    let bound: string | undefined;
    for (const part of parts) {
      if (part.nextPageToken === "") continue;
      const after = ClusterPageTokens.decode(part.nextPageToken, identity, isIdPosition);
      if (bound === undefined || after < bound) bound = after;
    }
    const all = parts
      .flatMap((p) => p.alerts)
      .filter((a) => bound === undefined || a.id <= bound)
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const alerts = all.slice(0, pageSize);
    const last = alerts[alerts.length - 1];
    const next = all.length > pageSize && last !== undefined ? last.id : bound;
    return {
      alerts,
      nextPageToken: next === undefined ? "" : ClusterPageTokens.encode(identity, next),
      cursor: formatCursor(mergeCursors(parts.map((p) => parseCursor(p.cursor)))),
    };
  }

  /**
   * One page of the dead letters of every partition, by partition, oldest first within one, as
   * {@link listAlerts} merges alerts: a member whose page was cut short bounds the merged page.
   */
  async listDeadLetters(listing: DeadLetterListing): Promise<DeadLetterPage> {
    const identity = deadLetterListingIdentity(listing.filter);
    if (listing.pageToken) ClusterPageTokens.decode(listing.pageToken, identity, isLetterPosition);
    const pageSize = listing.pageSize === undefined || listing.pageSize === 0 ? DEFAULT_DEAD_LETTER_PAGE : Math.min(listing.pageSize, MAX_DEAD_LETTER_PAGE);
    const parts = await this.each(
      (member, partitions) =>
        member === this.config.self
          ? this.config.localFor(partitions).listDeadLetters(listing)
          : this.config.calls.listDeadLetters(member, listing, partitions),
      "the dead letters it owns cannot be read",
    );
    let bound: [number, number] | undefined;
    for (const part of parts) {
      if (part.nextPageToken === "") continue;
      const after = ClusterPageTokens.decode(part.nextPageToken, identity, isLetterPosition);
      if (bound === undefined || comparePositions(after, bound) < 0) bound = after;
    }
    const all = parts
      .flatMap((p) => p.deadLetters)
      .filter((d) => bound === undefined || comparePositions(letterPosition(d), bound) <= 0)
      .sort((a, b) => comparePositions(letterPosition(a), letterPosition(b)));
    const deadLetters = all.slice(0, pageSize);
    const last = deadLetters[deadLetters.length - 1];
    const next = all.length > pageSize && last !== undefined ? letterPosition(last) : bound;
    return { deadLetters, nextPageToken: next === undefined ? "" : ClusterPageTokens.encode(identity, next) };
  }

  /**
   * Retries every matching dead letter of the cluster: each owner those it owns (having checked
   * it serves the partitions counted on it). One owner failing fails the call, saying what the
   * others did.
   */
  async retryDeadLetters(selection: DeadLetterSelection & { all: true }, signal?: AbortSignal): Promise<DeadLetterRetry> {
    const parts = await this.each(
      (member, partitions) =>
        member === this.config.self
          ? this.config.localFor(partitions).retryDeadLetters(selection, signal)
          : this.config.calls.retryDeadLetters(member, selection, partitions, signal),
      "the dead letters it owns cannot be retried",
      (done) => `${done.reduce((n, p) => n + p.retried, 0)} dead letters were retried`,
    );
    return { retried: parts.reduce((n, p) => n + p.retried, 0), skipped: parts.reduce((n, p) => n + p.skipped, 0) };
  }

  /** Deletes every matching dead letter of the cluster, as {@link retryDeadLetters} retries them. */
  async deleteDeadLetters(selection: DeadLetterSelection & { all: true }, signal?: AbortSignal): Promise<{ deleted: number }> {
    const parts = await this.each(
      (member, partitions) =>
        member === this.config.self
          ? this.config.localFor(partitions).deleteDeadLetters(selection, signal)
          : this.config.calls.deleteDeadLetters(member, selection, partitions, signal),
      "the dead letters it owns cannot be deleted",
      (done) => `${done.reduce((n, p) => n + p.deleted, 0)} dead letters were deleted`,
    );
    return { deleted: parts.reduce((n, p) => n + p.deleted, 0) };
  }

  /**
   * Watches the alert changes of every twin: a watch on each owner from the same cursor, merged,
   * with the combined cursor (each partition at the furthest change delivered). When an owner's
   * stream breaks or the partitions' owners change (a failover, a node back), every part is
   * reopened from the combined cursor on the owners of now, so no change is lost; a change may
   * come again, with the same alert id, count and state (and the same partition and change
   * number). When this node shuts down, the watch ends `UNAVAILABLE` (`SHUTTING_DOWN`) with the
   * combined cursor, to continue through another node.
   */
  async *watchAlerts(cursor: string | undefined, filter: string | undefined, signal: AbortSignal): AsyncGenerator<AlertEvent> {
    // A cursor that is not one would read as no positions, and replay every change from the start.
    if (cursor !== undefined && cursor !== "" && !CURSOR_SHAPE.test(cursor)) {
      throw new InvalidArgumentError(
        "BAD_CURSOR",
        `cursor ${JSON.stringify(cursor.slice(0, 64))} is not a cursor this cluster issued; pass one from ListAlerts or WatchAlerts, or none to start from now`,
        [{ field: "cursor", description: "must be a cursor returned by ListAlerts or WatchAlerts" }],
      );
    }
    // Without a cursor: from now, as the owners' log ends say (a listing of one alert each).
    const at = parseCursor(cursor || (await this.listAlerts({ pageSize: 1 }, signal)).cursor);
    let backoff = false;
    /** Until when a member's BAD_CURSOR is taken for a new owner that has not read its partition's log yet. */
    let settlingUntil = Number.NEGATIVE_INFINITY;
    const shutdownError = (): UnavailableError =>
      new UnavailableError(
        "SHUTTING_DOWN",
        `the node is shutting down; reconnect through another node with cursor ${formatCursor(at)} to continue where this watch stopped`,
      );
    const stopped = (): UnavailableError | undefined => (this.config.shuttingDown() ? shutdownError() : undefined);
    while (!signal.aborted) {
      // After a part failed, a moment for the failover (or the taking of a partition) to progress.
      if (backoff) await pause(OWNERS_CHECK_MS, signal);
      backoff = false;
      const owners = await this.waitForOwners(signal, stopped);
      if (owners === undefined) return;
      const _members = [...owners.keys()];
      const round = new AbortController();
      const stop = (): void => round.abort();
      signal.addEventListener("abort", stop, { once: true });
      const start = formatCursor(at);
      const inbox = new Inbox();
      const pumps = [...owners].map(async ([member, partitions]) => {
        try {
          const changes =
            member === this.config.self
              ? this.config.localFor(partitions).watchAlerts(start, filter, round.signal)
              : this.config.calls.watchAlerts(member, start, filter, partitions, round.signal);
          for await (const change of changes) {
            if (round.signal.aborted) return;
            await inbox.put({ member, change });
          }
          if (!round.signal.aborted)
            await inbox.put({ member, error: new RoutedCallError(StatusCode.UNAVAILABLE, "WATCH_ENDED", `${member} ended its watch`, true) });
        } catch (err) {
          if (!round.signal.aborted) await inbox.put({ member, error: err });
        }
      });
      const check = setInterval(() => {
        if (this.config.shuttingDown() || !sameOwners(owners, this.ownersNow())) inbox.wake();
      }, OWNERS_CHECK_MS);
      try {
        for (;;) {
          // Checked before each take too: a wake comes only to a taker already waiting.
          const stop = stopped();
          if (stop !== undefined) throw stop;
          const item = await inbox.take(signal);
          if (item === undefined) {
            // Woken: the owners changed, this node is shutting down (checked above, before the
            // next take), or the caller left.
            if (signal.aborted) break;
            if (!sameOwners(owners, this.ownersNow())) {
              settlingUntil = performance.now() + WATCH_OWNERLESS_MS;
              break;
            }
            continue;
          }
          if ("error" in item) {
            // This node's own part ends first when it shuts down.
            const stop = stopped();
            if (stop !== undefined) throw stop;
            const err = item.error;
            // A node that just took a partition serves it a moment before it has read the partition's
            // alert log positions, and meanwhile calls a cursor naming them ahead of its log: after a
            // change of owners this watch saw, that is retried (bounded), not a bad cursor.
            const settling = isTwinmeshError(err) && err.reason === "BAD_CURSOR" && performance.now() < settlingUntil;
            if (isTwinmeshError(err) && !err.retryable && !settling) throw err;
            this.config.log.info({ member: item.member, err: (err as Error).message }, "alert watch part ended; reopening on the owners of now");
            if (!settling) settlingUntil = performance.now() + WATCH_OWNERLESS_MS;
            backoff = true;
            break;
          }
          // Each change moves its member's cursor on in its own partition only.
          const { partition, seq } = item.change;
          for (const [p, n] of parseCursor(item.change.cursor)) if (n > (at.get(p) ?? 0)) at.set(p, n);
          yield { alert: item.change.alert, cursor: formatCursor(at), partition, seq };
        }
      } finally {
        clearInterval(check);
        signal.removeEventListener("abort", stop);
        round.abort();
        inbox.drain();
        await Promise.allSettled(pumps);
      }
    }
  }

  /** Each owner of now and the partitions it serves, or undefined while a partition has no live owner. */
  private ownersNow(): Map<NodeId, PartitionId[]> | undefined {
    const owners = new Map<NodeId, PartitionId[]>();
    for (const p of this.config.partitions()) {
      const owner = this.config.ownerOfPartition(p);
      if (owner === undefined || (owner !== this.config.self && !this.config.isUp(owner))) return undefined;
      let partitions = owners.get(owner);
      if (partitions === undefined) {
        partitions = [];
        owners.set(owner, partitions);
      }
      partitions.push(p);
    }
    return owners;
  }

  /**
   * Waits (bounded) until every partition has a live owner; undefined when `signal` aborts first.
   * @throws what `stopped` returns, once it returns an error (the node is shutting down)
   */
  private async waitForOwners(signal: AbortSignal, stopped: () => Error | undefined): Promise<Map<NodeId, PartitionId[]> | undefined> {
    const deadline = performance.now() + WATCH_OWNERLESS_MS;
    for (;;) {
      const stop = stopped();
      if (stop !== undefined) throw stop;
      const owners = this.ownersNow();
      if (owners !== undefined) return owners;
      if (signal.aborted) return undefined;
      if (performance.now() > deadline) throw ownerless();
      await pause(OWNERS_CHECK_MS, signal);
    }
  }

  /**
   * Runs `read` on every owner of now, naming the partitions it must cover; fails, retryably,
   * when a partition has no live owner, an owner does not answer (then `cannot` says what it
   * could not do), or does not serve them all yet. For a change (`changed` given), every owner's
   * part is waited for, and a failure says what the others changed.
   */
  private async each<T>(
    read: (member: NodeId, partitions: readonly PartitionId[]) => Promise<T>,
    cannot = "the twins it owns cannot be read",
    changed?: (done: readonly T[]) => string,
  ): Promise<T[]> {
    const owners = this.ownersNow();
    if (owners === undefined) throw ownerless();
    const parts = [...owners].map(([member, partitions]) =>
      read(member, partitions).catch((err: unknown) => {
        if (isTwinmeshError(err) && err.reason === "OWNER_UNAVAILABLE") {
          throw new RoutedCallError(StatusCode.UNAVAILABLE, "MEMBER_UNAVAILABLE", `${member} is not answering, so ${cannot}; retry in a moment`, true);
        }
        throw err;
      }),
    );
    if (changed === undefined) return Promise.all(parts);
    return settleChanges(await Promise.allSettled(parts), changed);
  }
}

/**
 * The parts of a change made on several owners, or, when one failed, its error with what the
 * others did (`changed`) and what to do before repeating the call.
 */
export function settleChanges<T>(results: readonly PromiseSettledResult<T>[], changed: (done: readonly T[]) => string): T[] {
  const done: T[] = [];
  let failure: unknown;
  for (const r of results) {
    if (r.status === "fulfilled") done.push(r.value);
    else failure ??= r.reason;
  }
  if (failure === undefined) return done;
  if (done.length === 0) throw failure;
  const what = `${changed(done)} on the other owners meanwhile; list the dead letters again before repeating the call`;
  if (isTwinmeshError(failure)) throw new RoutedCallError(failure.code, failure.reason, `${failure.message}; ${what}`, failure.retryable);
  throw new RoutedCallError(StatusCode.INTERNAL, "INTERNAL", `${failure instanceof Error ? failure.message : String(failure)}; ${what}`, false);
}

/** A dead letter's place in listings: its partition, then its seq there. */
function letterPosition(d: DeadLetter): [number, number] {
  return [d.partition, parseDeadLetterId(d.id, "id").seq];
}

function comparePositions(a: readonly [number, number], b: readonly [number, number]): number {
  return a[0] - b[0] || a[1] - b[1];
}

function ownerless(): RoutedCallError {
  return new RoutedCallError(
    StatusCode.UNAVAILABLE,
    "PARTITION_UNAVAILABLE",
    "a partition has no live copy now (its owner is down and its replicas have not taken it yet), so a cluster-wide read would miss its twins; retry in a moment",
    true,
  );
}

function sameOwners(a: ReadonlyMap<NodeId, readonly PartitionId[]>, b: ReadonlyMap<NodeId, readonly PartitionId[]> | undefined): boolean {
  if (b === undefined || a.size !== b.size) return false;
  for (const [member, partitions] of a) {
    const other = b.get(member);
    if (other === undefined || other.length !== partitions.length || partitions.some((p, i) => p !== other[i])) return false;
  }
  return true;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** The shape of a `c2.` cursor (as the runtime's alert feed writes it): partition-position pairs in base 36. */
const CURSOR_SHAPE = /^c2\.(?:[0-9a-z]{1,4}-[0-9a-z]{1,11}(?:\.[0-9a-z]{1,4}-[0-9a-z]{1,11})*)?$/;

/** A `c2.` cursor's per-partition positions (what is not one reads as none: the members refuse it). */
export function parseCursor(cursor: string): Map<PartitionId, number> {
  const at = new Map<PartitionId, number>();
  if (!cursor.startsWith("c2.")) return at;
  for (const part of cursor.slice(3).split(".")) {
    const [p, n] = part.split("-");
    if (p === undefined || n === undefined) continue;
    at.set(Number.parseInt(p, 36) as PartitionId, Number.parseInt(n, 36));
  }
  return at;
}

/** Each partition at the furthest position any of `cursors` names. */
export function mergeCursors(cursors: readonly ReadonlyMap<PartitionId, number>[]): Map<PartitionId, number> {
  const at = new Map<PartitionId, number>();
  for (const c of cursors) for (const [p, n] of c) if (n > (at.get(p) ?? 0)) at.set(p, n);
  return at;
}

/** The `c2.` cursor of per-partition positions (as one node writes it). */
export function formatCursor(at: ReadonlyMap<PartitionId, number>): string {
  const parts: string[] = [];
  for (const p of [...at.keys()].sort((a, b) => a - b)) {
    const n = at.get(p) ?? 0;
    if (n > 0) parts.push(`${p.toString(36)}-${n.toString(36)}`);
  }
  return `c2.${parts.join(".")}`;
}

type InboxItem = { member: NodeId; change: AlertEvent } | { member: NodeId; error: unknown };

/**
 * The changes of a watch's parts, taken one at a time: each part waits until its change was
 * taken before it reads the next (bounded: one change per part).
 */
class Inbox {
  private readonly items: { item: InboxItem; taken: () => void }[] = [];
  private waiter: ((item: InboxItem | undefined) => void) | undefined;

  put(item: InboxItem): Promise<void> {
    return new Promise((taken) => {
      const waiter = this.waiter;
      if (waiter !== undefined) {
        this.waiter = undefined;
        taken();
        waiter(item);
      } else this.items.push({ item, taken });
    });
  }

  /** The next item, or undefined when woken (or `signal` aborted). */
  take(signal: AbortSignal): Promise<InboxItem | undefined> {
    const head = this.items.shift();
    if (head !== undefined) {
      head.taken();
      return Promise.resolve(head.item);
    }
    if (signal.aborted) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const done = (item: InboxItem | undefined): void => {
        signal.removeEventListener("abort", onAbort);
        resolve(item);
      };
      const onAbort = (): void => {
        this.waiter = undefined;
        done(undefined);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiter = done;
    });
  }

  /** Wakes the taker with nothing. */
  wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.(undefined);
  }

  /** Releases every waiting part (the round ended). */
  drain(): void {
    for (const { taken } of this.items.splice(0)) taken();
  }
}
