import { createHash } from "node:crypto";
import { InvalidArgumentError } from "../errors.js";

/**
 * Opaque page tokens: base64url JSON bound to the query that issued them (a hash of its
 * parameters), so a token cannot be replayed against a different query by mistake.
 */
export function encodePageToken(query: string, position: unknown): string {
  return Buffer.from(JSON.stringify({ q: queryHash(query), p: position })).toString("base64url");
}

/** The position inside a token. @throws InvalidArgumentError BAD_PAGE_TOKEN */
export function decodePageToken(token: string, query: string): unknown {
  let parsed: { q?: unknown; p?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as typeof parsed;
  } catch {
    parsed = {};
  }
  if (parsed.q !== queryHash(query) || parsed.p === undefined) {
    throw new InvalidArgumentError(
      "BAD_PAGE_TOKEN",
      "page_token does not belong to this query; pass the next_page_token of a previous response with the same parameters, or none for the first page",
      [{ field: "page_token", description: "must be a next_page_token returned for the same query" }],
    );
  }
  return parsed.p;
}

function queryHash(query: string): string {
  return createHash("sha256").update(query).digest("base64url").slice(0, 12);
}
