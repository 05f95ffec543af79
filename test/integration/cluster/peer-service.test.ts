import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { GetPartitionStatesResponseSchema, PeerService } from "../../../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { rawClient, serviceError, statusDetails, unaryCall } from "../../harness/grpc-status.js";
import { startPeerServer, TEST_SETTINGS, testNode } from "../../harness/peer-server.js";
import { useTestScope } from "../../harness/test-scope.js";

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
      settings: { partitions: 256, replicationFactor: 3, kinds: ["patient", "pump"] },
    });
    assert.equal(res.nodeId, "n1");
    assert.equal(res.epoch, 1n);
    assert.equal(res.catchingUp, true);
    assert.deepEqual(
      { partitions: res.settings?.partitions, replicationFactor: res.settings?.replicationFactor, kinds: res.settings?.kinds },
      { partitions: 256, replicationFactor: 3, kinds: ["patient", "pump"] },
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
      settings: { partitions: 256, replicationFactor: 3, kinds: ["pump", "patient"] },
    });
    assert.equal(res.nodeId, "n1");
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
          return create(GetPartitionStatesResponseSchema, {});
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
