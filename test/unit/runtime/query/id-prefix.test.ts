import assert from "node:assert/strict";
import { CelFilter, TWIN_FILTER_VARIABLES } from "../../../../runtime/index.js";
import { Keys } from "../../../../runtime/store/keys.js";

function prefix(expression: string): string | undefined {
  return CelFilter.compile(expression, TWIN_FILTER_VARIABLES).idPrefix();
}

describe("CelFilter.idPrefix", () => {
  it("finds the literal of id.startsWith alone or inside a conjunction", () => {
    assert.equal(prefix('id.startsWith("bed-1")'), "bed-1");
    assert.equal(prefix('state.ewma > 120.0 && id.startsWith("bed-")'), "bed-");
    assert.equal(prefix('id.startsWith("a") && (state.x > 1.0 && id.startsWith("abc"))'), "abc");
  });

  it("finds none under a disjunction, a negation, another receiver or an empty literal", () => {
    assert.equal(prefix('id.startsWith("a") || state.x > 1.0'), undefined);
    assert.equal(prefix('!id.startsWith("a")'), undefined);
    assert.equal(prefix('kind.startsWith("pat")'), undefined);
    assert.equal(prefix('id.startsWith("")'), undefined);
    assert.equal(prefix(""), undefined);
  });
});

describe("Keys.twinsOfKind", () => {
  const keys = new Keys();
  it("narrows the range to a prefix and starts after the page's last id when that is later", () => {
    const all = keys.twinsOfKind("patient");
    const narrowed = keys.twinsOfKind("patient", undefined, "bed-1");
    assert.ok(narrowed.gte > all.gte && narrowed.lt < all.lt);
    assert.ok(keys.twin("patient", "bed-12") >= narrowed.gte && keys.twin("patient", "bed-12") < narrowed.lt);
    assert.ok(!(keys.twin("patient", "bed-2") < narrowed.lt));
    const paged = keys.twinsOfKind("patient", "bed-15", "bed-1");
    assert.ok(keys.twin("patient", "bed-15") < paged.gte && keys.twin("patient", "bed-16") >= paged.gte);
    assert.equal(keys.twinsOfKind("patient", "a", "bed-1").gte, narrowed.gte);
  });
});
