import { badToken, type PositionCheck, queryHash } from "../runtime/index.js";

/** The prefix of a cluster page token (version 1). */
const PREFIX = "s1.";
/** The longest cluster token accepted, in characters (an `order_by` value may be a long string). */
const MAX_TOKEN_LENGTH = 256 * 1024;

/**
 * Page tokens of cluster-wide reads: the position a page ended at (the last twin's id, or its
 * `order_by` value and id; the last alert id) and a hash of the query's parameters, as
 * `s1.base64url(JSON)`. A position names no node and no partition, so any node continues a
 * token another issued, also after a failover moved partitions between them.
 *
 * The token is not signed (the nodes of a static cluster share no secret): a forged one can only
 * choose where a page starts, which a filter on `id` does as well; its shape is checked.
 */
export const ClusterPageTokens = {
  /** True for a token of this format (a routed call's token, translated by the receiving node). */
  is(token: string): boolean {
    return token.startsWith(PREFIX);
  },

  encode(identity: string, position: unknown): string {
    return `${PREFIX}${Buffer.from(JSON.stringify({ q: queryHash(identity), p: position })).toString("base64url")}`;
  },

  /**
   * The position in a token issued for the same query.
   * @throws InvalidArgumentError `BAD_PAGE_TOKEN` on `page_token` when it is malformed, too long,
   *   issued for other parameters, or its position does not fit the query.
   */
  decode<T>(token: string, identity: string, check: PositionCheck<T>): T {
    if (token.length > MAX_TOKEN_LENGTH) throw badToken(`it is ${token.length} characters long; tokens are at most ${MAX_TOKEN_LENGTH}`);
    if (!token.startsWith(PREFIX)) throw badToken("it is not a token this cluster issued");
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(token.slice(PREFIX.length), "base64url").toString("utf8"));
    } catch {
      throw badToken("its content is not readable");
    }
    const { q, p } = (typeof parsed === "object" && parsed !== null ? parsed : {}) as { q?: unknown; p?: unknown };
    if (q !== queryHash(identity)) throw badToken("it belongs to a query with other parameters (kind, filter, order_by)");
    if (!check(p)) throw badToken("its position does not fit this query");
    return p;
  },
} as const;

/** The parameters a twin query's token is bound to (the same as one node's tokens). */
export function twinQueryIdentity(q: { readonly kind: string; readonly filter?: string; readonly orderBy?: string }): string {
  return JSON.stringify([q.kind, q.filter ?? "", q.orderBy ?? ""]);
}

/** The parameters an alert listing's token is bound to (the same as one node's tokens). */
export function alertListingIdentity(l: { readonly filter?: string }): string {
  return JSON.stringify(["alerts", l.filter ?? ""]);
}

/** Where an ordered page ended: the `order_by` value (`null` when absent) and the last twin's id. */
export interface OrderPosition {
  readonly v: unknown;
  readonly i: string;
}

/** A position after an id (id order, alerts). */
export function isIdPosition(position: unknown): position is string {
  return typeof position === "string" && position.length <= 4096;
}

/** A position after an `order_by` value and id. */
export function isOrderPosition(position: unknown): position is OrderPosition {
  if (typeof position !== "object" || position === null || Array.isArray(position)) return false;
  const { v, i } = position as { v?: unknown; i?: unknown };
  return Object.keys(position).length === 2 && v !== undefined && typeof i === "string" && i.length <= 1024 && nestsAtMost(v, MAX_POSITION_DEPTH);
}

/**
 * How deep an `order_by` value in a token may nest. A forged token can nest arrays tens of
 * thousands deep within its length limit, and re-encoding that overflows the stack (INTERNAL).
 */
const MAX_POSITION_DEPTH = 64;

function nestsAtMost(value: unknown, depth: number): boolean {
  if (typeof value !== "object" || value === null) return true;
  if (depth === 0) return false;
  return Object.values(value).every((v) => nestsAtMost(v, depth - 1));
}

/** A twin position or an alert position: either shape. */
export function isAnyPosition(position: unknown): position is string | OrderPosition {
  return isIdPosition(position) || isOrderPosition(position);
}
