import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { InvalidArgumentError } from "../errors.js";
import type { RocksStore } from "../store/rocks-store.js";

/**
 * The longest page token accepted, in characters. An `order_by` token carries the last twin's
 * value of the ordered field, which may be a long string (up to the state size limit).
 */
export const MAX_PAGE_TOKEN_LENGTH = 256 * 1024;

/** Where the token key lives in the store, beside the data format marker. */
const KEY_KEY = "\u0000meta\u0000page-token-key";
const KEY_BYTES = 32;
const MAC_BYTES = 16;
const TOKEN_VERSION = 1;

/** Checks the position a token carries has the shape its query wrote; a type guard. */
export type PositionCheck<T> = (position: unknown) => position is T;

/**
 * Opaque page tokens: `base64url(JSON).base64url(HMAC)`. The JSON binds the position to the query
 * that issued it (a hash of its parameters), and the HMAC-SHA256 with a node key makes a forged or
 * altered token fail as `BAD_PAGE_TOKEN` before anything reads its position. The key is random,
 * made once and kept in the data directory, so tokens survive restarts.
 *
 * TODO(issue 9): in a cluster any node must accept another's token: derive the key from a secret
 * every node shares (the cluster's identity), instead of one per data directory.
 */
export class PageTokens {
  private constructor(private readonly key: Buffer) {}

  /** The store's token key, made and written on first use. */
  static async open(store: RocksStore): Promise<PageTokens> {
    const stored = await store.get(KEY_KEY);
    if (stored !== undefined) {
      const key = Buffer.from(stored, "base64url");
      if (key.length === KEY_BYTES) return new PageTokens(key);
    }
    // Absent (or damaged, which only makes the tokens already handed out invalid): a new key.
    const key = randomBytes(KEY_BYTES);
    await store.write([{ type: "put", key: KEY_KEY, value: key.toString("base64url") }]);
    return new PageTokens(key);
  }

  /** A token for tests and embedders without a store; tokens it makes are valid only for it. */
  static ephemeral(): PageTokens {
    return new PageTokens(randomBytes(KEY_BYTES));
  }

  /** A token that resumes `query` after `position` (JSON). */
  encode(query: string, position: unknown): string {
    const payload = Buffer.from(JSON.stringify({ t: TOKEN_VERSION, q: queryHash(query), p: position })).toString("base64url");
    return `${payload}.${this.mac(payload).toString("base64url")}`;
  }

  /**
   * The position inside a token this node issued for the same query, checked by `check`.
   * @throws InvalidArgumentError `BAD_PAGE_TOKEN` on the `page_token` field when the token is too
   *   long, malformed, not signed with this node's key, issued for other query parameters, or
   *   carries a position of the wrong shape.
   */
  decode<T>(token: string, query: string, check: PositionCheck<T>): T {
    if (token.length > MAX_PAGE_TOKEN_LENGTH) throw badToken(`it is ${token.length} characters long; tokens are at most ${MAX_PAGE_TOKEN_LENGTH}`);
    const dot = token.indexOf(".");
    if (dot <= 0) throw badToken("it is not a token this node issued");
    const payload = token.slice(0, dot);
    const mac = Buffer.from(token.slice(dot + 1), "base64url");
    if (mac.length !== MAC_BYTES || !timingSafeEqual(mac, this.mac(payload))) throw badToken("it is not a token this node issued, or it was altered");
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
    } catch {
      throw badToken("its content is not readable");
    }
    const { t, q, p } = (typeof parsed === "object" && parsed !== null ? parsed : {}) as { t?: unknown; q?: unknown; p?: unknown };
    if (t !== TOKEN_VERSION) throw badToken("it is of an unknown version");
    if (q !== queryHash(query)) throw badToken("it belongs to a query with other parameters (kind, filter, order_by)");
    if (!check(p)) throw badToken("its position does not fit this query");
    return p;
  }

  private mac(payload: string): Buffer {
    return createHmac("sha256", this.key).update(payload).digest().subarray(0, MAC_BYTES);
  }
}

/** A position that is a string, at most `maxLength` characters (an id to resume after). */
export function isIdPosition(maxLength = 1024): PositionCheck<string> {
  return (position): position is string => typeof position === "string" && position.length <= maxLength;
}

/** A short hash of a query's parameters, which binds a page token to its query. */
export function queryHash(query: string): string {
  return createHash("sha256").update(query).digest("base64url").slice(0, 12);
}

/** The refusal of a page token that is not valid for its query (INVALID_ARGUMENT, BAD_PAGE_TOKEN). */
export function badToken(why: string): InvalidArgumentError {
  return new InvalidArgumentError(
    "BAD_PAGE_TOKEN",
    `page_token is not valid: ${why}; pass the next_page_token of a previous response with the same parameters, or none for the first page`,
    [{ field: "page_token", description: "must be a next_page_token returned for the same query" }],
  );
}
