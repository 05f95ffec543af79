import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { TwinmeshClient } from "../../client/index.js";
import { TwinmeshNode, TwinRuntime } from "../../index.js";
import { CounterTwin, FIXTURE_KINDS, fixtureTwins } from "../fixtures/index.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

const VERSION = (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version;

describe("NodeService and hosting a node in process (node-service)", () => {
  const t = useTestScope();

  it("describes the node: its id, the kinds it runs with placement and state version, one copy, the release", async () => {
    const { client } = await startNode(t, { nodeId: "edge-7" });
    const node = await client.describeNode();
    assert.equal(node.nodeId, "edge-7");
    assert.deepEqual(
      node.kinds.map((k) => k.kind),
      [...FIXTURE_KINDS],
    );
    assert.deepEqual(
      node.kinds.find((k) => k.kind === "counter"),
      { $typeName: "twinmesh.v1.TwinKindInfo", kind: "counter", placement: "any", stateVersion: 1 },
    );
    assert.equal(node.replicationFactor, 1);
    assert.equal(node.version, VERSION);
  });

  it("warns once at start-up when the data directory holds twins of kinds that are not loaded", async () => {
    const first = await startNode(t);
    await first.client.publish([
      { kind: "counter", sourceId: "c-1", seq: 1n, channels: { v: 1 } },
      { kind: "alarm", sourceId: "a-1", seq: 1n, channels: { level: 1 } },
    ]);
    assert.deepEqual(first.node.runtime.unloadedKinds, []);
    const second = await first.restart({ twins: [CounterTwin] });
    assert.deepEqual(second.node.runtime.unloadedKinds, ["alarm"]);
    const warnings = second.logs.filter((l) => l.msg === "stored twins of kinds not loaded");
    assert.equal(warnings.length, 1, JSON.stringify(second.logs));
    assert.deepEqual(warnings[0]?.kinds, ["alarm"]);
    assert.deepEqual(warnings[0]?.loaded, ["counter"]);
  });

  it("serves a runtime opened by the caller, and leaves it open when the server stops", async () => {
    const dataDir = t.tempDir("embedded");
    const runtime = await TwinRuntime.open({ dataDir, twins: [...fixtureTwins] });
    t.defer(() => runtime.close());
    const node = await TwinmeshNode.serve(runtime, { port: 0 });
    t.defer(() => node.close(1_000));
    const client = new TwinmeshClient(node.address);
    t.defer(() => client.close());

    // Events published in process are seen over gRPC, and the other way round.
    const [inProcess] = await runtime.host.publish([{ kind: "counter", sourceId: "c-1", seq: 1, channels: { v: 2 } }]);
    assert.equal(inProcess?.status, "accepted");
    const { results } = await client.publish([{ kind: "counter", sourceId: "c-1", seq: 2n, channels: { v: 3 } }]);
    assert.equal(results[0]?.reason, "");
    assert.deepEqual((await client.getTwin({ kind: "counter", id: "c-1" })).twin?.state, { count: 2, lastSeq: 2, total: 5, messages: 0 });

    await node.close(1_000);
    client.close();
    // The runtime is the caller's: still open, still taking events.
    const [after] = await runtime.host.publish([{ kind: "counter", sourceId: "c-1", seq: 3, channels: { v: 1 } }]);
    assert.equal(after?.status, "accepted");
    assert.equal((await runtime.host.getTwin("counter", "c-1")).version, 3);
    await runtime.close();
    assert.ok(existsSync(dataDir));
  });

  it("refuses a port out of range before opening the data directory", async () => {
    const dataDir = `${t.tempDir("ports")}/never`;
    await assert.rejects(TwinmeshNode.start({ twins: [CounterTwin], dataDir, port: 70_000 }), {
      name: "ConfigError",
      reason: "BAD_OPTION",
      message: "port is 70000; use a whole number from 0 to 65535 (0 picks a free port)",
    });
    assert.equal(existsSync(dataDir), false);
  });

  it("leaves no data directory behind when its port is in use, and answers LISTEN_FAILED", async () => {
    const { node } = await startNode(t);
    const port = Number(node.address.split(":").pop());
    const dataDir = `${t.tempDir("busy")}/never`;
    await assert.rejects(TwinmeshNode.start({ twins: [CounterTwin], dataDir, port }), {
      name: "ConfigError",
      reason: "LISTEN_FAILED",
      message: `cannot listen on 127.0.0.1:${port}: the address is in use (EADDRINUSE); pick another --port or stop the process using it`,
    });
    assert.equal(existsSync(dataDir), false);
  });
});
