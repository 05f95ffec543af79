import assert from "node:assert/strict";
import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { HealthCheckResponse_ServingStatus as Serving } from "../../proto/gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../proto/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../proto/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { rawClient } from "../harness/grpc-status.js";
import { startNode } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";

type Answer = v1.ServerReflectionResponse["messageResponse"];

describe("standard services of a node (standard-services)", () => {
  const t = useTestScope();

  it("answers health Check SERVING for the node and for each twinmesh service", async () => {
    const { client } = await startNode(t);
    for (const service of [
      "",
      "twinmesh.v1.TelemetryService",
      "twinmesh.v1.TwinService",
      "twinmesh.v1.AlertService",
      "twinmesh.v1.DeadLetterService",
      "twinmesh.v1.NodeService",
    ]) {
      assert.equal((await client.health(service)).status, Serving.SERVING, `health of "${service}"`);
    }
  });

  for (const version of ["v1", "v1alpha"] as const) {
    it(`lists the twinmesh services over server reflection ${version}, with descriptors a client can build them from`, async () => {
      const { address } = await startNode(t);
      const raw = rawClient(address);
      t.defer(() => raw.close());
      const pb = version === "v1" ? v1 : v1alpha;
      const call = raw.makeBidiStreamRequest(
        `/${pb.ServerReflection.typeName}/ServerReflectionInfo`,
        (b: Uint8Array) => Buffer.from(b),
        (b: Buffer): Answer => fromBinary(pb.ServerReflectionResponseSchema, b).messageResponse as Answer,
      );
      const send = (messageRequest: { case: "listServices" | "fileContainingSymbol"; value: string }) =>
        call.write(toBinary(pb.ServerReflectionRequestSchema, create(pb.ServerReflectionRequestSchema, { messageRequest })));
      send({ case: "listServices", value: "" });
      send({ case: "fileContainingSymbol", value: "twinmesh.v1.TwinService" });
      call.end();
      const answers: Answer[] = [];
      for await (const a of call as AsyncIterable<Answer>) answers.push(a);
      const [list, file] = answers;
      assert.equal(list?.case, "listServicesResponse");
      assert.deepEqual(list.value.service.map((s) => s.name).sort(), [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "twinmesh.v1.AlertService",
        "twinmesh.v1.DeadLetterService",
        "twinmesh.v1.NodeService",
        "twinmesh.v1.TelemetryService",
        "twinmesh.v1.TwinService",
      ]);
      assert.equal(file?.case, "fileDescriptorResponse");
      const byName = new Map(file.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes)).map((f) => [f.name, f]));
      const twin = byName.get("twinmesh/v1/twin.proto");
      assert.ok(twin, `twin.proto missing among ${[...byName.keys()].join(", ")}`);
      const registry = createFileRegistry(twin, (name) => byName.get(name));
      assert.deepEqual(
        registry.getService("twinmesh.v1.TwinService")?.methods.map((m) => m.name),
        ["GetTwin", "QueryTwins", "AggregateTwins", "SendToTwin", "DeleteTwin"],
      );
    });
  }
});
