import assert from "node:assert/strict";
import { PartitionCopies } from "../../../cluster/partition-copies.js";
import { PartitionKeyScans, RANGE_CHUNK_KEYS, type RangeCopy, RangeScans, type RangeState } from "../../../cluster/range-scans.js";
import type { KeyChange } from "../../../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { Keys, type PartitionId, Partitioning, type TwinRuntime } from "../../../runtime/index.js";

const PARTITIONS = 8;
const partitioning = new Partitioning(PARTITIONS);
const keys = new Keys();

/** A store of twin records and partition states, read in sorted chunks; counts its scans. */
class SortedStore {
  readonly data = new Map<string, string>();
  scans = 0;

  async *scan(): AsyncIterable<[string, string][]> {
    this.scans++;
    const entries = [...this.data].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (let i = 0; i < entries.length; i += 100) {
      await new Promise(setImmediate);
      yield entries.slice(i, i + 100);
    }
  }
}

/** `count` twins, their records keyed by partition, and a stored state for every partition. */
function storeWith(count: number): { store: SortedStore; runtime: TwinRuntime; byPartition: Map<number, string[]> } {
  const store = new SortedStore();
  const byPartition = new Map<number, string[]>();
  for (let i = 0; i < count; i++) {
    const key = keys.twin("counter", `c-${i}`);
    store.data.set(key, `{"n":${i}}`);
    const p = partitioning.partitionOf("counter", `c-${i}`);
    byPartition.set(p, [...(byPartition.get(p) ?? []), key]);
  }
  for (let p = 0; p < PARTITIONS; p++) store.data.set(PartitionCopies.keyOf(p as PartitionId), JSON.stringify({ e: 256 + p, p: 10 + p, h: [[256 + p, 1]] }));
  return { store, runtime: { store, partitioning } as unknown as TwinRuntime, byPartition };
}

/** What a receiver got: its chunks' keys, whether the first was marked first, and the state. */
interface Received {
  keys: string[];
  firsts: boolean[];
  state: RangeState | undefined;
  ended: boolean;
}

function receiver(partition: number, options: { failChunks?: boolean; abort?: AbortController } = {}): { copy: RangeCopy; got: Received } {
  const got: Received = { keys: [], firsts: [], state: undefined, ended: false };
  const take = (puts: KeyChange[], first: boolean): void => {
    got.keys.push(...puts.map((p) => Buffer.from(p.key).toString()));
    got.firsts.push(first);
  };
  const copy: RangeCopy = {
    partition: partition as PartitionId,
    signal: (options.abort ?? new AbortController()).signal,
    chunk: async (puts, first) => {
      if (options.failChunks) throw new Error("the receiver went away");
      take(puts, first);
    },
    end: async (state, puts, first) => {
      if (options.failChunks) throw new Error("the receiver went away");
      take(puts, first);
      got.state = state;
      got.ended = true;
    },
  };
  return { copy, got };
}

describe("RangeScans", () => {
  it("serves the whole-range copies one peer asks for in one turn from one scan, each with only its partition's keys and state", async () => {
    const { store, runtime, byPartition } = storeWith(6000);
    const scans = new RangeScans(runtime);
    const receivers = [1, 4, 6].map((p) => receiver(p));
    await Promise.all(receivers.map((r) => scans.copy("n2", r.copy)));
    assert.equal(store.scans, 1);
    for (const { copy, got } of receivers) {
      const p = copy.partition;
      assert.deepEqual(got.keys.sort(), [...(byPartition.get(p) ?? [])].sort(), `partition ${p}'s keys`);
      assert.ok((byPartition.get(p)?.length ?? 0) > RANGE_CHUNK_KEYS, "the test wants several chunks a partition");
      assert.deepEqual(
        got.firsts,
        got.firsts.map((_, i) => i === 0),
        `partition ${p}: only the first chunk is marked first`,
      );
      assert.deepEqual(got.state, { point: { epoch: 256 + p, position: 10 + p }, history: [{ epoch: 256 + p, start: 1 }], rebuilding: false, promised: 0 });
    }
  });

  it("gives another peer's copies a scan of their own, and copies asked for during a scan the next one", async () => {
    const { store, runtime } = storeWith(200);
    const scans = new RangeScans(runtime);
    const a = receiver(1);
    const b = receiver(2);
    const first = scans.copy("n2", a.copy);
    const other = scans.copy("n3", b.copy);
    await new Promise(setImmediate);
    const later = receiver(3);
    const next = scans.copy("n2", later.copy);
    await Promise.all([first, other, next]);
    assert.equal(store.scans, 3);
    assert.ok(a.got.ended && b.got.ended && later.got.ended);
  });

  it("finishes the other copies of a scan when one receiver fails, and rejects only that one", async () => {
    const { runtime, byPartition } = storeWith(6000);
    const scans = new RangeScans(runtime);
    const failing = receiver(1, { failChunks: true });
    const ok = receiver(2);
    const results = await Promise.allSettled([scans.copy("n2", failing.copy), scans.copy("n2", ok.copy)]);
    assert.equal(results[0]?.status, "rejected");
    assert.equal(results[1]?.status, "fulfilled");
    assert.deepEqual(ok.got.keys.sort(), [...(byPartition.get(2) ?? [])].sort());
  });

  it("stops collecting for a copy whose caller has gone", async () => {
    const { runtime } = storeWith(6000);
    const scans = new RangeScans(runtime);
    const abort = new AbortController();
    const gone = receiver(1, { abort });
    const done = scans.copy("n2", gone.copy);
    abort.abort();
    await done;
    assert.equal(gone.got.ended, false);
  });
});

describe("PartitionKeyScans", () => {
  it("answers the partitions asked for in one turn from one scan of the store, each with its own keys", async () => {
    const { store, runtime, byPartition } = storeWith(500);
    const scans = new PartitionKeyScans(runtime);
    const answers = await Promise.all([0, 3, 5, 3].map((p) => scans.keysOf(p as PartitionId)));
    assert.equal(store.scans, 1);
    for (const [i, p] of [0, 3, 5, 3].entries()) assert.deepEqual([...(answers[i] ?? [])].sort(), [...(byPartition.get(p) ?? [])].sort(), `partition ${p}`);
  });
});
