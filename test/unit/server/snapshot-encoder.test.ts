import assert from "node:assert/strict";
import { toBinary } from "@bufbuild/protobuf";
import { QueryTwinsResponseSchema } from "../../../proto/gen/twinmesh/v1/twin_pb.js";
import type { JsonObject, TwinView } from "../../../runtime/index.js";
import { toSnapshot } from "../../../server/proto-convert.js";
import { encodeQueryTwinsSnapshot, MAX_PAGE_BYTES, MAX_PAGE_TWINS, QueryTwinsPage, SnapshotWriter } from "../../../server/snapshot-encoder.js";
import { BENCH_VIEW as BENCH, randomTwinViews } from "../../harness/random-twin-view.js";

/** The reference: what protobuf-es writes for a one-twin page. */
function reference(view: TwinView): Uint8Array {
  return pageReference([view]);
}

/** The reference: what protobuf-es writes for a page of these twins. */
function pageReference(views: readonly TwinView[]): Uint8Array {
  return toBinary(QueryTwinsResponseSchema, { $typeName: "twinmesh.v1.QueryTwinsResponse", twins: views.map(toSnapshot) });
}

function assertSameBytes(view: TwinView, message?: string): void {
  assert.deepEqual(Buffer.from(encodeQueryTwinsSnapshot(view)), Buffer.from(reference(view)), message);
}

/** The outcome of a call: its result, or the class and message of what it threw. */
function outcome(f: () => Uint8Array): { bytes: Buffer } | { threw: string } {
  try {
    return { bytes: Buffer.from(f()) };
  } catch (err) {
    return { threw: err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err) };
  }
}

describe("encodeQueryTwinsSnapshot", () => {
  it("writes the bytes toBinary writes for the benchmark twin", () => {
    assertSameBytes(BENCH);
  });

  it("writes the bytes toBinary writes for 3,000 generated twins, and later calls leave earlier results unchanged", () => {
    const views = randomTwinViews("snapshot-encoder", 3000);
    // Kept until the end: together they span many slabs, so a result overwritten by a later call shows.
    const encoded = views.map((view) => encodeQueryTwinsSnapshot(view));
    views.forEach((view, i) => {
      assert.deepEqual(Buffer.from(encoded[i] ?? []), Buffer.from(reference(view)), `view ${i}: ${JSON.stringify(view).slice(0, 200)}`);
    });
  });

  it("leaves out empty strings and zero counters, and writes an empty state and a time of 0 as toBinary does", () => {
    assertSameBytes({ kind: "", id: "", state: {}, version: 0, lastSeq: 0, ownerNodeId: "" });
    assertSameBytes({ kind: "", id: "", state: {}, version: 0, lastSeq: 0, lastEventTime: 0, ownerNodeId: "" });
    assert.deepEqual([...encodeQueryTwinsSnapshot({ kind: "", id: "", state: {}, version: 0, lastSeq: 0, ownerNodeId: "" })], [0x1a, 0x02, 0x1a, 0x00]);
  });

  it("writes counters from 0 to 2^53 - 1 and event times with and without a sub-second part", () => {
    for (const n of [0, 1, 127, 128, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 49, Number.MAX_SAFE_INTEGER]) {
      for (const lastEventTime of [undefined, 0, 1, 999, 1000, 1001, 1795462404000, 1795462404082, Number.MAX_SAFE_INTEGER]) {
        assertSameBytes({ ...BENCH, version: n, lastSeq: n, lastEventTime }, `counter ${n}, time ${lastEventTime}`);
      }
    }
  });

  it("writes lengths of one to four varint bytes, for strings and for the fields around them", () => {
    for (const length of [0, 1, 127, 128, 16_383, 16_384, 2_097_152]) {
      const text = "x".repeat(length);
      assertSameBytes({ ...BENCH, id: text, state: { text } }, `ASCII, ${length} bytes`);
      assertSameBytes({ ...BENCH, kind: text, state: { nested: { list: [text, { text }] } } }, `nested, ${length} bytes`);
    }
    // Multi-byte text: the length in bytes needs more varint bytes than the length in characters.
    for (const chars of [42, 43, 64, 65, 5461, 5462, 8191, 8192]) {
      const text = "€".repeat(chars);
      assertSameBytes({ ...BENCH, ownerNodeId: text, state: { [text]: text } }, `${chars} x €`);
    }
  });

  it("writes multi-byte, astral and control characters, and lone surrogates as U+FFFD, as toBinary does", () => {
    for (const text of ["é", "日本語", "😀𝄞", "a\u0000b\nc", "\uFEFFbom", "lone \ud800 high", "lone \udc00 low", `${"x".repeat(63)}é`, `é${"x".repeat(70)}`]) {
      assertSameBytes({ ...BENCH, id: text, state: { [text]: [text] } }, JSON.stringify(text));
    }
  });

  it("writes keys in Object.keys order, with `__proto__` and integer-like keys, as toBinary does", () => {
    const state = JSON.parse('{"b":1,"__proto__":{"x":null},"10":2,"a":{"2":true,"1":false},"0":[]}') as JsonObject;
    assert.ok(Object.hasOwn(state, "__proto__"));
    assertSameBytes({ ...BENCH, state });
  });

  it("writes -0, NaN, infinities and the extremes of double as toBinary does", () => {
    assertSameBytes({ ...BENCH, state: { values: [-0, 0, Number.NaN, Infinity, -Infinity, Number.MIN_VALUE, Number.MAX_VALUE, -Number.MAX_VALUE] } });
  });

  it("writes values that are not JSON as toBinary does: empty Values for undefined, functions and bigints", () => {
    const state = { missing: undefined, fn: () => 1, big: 10n, list: [undefined, 1, () => 2], date: new Date(0) } as unknown as JsonObject;
    // A hole in a sparse array is an undefined element.
    (state.list as unknown[]).length = 5;
    assertSameBytes({ ...BENCH, state });
  });

  it("leaves counters that are not non-negative safe integers and times before 1970 to toBinary, with its result or error", () => {
    for (const [field, value] of [
      ["version", 1.5],
      ["version", -1],
      ["lastSeq", 2 ** 53],
      ["lastSeq", Number.NaN],
      ["lastEventTime", -1],
      ["lastEventTime", -1001],
      ["lastEventTime", 0.5],
      ["lastEventTime", 1.0000001],
    ] as const) {
      const view = { ...BENCH, [field]: value };
      assert.deepEqual(
        outcome(() => encodeQueryTwinsSnapshot(view)),
        outcome(() => reference(view)),
        `${field} ${value}`,
      );
    }
  });

  it("encodes the next twin correctly after a call that threw midway", () => {
    const state = {
      before: "x".repeat(1000),
      get broken(): number {
        throw new Error("state getter failed");
      },
    } as unknown as JsonObject;
    assert.throws(() => encodeQueryTwinsSnapshot({ ...BENCH, state }), /state getter failed/);
    assertSameBytes(BENCH);
  });

  it("writes a twin that reaches the end of its slab at every byte of it, lengths closed after the move included", () => {
    // A state over 127 bytes of numbers only: the writes before its length closes reserve about
    // what they write, so with some slab size closing the length is what moves the message.
    const target: TwinView = { ...BENCH, state: Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`n${i}`, i + 0.5])) };
    // An empty twin first (4 bytes, each write reserving exactly what it writes), so the target
    // starts inside the slab rather than at its beginning, as every twin but a slab's first does.
    const empty: TwinView = { kind: "", id: "", state: {}, version: 0, lastSeq: 0, ownerNodeId: "" };
    const expected = Buffer.from(reference(target));
    for (let slabBytes = 5; slabBytes <= 4 + expected.length + 8; slabBytes++) {
      const writer = new SnapshotWriter(slabBytes);
      assert.equal(encodeQueryTwinsSnapshot(empty, writer).length, 4);
      assert.deepEqual(Buffer.from(encodeQueryTwinsSnapshot(target, writer)), expected, `slab of ${slabBytes} bytes`);
      assert.deepEqual(Buffer.from(encodeQueryTwinsSnapshot(BENCH, writer)), Buffer.from(reference(BENCH)), `the next twin, slab of ${slabBytes} bytes`);
    }
  });

  it("writes a twin larger than a slab, and the small twins after it", () => {
    const huge = { ...BENCH, state: { blob: "x".repeat(200 * 1024), list: Array.from({ length: 5000 }, (_, i) => ({ i })) } };
    const first = encodeQueryTwinsSnapshot(BENCH);
    const big = encodeQueryTwinsSnapshot(huge);
    const after = encodeQueryTwinsSnapshot({ ...BENCH, id: "after" });
    assert.deepEqual(Buffer.from(first), Buffer.from(reference(BENCH)));
    assert.deepEqual(Buffer.from(big), Buffer.from(reference(huge)));
    assert.deepEqual(Buffer.from(after), Buffer.from(reference({ ...BENCH, id: "after" })));
  });
});

describe("QueryTwinsPage", () => {
  /** Fills pages from `views` as the server does (take when full, then the rest) and returns each page with its twins. */
  function paginate(views: readonly TwinView[], page: QueryTwinsPage): { bytes: Buffer; views: TwinView[] }[] {
    const pages: { bytes: Buffer; views: TwinView[] }[] = [];
    let current: TwinView[] = [];
    for (const view of views) {
      page.add(view);
      current.push(view);
      if (page.full) {
        pages.push({ bytes: Buffer.from(page.take()), views: current });
        current = [];
      }
    }
    if (page.twins > 0) pages.push({ bytes: Buffer.from(page.take()), views: current });
    return pages;
  }

  it("writes the bytes toBinary writes for each page of 3,000 generated twins, with pages crossing slab ends", () => {
    const views = randomTwinViews("query-page", 3000);
    for (const [options, slabBytes] of [
      [{}, undefined],
      [{ maxTwins: 7 }, 300],
      [{ maxBytes: 1000 }, 4096],
      [{ maxTwins: 1 }, 64],
    ] as const) {
      const pages = paginate(views, new QueryTwinsPage(options, slabBytes === undefined ? undefined : new SnapshotWriter(slabBytes)));
      assert.equal(
        pages.reduce((n, p) => n + p.views.length, 0),
        views.length,
      );
      for (const [i, page] of pages.entries()) assert.deepEqual(page.bytes, Buffer.from(pageReference(page.views)), `page ${i} of ${JSON.stringify(options)}`);
    }
  });

  it("is full at maxTwins twins, or once it holds maxBytes bytes, and a twin larger than maxBytes fills a page alone", () => {
    const byCount = new QueryTwinsPage({ maxTwins: 3, maxBytes: 1_000_000 });
    for (let i = 0; i < 3; i++) {
      assert.equal(byCount.full, false);
      byCount.add(BENCH);
    }
    assert.equal(byCount.full, true);

    const entry = reference(BENCH).length;
    const byBytes = new QueryTwinsPage({ maxTwins: 1000, maxBytes: entry * 2 + 1 });
    byBytes.add(BENCH);
    byBytes.add(BENCH);
    assert.equal(byBytes.full, false, "one byte below maxBytes");
    byBytes.add(BENCH);
    assert.equal(byBytes.full, true);
    assert.equal(byBytes.bytes, entry * 3);

    const huge = { ...BENCH, state: { blob: "x".repeat(2000) } };
    const alone = new QueryTwinsPage({ maxBytes: 1000 });
    alone.add(huge);
    assert.equal(alone.full, true);
    assert.deepEqual(Buffer.from(alone.take()), Buffer.from(reference(huge)));
  });

  it("defaults to at most 500 twins or 64 KiB: a page of bench twins is full at the byte bound", () => {
    assert.deepEqual([MAX_PAGE_TWINS, MAX_PAGE_BYTES], [500, 65_536]);
    const page = new QueryTwinsPage();
    while (!page.full) page.add(BENCH);
    assert.equal(page.twins, Math.ceil(MAX_PAGE_BYTES / reference(BENCH).length));
  });

  it("takes an empty page as the empty message, and starts a new page after each take", () => {
    const page = new QueryTwinsPage();
    assert.deepEqual(Buffer.from(page.take()), Buffer.from(pageReference([])));
    assert.equal(pageReference([]).length, 0);
    page.add(BENCH);
    assert.deepEqual([page.twins, page.bytes], [1, reference(BENCH).length]);
    assert.deepEqual(Buffer.from(page.take()), Buffer.from(reference(BENCH)));
    assert.deepEqual([page.twins, page.bytes], [0, 0]);
  });

  it("writes each page right when two pages fill through one writer at once, and when a twin takes toBinary's path", () => {
    const writer = new SnapshotWriter(512);
    const a = new QueryTwinsPage({}, writer);
    const b = new QueryTwinsPage({}, writer);
    const odd = { ...BENCH, id: "before-1970", lastEventTime: -1500 };
    const views = randomTwinViews("query-page-interleaved", 40);
    const aViews: TwinView[] = [];
    const bViews: TwinView[] = [];
    for (const [i, view] of views.entries()) {
      const [page, list] = i % 3 === 0 ? [b, bViews] : [a, aViews];
      page.add(view);
      list.push(view);
      if (i === 20) {
        a.add(odd);
        aViews.push(odd);
      }
    }
    const pageA = Buffer.from(a.take());
    const pageB = Buffer.from(b.take());
    assert.deepEqual(pageA, Buffer.from(pageReference(aViews)));
    assert.deepEqual(pageB, Buffer.from(pageReference(bViews)));
  });

  it("leaves the page as it was when a twin fails to encode", () => {
    const page = new QueryTwinsPage();
    page.add(BENCH);
    assert.throws(() => page.add({ ...BENCH, version: 1.5 }), RangeError);
    page.add({ ...BENCH, id: "next" });
    assert.deepEqual(Buffer.from(page.take()), Buffer.from(pageReference([BENCH, { ...BENCH, id: "next" }])));
  });
});
