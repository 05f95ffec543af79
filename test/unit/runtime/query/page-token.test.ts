import assert from "node:assert/strict";
import { isTwinmeshError } from "../../../../runtime/errors.js";
import { isIdPosition, PageTokens } from "../../../../runtime/query/page-token.js";

function badToken(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(isTwinmeshError(err));
    assert.equal(err.reason, "BAD_PAGE_TOKEN");
    assert.deepEqual(
      err.violations.map((v) => v.field),
      ["page_token"],
    );
    return err.message;
  }
  assert.fail("expected BAD_PAGE_TOKEN");
}

describe("PageTokens", () => {
  const tokens = PageTokens.ephemeral();
  const ids = isIdPosition();

  it("decodes its own token for the same query, and refuses it for another query", () => {
    const token = tokens.encode("q1", "t-0042");
    assert.equal(tokens.decode(token, "q1", ids), "t-0042");
    assert.match(
      badToken(() => tokens.decode(token, "q2", ids)),
      /belongs to a query with other parameters/,
    );
  });

  it("refuses a token signed with another key, an altered one, an unsigned one and an oversized one", () => {
    const foreign = PageTokens.ephemeral().encode("q1", "t-0042");
    assert.match(
      badToken(() => tokens.decode(foreign, "q1", ids)),
      /not a token this node issued, or it was altered/,
    );
    const [payload, mac] = tokens.encode("q1", "t-0042").split(".") as [string, string];
    const altered = Buffer.from(Buffer.from(payload, "base64url").toString().replace("t-0042", "t-9999")).toString("base64url");
    badToken(() => tokens.decode(`${altered}.${mac}`, "q1", ids));
    badToken(() => tokens.decode(payload, "q1", ids));
    badToken(() => tokens.decode("", "q1", ids));
    badToken(() => tokens.decode("x".repeat(300_000), "q1", ids));
  });

  it("refuses a signed token whose position does not fit the query's check", () => {
    const token = tokens.encode("q1", { v: 1, i: "t-1" });
    assert.match(
      badToken(() => tokens.decode(token, "q1", ids)),
      /position does not fit this query/,
    );
  });
});
