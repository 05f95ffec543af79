import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type GetNodeStatusResponse, GetNodeStatusResponseSchema, NodeService } from "../../proto/gen/twinmesh/v1/node_pb.js";
import { fixtureTwins } from "../fixtures/index.js";
import { MAIL_TWINS } from "../fixtures/mail-twins.js";
import { ev, statuses } from "../harness/events.js";
import { rawClient, serviceError, unaryBytes } from "../harness/grpc-status.js";
import { Scrape } from "../harness/prometheus-text.js";
import { type StartedNode, startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const VERSION = (JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string }).version;
const SERVICES = [
  "",
  "twinmesh.v1.AlertService",
  "twinmesh.v1.DeadLetterService",
  "twinmesh.v1.NodeService",
  "twinmesh.v1.TelemetryService",
  "twinmesh.v1.TwinService",
];
const HOUR_MS = 3_600_000;

/**
 * Sends a known mix to a fresh node and returns it: 10 accepted, 1 duplicate, 2 rejected
 * (BAD_FIELD, UNKNOWN_KIND); open alerts warning (a-1) and critical (a-2), one acknowledged
 * warning (a-3), one resolved (a-4); one pending timer (t-1, due in an hour; t-2's was
 * cancelled); two dead letters (poster p-1 and p-2 to picky-1, which refuses them).
 */
async function knownNode(t: ReturnType<typeof useTestScope>): Promise<StartedNode> {
  const node = await startNode(t, { twins: [...fixtureTwins, ...MAIL_TWINS], nodeId: "s-1", metrics: { port: 0 } });
  const { client } = node;
  const first = await client.publish([
    ev("counter", "c-1", 1),
    ev("counter", "c-1", 2),
    ev("counter", "c-1", 2),
    ev("counter", "", 1),
    ev("no-such-kind", "x", 1),
    ev("alarm", "a-1", 1, { level: 120 }),
    ev("alarm", "a-2", 1, { level: 160 }),
    ev("alarm", "a-3", 1, { level: 130 }),
    ev("alarm", "a-4", 1, { level: 140 }),
    ev("alarm", "a-4", 2, { level: 10 }),
    ev("alarm", "t-1", 1, { timerMs: HOUR_MS }),
    ev("alarm", "t-2", 1, { timerMs: HOUR_MS }),
    ev("alarm", "t-2", 2, { cancel: 1 }),
  ]);
  assert.deepEqual(statuses(first.results), [
    "ACCEPTED",
    "ACCEPTED",
    "DUPLICATE",
    "REJECTED",
    "REJECTED",
    "ACCEPTED",
    "ACCEPTED",
    "ACCEPTED",
    "ACCEPTED",
    "ACCEPTED",
    "ACCEPTED",
    "ACCEPTED",
    "ACCEPTED",
  ]);
  await client.acknowledgeAlert("alarm/a-3/high@1");
  assert.deepEqual(statuses((await client.publish([ev("poster", "p-1", 1), ev("poster", "p-2", 1)])).results), ["ACCEPTED", "ACCEPTED"]);
  await waitFor(() => node.node.runtime.host.metrics.deadLetters === 2, { timeoutMs: 10_000, what: "two dead letters" });
  await node.node.runtime.host.whenIdle();
  return node;
}

describe("NodeService.GetNodeStatus (node-status)", () => {
  const t = useTestScope();

  it("reports a single node's health, ring, partitions and exact counts of what was sent", async () => {
    const { client } = await knownNode(t);
    const status = await client.getNodeStatus();
    const { uptimeMs, ...rest } = status;
    assert.ok(uptimeMs > 0n && uptimeMs < 60_000n, `uptime ${uptimeMs} ms`);
    assert.deepEqual(rest, {
      $typeName: "twinmesh.v1.GetNodeStatusResponse",
      nodeId: "s-1",
      version: VERSION,
      serving: true,
      services: SERVICES.map((service) => ({ $typeName: "twinmesh.v1.ServiceHealth", service, serving: true })),
      problem: "",
      epoch: 1n,
      partitions: 256,
      replicationFactor: 1,
      members: [
        {
          $typeName: "twinmesh.v1.ClusterMember",
          nodeId: "s-1",
          address: "",
          state: 1,
          problem: "",
          ownedPartitions: 256,
          replicatedPartitions: 0,
          self: true,
        },
      ],
      partitionProgress: {
        $typeName: "twinmesh.v1.PartitionProgress",
        owned: 256,
        taking: 0,
        catchingUp: 0,
        waitingForPreviousOwner: 0,
        rebuilding: 0,
        stuck: 0,
      },
      events: {
        $typeName: "twinmesh.v1.EventCounts",
        accepted: 12n,
        duplicate: 1n,
        rejected: 2n,
        rejectedByReason: { BAD_FIELD: 1n, UNKNOWN_KIND: 1n },
      },
      // c-1, a-1…a-4, t-1, t-2, p-1, p-2 and picky-1 (which the posters' messages woke).
      twinsActive: 10n,
      openAlerts: { $typeName: "twinmesh.v1.AlertCounts", info: 0n, warning: 1n, critical: 1n },
      acknowledgedAlerts: { $typeName: "twinmesh.v1.AlertCounts", info: 0n, warning: 1n, critical: 0n },
      timersPending: 1n,
      outbox: { $typeName: "twinmesh.v1.OutboxDepth", queued: 0n, inflight: 0n, parked: 0n, held: 0n },
      deadLetters: 2n,
      replicationLag: [],
    } satisfies Omit<GetNodeStatusResponse, "uptimeMs">);
  });

  it("follows changes: a resolved alert, a fired timer and a deleted dead letter leave the counts", async () => {
    const { client } = await knownNode(t);
    await client.publish([ev("alarm", "a-2", 2, { level: 10 }), ev("alarm", "t-1", 2, { timerMs: 1 })]);
    await client.deleteDeadLetters({ ids: ["252-1"] });
    // t-1's timer is now due in 1 ms: once it has fired, nothing is pending.
    const status = (await waitFor(
      async () => {
        const s = await client.getNodeStatus();
        return s.timersPending === 0n ? s : undefined;
      },
      { timeoutMs: 10_000, what: "t-1's timer to fire" },
    )) as GetNodeStatusResponse;
    assert.deepEqual([status.openAlerts?.critical, status.openAlerts?.warning, status.acknowledgedAlerts?.warning], [0n, 1n, 1n]);
    assert.equal(status.deadLetters, 1n);
    assert.equal(status.events?.accepted, 14n);
  });

  it("exports the same stored counts as gauges: twinmesh_alerts_unresolved, twinmesh_timers_pending, twinmesh_dead_letters_stored", async () => {
    const { node } = await knownNode(t);
    const scrape = await Scrape.of(node.metricsAddress as string);
    const open = (severity: string, state: string): number => scrape.value("twinmesh_alerts_unresolved", { severity, state }) ?? -1;
    assert.deepEqual(
      [open("warning", "open"), open("critical", "open"), open("info", "open"), open("warning", "acknowledged"), open("critical", "acknowledged")],
      [1, 1, 0, 1, 0],
    );
    assert.equal(scrape.value("twinmesh_timers_pending"), 1);
    assert.equal(scrape.value("twinmesh_dead_letters_stored"), 2);
    // A single node has no cluster: no handoff series.
    assert.equal(scrape.value("twinmesh_cluster_handoff_partitions", { phase: "taking" }), undefined);
  });

  it("answers INVALID_ARGUMENT to bytes that are not a GetNodeStatusRequest, and ignores fields it does not know", async () => {
    const node = await startNode(t);
    const raw = rawClient(node.address);
    t.defer(() => raw.close());
    const err = await serviceError(unaryBytes(raw, NodeService.method.getNodeStatus, Buffer.from([0xff, 0xff, 0xff])));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /^request to \/twinmesh\.v1\.NodeService\/GetNodeStatus is not a valid twinmesh\.v1\.GetNodeStatusRequest /);
    // Field 1 (varint 1), which a newer client might send: ignored, as protobuf says.
    const answer = fromBinary(GetNodeStatusResponseSchema, await unaryBytes(raw, NodeService.method.getNodeStatus, Buffer.from([0x08, 0x01])));
    assert.equal(answer.serving, true);
  });
});
