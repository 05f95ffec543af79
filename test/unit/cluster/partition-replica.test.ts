import assert from "node:assert/strict";
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import type { NodeId } from "../../../cluster/node-id.js";
import { nextEpoch, PartitionCopies, PartitionCopy, parseCopyState } from "../../../cluster/partition-copies.js";
import { PartitionReplica } from "../../../cluster/partition-replica.js";
import type { Replicator } from "../../../cluster/replicator.js";
import { RingSnapshot } from "../../../cluster/ring-snapshot.js";
import { packChanges } from "../../../cluster/shipment-changes.js";
import {
  FetchPartitionRequestSchema,
  type FetchPartitionResponse,
  FetchPartitionResponseSchema,
  type ReplicateRequest,
  ReplicateRequestSchema,
  type ReplicateResponse,
  type Shipment,
  ShipmentSchema,
} from "../../../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { type BatchOp, type PartitionId, Partitioning, silentLogger, type TwinRuntime } from "../../../runtime/index.js";
import type { CallContext, StreamSink } from "../../../server/grpc/index.js";
import { waitFor } from "../../harness/wait-for.js";

const PARTITION = 3 as PartitionId;
const OWNER = "n1" as NodeId;

/** A node's store as a map, whose writes the test may hold back. */
class FakeStore {
  readonly data = new Map<string, string>();
  /** Set to hold the next writes until `release()`. */
  hold = false;
  /** Set to fail the next write, as a full disk does. */
  failNext = false;
  private held: (() => void)[] = [];
  private onWrite: (() => void)[] = [];

  async write(ops: readonly BatchOp[]): Promise<void> {
    for (const f of this.onWrite.splice(0)) f();
    if (this.hold) await new Promise<void>((resolve) => this.held.push(resolve));
    if (this.failNext) {
      this.failNext = false;
      throw new Error("IO error: No space left on device");
    }
    for (const op of ops) {
      if (op.type === "put") this.data.set(op.key, typeof op.value === "string" ? op.value : Buffer.from(op.value).toString());
      else this.data.delete(op.key);
    }
  }

  /** Resolves when the next write begins. */
  nextWrite(): Promise<void> {
    return new Promise((resolve) => this.onWrite.push(resolve));
  }

  release(): void {
    this.hold = false;
    for (const f of this.held.splice(0)) f();
  }

  async *scan(): AsyncIterable<[string, string][]> {}
}

/** The catch-ups a replica began: each partition it asked a source for. The fetch itself fails. */
class FetchLog {
  readonly fetched: number[] = [];
  /** The point each fetch asked from, as `epoch:position`. */
  readonly after: string[] = [];

  channel(): grpc.Client {
    const { fetched, after } = this;
    return {
      makeServerStreamRequest(_path: string, _serialize: unknown, _deserialize: unknown, request: Buffer) {
        const req = fromBinary(FetchPartitionRequestSchema, request);
        fetched.push(req.partition);
        after.push(`${req.after?.epoch}:${req.after?.position}`);
        return {
          cancel: () => undefined,
          // biome-ignore lint/correctness/useYield: a stream that fails before its first message
          async *[Symbol.asyncIterator]() {
            throw new Error("the test's source does not answer");
          },
        };
      },
    } as unknown as grpc.Client;
  }
}

/** A catch-up source the test feeds: each fetch streams what the test pushes, until it ends. */
class HeldSource {
  private readonly queue: Buffer[] = [];
  private readonly waiters: (() => void)[] = [];
  private ended = false;
  /** True once a fetch's call was cancelled. */
  cancelled = false;

  push(res: MessageInitShape<typeof FetchPartitionResponseSchema>): void {
    this.queue.push(Buffer.from(toBinary(FetchPartitionResponseSchema, create(FetchPartitionResponseSchema, res))));
    this.wake();
  }

  /** Shipment `position` of `epoch`, as a catch-up streams it. */
  pushShipment(epoch: number, position: number, value: string): void {
    this.push({ body: { case: "shipment", value: shipment(epoch, position, value) } });
  }

  /** The end of a stream of shipments: the point and history the copy then follows. */
  pushEnd(epoch: number, position: number, history: { epoch: number; start: number }[]): void {
    this.push({
      body: {
        case: "range",
        value: {
          completeAt: { partition: PARTITION, epoch: BigInt(epoch), position: BigInt(position) },
          history: history.map((h) => ({ epoch: BigInt(h.epoch), startPosition: BigInt(h.start) })),
        },
      },
    });
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  channel(): grpc.Client {
    const source = this;
    return {
      makeServerStreamRequest() {
        return {
          cancel: () => {
            source.cancelled = true;
            source.end();
          },
          async *[Symbol.asyncIterator]() {
            for (;;) {
              const next = source.queue.shift();
              if (next !== undefined) yield next;
              else if (source.ended) return;
              else await new Promise<void>((resolve) => source.waiters.push(resolve));
            }
          },
        };
      },
    } as unknown as grpc.Client;
  }

  private wake(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }
}

/** Whether the replica's node serves the partition (its ownership's answer), and the epochs its replicator was told ended. */
interface Serving {
  holds: boolean;
  ended?: string[];
}

async function replicaOn(
  store: FakeStore,
  fetches?: { channel(): grpc.Client },
  serving: Serving = { holds: false },
  members: readonly string[] = ["n1", "n2", "n3"],
  replicationFactor = 3,
): Promise<{ replica: PartitionReplica; copies: PartitionCopies }> {
  const partitioning = new Partitioning(16);
  const host = {
    writeReplicated: (ops: readonly BatchOp[]) => store.write(ops),
    serving: true,
    diskProblem: undefined,
    onServingChange: () => () => undefined,
  };
  const runtime = { store, partitioning, host } as unknown as TwinRuntime;
  const copies = await PartitionCopies.load(runtime.store, 16);
  const ring = new RingSnapshot(1n, members, partitioning, replicationFactor);
  const replica = new PartitionReplica({
    self: "n2" as NodeId,
    runtime,
    copies,
    replicator: { endEpoch: (partition: number, epoch: number) => serving.ended?.push(`p${partition}@${epoch}`) } as unknown as Replicator,
    ring: () => ring,
    channel: (): grpc.Client => {
      if (fetches !== undefined) return fetches.channel();
      throw new Error("this test expects no catch-up");
    },
    holds: () => serving.holds,
    superseded: () => undefined,
    log: silentLogger(),
  });
  return { replica, copies };
}

function shipment(epoch: number, position: number, value: string): Shipment {
  return create(ShipmentSchema, {
    partition: PARTITION,
    epoch: BigInt(epoch),
    position: BigInt(position),
    changes: packChanges([{ type: "put", key: "k", value: Buffer.from(value) }]),
  });
}

/** The empty first shipment of `epoch` at `position`, announced by an owner that began it standing at `from`. */
function announcement(epoch: number, position: number, from: { epoch: number; position: number }): Shipment {
  return create(ShipmentSchema, {
    partition: PARTITION,
    epoch: BigInt(epoch),
    position: BigInt(position),
    begunFrom: { partition: PARTITION, epoch: BigInt(from.epoch), position: BigInt(from.position) },
  });
}

function request(...shipments: Shipment[]): ReplicateRequest {
  return create(ReplicateRequestSchema, { nodeId: OWNER, shipments });
}

/** Sends `requests` on one Replicate stream and returns the answers, in order. */
function stream(replica: PartitionReplica, requests: readonly ReplicateRequest[]): { answers: ReplicateResponse[]; done: Promise<void> } {
  const answers: ReplicateResponse[] = [];
  const out = {
    write: async (m: ReplicateResponse): Promise<void> => {
      answers.push(m);
    },
  } as unknown as StreamSink<ReplicateResponse>;
  async function* source(): AsyncIterable<ReplicateRequest> {
    yield* requests;
  }
  return { answers, done: replica.replicate(source(), out) };
}

function durableOf(answer: ReplicateResponse | undefined): string {
  return (answer?.durable ?? []).map((d) => `p${d.partition}@${d.epoch}:${d.position}`).join(",");
}

/** The promises an answer names instead of durable positions, as `p<partition>@<epoch>`. */
function promisedOf(answer: ReplicateResponse | undefined): string {
  return (answer?.promised ?? []).map((d) => `p${d.partition}@${d.epoch}`).join(",");
}

describe("PartitionReplica", () => {
  const EPOCH = nextEpoch(0, 0);

  it("answers a shipment only once its write is durable", async () => {
    const store = new FakeStore();
    const { replica, copies } = await replicaOn(store);
    copies.get(PARTITION).adopt({ epoch: EPOCH, position: 0 }, [{ epoch: EPOCH, start: 1 }]);
    store.hold = true;
    const writing = store.nextWrite();
    const { answers, done } = stream(replica, [request(shipment(EPOCH, 1, "v1"))]);
    await writing;
    // The write is held: give the replica a few turns of the event loop to (wrongly) answer.
    for (let i = 0; i < 5; i++) await new Promise(setImmediate);
    assert.deepEqual(answers.map(durableOf), [], "an answer before the write was durable");
    store.release();
    await done;
    assert.deepEqual(answers.map(durableOf), [`p${PARTITION}@${EPOCH}:1`]);
    assert.equal(store.data.get("k"), "v1");
  });

  it("never moves a copy backwards: a replayed older shipment is acknowledged and skipped, and a deposed owner's is ignored", async () => {
    const store = new FakeStore();
    const { replica, copies } = await replicaOn(store);
    const copy = copies.get(PARTITION);
    copy.adopt({ epoch: EPOCH, position: 0 }, [{ epoch: EPOCH, start: 1 }]);
    const first = stream(replica, [request(shipment(EPOCH, 1, "v1"), shipment(EPOCH, 2, "v2")), request(shipment(EPOCH, 1, "v1"))]);
    await first.done;
    assert.deepEqual(first.answers.map(durableOf), [`p${PARTITION}@${EPOCH}:2`, `p${PARTITION}@${EPOCH}:2`]);
    assert.equal(store.data.get("k"), "v2", "the replayed shipment 1 overwrote shipment 2's value");
    assert.deepEqual(copy.point, { epoch: EPOCH, position: 2 });

    // A new owner took the partition at position 3; the deposed owner still ships its position 3.
    const next = nextEpoch(EPOCH, 1);
    copy.adopt({ epoch: next, position: 3 }, [
      { epoch: EPOCH, start: 1 },
      { epoch: next, start: 3 },
    ]);
    store.data.set("k", "new owner's");
    const deposed = stream(replica, [request(shipment(EPOCH, 3, "deposed"), shipment(EPOCH, 4, "deposed"))]);
    await deposed.done;
    assert.equal(store.data.get("k"), "new owner's", "a deposed owner's shipment was applied");
    assert.deepEqual(copy.point, { epoch: next, position: 3 });
  });

  describe("a new owner's announcement of its epoch", () => {
    const NEXT = nextEpoch(EPOCH, 1);

    /** A replica whose copy stands at EPOCH:2 (it applied shipments 1 and 2 of a history that began EPOCH at 1). */
    async function replicaAtTwo(
      serving: Serving = { holds: false },
    ): Promise<{ replica: PartitionReplica; copy: PartitionCopy; store: FakeStore; fetches: FetchLog }> {
      const store = new FakeStore();
      const fetches = new FetchLog();
      const { replica, copies } = await replicaOn(store, fetches, serving);
      const copy = copies.get(PARTITION);
      copy.adopt({ epoch: EPOCH, position: 0 }, [{ epoch: EPOCH, start: 1 }]);
      await stream(replica, [request(shipment(EPOCH, 1, "v1"), shipment(EPOCH, 2, "v2"))]).done;
      return { replica, copy, store, fetches };
    }

    it("is applied without a fetch when the owner began its epoch from exactly this copy's point, and so are its next shipments", async () => {
      const { replica, copy, store, fetches } = await replicaAtTwo();
      const { answers, done } = stream(replica, [
        request(announcement(NEXT, 3, { epoch: EPOCH, position: 2 }), shipment(NEXT, 4, "v4")),
        request(shipment(NEXT, 5, "v5")),
      ]);
      await done;
      assert.deepEqual(fetches.fetched, [], "the replica fetched the partition");
      assert.deepEqual(answers.map(durableOf), [`p${PARTITION}@${NEXT}:4`, `p${PARTITION}@${NEXT}:5`]);
      assert.deepEqual(copy.point, { epoch: NEXT, position: 5 });
      assert.deepEqual(copy.history, [
        { epoch: EPOCH, start: 1 },
        { epoch: NEXT, start: 3 },
      ]);
      assert.equal(store.data.get("k"), "v5");
    });

    it("is applied without a fetch when it arrives in the same batch as the old owner's last shipments", async () => {
      const { replica, copy, fetches } = await replicaAtTwo();
      await stream(replica, [request(shipment(EPOCH, 3, "v3"), announcement(NEXT, 4, { epoch: EPOCH, position: 3 }), shipment(NEXT, 5, "v5"))]).done;
      assert.deepEqual(fetches.fetched, []);
      assert.deepEqual(copy.point, { epoch: NEXT, position: 5 });
      assert.deepEqual(copy.history.at(-1), { epoch: NEXT, start: 4 });
    });

    it("asks a catch-up it sets off from after the shipments planned before it in the same batch", async () => {
      // The deposed owner's 3 and 4 and the new owner's announcement at 3 arrive together: the
      // copy writes 3 and 4, so the fetch must ask from EPOCH:4 (the source then sees the copy
      // holds writes of a history it does not follow), not from EPOCH:2 (it would skip them).
      const { replica, copy, fetches } = await replicaAtTwo();
      await stream(replica, [request(shipment(EPOCH, 3, "a3"), shipment(EPOCH, 4, "a4"), announcement(NEXT, 3, { epoch: EPOCH, position: 2 }))]).done;
      await waitFor(() => fetches.fetched.length > 0 || undefined, { timeoutMs: 2_000, what: "the catch-up's fetch" });
      assert.deepEqual(fetches.after, [`${EPOCH}:4`]);
      assert.deepEqual(copy.point, { epoch: EPOCH, position: 4 });
    });

    const fetchedFirst: [string, () => Shipment, (copy: PartitionCopy) => void][] = [
      // The copy's position 2 is another epoch's: another history.
      [
        "the owner began its epoch from another epoch at the same position",
        () => announcement(NEXT, 3, { epoch: nextEpoch(EPOCH, 2), position: 2 }),
        () => undefined,
      ],
      // The owner stood at 1: this copy's position 2 is a write that owner never saw.
      ["the owner began its epoch from an earlier position", () => announcement(NEXT, 2, { epoch: EPOCH, position: 1 }), () => undefined],
      // An announcement that does not follow from where it says (only a bug sends it; the peer service refuses it).
      [
        "the announcement's begun_from names another position than the one before it",
        () => announcement(NEXT, 3, { epoch: EPOCH, position: 1 }),
        () => undefined,
      ],
      // Not the announcement: the epoch's first shipments were missed.
      ["the shipment is not its epoch's first (the announcement was missed)", () => shipment(NEXT, 3, "v3"), () => undefined],
      // A copy rebuilt after this node lost data follows no history it can vouch for.
      [
        "the copy is rebuilding",
        () => announcement(NEXT, 3, { epoch: EPOCH, position: 2 }),
        (copy) => {
          copy.rebuilding = true;
        },
      ],
    ];
    for (const [when, make, prepare] of fetchedFirst) {
      it(`is fetched first, not applied, when ${when}`, async () => {
        const { replica, copy, store, fetches } = await replicaAtTwo();
        prepare(copy);
        await stream(replica, [request(make())]).done;
        await waitFor(() => fetches.fetched.length > 0 || undefined, { timeoutMs: 2_000, what: "the catch-up's fetch" });
        assert.deepEqual(fetches.fetched, [PARTITION]);
        assert.deepEqual(copy.point, { epoch: EPOCH, position: 2 }, "the copy moved without a fetch");
        assert.equal(store.data.get("k"), "v2");
      });
    }

    it("is fetched first, not applied, while this node still serves the partition (its turns in flight write under the epoch it began)", async () => {
      const serving = { holds: false };
      const { replica, copy, fetches } = await replicaAtTwo(serving);
      serving.holds = true;
      await stream(replica, [request(announcement(NEXT, 3, { epoch: EPOCH, position: 2 }))]).done;
      await waitFor(() => fetches.fetched.length > 0 || undefined, { timeoutMs: 2_000, what: "the catch-up's fetch" });
      assert.deepEqual(copy.point, { epoch: EPOCH, position: 2 });
    });
  });
});

describe("PartitionReplica, closed", () => {
  it("cancels its catch-ups when it closes: a node stopped while it catches up does not wait for its sources to finish streaming", async () => {
    const store = new FakeStore();
    const source = new HeldSource();
    const { replica, copies } = await replicaOn(store, source);
    copies.get(PARTITION).adopt({ epoch: nextEpoch(0, 0), position: 0 }, [{ epoch: nextEpoch(0, 0), start: 1 }]);
    // The source streams nothing and never ends on its own.
    const caught = replica.catchUp(PARTITION, OWNER);
    await new Promise(setImmediate);
    replica.close();
    assert.equal(await caught, false);
    assert.equal(source.cancelled, true, "the catch-up's call was left open");
  });
});

describe("PartitionReplica, claimed by a node taking the partition", () => {
  const EPOCH = nextEpoch(0, 0);
  const CLAIMED = nextEpoch(EPOCH, 2);

  /** A replica whose copy stands at EPOCH:2, and its store. */
  async function replicaAtTwo(serving: Serving = { holds: false }): Promise<{ replica: PartitionReplica; copy: PartitionCopy; store: FakeStore }> {
    const store = new FakeStore();
    const { replica, copies } = await replicaOn(store, new FetchLog(), serving);
    const copy = copies.get(PARTITION);
    copy.adopt({ epoch: EPOCH, position: 0 }, [{ epoch: EPOCH, start: 1 }]);
    await stream(replica, [request(shipment(EPOCH, 1, "v1"), shipment(EPOCH, 2, "v2"))]).done;
    return { replica, copy, store };
  }

  it("promises the claim durably, then confirms no older epoch's shipment and answers with the promise; the claimant's own epoch applies", async () => {
    const { replica, copy, store } = await replicaAtTwo();
    const [state] = await replica.claim([{ partition: PARTITION, epoch: CLAIMED }], "n3");
    assert.equal(state?.promised, BigInt(CLAIMED), "the claim was refused");
    assert.deepEqual([state?.last?.epoch, state?.last?.position], [BigInt(EPOCH), 2n], "where the copy stood at its promise");
    assert.equal(parseCopyState(store.data.get(PartitionCopies.keyOf(PARTITION)) ?? "")?.promised, CLAIMED, "the promise is not stored");

    const old = stream(replica, [request(shipment(EPOCH, 3, "the old owner's"))]);
    await old.done;
    assert.equal(store.data.get("k"), "v2", "a shipment of the old owner was applied after the promise");
    assert.deepEqual(old.answers.map(durableOf), [""], "the copy confirmed the old owner's epoch after its promise");
    assert.deepEqual(old.answers.map(promisedOf), [`p${PARTITION}@${CLAIMED}`]);

    const claimant = stream(replica, [request(announcement(CLAIMED, 3, { epoch: EPOCH, position: 2 }), shipment(CLAIMED, 4, "v4"))]);
    await claimant.done;
    assert.deepEqual(claimant.answers.map(durableOf), [`p${PARTITION}@${CLAIMED}:4`]);
    assert.deepEqual(copy.point, { epoch: CLAIMED, position: 4 });
    assert.equal(copy.fenced, false);
  });

  it("refuses a claim no newer than the epoch the copy follows or promised, and one while this node holds the partition", async () => {
    const serving = { holds: false };
    const { replica } = await replicaAtTwo(serving);
    const promisedAfter = async (epoch: number, claimant = "n3"): Promise<bigint | undefined> =>
      (await replica.claim([{ partition: PARTITION, epoch }], claimant))[0]?.promised;
    assert.equal(await promisedAfter(EPOCH, "n1"), 0n, "the epoch the copy follows");
    assert.equal(await promisedAfter(CLAIMED), BigInt(CLAIMED));
    assert.equal(await promisedAfter(nextEpoch(0, 2)), BigInt(CLAIMED), "an epoch below the one promised");
    serving.holds = true;
    assert.equal(await promisedAfter(nextEpoch(CLAIMED, 0), "n1"), BigInt(CLAIMED), "while this node holds the partition");
    serving.holds = false;
    assert.equal(await promisedAfter(nextEpoch(CLAIMED, 0), "n1"), BigInt(nextEpoch(CLAIMED, 0)));
  });

  it("refuses, claim by claim, an epoch out of range or begun by another member, and a claimant or copy outside the partition's list; grants the others", async () => {
    const { replica } = await replicaAtTwo();
    const other = (PARTITION + 1) as PartitionId;
    const answer = async (claims: { partition: number; epoch: number }[], claimant: string): Promise<bigint[]> =>
      (
        await replica.claim(
          claims.map((c) => ({ partition: c.partition as PartitionId, epoch: c.epoch })),
          claimant,
        )
      ).map((s) => s.promised);
    // n3 is member 2 (its epochs end in 2), n2 member 1.
    assert.deepEqual(
      await answer(
        [
          { partition: PARTITION, epoch: 2 ** 48 + 2 },
          { partition: other, epoch: CLAIMED },
        ],
        "n3",
      ),
      [0n, BigInt(CLAIMED)],
      "an epoch out of range",
    );
    assert.deepEqual(await answer([{ partition: PARTITION, epoch: nextEpoch(CLAIMED, 1) }], "n3"), [0n], "an epoch n2 begins, claimed by n3");
    assert.deepEqual(await answer([{ partition: PARTITION, epoch: nextEpoch(CLAIMED, 3) }], "n4"), [0n], "a claimant that is no member");
    // In a ring of four with two copies, some partition's list leaves out n2 (this node) and some leaves out n3.
    const { replica: small } = await replicaOn(new FakeStore(), undefined, { holds: false }, ["n1", "n2", "n3", "n4"], 2);
    const ring = new RingSnapshot(1n, ["n1", "n2", "n3", "n4"], new Partitioning(16), 2);
    const lists = new Partitioning(16).all().map((p) => ({ p, list: ring.preferenceList(p) }));
    const withoutSelf = lists.find(({ list }) => !list.includes("n2") && list.includes("n3"));
    const withoutClaimant = lists.find(({ list }) => list.includes("n2") && !list.includes("n3"));
    const both = lists.find(({ list }) => list.includes("n2") && list.includes("n3"));
    assert.ok(withoutSelf && withoutClaimant && both, "the ring of four has no partition of each kind");
    const epoch = nextEpoch(0, 2);
    const states = await small.claim(
      [withoutSelf, withoutClaimant, both].map(({ p }) => ({ partition: p, epoch })),
      "n3",
    );
    assert.deepEqual(
      states.map((s) => s.promised),
      [0n, 0n, BigInt(epoch)],
      "a partition this node holds no copy of, one the claimant holds none of, and one both hold",
    );
  });

  it("writes no more under an epoch this node began once it granted a newer claim, and refuses the answers waiting on it", async () => {
    const serving: Serving = { holds: false, ended: [] };
    const { replica, copy } = await replicaAtTwo(serving);
    // This node began an epoch and let the partition go, a turn still in flight.
    copy.beginEpoch(nextEpoch(EPOCH, 1));
    assert.equal(copy.writing, true);
    const claimed = nextEpoch(copy.epoch, 2);
    const [state] = await replica.claim([{ partition: PARTITION, epoch: claimed }], "n3");
    assert.equal(state?.promised, BigInt(claimed));
    assert.equal(copy.writing, false, "the node still numbers writes under its own epoch after promising a newer one");
    assert.deepEqual(serving.ended, [`p${PARTITION}@${claimed}`]);
  });

  describe("while the copy catches up", () => {
    /** A replica at EPOCH:2 whose owner's stream answers are kept, and a catch-up source the test feeds. */
    async function catchingReplica(): Promise<{
      replica: PartitionReplica;
      copy: PartitionCopy;
      store: FakeStore;
      source: HeldSource;
      answers: ReplicateResponse[];
    }> {
      const store = new FakeStore();
      const source = new HeldSource();
      const { replica, copies } = await replicaOn(store, source);
      const copy = copies.get(PARTITION);
      copy.adopt({ epoch: EPOCH, position: 0 }, [{ epoch: EPOCH, start: 1 }]);
      const owner = stream(replica, [request(shipment(EPOCH, 1, "v1"), shipment(EPOCH, 2, "v2"))]);
      await owner.done;
      return { replica, copy, store, source, answers: owner.answers };
    }

    it("refuses a claim: a partial copy vouches for nothing", async () => {
      const { replica, copy, source } = await catchingReplica();
      const caught = replica.catchUp(PARTITION, OWNER);
      const [state] = await replica.claim([{ partition: PARTITION, epoch: CLAIMED }], "n3");
      assert.equal(state?.promised, 0n, "a copy catching up promised");
      source.end();
      await caught;
      assert.equal(copy.promised, 0);
    });

    it("tells the old owner its promise, not a durable position, when a catch-up from it ends after the promise", async () => {
      const { replica, copy, source, answers } = await catchingReplica();
      await replica.claim([{ partition: PARTITION, epoch: CLAIMED }], "n3");
      const caught = replica.catchUp(PARTITION, OWNER);
      source.pushShipment(EPOCH, 3, "v3");
      source.pushShipment(EPOCH, 4, "v4");
      source.pushEnd(EPOCH, 4, [{ epoch: EPOCH, start: 1 }]);
      source.end();
      assert.equal(await caught, true);
      for (let i = 0; i < 5; i++) await new Promise(setImmediate);
      assert.deepEqual(copy.point, { epoch: EPOCH, position: 4 });
      assert.deepEqual(answers.slice(1).map(durableOf), [""], "the copy confirmed the old owner's epoch after promising a newer one");
      assert.deepEqual(answers.slice(1).map(promisedOf), [`p${PARTITION}@${CLAIMED}`]);
    });

    it("stops once something else wrote the copy (a new owner began its epoch): an older history is not written over it", async () => {
      const { replica, copy, store, source } = await catchingReplica();
      const caught = replica.catchUp(PARTITION, OWNER);
      source.pushShipment(EPOCH, 3, "v3");
      await waitFor(() => copy.position === 3 || undefined, { timeoutMs: 2_000, what: "the catch-up's first shipment" });
      const mine = nextEpoch(EPOCH, 1);
      await replica.serialized(async () => {
        copy.beginEpoch(mine);
        await store.write([copy.op()]);
      });
      source.pushShipment(EPOCH, 4, "v4");
      source.pushEnd(EPOCH, 4, [{ epoch: EPOCH, start: 1 }]);
      source.end();
      assert.equal(await caught, false);
      assert.deepEqual(copy.point, { epoch: mine, position: 4 });
      assert.deepEqual(copy.history.at(-1), { epoch: mine, start: 4 }, "the epoch this node began was erased");
      assert.equal(store.data.get("k"), "v3");
    });
  });

  it("grants nothing when its promise cannot be written", async () => {
    const { replica, copy, store } = await replicaAtTwo();
    store.failNext = true;
    await assert.rejects(replica.claim([{ partition: PARTITION, epoch: CLAIMED }], "n3"), /No space left/);
    assert.equal(copy.promised, 0);
    const after = stream(replica, [request(shipment(EPOCH, 3, "v3"))]);
    await after.done;
    assert.deepEqual(after.answers.map(durableOf), [`p${PARTITION}@${EPOCH}:3`], "the old owner's shipments are still confirmed");
  });

  it("answers 'stay' to a catch-up from a copy ahead of its own (a newer epoch): a stale owner's older history never replaces a newer one", async () => {
    const { replica, copy } = await replicaAtTwo();
    const sent: FetchPartitionResponse[] = [];
    const out = { write: async (m: FetchPartitionResponse) => void sent.push(m) } as unknown as StreamSink<FetchPartitionResponse>;
    const after = { partition: PARTITION, epoch: BigInt(CLAIMED), position: 3n };
    await replica.fetchPartition(create(FetchPartitionRequestSchema, { partition: PARTITION, after, nodeId: "n3" }), out, {
      signal: new AbortController().signal,
    } as CallContext);
    assert.equal(sent.length, 1);
    const body = sent[0]?.body;
    assert.equal(body?.case, "range");
    if (body?.case !== "range") return;
    assert.deepEqual(
      { first: body.value.first, puts: body.value.puts.length, at: [body.value.completeAt?.epoch, body.value.completeAt?.position] },
      { first: false, puts: 0, at: [BigInt(CLAIMED), 3n] },
      "the answer is not 'stay where you are'",
    );
    assert.deepEqual(copy.point, { epoch: EPOCH, position: 2 });
  });
});

describe("nextEpoch", () => {
  it("gives two nodes taking a partition from the same highest epoch different epochs, above it", () => {
    for (const highest of [0, 1, 255, 256, 257, 1000]) {
      const epochs = [0, 1, 2].map((node) => nextEpoch(highest, node));
      assert.equal(new Set(epochs).size, 3, `from ${highest}: ${epochs.join(",")}`);
      for (const e of epochs) assert.ok(e > highest, `from ${highest}: ${e}`);
    }
  });

  it("keeps the histories of two owners that took a partition without hearing of each other apart", () => {
    // n1 owned the partition up to position 10. n2 took it and wrote 11..12 while n3 was down;
    // then n2 died and n3 took it from n1's copy, never having heard of n2's epoch.
    const base = nextEpoch(0, 0);
    const n2 = copyAt(base, 10);
    const n3 = copyAt(base, 10);
    n2.beginEpoch(nextEpoch(base, 1));
    n2.position = 12;
    n3.beginEpoch(nextEpoch(base, 2));
    n3.position = 15;
    // n2 returns: its 11..12 must not pass for a prefix of n3's history.
    assert.equal(n3.extends(n2.point), false, `n3 ${JSON.stringify(n3.history)} extends n2 at ${JSON.stringify(n2.point)}`);
    // Its copy up to 10, from n1's epoch, does.
    assert.equal(n3.extends({ epoch: base, position: 10 }), true);
  });
});

/** A copy of the partition standing at `position` of a history that began `epoch` at position 1. */
function copyAt(epoch: number, position: number): PartitionCopy {
  const copy = new PartitionCopy(PARTITION);
  copy.adopt({ epoch, position }, [{ epoch, start: 1 }]);
  return copy;
}
