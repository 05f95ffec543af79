import {
  type AggregateResult,
  type AlertEvent,
  type AlertListing,
  type AlertPage,
  type DeadLetterListing,
  type DeadLetterPage,
  type DeadLetterRetry,
  type DeadLetterSelection,
  deadLetterListingIdentity,
  isLetterPosition,
  type OwnershipGate,
  type PartitionId,
  type QuerySummary,
  type TwinAggregation,
  type TwinQuery,
  type TwinRuntime,
  type TwinView,
  UnavailableError,
} from "../runtime/index.js";
import { alertListingIdentity, ClusterPageTokens, isAnyPosition, isIdPosition, twinQueryIdentity } from "./scatter-token.js";
import { LocalRouter } from "./twin-router.js";

/**
 * A member's part of a cluster-wide read (a call another node routed here, or this node's own
 * part): the reads of {@link LocalRouter}, over the partitions this node owns, with page tokens in
 * the cluster's node-independent format. A cluster token is turned into this node's signed token
 * before the runtime reads it, and the runtime's next token back into a cluster token, so the
 * node that merges the members' pages can read every member's position.
 */
export class MemberReads extends LocalRouter {
  constructor(
    private readonly node: TwinRuntime,
    private readonly gate: OwnershipGate,
    /** The partitions the reading node counts on this one to cover; absent: whatever it owns. */
    private readonly expected?: readonly PartitionId[],
  ) {
    super(node, gate);
  }

  override async *queryTwins(query: TwinQuery, signal?: AbortSignal): AsyncGenerator<TwinView, QuerySummary> {
    this.checkServed();
    const identity = twinQueryIdentity(query);
    const pageToken = this.toLocal(query.pageToken, identity);
    const summary = yield* super.queryTwins({ ...query, pageToken }, signal);
    return { ...summary, nextPageToken: this.toCluster(summary.nextPageToken, identity) };
  }

  override async listAlerts(listing: AlertListing, signal?: AbortSignal): Promise<AlertPage> {
    this.checkServed();
    const identity = alertListingIdentity(listing);
    const page = await super.listAlerts({ ...listing, pageToken: this.toLocal(listing.pageToken, identity) }, signal);
    return { ...page, nextPageToken: this.toCluster(page.nextPageToken, identity) };
  }

  override aggregateTwins(aggregation: TwinAggregation, signal?: AbortSignal): Promise<AggregateResult> {
    try {
      this.checkServed();
    } catch (err) {
      return Promise.reject(err);
    }
    return super.aggregateTwins(aggregation, signal);
  }

  /** This node's page of a cluster-wide dead letter listing: the partitions it owns, with cluster tokens. */
  override async listDeadLetters(listing: DeadLetterListing): Promise<DeadLetterPage> {
    this.checkServed();
    const identity = deadLetterListingIdentity(listing.filter);
    const token = listing.pageToken;
    const local =
      token !== undefined && ClusterPageTokens.is(token)
        ? this.node.pageTokens.encode(identity, ClusterPageTokens.decode(token, identity, isLetterPosition))
        : token;
    const page = await super.listDeadLetters({ ...listing, pageToken: local });
    const next =
      page.nextPageToken === "" ? "" : ClusterPageTokens.encode(identity, this.node.pageTokens.decode(page.nextPageToken, identity, isLetterPosition));
    return { ...page, nextPageToken: next };
  }

  /** Named dead letters are checked one by one by the store; a selection of all is refused unless this node serves every partition counted on it. */
  override async retryDeadLetters(selection: DeadLetterSelection, signal?: AbortSignal): Promise<DeadLetterRetry> {
    if ("all" in selection) this.checkServed();
    return super.retryDeadLetters(selection, signal);
  }

  override async deleteDeadLetters(selection: DeadLetterSelection, signal?: AbortSignal): Promise<{ deleted: number }> {
    if ("all" in selection) this.checkServed();
    return super.deleteDeadLetters(selection, signal);
  }

  override async *watchAlerts(cursor: string | undefined, filter: string | undefined, signal: AbortSignal): AsyncGenerator<AlertEvent> {
    this.checkServed();
    yield* super.watchAlerts(cursor, filter, signal);
  }

  /**
   * Refuses the part, retryably, unless this node serves every partition the reading node counts
   * on it for: one it has not taken yet (it is catching up its copy) would be missed silently.
   * @throws UnavailableError `PARTITION_MOVING`
   */
  private checkServed(): void {
    const missing = this.expected?.filter((p) => this.gate.owns?.(p) === false) ?? [];
    if (missing.length > 0) {
      throw new UnavailableError(
        "PARTITION_MOVING",
        `${this.node.host.nodeId} does not serve partition${missing.length === 1 ? "" : "s"} ${missing.slice(0, 8).join(", ")}${missing.length > 8 ? ", …" : ""} yet (it is taking them over, or has let them go); retry in a moment`,
      );
    }
  }

  /** A cluster token as this node's token for the same position; any other token as it is (the runtime checks it). */
  private toLocal(token: string | undefined, identity: string): string | undefined {
    if (token === undefined || !ClusterPageTokens.is(token)) return token;
    return this.node.pageTokens.encode(identity, ClusterPageTokens.decode(token, identity, isAnyPosition));
  }

  private toCluster(token: string, identity: string): string {
    if (token === "") return "";
    // The runtime's own token for this very query: its position has the shape the query wrote.
    const position = this.node.pageTokens.decode(token, identity, (p): p is unknown => isAnyPosition(p) || isIdPosition(p));
    return ClusterPageTokens.encode(identity, position);
  }
}
