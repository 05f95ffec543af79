import assert from "node:assert/strict";
import { isTwinmeshError } from "../../../../runtime/errors.js";
import { compareFieldValues, compareTwins, MAX_FIELD_PATH_DEPTH, parseFieldPath, parseOrderBy, type TwinFields } from "../../../../runtime/query/field-path.js";

function twin(id: string, stateJson: string, kind = "Patient"): TwinFields {
  return { id, kind, state: JSON.parse(stateJson) };
}

/** Asserts that `fn` throws BAD_FIELD on `field` and returns the message and violation description. */
function badField(fn: () => unknown, field: string): { message: string; description: string } {
  try {
    fn();
  } catch (err) {
    assert.ok(isTwinmeshError(err));
    assert.equal(err.reason, "BAD_FIELD");
    assert.equal(err.code, 3);
    assert.equal(err.violations.length, 1);
    const [violation] = err.violations;
    assert.ok(violation !== undefined);
    assert.equal(violation.field, field);
    return { message: err.message, description: violation.description };
  }
  assert.fail("expected a BAD_FIELD error");
}

const BED = twin(
  "bed-4",
  '{"ewma":130.5,"ward":"north","vitals":{"bpm":72,"spo2":{"value":0.97,"probe":{"site":"finger","age":{"days":3}}}},"tags":["a"],"off":null}',
);

describe("parseFieldPath", () => {
  it("reads a top-level state field", () => {
    const path = parseFieldPath("state.ewma", "field");
    assert.equal(path.path, "state.ewma");
    assert.deepEqual(path.segments, ["state", "ewma"]);
    assert.equal(path.get(BED), 130.5);
  });

  it("reads nested state fields two, three and five segments deep", () => {
    assert.equal(parseFieldPath("state.vitals.bpm", "field").get(BED), 72);
    assert.equal(parseFieldPath("state.vitals.spo2.value", "field").get(BED), 0.97);
    assert.equal(parseFieldPath("state.vitals.spo2.probe.age.days", "field").get(BED), 3);
    assert.deepEqual(parseFieldPath("state.vitals.spo2.probe", "field").get(BED), { site: "finger", age: { days: 3 } });
  });

  it("reads id and kind", () => {
    assert.equal(parseFieldPath("id", "group_by").get(BED), "bed-4");
    assert.equal(parseFieldPath("kind", "group_by").get(BED), "Patient");
  });

  it("ignores whitespace around the path", () => {
    assert.equal(parseFieldPath("  state.ward ", "group_by").path, "state.ward");
  });

  it("returns undefined for a missing field, at any depth", () => {
    assert.equal(parseFieldPath("state.pressure", "field").get(BED), undefined);
    assert.equal(parseFieldPath("state.vitals.rr", "field").get(BED), undefined);
    assert.equal(parseFieldPath("state.a.b.c.d", "field").get(BED), undefined);
  });

  it("returns undefined for a path through a number, a list or null", () => {
    assert.equal(parseFieldPath("state.ewma.x", "field").get(BED), undefined);
    assert.equal(parseFieldPath("state.tags.length", "field").get(BED), undefined);
    assert.equal(parseFieldPath("state.off.x", "field").get(BED), undefined);
    assert.equal(parseFieldPath("state.x", "field").get({ id: "t", kind: "K", state: null }), undefined);
  });

  it("returns undefined for inherited names such as constructor and toString", () => {
    assert.equal(parseFieldPath("state.constructor", "field").get(BED), undefined);
    assert.equal(parseFieldPath("state.vitals.toString", "field").get(BED), undefined);
  });

  it("rejects a path that does not start with state., naming the request field", () => {
    const { message, description } = badField(() => parseFieldPath("stat.ewma", "group_by"), "group_by");
    assert.equal(
      message,
      'group_by "stat.ewma" is not a valid field path: it must be "id", "kind" or "state.<field>", e.g. "state.ewma" or "state.vitals.bpm"',
    );
    assert.equal(description, 'it must be "id", "kind" or "state.<field>", e.g. "state.ewma" or "state.vitals.bpm"');
  });

  it("rejects state alone, a bare field name and an empty path", () => {
    for (const path of ["state", "ewma", "", "  "]) {
      assert.equal(
        badField(() => parseFieldPath(path, "field"), "field").description,
        'it must be "id", "kind" or "state.<field>", e.g. "state.ewma" or "state.vitals.bpm"',
      );
    }
  });

  it("rejects a segment that is empty, starts with a digit or has punctuation", () => {
    const cases: [string, string][] = [
      ["state.", '""'],
      ["state..ewma", '""'],
      ["state.1st", '"1st"'],
      ["state.a-b", '"a-b"'],
      ["state.vitals[0]", '"vitals[0]"'],
      ["state. ewma", '" ewma"'],
    ];
    for (const [path, segment] of cases) {
      assert.equal(
        badField(() => parseFieldPath(path, "field"), "field").description,
        `segment ${segment} is not an identifier; segments are letters, digits and _ and do not start with a digit`,
      );
    }
  });

  it("accepts the maximum depth and rejects one segment more", () => {
    const keys = Array.from({ length: MAX_FIELD_PATH_DEPTH }, (_, i) => `k${i}`);
    assert.equal(parseFieldPath(`state.${keys.join(".")}`, "field").segments.length, MAX_FIELD_PATH_DEPTH + 1);
    assert.equal(
      badField(() => parseFieldPath(`state.${keys.join(".")}.extra`, "field"), "field").description,
      'it has 17 segments after "state" and the limit is 16',
    );
  });

  it("rejects a path longer than 256 characters", () => {
    assert.equal(badField(() => parseFieldPath(`state.${"a".repeat(251)}`, "field"), "field").description, "it is 257 characters long and the limit is 256");
  });
});

describe("parseOrderBy", () => {
  it("parses a field path with desc as descending", () => {
    const order = parseOrderBy("state.ewma desc");
    assert.equal(order.path.path, "state.ewma");
    assert.equal(order.descending, true);
    assert.equal(order.path.get(BED), 130.5);
  });

  it("parses a field path alone or with asc as ascending", () => {
    assert.equal(parseOrderBy("state.ewma").descending, false);
    assert.equal(parseOrderBy("state.ewma asc").descending, false);
  });

  it("accepts the direction in any case and extra whitespace", () => {
    const order = parseOrderBy("  id \t DESC ");
    assert.equal(order.path.path, "id");
    assert.equal(order.descending, true);
  });

  it("orders by id ascending when order_by is empty", () => {
    for (const text of ["", "   "]) {
      const order = parseOrderBy(text);
      assert.equal(order.path.path, "id");
      assert.equal(order.descending, false);
    }
  });

  it("rejects an unknown direction", () => {
    assert.equal(
      badField(() => parseOrderBy("state.ewma down"), "order_by").message,
      'order_by "state.ewma down" is not a valid field path: the direction "down" must be "asc" or "desc"',
    );
  });

  it("rejects more than one field, with or without a comma", () => {
    for (const text of ["state.ewma, id", "state.ewma,id", "state.ewma desc id"]) {
      assert.equal(
        badField(() => parseOrderBy(text), "order_by").description,
        'it must be one field path with an optional "asc" or "desc", e.g. "state.ewma desc"',
      );
    }
  });

  it("rejects an invalid path, naming the given request field", () => {
    assert.equal(
      badField(() => parseOrderBy("stat.ewma desc", "query.order_by"), "query.order_by").message,
      'query.order_by "stat.ewma" is not a valid field path: it must be "id", "kind" or "state.<field>", e.g. "state.ewma" or "state.vitals.bpm"',
    );
  });
});

describe("compareFieldValues", () => {
  it("sorts numbers, then strings, then booleans, then everything else", () => {
    const values = [true, "b", null, 2, "a", false, -1.5, [1], 10, { x: 1 }];
    const sorted = [...values].sort(compareFieldValues);
    assert.deepEqual(sorted.slice(0, 7), [-1.5, 2, 10, "a", "b", false, true]);
    // The rest are one equivalence class, so a stable sort keeps their input order.
    assert.deepEqual(sorted.slice(7), [null, [1], { x: 1 }]);
  });

  it("ranks an absent value (undefined) with null, after booleans", () => {
    // Array.prototype.sort never passes undefined to a comparator, so compare directly.
    assert.equal(compareFieldValues(undefined, null), 0);
    assert.equal(compareFieldValues(true, undefined) < 0, true);
    assert.equal(compareFieldValues(undefined, -1) > 0, true);
  });

  it("compares strings by code unit, so uppercase sorts before lowercase", () => {
    assert.deepEqual(["b", "a", "B", "é"].sort(compareFieldValues), ["B", "a", "b", "é"]);
  });

  it("treats NaN as an other value, after every number", () => {
    assert.equal(compareFieldValues(Number.NaN, 1e300) > 0, true);
    assert.equal(compareFieldValues(Number.NaN, null), 0);
  });

  it("treats 0 and -0 as equal", () => {
    assert.equal(compareFieldValues(0, -0), 0);
  });
});

describe("compareTwins", () => {
  const twins = [
    twin("bed-3", '{"ewma":120}'),
    twin("bed-1", '{"ewma":"n/a"}'),
    twin("bed-7", "{}"),
    twin("bed-2", '{"ewma":130.5}'),
    twin("bed-5", '{"ewma":120}'),
    twin("bed-4", '{"ewma":null}'),
    twin("bed-6", '{"ewma":true}'),
    twin("bed-0", '{"ewma":99}'),
  ];

  it("sorts ascending by value, numbers before strings before others, breaking ties by id", () => {
    const sorted = [...twins].sort(compareTwins(parseOrderBy("state.ewma")));
    assert.deepEqual(
      sorted.map((t) => t.id),
      ["bed-0", "bed-3", "bed-5", "bed-2", "bed-1", "bed-6", "bed-4", "bed-7"],
    );
  });

  it("sorts descending within each type but keeps twins without the field last, ties still by ascending id", () => {
    const sorted = [...twins].sort(compareTwins(parseOrderBy("state.ewma desc")));
    assert.deepEqual(
      sorted.map((t) => t.id),
      ["bed-2", "bed-3", "bed-5", "bed-0", "bed-1", "bed-6", "bed-4", "bed-7"],
    );
  });

  it("gives the same order whatever the input order, so the order is total", () => {
    const compare = compareTwins(parseOrderBy("state.ewma desc"));
    const forward = [...twins].sort(compare).map((t) => t.id);
    const backward = [...twins]
      .reverse()
      .sort(compare)
      .map((t) => t.id);
    assert.deepEqual(backward, forward);
  });

  it("orders by id descending when asked", () => {
    const sorted = [...twins].sort(compareTwins(parseOrderBy("id desc")));
    assert.deepEqual(
      sorted.map((t) => t.id),
      ["bed-7", "bed-6", "bed-5", "bed-4", "bed-3", "bed-2", "bed-1", "bed-0"],
    );
  });

  it("breaks a tie on value and id by kind", () => {
    const a = twin("x", '{"v":1}', "Pump");
    const b = twin("x", '{"v":1}', "Patient");
    const compare = compareTwins(parseOrderBy("state.v"));
    assert.equal(compare(a, b) > 0, true);
    assert.equal(compare(b, a) < 0, true);
    assert.equal(compare(a, a), 0);
  });
});
