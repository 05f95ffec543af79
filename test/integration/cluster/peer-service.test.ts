import assert from "node:assert/strict";
import { create as createMessage, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import { type ForwardHandler, PEER_PROTOCOL } from "../../../cluster/index.js";
import { packChanges } from "../../../cluster/shipment-changes.js";
import {
  ClaimPartitionsResponseSchema,
  FetchPartitionRequestSchema,
  ForwardRequestSchema,
  ForwardResponseSchema,
  GetPartitionStatesResponseSchema,
  KeyChangeSchema,
  PeerService,
  ReplicateRequestSchema,
  ShipmentSchema,
} from "../../../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { type Consistency, EventResultSchema, EventStatus } from "../../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { Keys, Partitioning } from "../../../runtime/index.js";
import { methodPath, rawClient, serviceError, statusDetails, unaryCall } from "../../harness/grpc-status.js";
import { capturingLogger, startPeerServer, TEST_SETTINGS, testNode } from "../../harness/peer-server.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

describe("PeerService", () => {
  const t = useTestScope();

  async function serve(handlers = {}) {
    const n1 = testNode("n1");
    const { address } = await startPeerServer(t, n1, handlers);
    const client = rawClient(address);
    t.defer(() => client.close());
    return { n1, client };
  }

  it("answers a Ping with its node id, epoch, settings and catching-up flag", async () => {
    const { n1, client } = await serve();
    n1.catching = true;
    const res = await unaryCall(client, PeerService.method.ping, {
      nodeId: "n2",
      epoch: 1n,
      settings: { partitions: 256, replicationFactor: 3, kinds: ["patient", "pump"], peerProtocol: PEER_PROTOCOL },
    });
    assert.equal(res.nodeId, "n1");
    assert.equal(res.epoch, 1n);
    assert.equal(res.catchingUp, true);
    assert.deepEqual(
      {
        partitions: res.settings?.partitions,
        replicationFactor: res.settings?.replicationFactor,
        kinds: res.settings?.kinds,
        peerProtocol: res.settings?.peerProtocol,
      },
      { partitions: 256, replicationFactor: 3, kinds: ["patient", "pump"], peerProtocol: PEER_PROTOCOL },
    );
  });

  const cases: [string, { partitions?: number; replicationFactor?: number; kinds?: string[] }, string][] = [
    ["partitions", { partitions: 128 }, "n2 has 128 partitions, this node (n1) 256"],
    ["replication factor", { replicationFactor: 2 }, "n2 has replication factor 2, this node (n1) 3"],
    [
      "twin kinds",
      { kinds: ["patient", "valve"] },
      "n2 runs twin kinds valve that this node (n1) does not and this node (n1) runs twin kinds pump that n2 does not",
    ],
  ];
  for (const [what, settings, expected] of cases) {
    it(`refuses a Ping from a node with other ${what} FAILED_PRECONDITION, naming the difference`, async () => {
      const { client } = await serve();
      const err = await serviceError(
        unaryCall(client, PeerService.method.ping, { nodeId: "n2", epoch: 1n, settings: { ...TEST_SETTINGS, kinds: [...TEST_SETTINGS.kinds], ...settings } }),
      );
      assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
      assert.equal(err.details, `node n1 refuses n2: ${expected}; start every node with the same --partitions, --replication-factor and --twins`);
      const details = statusDetails(err);
      assert.equal(details.errorInfo?.reason, "INCOMPATIBLE_SETTINGS");
      assert.deepEqual(
        { partitions: details.errorInfo?.metadata.partitions, rf: details.errorInfo?.metadata.replicationFactor, kinds: details.errorInfo?.metadata.kinds },
        { partitions: "256", rf: "3", kinds: "patient,pump" },
      );
    });
  }

  it("accepts the same kinds sent in another order", async () => {
    const { client } = await serve();
    const res = await unaryCall(client, PeerService.method.ping, {
      nodeId: "n2",
      epoch: 1n,
      settings: { partitions: 256, replicationFactor: 3, kinds: ["pump", "patient"], peerProtocol: PEER_PROTOCOL },
    });
    assert.equal(res.nodeId, "n1");
  });

  it("refuses a Ping from an older release (no peer protocol sent) FAILED_PRECONDITION, naming the release difference", async () => {
    const { client } = await serve();
    const err = await serviceError(
      unaryCall(client, PeerService.method.ping, { nodeId: "n2", epoch: 1n, settings: { partitions: 256, replicationFactor: 3, kinds: ["pump", "patient"] } }),
    );
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(
      err.details,
      `node n1 refuses n2: n2 speaks peer protocol 0, this node (n1) ${PEER_PROTOCOL} (they run different twinmesh releases); run one twinmesh release on every node`,
    );
    assert.equal(statusDetails(err).errorInfo?.metadata.peerProtocol, String(PEER_PROTOCOL));
  });

  it("refuses a Ping from a node that has its own id FAILED_PRECONDITION", async () => {
    const { client } = await serve();
    const err = await serviceError(
      unaryCall(client, PeerService.method.ping, { nodeId: "n1", epoch: 1n, settings: { ...TEST_SETTINGS, kinds: [...TEST_SETTINGS.kinds] } }),
    );
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(statusDetails(err).errorInfo?.reason, "SAME_NODE_ID");
  });

  it("answers a malformed Ping INVALID_ARGUMENT naming every bad field", async () => {
    const { client } = await serve();
    const err = await serviceError(
      unaryCall(client, PeerService.method.ping, { nodeId: "bad id!", epoch: 0n, settings: { partitions: 0, replicationFactor: 3, kinds: ["Pump"] } }),
    );
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(
      err.details,
      `Ping from "bad id!" is malformed (node_id, epoch, settings.partitions, settings.kinds[0]); send the caller's node id, epoch and settings`,
    );
    assert.deepEqual(
      statusDetails(err).badRequest?.fieldViolations.map((v) => v.field),
      ["node_id", "epoch", "settings.partitions", "settings.kinds[0]"],
    );
  });

  it("answers a Ping without settings INVALID_ARGUMENT", async () => {
    const { client } = await serve();
    const err = await serviceError(unaryCall(client, PeerService.method.ping, { nodeId: "n2", epoch: 1n }));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(
      statusDetails(err).badRequest?.fieldViolations.map((v) => v.field),
      ["settings"],
    );
  });

  it("answers a method without a handler FAILED_PRECONDITION (NOT_SERVED), naming the method", async () => {
    const { client } = await serve();
    const err = await serviceError(unaryCall(client, PeerService.method.getPartitionStates, {}));
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(statusDetails(err).errorInfo?.reason, "NOT_SERVED");
    assert.match(err.details, /^node n1 does not serve GetPartitionStates/);
  });

  it("checks GetPartitionStates before its handler: a partition out of range is INVALID_ARGUMENT", async () => {
    let calls = 0;
    const { client } = await serve({
      partitionStates: {
        getPartitionStates: async () => {
          calls++;
          return createMessage(GetPartitionStatesResponseSchema, {});
        },
      },
    });
    await unaryCall(client, PeerService.method.getPartitionStates, { partitions: [0, 255] });
    const err = await serviceError(unaryCall(client, PeerService.method.getPartitionStates, { partitions: [3, 256] }));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(err.details, "partition 256 is outside this cluster's 256 partitions; send partitions 0-255");
    assert.deepEqual(
      statusDetails(err).badRequest?.fieldViolations.map((v) => v.field),
      ["partitions[1]"],
    );
    assert.equal(calls, 1);
  });
});

/**
 * Sends `requests` on one raw bidi call of `method`, half-closes (unless `halfClose` is false),
 * and resolves with the answers and the final status.
 */
function bidi(client: grpc.Client, path: string, requests: Buffer[], halfClose = true): Promise<{ answers: Buffer[]; error: grpc.ServiceError | undefined }> {
  return new Promise((resolve) => {
    const raw = (b: Buffer): Buffer => b;
    const call = client.makeBidiStreamRequest<Buffer, Buffer>(path, raw, raw, { deadline: Date.now() + 10_000 });
    const answers: Buffer[] = [];
    call.on("data", (b: Buffer) => answers.push(b));
    call.on("error", (error: grpc.ServiceError) => resolve({ answers, error }));
    call.on("status", (s: grpc.StatusObject) => {
      if (s.code === grpc.status.OK) resolve({ answers, error: undefined });
    });
    for (const r of requests) call.write(r);
    if (halfClose) call.end();
  });
}

describe("PeerService Forward and Replicate requests", () => {
  const t = useTestScope();
  const echo: ForwardHandler = {
    forward: async (b) => b.events.map(() => createMessage(EventResultSchema, { status: EventStatus.ACCEPTED })),
  };
  const forwardRequest = (init: MessageInitShape<typeof ForwardRequestSchema>) =>
    Buffer.from(toBinary(ForwardRequestSchema, createMessage(ForwardRequestSchema, init)));
  const event = { kind: "pump", sourceId: "p-1", seq: 1n };

  async function forwardCall(requests: Buffer[], handlers = { forward: echo }) {
    const { address } = await startPeerServer(t, testNode("n1"), handlers, 0, { maxForwardBatchEvents: 2 });
    const client = rawClient(address);
    t.defer(() => client.close());
    return bidi(client, methodPath(PeerService.method.forward), requests);
  }

  it("answers each well-formed batch with its batch_id and one result per event", async () => {
    const { answers, error } = await forwardCall([
      forwardRequest({ batchId: 7n, epoch: 1n, events: [event, event] }),
      forwardRequest({ batchId: 8n, epoch: 1n, events: [] }),
    ]);
    assert.equal(error, undefined);
    const decoded = answers.map((b) => fromBinary(ForwardResponseSchema, b)).map((r) => [r.batchId, r.results.length]);
    assert.deepEqual(
      decoded.sort((a, b) => Number(a[0]) - Number(b[0])),
      [
        [7n, 2],
        [8n, 0],
      ],
    );
  });

  const malformed: [string, MessageInitShape<typeof ForwardRequestSchema>, string, string][] = [
    [
      "an epoch of 0",
      { batchId: 2n, epoch: 0n, events: [event] },
      "BAD_FIELD",
      "forwarded batch 2 has epoch 0; send the epoch of the ring the batch was routed by (1 or more)",
    ],
    [
      "an unknown consistency",
      { batchId: 2n, epoch: 1n, consistency: 9 as Consistency, events: [event] },
      "BAD_FIELD",
      "forwarded batch 2 has consistency 9, which this node does not know; send LOCAL, QUORUM, ALL or unspecified",
    ],
    [
      "too many events",
      { batchId: 2n, epoch: 1n, events: [event, event, event] },
      "BATCH_TOO_LARGE",
      "forwarded batch 2 has 3 events, over this node's limit of 2; split it into smaller batches",
    ],
  ];
  for (const [what, request, reason, message] of malformed) {
    it(`ends a Forward stream INVALID_ARGUMENT at a batch with ${what}, after answering the batch before it`, async () => {
      const { answers, error } = await forwardCall([forwardRequest({ batchId: 1n, epoch: 1n, events: [event] }), forwardRequest(request)]);
      assert.equal(error?.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(error?.details, message);
      assert.equal(error && statusDetails(error).errorInfo?.reason, reason);
      assert.deepEqual(
        answers.map((b) => fromBinary(ForwardResponseSchema, b).batchId),
        [1n],
      );
    });
  }

  it("ends a Forward stream INVALID_ARGUMENT when a batch_id is reused while its batch is in flight, after answering that batch", async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const slow: ForwardHandler = {
      forward: async (b) => {
        await held;
        return b.events.map(() => createMessage(EventResultSchema, { status: EventStatus.ACCEPTED }));
      },
    };
    const { log, entries } = capturingLogger();
    const { address } = await startPeerServer(t, testNode("n1"), { forward: slow }, 0, { log });
    const client = rawClient(address);
    t.defer(() => client.close());
    const same = forwardRequest({ batchId: 5n, epoch: 1n, events: [event] });
    const result = bidi(client, methodPath(PeerService.method.forward), [same, same]);
    await waitFor(() => entries.some((e) => e.msg === "forward stream ends at a malformed batch"), {
      timeoutMs: 5_000,
      what: "n1 to refuse the reused batch_id",
    });
    release();
    const { answers, error } = await result;
    assert.equal(error?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(error && statusDetails(error).errorInfo?.reason, "BATCH_ID_IN_FLIGHT");
    assert.deepEqual(
      answers.map((b) => fromBinary(ForwardResponseSchema, b).batchId),
      [5n],
    );
  });

  it("ends its Forward streams once the node stops serving peers, after answering the batch in flight, without waiting for the peer to end them", async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const seen: bigint[] = [];
    const slow: ForwardHandler = {
      forward: async (b) => {
        seen.push(b.events[0]?.seq ?? 0n);
        await held;
        return b.events.map(() => createMessage(EventResultSchema, { status: EventStatus.ACCEPTED }));
      },
    };
    const stopping = new AbortController();
    const { address } = await startPeerServer(t, testNode("n1"), { forward: slow }, 0, { stopping: stopping.signal });
    const client = rawClient(address);
    t.defer(() => client.close());
    const path = methodPath(PeerService.method.forward);
    // The peer never half-closes these streams.
    const open = bidi(client, path, [forwardRequest({ batchId: 1n, epoch: 1n, events: [event] })], false);
    await waitFor(() => seen.length === 1 || undefined, { timeoutMs: 5_000, what: "the batch to reach its handler" });
    stopping.abort();
    release();
    const { answers, error } = await open;
    assert.equal(error, undefined, "the stream did not end OK");
    assert.deepEqual(
      answers.map((b) => fromBinary(ForwardResponseSchema, b).batchId),
      [1n],
    );
    // A stream opened after the stop ends at once, reading nothing.
    const late = await bidi(client, path, [forwardRequest({ batchId: 2n, epoch: 1n, events: [{ ...event, seq: 2n }] })], false);
    assert.deepEqual([late.error, late.answers.length, seen], [undefined, 0, [1n]]);
  });

  it("answers Forward FAILED_PRECONDITION (NOT_SERVED) on a node without a forward handler", async () => {
    const { error } = await forwardCall([forwardRequest({ batchId: 1n, epoch: 1n, events: [event] })], {} as { forward: ForwardHandler });
    assert.equal(error?.code, grpc.status.FAILED_PRECONDITION);
    assert.equal(error && statusDetails(error).errorInfo?.reason, "NOT_SERVED");
  });

  /** A peer server whose Replicate handler records the partition of each shipment it is handed. */
  async function recordingReplica(members?: readonly string[]): Promise<{ address: string; seen: number[] }> {
    const seen: number[] = [];
    const { address } = await startPeerServer(
      t,
      { ...testNode("n1"), members: () => members },
      {
        replicate: {
          async replicate(requests) {
            for await (const r of requests) seen.push(...r.shipments.map((s) => s.partition));
          },
        },
      },
    );
    return { address, seen };
  }

  it("ends a Replicate stream INVALID_ARGUMENT at a shipment for a partition outside the cluster, before its handler sees it", async () => {
    const { address, seen } = await recordingReplica();
    const client = rawClient(address);
    t.defer(() => client.close());
    const shipment = (partition: number) => ({ partition, epoch: 1n, position: 1n });
    const req = (partition: number) =>
      Buffer.from(toBinary(ReplicateRequestSchema, createMessage(ReplicateRequestSchema, { nodeId: "n2", shipments: [shipment(partition)] })));
    const { error } = await bidi(client, methodPath(PeerService.method.replicate), [req(3), req(256)]);
    assert.equal(error?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(error?.details, "Replicate shipment 0 (partition 256) names a partition outside this cluster's 256; send partitions 0-255");
    assert.deepEqual(seen, [3]);
  });

  it("ends a Replicate stream INVALID_ARGUMENT at a shipment whose changes cannot be read, hold another partition's key, come from an older release or say their epoch began elsewhere, before its handler sees it", async () => {
    const { address, seen } = await recordingReplica();
    const partitioning = new Partitioning(TEST_SETTINGS.partitions);
    const keys = new Keys();
    const keyOf = (twin: string) => keys.twin("device", twin);
    const mine = keyOf("d1");
    const partition = Keys.partitionOfKey(mine, partitioning) as number;
    let other = 2;
    while (Keys.partitionOfKey(keyOf(`d${other}`), partitioning) === partition) other++;
    const req = (changes: Uint8Array, oldKeyChange?: Uint8Array, begunFrom?: { partition: number; epoch: bigint; position: bigint }) => {
      const shipment = createMessage(ShipmentSchema, { partition, epoch: 1n, position: 1n, changes, begunFrom });
      // What a release before peer protocol 2 sent: one KeyChange message per key, in field 4.
      if (oldKeyChange !== undefined)
        shipment.$unknown = [{ no: 4, wireType: WireType.LengthDelimited, data: new BinaryWriter().bytes(oldKeyChange).finish() }];
      return Buffer.from(toBinary(ReplicateRequestSchema, createMessage(ReplicateRequestSchema, { nodeId: "n2", shipments: [shipment] })));
    };
    const good = packChanges([{ type: "put", key: mine, value: Buffer.from("{}") }]);
    const where = `Replicate shipment 0 (partition ${partition})`;
    for (const [bad, details] of [
      [
        req(good.subarray(0, good.length - 1)),
        `${where} has unreadable changes (change 0: its value runs past the end of the list); the owner runs another twinmesh release or has a bug: run one release on every node`,
      ],
      [
        req(
          packChanges([
            { type: "put", key: mine, value: Buffer.from("{}") },
            { type: "del", key: keyOf(`d${other}`) },
          ]),
        ),
        `${where} carries a key of another partition (change 1); a shipment holds only its own partition's keys`,
      ],
      [
        req(new Uint8Array(), toBinary(KeyChangeSchema, createMessage(KeyChangeSchema, { key: Buffer.from(mine), value: Buffer.from("{}") }))),
        `${where} carries field 4, which this release does not read; the owner runs another twinmesh release: run one release on every node`,
      ],
      ...(
        [
          [{ partition: partition + 1, epoch: 0n, position: 0n }, new Uint8Array()],
          [{ partition, epoch: 1n, position: 0n }, new Uint8Array()],
          [{ partition, epoch: 0n, position: 1n }, new Uint8Array()],
          [{ partition, epoch: 0n, position: 0n }, good],
        ] as const
      ).map(
        ([from, changes]) =>
          [
            req(changes, undefined, from),
            `${where} at epoch 1 and position 1 says its epoch began from partition ${from.partition} at epoch ${from.epoch} and position ${from.position}; begun_from goes only on an epoch's empty first shipment and names its partition, an older epoch and the position just before it: the owner runs another twinmesh release or has a bug`,
          ] as const,
      ),
    ] as const) {
      seen.length = 0;
      const client = rawClient(address);
      t.defer(() => client.close());
      const { error } = await bidi(client, methodPath(PeerService.method.replicate), [req(good), bad]);
      assert.equal(error?.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(error?.details, details);
      assert.deepEqual(seen, [partition]);
    }
  });

  it("ends a Replicate stream INVALID_ARGUMENT from a node that is not another member, or at a shipment under an epoch another member began, before its handler sees it", async () => {
    const { address, seen } = await recordingReplica(["n1", "n2", "n3"]);
    const req = (nodeId: string, epoch: bigint) =>
      Buffer.from(toBinary(ReplicateRequestSchema, createMessage(ReplicateRequestSchema, { nodeId, shipments: [{ partition: 3, epoch, position: 1n }] })));
    const replicate = async (requests: Buffer[]) => {
      seen.length = 0;
      const client = rawClient(address);
      t.defer(() => client.close());
      return (await bidi(client, methodPath(PeerService.method.replicate), requests)).error;
    };
    // n2 is member 1: epochs 1, 257, 513... are its own.
    assert.equal(await replicate([req("n2", 1n), req("n2", 257n)]), undefined);
    assert.deepEqual(seen, [3, 3]);
    for (const stranger of ["evil", "n1"]) {
      const error = await replicate([req(stranger, 1n)]);
      assert.equal(error?.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(
        error?.details,
        `Replicate from "${stranger}", which is not another member of this cluster (n2, n3); only its members call each other: check the caller's --node-id and --peers`,
      );
      assert.deepEqual(seen, []);
    }
    const error = await replicate([req("n2", 257n), req("n2", 258n)]);
    assert.equal(error?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(
      error?.details,
      "Replicate shipment 0 (partition 3) is under epoch 258, which n3 began, not n2; an owner ships only under its own epochs: the sender runs another release or has a bug",
    );
    assert.deepEqual(error && statusDetails(error).badRequest?.fieldViolations.map((v) => v.field), ["shipments[0].epoch"]);
    assert.deepEqual(seen, [3]);
    // An epoch no cluster reaches (2^48 and above: 2^40 changes of owner): the next owner's epoch would soon be no exact integer.
    assert.equal(await replicate([req("n2", 2n ** 48n - 255n)]), undefined, "n2's last epoch below 2^48");
    assert.deepEqual(seen, [3]);
    const huge = 2n ** 48n + 1n;
    const tooHigh = await replicate([req("n2", huge)]);
    assert.equal(tooHigh?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(
      tooHigh?.details,
      `Replicate shipment 0 (partition 3) has epoch ${huge} and position 1; epochs are below 2^48 and positions below 2^53: the sender runs another release or has a bug`,
    );
    assert.deepEqual(seen, []);
    const announce = Buffer.from(
      toBinary(
        ReplicateRequestSchema,
        createMessage(ReplicateRequestSchema, {
          nodeId: "n2",
          shipments: [{ partition: 3, epoch: 257n, position: 5n, begunFrom: { partition: 3, epoch: 2n ** 48n, position: 4n } }],
        }),
      ),
    );
    const beganBeyond = await replicate([announce]);
    assert.equal(beganBeyond?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(
      beganBeyond?.details,
      `Replicate shipment 0 (partition 3) says its epoch began from epoch ${2n ** 48n} and position 4; epochs are below 2^48 and positions below 2^53: the sender runs another release or has a bug`,
    );
    assert.deepEqual(beganBeyond && statusDetails(beganBeyond).badRequest?.fieldViolations.map((v) => v.field), ["shipments[0].begun_from"]);
  });

  it("answers a FetchPartition for a partition outside the cluster, after a position of another partition, or from a node that is not a member, INVALID_ARGUMENT", async () => {
    let calls = 0;
    const { address } = await startPeerServer(
      t,
      { ...testNode("n1"), members: () => ["n1", "n2", "n3"] },
      {
        fetchPartition: {
          async fetchPartition() {
            calls++;
          },
        },
      },
    );
    const client = rawClient(address);
    t.defer(() => client.close());
    const fetch = (init: MessageInitShape<typeof FetchPartitionRequestSchema>) =>
      new Promise<grpc.ServiceError | undefined>((resolve) => {
        const raw = (b: Buffer): Buffer => b;
        const bytes = Buffer.from(toBinary(FetchPartitionRequestSchema, createMessage(FetchPartitionRequestSchema, init)));
        const call = client.makeServerStreamRequest<Buffer, Buffer>(methodPath(PeerService.method.fetchPartition), raw, raw, bytes);
        call.on("data", () => undefined);
        call.on("error", (err: grpc.ServiceError) => resolve(err));
        call.on("status", (s: grpc.StatusObject) => {
          if (s.code === grpc.status.OK) resolve(undefined);
        });
      });
    assert.equal(await fetch({ partition: 4, nodeId: "n2", after: { partition: 4, epoch: 1n, position: 9n } }), undefined);
    const outside = await fetch({ partition: 256, nodeId: "n2" });
    assert.equal(outside?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(outside?.details, "partition 256 is outside this cluster's 256 partitions; send partitions 0-255");
    const mixed = await fetch({ partition: 4, nodeId: "n2", after: { partition: 5, epoch: 1n, position: 9n } });
    assert.equal(mixed?.code, grpc.status.INVALID_ARGUMENT);
    assert.deepEqual(mixed && statusDetails(mixed).badRequest?.fieldViolations.map((v) => v.field), ["after.partition"]);
    for (const after of [
      { partition: 4, epoch: 2n ** 48n, position: 1n },
      { partition: 4, epoch: 1n, position: 2n ** 62n },
    ]) {
      const beyond = await fetch({ partition: 4, nodeId: "n2", after });
      assert.equal(beyond?.code, grpc.status.INVALID_ARGUMENT, `after ${after.epoch}/${after.position}`);
      assert.equal(
        beyond?.details,
        `FetchPartition asks for partition 4 after epoch ${after.epoch} and position ${after.position}; epochs are below 2^48 and positions below 2^53: the caller runs another release or has a bug`,
      );
    }
    const stranger = await fetch({ partition: 4, nodeId: "n9" });
    assert.equal(stranger?.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(
      stranger?.details,
      `FetchPartition from "n9", which is not another member of this cluster (n2, n3); only its members call each other: check the caller's --node-id and --peers`,
    );
    assert.equal(calls, 1);
  });

  it("answers a ClaimPartitions from a stranger, for a partition outside the cluster, or naming a partition twice, INVALID_ARGUMENT, before its handler; a claim's epoch is the handler's to refuse, claim by claim", async () => {
    let calls = 0;
    const { address } = await startPeerServer(
      t,
      { ...testNode("n1"), members: () => ["n1", "n2", "n3"] },
      {
        claimPartitions: {
          async claimPartitions() {
            calls++;
            return createMessage(ClaimPartitionsResponseSchema, {});
          },
        },
      },
    );
    const client = rawClient(address);
    t.defer(() => client.close());
    const claim = (nodeId: string, claims: { partition: number; epoch: bigint }[]) =>
      serviceError(unaryCall(client, PeerService.method.claimPartitions, { nodeId, claims })).catch(() => undefined);
    // Epochs out of range, or begun by another member, reach the handler (PartitionReplica refuses them one by one).
    await unaryCall(client, PeerService.method.claimPartitions, {
      nodeId: "n2",
      claims: [
        { partition: 4, epoch: 257n },
        { partition: 5, epoch: 258n },
        { partition: 6, epoch: 2n ** 48n + 1n },
      ],
    });
    const cases: [string, { partition: number; epoch: bigint }[], string, string][] = [
      [
        "n9",
        [{ partition: 4, epoch: 257n }],
        `ClaimPartitions from "n9", which is not another member of this cluster (n2, n3); only its members call each other: check the caller's --node-id and --peers`,
        "node_id",
      ],
      ["n2", [{ partition: 256, epoch: 257n }], "partition 256 is outside this cluster's 256 partitions; send partitions 0-255", "claims[0].partition"],
      [
        "n2",
        [
          { partition: 4, epoch: 257n },
          { partition: 5, epoch: 257n },
          { partition: 4, epoch: 513n },
        ],
        "ClaimPartitions from n2 claims partition 4 twice (claims[0] and claims[2]); claim each partition once: the claimant runs another release or has a bug",
        "claims[2].partition",
      ],
    ];
    for (const [nodeId, claims, details, field] of cases) {
      const err = await claim(nodeId, claims);
      assert.equal(err?.code, grpc.status.INVALID_ARGUMENT, details);
      assert.equal(err?.details, details);
      assert.deepEqual(err && statusDetails(err).badRequest?.fieldViolations.map((v) => v.field), [field]);
    }
    assert.equal(calls, 1);
  });
});
