import assert from "node:assert/strict";
import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { Health } from "../../../../proto/gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../../../proto/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../../../proto/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { TelemetryService } from "../../../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { addService } from "../../../../server/grpc/grpc-adapter.js";
import { addHealthService, HealthState } from "../../../../server/grpc/health-service.js";
import { addReflectionService } from "../../../../server/grpc/reflection-service.js";
import type { ErrorLog } from "../../../../server/grpc/to-status.js";

/** The requests these tests send; both versions carry them in the same fields. */
type Request = { case: "listServices" | "fileByFilename" | "fileContainingSymbol"; value: string };
type Answer = (v1.ServerReflectionResponse | v1alpha.ServerReflectionResponse)["messageResponse"];

const versions = [
  {
    name: "v1",
    path: `/${v1.ServerReflection.typeName}/ServerReflectionInfo`,
    encode: (r: Request) => toBinary(v1.ServerReflectionRequestSchema, create(v1.ServerReflectionRequestSchema, { messageRequest: r })),
    decode: (b: Buffer): Answer => fromBinary(v1.ServerReflectionResponseSchema, b).messageResponse,
  },
  {
    name: "v1alpha",
    path: `/${v1alpha.ServerReflection.typeName}/ServerReflectionInfo`,
    encode: (r: Request) => toBinary(v1alpha.ServerReflectionRequestSchema, create(v1alpha.ServerReflectionRequestSchema, { messageRequest: r })),
    decode: (b: Buffer): Answer => fromBinary(v1alpha.ServerReflectionResponseSchema, b).messageResponse,
  },
] as const;

const unused = async (): Promise<never> => {
  throw new Error("not used by these tests");
};

/** The files of a file_descriptor_response, decoded, by name. */
function fileNames(answer: Answer | undefined): string[] {
  assert.equal(answer?.case, "fileDescriptorResponse");
  return answer.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name);
}

for (const version of versions) {
  describe(`addReflectionService (reflection-service, ${version.name})`, () => {
    let server: grpc.Server;
    let client: grpc.Client;
    let health: HealthState;

    beforeEach(async () => {
      const log: ErrorLog = { error: () => assert.fail("no error should be logged") };
      health = new HealthState();
      server = new grpc.Server();
      addHealthService(server, health, { log });
      addService(server, TelemetryService, { publish: unused, publishStream: unused }, { log });
      addReflectionService(server, [Health, TelemetryService], { log });
      const port = await new Promise<number>((resolve, reject) =>
        server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
      );
      client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    });

    afterEach(() => {
      health.close();
      client.close();
      server.forceShutdown();
    });

    /** Sends `requests` on one stream, as grpcurl does, and returns the answers in order. */
    async function reflect(...requests: Request[]): Promise<Answer[]> {
      const call = client.makeBidiStreamRequest(version.path, (b: Uint8Array) => Buffer.from(b), version.decode);
      for (const r of requests) call.write(version.encode(r));
      call.end();
      const answers: Answer[] = [];
      for await (const a of call as AsyncIterable<Answer>) answers.push(a);
      return answers;
    }

    it("lists every service served, health and both reflection versions included", async () => {
      const [answer] = await reflect({ case: "listServices", value: "" });
      assert.equal(answer?.case, "listServicesResponse");
      assert.deepEqual(answer.value.service.map((s) => s.name).sort(), [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "twinmesh.v1.TelemetryService",
      ]);
    });

    it("answers file_containing_symbol with the file, then its imports not yet sent on the stream", async () => {
      const [first, second] = await reflect(
        { case: "fileContainingSymbol", value: "twinmesh.v1.TelemetryService" },
        { case: "fileByFilename", value: "twinmesh/v1/telemetry.proto" },
      );
      assert.deepEqual(fileNames(first), ["twinmesh/v1/telemetry.proto", "google/protobuf/struct.proto", "google/protobuf/timestamp.proto"]);
      assert.deepEqual(fileNames(second), ["twinmesh/v1/telemetry.proto"]);
      assert.equal(first?.case, "fileDescriptorResponse");
      // Like grpcurl, build descriptors from the answer alone: this fails if an import is missing.
      const byName = new Map(first.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes)).map((f) => [f.name, f]));
      const telemetry = byName.get("twinmesh/v1/telemetry.proto");
      assert.ok(telemetry);
      const registry = createFileRegistry(telemetry, (name) => byName.get(name));
      assert.deepEqual(
        registry.getService("twinmesh.v1.TelemetryService")?.methods.map((m) => m.localName),
        ["publish", "publishStream"],
      );
      assert.equal(telemetry.package, "twinmesh.v1");
      assert.deepEqual(telemetry.dependency, ["google/protobuf/struct.proto", "google/protobuf/timestamp.proto"]);
      assert.deepEqual(
        telemetry.service.map((s) => [s.name, s.method.map((m) => [m.name, m.inputType, m.outputType, m.clientStreaming, m.serverStreaming])]),
        [
          [
            "TelemetryService",
            [
              ["Publish", ".twinmesh.v1.PublishRequest", ".twinmesh.v1.PublishResponse", false, false],
              ["PublishStream", ".twinmesh.v1.PublishStreamRequest", ".twinmesh.v1.PublishStreamResponse", true, true],
            ],
          ],
        ],
      );
    });

    it("finds the file of a method, a nested message, an enum value and a field's type", async () => {
      const answers = await reflect(
        { case: "fileContainingSymbol", value: "twinmesh.v1.TelemetryService.PublishStream" },
        { case: "fileContainingSymbol", value: "twinmesh.v1.Event.ChannelsEntry" },
        { case: "fileContainingSymbol", value: "twinmesh.v1.EVENT_STATUS_ACCEPTED" },
        { case: "fileContainingSymbol", value: "google.protobuf.Timestamp" },
        { case: "fileContainingSymbol", value: "grpc.health.v1.HealthCheckResponse.ServingStatus" },
      );
      assert.deepEqual(
        answers.map((a) => fileNames(a)[0]),
        [
          "twinmesh/v1/telemetry.proto",
          "twinmesh/v1/telemetry.proto",
          "twinmesh/v1/telemetry.proto",
          "google/protobuf/timestamp.proto",
          "grpc/health/v1/health.proto",
        ],
      );
    });

    it("answers an unknown symbol or file with NOT_FOUND and keeps the stream open", async () => {
      const answers = await reflect(
        { case: "fileContainingSymbol", value: "twinmesh.v1.NoSuchService" },
        { case: "fileByFilename", value: "twinmesh/v1/nothing.proto" },
        { case: "listServices", value: "" },
      );
      assert.deepEqual(
        answers.map((a) => (a.case === "errorResponse" ? [a.value.errorCode, a.value.errorMessage] : a.case)),
        [
          [5, `symbol "twinmesh.v1.NoSuchService" is not defined by any service this server serves`],
          [5, `file "twinmesh/v1/nothing.proto" is not among the files this server is built from`],
          "listServicesResponse",
        ],
      );
    });
  });
}
