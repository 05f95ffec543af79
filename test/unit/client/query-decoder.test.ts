import assert from "node:assert/strict";
import { inspect } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { decodeQueryTwinsResponse, decodeTwinMessage } from "../../../client/query-decoder.js";
import { QueryTwinsResponseSchema, TwinSnapshotSchema } from "../../../proto/gen/twinmesh/v1/twin_pb.js";
import type { TwinView } from "../../../runtime/index.js";
import { toSnapshot } from "../../../server/proto-convert.js";
import { BENCH_VIEW as BENCH, randomTwinViews } from "../../harness/random-twin-view.js";

/** A view whose snapshot has only a state: every other field is a default. */
const NONE: TwinView = { kind: "", id: "", state: {}, version: 0, lastSeq: 0, ownerNodeId: "" };

function encode(view: TwinView): Uint8Array {
  return encodePage([view]);
}

function encodePage(views: readonly TwinView[]): Uint8Array {
  return toBinary(QueryTwinsResponseSchema, { $typeName: "twinmesh.v1.QueryTwinsResponse", twins: views.map(toSnapshot) });
}

/** The fields of a TwinSnapshot, without the QueryTwinsResponse around them. */
function snapshotFields(view: TwinView): Uint8Array {
  return toBinary(TwinSnapshotSchema, toSnapshot(view));
}

/** A QueryTwinsResponse with one entry of `twins` holding `fields`, followed by `after`. */
function response(fields: Uint8Array, after: readonly number[] = []): Uint8Array {
  return Uint8Array.from([0x1a, ...varint(fields.length), ...fields, ...after]);
}

function varint(n: number): number[] {
  const bytes = [];
  for (; n > 0x7f; n = Math.floor(n / 128)) bytes.push((n & 0x7f) | 0x80);
  bytes.push(n);
  return bytes;
}

/** A state `{ [key]: value }`, with the value's bytes given as they are (a Value message's fields). */
function stateWithValue(key: string, valueFields: readonly number[]): Uint8Array {
  const keyBytes = [...Buffer.from(key)];
  const entry = [0x0a, ...varint(keyBytes.length), ...keyBytes, 0x12, ...varint(valueFields.length), ...valueFields];
  const struct = [0x0a, ...varint(entry.length), ...entry];
  return response(Uint8Array.from([0x1a, ...varint(struct.length), ...struct]));
}

/** Asserts the same result as fromBinary, down to key order, or the same error. */
function assertSameAsFromBinary(bytes: Uint8Array, message?: string): void {
  assert.deepEqual(
    outcome(() => decodeQueryTwinsResponse(bytes)),
    outcome(() => fromBinary(QueryTwinsResponseSchema, bytes)),
    message,
  );
}

/** A call's result printed in full (inspect keeps key order, bigints and -0), or what it threw. */
function outcome(f: () => unknown): { result: string; value: unknown } | { threw: string } {
  try {
    const value = f();
    return { result: inspect(value, { depth: Infinity, maxArrayLength: Infinity, maxStringLength: Infinity }), value };
  } catch (err) {
    return { threw: err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err) };
  }
}

describe("decodeQueryTwinsResponse", () => {
  it("returns the benchmark twin with protobuf-es's shapes: bigint counters, a Timestamp message, the state as JSON", () => {
    assert.deepEqual(decodeQueryTwinsResponse(encode(BENCH)), {
      $typeName: "twinmesh.v1.QueryTwinsResponse",
      twins: [
        {
          $typeName: "twinmesh.v1.TwinSnapshot",
          kind: "bench",
          id: "t-123456",
          version: 1234n,
          lastSeq: 1234n,
          ownerNodeId: "node-1",
          state: { value: 97.3, ewma: 96.1, count: 1234, min: 1.5, max: 140.2, group: "g-07", lastMs: 1795462404082 },
          lastEventTime: { $typeName: "google.protobuf.Timestamp", seconds: 1795462404n, nanos: 82_000_000 },
        },
      ],
    });
  });

  it("returns what fromBinary returns, key order included, for 3,000 generated twins, all on the fast path", () => {
    for (const [i, view] of randomTwinViews("query-decoder", 3000).entries()) {
      const bytes = encode(view);
      assert.ok(decodeTwinMessage(bytes) !== undefined, `view ${i} left the fast path: ${JSON.stringify(view).slice(0, 200)}`);
      assertSameAsFromBinary(bytes, `view ${i}`);
    }
  });

  it("returns what fromBinary returns, key order included, for pages of 1 to 700 generated twins, all on the fast path", () => {
    const views = randomTwinViews("query-decoder-pages", 3000);
    let at = 0;
    for (const size of [1, 2, 3, 10, 64, 127, 128, 500, 700, 1]) {
      const page = views.slice(at, at + size);
      at += size;
      const bytes = encodePage(page);
      const decoded = decodeTwinMessage(bytes);
      assert.equal(decoded?.twins.length, size, `a page of ${size} left the fast path`);
      assertSameAsFromBinary(bytes, `a page of ${size}`);
    }
  });

  it("returns a page's twins in their order, each twin's empty fields as defaults", () => {
    const views = [NONE, BENCH, { ...NONE, id: "only-id" }, { ...BENCH, state: {}, lastEventTime: undefined }];
    const bytes = encodePage(views);
    assert.deepEqual(
      decodeTwinMessage(bytes)?.twins.map((t) => t.id),
      ["", "t-123456", "only-id", "t-123456"],
    );
    assertSameAsFromBinary(bytes);
  });

  it("returns an empty twin with protobuf-es's defaults, without a state or a time", () => {
    const bytes = response(new Uint8Array(0));
    assert.ok(decodeTwinMessage(bytes) !== undefined);
    assertSameAsFromBinary(bytes);
    assert.deepEqual(Object.keys(decodeQueryTwinsResponse(bytes).twins[0] ?? {}), ["$typeName", "kind", "id", "version", "lastSeq", "ownerNodeId"]);
  });

  it("reads a message that is a view into a larger buffer, as grpc-js hands them over", () => {
    const bytes = encode(BENCH);
    const larger = new Uint8Array(bytes.length + 16).fill(0xff);
    larger.set(bytes, 7);
    const view = larger.subarray(7, 7 + bytes.length);
    assert.deepEqual(decodeTwinMessage(view), fromBinary(QueryTwinsResponseSchema, bytes));
  });

  it("keeps a leading U+FEFF, `__proto__` as an own key, integer-like keys first and -0", () => {
    const state = JSON.parse('{"b":"\\ufeffbom","__proto__":{"x":-0},"10":[-0],"2":"\\ufeff"}');
    const decoded = decodeTwinMessage(encode({ ...BENCH, state }));
    const decodedState = decoded?.twins[0]?.state;
    assert.ok(decodedState !== undefined);
    assert.ok(Object.hasOwn(decodedState, "__proto__"));
    assert.equal(Object.getPrototypeOf(decodedState), Object.prototype);
    assert.deepEqual(Object.keys(decodedState), ["2", "10", "b", "__proto__"]);
    assertSameAsFromBinary(encode({ ...BENCH, state }));
  });

  it("returns each short string right when thousands of them share the cache's slots", () => {
    const state = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i.toString(36)}`, `v${(i * 7919).toString(36)}`]));
    const bytes = encode({ ...BENCH, state });
    // The second pass finds the strings of the first in the cache, or strings that collide with them.
    assertSameAsFromBinary(bytes);
    assertSameAsFromBinary(bytes);
  });

  describe("hands to fromBinary, with its result or error,", () => {
    const fields = snapshotFields(BENCH);
    const cases: [string, Uint8Array][] = [
      ["the summary", toBinary(QueryTwinsResponseSchema, create(QueryTwinsResponseSchema, { summary: { matched: 3n, nextPageToken: "p" } }))],
      ["a message with a twin and a summary", response(fields, [0x12, 0x02, 0x08, 0x01])],
      ["an empty message", new Uint8Array(0)],
      ["an unknown field in the response", response(fields, [0x18, 0x05])],
      ["an unknown field in the twin", response(Uint8Array.from([...fields, 0x48, 0x01]))],
      ["an unknown field with a two-byte tag in the twin", response(Uint8Array.from([...fields, 0x80, 0x01, 0x01]))],
      ["a field with an unexpected wire type", response(Uint8Array.from([0x0d, 0x01, 0x02, 0x03, 0x04, ...fields]))],
      [
        "fields out of number order",
        response(Uint8Array.from([...snapshotFields({ ...BENCH, kind: "", id: "" }), ...snapshotFields({ ...BENCH, state: {}, ownerNodeId: "" })])),
      ],
      ["a repeated state, which fromBinary merges", response(Uint8Array.from([...fields, ...snapshotFields({ ...NONE, state: { extra: true } })]))],
      [
        "a state right after another, which fromBinary merges",
        response(Uint8Array.from([...snapshotFields({ ...NONE, state: { a: 1 } }), ...snapshotFields({ ...NONE, state: { b: 2 } })])),
      ],
      ["the twin field of one twin per message, now reserved (an unknown field)", Uint8Array.from([0x0a, ...varint(fields.length), ...fields])],
      ["a twin of a page after the old twin field", Uint8Array.from([0x0a, ...varint(fields.length), ...fields, ...response(fields)])],
      ["a page with the summary after its twins", Uint8Array.from([...response(fields), ...response(fields), 0x12, 0x02, 0x08, 0x01])],
      ["a page with a truncated last twin", Uint8Array.from([...response(fields), 0x1a, 0x05, 0x0a, 0x01])],
      [
        "a version above 2^53",
        toBinary(QueryTwinsResponseSchema, create(QueryTwinsResponseSchema, { twins: [{ version: 2n ** 60n, lastSeq: 2n ** 64n - 1n }] })),
      ],
      ["a time before 1970", toBinary(QueryTwinsResponseSchema, create(QueryTwinsResponseSchema, { twins: [{ lastEventTime: timestampFromMs(-1500) }] }))],
      ["negative nanos", toBinary(QueryTwinsResponseSchema, create(QueryTwinsResponseSchema, { twins: [{ lastEventTime: { seconds: 1n, nanos: -1 } }] }))],
      ["a state nested 40 levels deep", encode({ ...BENCH, state: JSON.parse(`${'{"a":['.repeat(40)}1${"]}".repeat(40)}`) })],
      ["a Value with two kinds set", stateWithValue("x", [0x11, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x20, 0x01])],
      ["a null_value written in two bytes", stateWithValue("x", [0x08, 0x80, 0x00])],
      ["a bool written in two bytes", stateWithValue("x", [0x20, 0x81, 0x00])],
      ["a map entry with its value before its key", response(Uint8Array.from([0x1a, 0x09, 0x0a, 0x07, 0x12, 0x02, 0x20, 0x01, 0x0a, 0x01, 0x6b]))],
      ["a map entry without a value", response(Uint8Array.from([0x1a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0x6b]))],
    ];
    for (const [what, bytes] of cases) {
      it(what, () => {
        assert.equal(decodeTwinMessage(bytes), undefined, "expected the fallback");
        assertSameAsFromBinary(bytes);
      });
    }
  });

  it("throws fromBinary's error, or returns its result, for every truncation of a twin message", () => {
    const bytes = encode({ ...BENCH, state: { ...BENCH.state, nested: { list: [1, "two", null, true, { deep: "é😀" }] } } });
    for (let length = 0; length < bytes.length; length++) assertSameAsFromBinary(bytes.subarray(0, length), `first ${length} bytes`);
  });

  it("throws fromBinary's error for invalid UTF-8 in a key and in a value", () => {
    assertSameAsFromBinary(stateWithValue("ok", [0x1a, 0x02, 0xc3, 0x28]));
    const bytes = encode({ ...BENCH, state: { "\u00e9\u00e9": 1 } });
    const at = Buffer.from(bytes).indexOf(Buffer.from("\u00e9\u00e9"));
    bytes[at + 1] = 0x41; // the continuation byte of the first é
    assertSameAsFromBinary(bytes);
    assert.throws(() => decodeQueryTwinsResponse(bytes), TypeError);
  });
});
