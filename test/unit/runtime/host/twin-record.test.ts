import assert from "node:assert/strict";
import { parseMeta, parseRecord, readState, serializeRecord, type TwinRecordData } from "../../../../runtime/host/twin-record.js";

const full: TwinRecordData = {
  sv: 3,
  ver: 12,
  hw: 1_795_462_404_082_001,
  gaps: [1_795_462_404_081_990, 1_795_462_404_081_995],
  let: 1_795_462_404_082,
  timers: { flush: 1_795_462_404_999 },
  alerts: {},
  inbox: ["o:7"],
  keys: ["k:a\nb"],
};
const state = { text: "line one\nline two", nested: { list: [1, "two\n", null] }, n: -0.5 };

describe("twin records", () => {
  it("store the metadata and the state apart, and read both back", () => {
    const raw = serializeRecord(full, JSON.stringify(state));
    assert.equal(raw.split("\n").length, 2, "only the separator is a raw newline; newlines inside strings stay escaped");
    const parsed = parseRecord(raw);
    assert.deepEqual(parsed.rec, full);
    assert.deepEqual(parsed.state, state);
    assert.equal(parsed.stateJson, JSON.stringify(state));
    assert.deepEqual(parseMeta(raw), full);
    assert.deepEqual(readState(raw), { sv: 3, state });
  });

  it("store a tombstone as metadata alone", () => {
    const tombstone: TwinRecordData = { sv: 1, ver: 4, hw: 9, del: 1 };
    const raw = serializeRecord(tombstone, undefined);
    assert.ok(!raw.includes("\n"));
    assert.deepEqual(parseRecord(raw), { rec: tombstone, state: undefined, stateJson: undefined });
    assert.equal(readState(raw), undefined);
  });

  it("read records of data format 1, one JSON object with the state inside", () => {
    const raw = JSON.stringify({ ...full, state });
    assert.deepEqual(parseRecord(raw), { rec: full, state, stateJson: undefined });
    assert.deepEqual(parseMeta(raw), full);
    assert.deepEqual(readState(raw), { sv: 3, state });
    const tombstone = JSON.stringify({ sv: 1, ver: 4, hw: 9, del: 1 });
    assert.equal(readState(tombstone), undefined);
    assert.equal(parseRecord(tombstone).state, undefined);
  });

  it("read the state version from the metadata when it does not come first", () => {
    const raw = `{"ver":1,"hw":2,"sv":7}\n{"a":1}`;
    assert.deepEqual(readState(raw), { sv: 7, state: { a: 1 } });
  });

  it("throw SyntaxError on a corrupt record, whichever part is damaged", () => {
    const raw = serializeRecord({ sv: 1, ver: 1, hw: 1 }, '{"a":1}');
    for (const corrupt of [raw.slice(0, -2), `x${raw}`, raw.replace("\n", "\n{"), "{"]) {
      assert.throws(() => parseRecord(corrupt), SyntaxError, corrupt);
      assert.throws(() => readState(corrupt), SyntaxError, corrupt);
    }
  });
});
