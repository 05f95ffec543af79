import assert from "node:assert/strict";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import {
  Consistency,
  PublishStreamRequestSchema,
  type PublishStreamResponse,
  PublishStreamResponseSchema,
  TelemetryService,
} from "../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { TwinService } from "../../proto/gen/twinmesh/v1/twin_pb.js";
import type { JsonObject } from "../../runtime/index.js";
import { ACCEPTED, ev, outcomes, rejected, statuses } from "../harness/events.js";
import { clientError, rawClient, serviceError, statusDetails, unaryBytes, unaryCall } from "../harness/grpc-status.js";
import { startNode, twinState } from "../harness/start-node.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const KNOWN = '"alarm", "counter", "faulty", "gate", "relay", "sink"';

describe("bad input over gRPC (bad-input)", () => {
  const t = useTestScope();

  describe("event fields", () => {
    it("rejects an event with an empty or oversized kind with BAD_FIELD", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([ev("", "c-1", 1), ev("k".repeat(300), "c-1", 1), ev("counter", "c-1", 1)]);
      assert.deepEqual(outcomes(res.results), [
        rejected("BAD_FIELD", "event has no kind; set kind to one of: alarm, counter, faulty, gate, relay, sink"),
        rejected("BAD_FIELD", "kind is 300 characters; the limit is 63"),
        ACCEPTED,
      ]);
    });

    it("rejects an event with an empty, oversized or control-character source_id with BAD_FIELD", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([
        ev("counter", "", 1),
        ev("counter", "é".repeat(129), 1), // 129 characters, 258 UTF-8 bytes
        ev("counter", "a\nb", 1),
        ev("counter", "é".repeat(128), 1), // 256 bytes: at the limit
      ]);
      assert.deepEqual(outcomes(res.results), [
        rejected("BAD_FIELD", "event has an empty source_id; set it to the data source's id (it is the twin's id)"),
        rejected("BAD_FIELD", "source_id is 258 bytes; the limit is 256"),
        rejected("BAD_FIELD", 'source_id "a\\nb" contains control characters; use printable characters'),
        ACCEPTED,
      ]);
    });

    it("rejects an event of an unknown kind with UNKNOWN_KIND naming the known kinds", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([ev("pump", "p-1", 1)]);
      assert.deepEqual(outcomes(res.results), [rejected("UNKNOWN_KIND", `unknown twin kind "pump"; this node knows ${KNOWN}`)]);
    });

    it("rejects telemetry for a kind without onTelemetry with NO_TELEMETRY_HANDLER and creates no twin", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([ev("sink", "s-1", 1), ev("counter", "c-1", 1)]);
      assert.deepEqual(outcomes(res.results), [rejected("NO_TELEMETRY_HANDLER", 'twin kind "sink" has no onTelemetry handler'), ACCEPTED]);
      await assert.rejects(client.getTwin({ kind: "sink", id: "s-1" }), { code: grpc.status.NOT_FOUND });
    });

    it("rejects NaN and infinite channel values with BAD_CHANNEL", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([
        ev("counter", "c-1", 1, { v: Number.NaN }),
        ev("counter", "c-1", 2, { ok: 1, v: Number.POSITIVE_INFINITY }),
        ev("counter", "c-1", 3, { v: Number.NEGATIVE_INFINITY }),
      ]);
      assert.deepEqual(outcomes(res.results), [
        rejected("BAD_CHANNEL", 'channel "v" is NaN; channel values must be finite numbers'),
        rejected("BAD_CHANNEL", 'channel "v" is Infinity; channel values must be finite numbers'),
        rejected("BAD_CHANNEL", 'channel "v" is -Infinity; channel values must be finite numbers'),
      ]);
      await assert.rejects(client.getTwin({ kind: "counter", id: "c-1" }), { code: grpc.status.NOT_FOUND });
    });

    it("rejects an event with more channels than maxChannels or attributes over maxAttributesBytes, and takes one at the limits", async () => {
      const { client } = await startNode(t, { hostOptions: { maxChannels: 2, maxAttributesBytes: 32 } });
      const res = await client.publish([
        ev("counter", "c-1", 1, { a: 1, b: 2, c: 3 }),
        ev("counter", "c-1", 2, {}, { attributes: { note: "n".repeat(40) } }),
        ev("counter", "c-1", 3, { a: 1, v: 2 }, { attributes: { ward: "north" } }),
      ]);
      assert.deepEqual(outcomes(res.results), [
        rejected("TOO_MANY_CHANNELS", "event has more than 2 channels; split it or raise maxChannels"),
        rejected("ATTRIBUTES_TOO_LARGE", "attributes are 51 bytes; the limit is 32"),
        ACCEPTED,
      ]);
      assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 1, lastSeq: 3, total: 2, messages: 0, ward: "north" });
    });

    it("rejects an event time further ahead than maxClockSkewMs with TIME_IN_FUTURE, and takes one inside it", async () => {
      const { client } = await startNode(t, { hostOptions: { maxClockSkewMs: 60_000 } });
      const now = Date.now();
      const res = await client.publish([
        ev("counter", "c-1", 1, {}, { time: timestampFromMs(now + 24 * 3_600_000) }),
        ev("counter", "c-1", 2, {}, { time: timestampFromMs(now + 30_000) }),
      ]);
      const [future, near] = outcomes(res.results);
      assert.equal(future?.status, "REJECTED");
      assert.equal(future?.reason, "TIME_IN_FUTURE");
      assert.equal(future?.retryable, false);
      assert.match(
        future?.message ?? "",
        new RegExp(
          `^event time ${new Date(now + 24 * 3_600_000).toISOString()} is 8640\\d s ahead of the node's clock \\(limit 60 s\\); fix the source's clock or leave time unset$`,
        ),
      );
      assert.deepEqual(near, ACCEPTED);
    });

    it("rejects a seq above 2^53-1 with BAD_SEQ and takes 2^53-1", async () => {
      const { client } = await startNode(t);
      const max = 2n ** 53n - 1n;
      const res = await client.publish([ev("counter", "c-1", max + 1n), ev("counter", "c-2", 2n ** 64n - 1n), ev("counter", "c-3", max)]);
      assert.deepEqual(outcomes(res.results), [
        rejected("BAD_SEQ", "seq 9007199254740992 is above 2^53-1; sequence numbers must fit a double exactly"),
        rejected("BAD_SEQ", "seq 18446744073709551615 is above 2^53-1; sequence numbers must fit a double exactly"),
        ACCEPTED,
      ]);
      const { twin } = await client.getTwin({ kind: "counter", id: "c-3" });
      assert.equal(twin?.lastSeq, max);
    });
  });

  describe("requests", () => {
    it("fails a request over maxMessageBytes with RESOURCE_EXHAUSTED and the node's own message", async () => {
      const { address, client } = await startNode(t, { maxMessageBytes: 16 * 1024 });
      const raw = rawClient(address);
      t.defer(() => raw.close());
      const events = Array.from({ length: 1_000 }, (_, i) => ev("counter", `c-${i}`, 1));
      const bytes = Buffer.from(toBinary(TelemetryService.method.publish.input, create(TelemetryService.method.publish.input, { events })));
      assert.ok(bytes.byteLength > 16 * 1024 && bytes.byteLength < 1024 * 1024);
      const err = await serviceError(unaryBytes(raw, TelemetryService.method.publish, bytes));
      const message = `request to /twinmesh.v1.TelemetryService/Publish is ${bytes.byteLength} bytes, over this node's limit of 16384 bytes; split the batch into smaller requests`;
      assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(err.details, message);
      const details = statusDetails(err);
      assert.equal(details.errorInfo?.reason, "MESSAGE_TOO_LARGE");
      assert.equal(details.errorInfo?.metadata.limitBytes, "16384");
      await assert.rejects(client.getTwin({ kind: "counter", id: "c-0" }), { code: grpc.status.NOT_FOUND });
    });

    it("fails a request over four times maxMessageBytes with RESOURCE_EXHAUSTED from grpc-js's transport limit", async () => {
      // grpc-js enforces its own receive limit (4 x maxMessageBytes, which bounds memory) before
      // twinmesh sees the request, with its own wording and that number.
      const { address, client } = await startNode(t, { maxMessageBytes: 16 * 1024 });
      const raw = rawClient(address);
      t.defer(() => raw.close());
      const events = [ev("counter", "c-1", 1, {}, { attributes: { blob: "x".repeat(2 * 1024 * 1024) } })];
      const bytes = Buffer.from(toBinary(TelemetryService.method.publish.input, create(TelemetryService.method.publish.input, { events })));
      const err = await serviceError(unaryBytes(raw, TelemetryService.method.publish, bytes));
      assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(err.details, `Received message larger than max (${bytes.byteLength} vs ${4 * 16 * 1024})`);
      await assert.rejects(client.getTwin({ kind: "counter", id: "c-1" }), { code: grpc.status.NOT_FOUND });
    });

    it("ends a PublishStream at an oversized request with RESOURCE_EXHAUSTED, after answering the batches before it", async () => {
      const { client } = await startNode(t, { maxMessageBytes: 16 * 1024 });
      const stream = client.openPublishStream();
      t.defer(() => stream.cancel());
      const first = await stream.send("b-1", [ev("counter", "c-1", 1)]);
      assert.deepEqual(outcomes(first.results), [ACCEPTED]);
      const big = Buffer.from(
        toBinary(
          PublishStreamRequestSchema,
          create(PublishStreamRequestSchema, { batchId: "b-2", events: Array.from({ length: 1_000 }, (_, i) => ev("counter", `c-${i}`, 2)) }),
        ),
      );
      const err = await clientError(stream.sendEncoded("b-2", big));
      assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(err.reason, "MESSAGE_TOO_LARGE");
      assert.equal(
        err.message,
        `request to /twinmesh.v1.TelemetryService/PublishStream is ${big.byteLength} bytes, over this node's limit of 16384 bytes; split the batch into smaller requests`,
      );
      assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 1, lastSeq: 1, total: 0, messages: 0 });
    });

    it("refuses a consistency that is not a level: Publish with INVALID_ARGUMENT BAD_FIELD, a PublishStream batch with BAD_CONSISTENCY, applying nothing", async () => {
      const { client } = await startNode(t);
      const err = await clientError(client.publish([ev("counter", "c-1", 1)], 7 as Consistency));
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.reason, "BAD_FIELD");
      assert.match(err.message, /^consistency 7 is not a level; use CONSISTENCY_LOCAL \(1\)/);
      const stream = client.openPublishStream();
      t.defer(() => stream.cancel());
      const bytes = Buffer.from(
        toBinary(
          PublishStreamRequestSchema,
          create(PublishStreamRequestSchema, { batchId: "b-1", consistency: 9 as Consistency, events: [ev("counter", "c-1", 1)] }),
        ),
      );
      const res = await stream.sendEncoded("b-1", bytes);
      assert.deepEqual(
        outcomes(res.results).map((o) => o.reason),
        ["BAD_CONSISTENCY"],
      );
      assert.equal(res.batchReason, "BAD_CONSISTENCY");
      const ok = await client.publish([ev("counter", "c-1", 1)], Consistency.QUORUM);
      assert.deepEqual(outcomes(ok.results), [ACCEPTED]);
    });

    it("answers every PublishStream batch read before an unreadable request, then ends the stream INVALID_ARGUMENT", async () => {
      const { address, client } = await startNode(t);
      const raw = rawClient(address);
      t.defer(() => raw.close());
      const call = raw.makeBidiStreamRequest(
        `/${TelemetryService.typeName}/${TelemetryService.method.publishStream.name}`,
        (b: Buffer) => b,
        (b: Buffer) => fromBinary(PublishStreamResponseSchema, b),
        new grpc.Metadata(),
        { deadline: Date.now() + 20_000 },
      );
      const answers: string[] = [];
      // Refusals of the repeated id: as in flight, or as used once the first is answered.
      const refusal = (reason: string): boolean => reason === "BATCH_ID_IN_FLIGHT" || reason === "DUPLICATE_BATCH_ID";
      const summary = (r: PublishStreamResponse): string => {
        if (refusal(r.batchReason)) return "refused";
        const all = statuses(r.results);
        return [...new Set(all)].map((st) => `${st}*${all.filter((x) => x === st).length}`).join(",");
      };
      call.on("data", (r: PublishStreamResponse) => answers.push(`${r.batchId}:${summary(r)}`));
      call.on("error", () => undefined);
      const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
      const batch = (id: string, n: number): Buffer =>
        Buffer.from(
          toBinary(
            PublishStreamRequestSchema,
            create(PublishStreamRequestSchema, { batchId: id, events: Array.from({ length: n }, (_, i) => ev("counter", `${id}-${i}`, 1)) }),
          ),
        );
      // The same id again while the first is in flight: its refusals wait for the first's answer.
      for (let i = 0; i < 3; i++) call.write(batch("same", 2_000));
      call.write(batch("other", 1));
      call.write(Buffer.from([0x0a, 0xff, 0xff]));
      call.write(batch("after", 1));
      call.end();
      const started = Date.now();
      const { code } = await status;
      assert.equal(code, grpc.status.INVALID_ARGUMENT);
      assert.ok(Date.now() - started < 10_000, "the stream was not ended promptly");
      assert.deepEqual([...answers].sort(), ["other:ACCEPTED*1", "same:ACCEPTED*2000", "same:refused", "same:refused"]);
      assert.deepEqual(await twinState(client, "counter", "other-0"), { count: 1, lastSeq: 1, total: 0, messages: 0 });
      await assert.rejects(twinState(client, "counter", "after-0"));
    });

    it("answers bytes that are not a valid request with INVALID_ARGUMENT MALFORMED_MESSAGE", async () => {
      const { address } = await startNode(t);
      const raw = rawClient(address);
      t.defer(() => raw.close());
      const err = await serviceError(unaryBytes(raw, TelemetryService.method.publish, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])));
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(
        err.details,
        /^request to \/twinmesh\.v1\.TelemetryService\/Publish is not a valid twinmesh\.v1\.PublishRequest \(.+\); check that the client is built from the same \.proto files$/,
      );
      assert.equal(statusDetails(err).errorInfo?.reason, "MALFORMED_MESSAGE");
    });

    it("answers a single-twin RPC of an unknown kind with FAILED_PRECONDITION UNKNOWN_KIND naming the known kinds", async () => {
      const { address, client } = await startNode(t);
      const message = `unknown twin kind "pump"; this node knows ${KNOWN}; start it with --twins <module> exporting that kind`;
      for (const call of [
        client.getTwin({ kind: "pump", id: "p-1" }),
        client.sendToTwin({ kind: "pump", id: "p-1", message: { a: 1 } }),
        client.deleteTwin({ kind: "pump", id: "p-1" }),
        client.aggregateTwins({ kind: "pump", field: "state.x" }),
      ]) {
        const err = await clientError(call);
        assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
        assert.equal(err.reason, "UNKNOWN_KIND");
        assert.equal(err.message, message);
      }
      const raw = rawClient(address);
      t.defer(() => raw.close());
      const err = await serviceError(unaryCall(raw, TwinService.method.getTwin, { kind: "pump", id: "p-1" }));
      const details = statusDetails(err);
      assert.deepEqual({ ...details.errorInfo?.metadata }, { kind: "pump", knownKinds: "alarm,counter,faulty,gate,relay,sink", retryable: "false" });
    });

    it("answers a single-twin RPC with an empty or oversized id with INVALID_ARGUMENT BAD_FIELD naming the field", async () => {
      const { client } = await startNode(t);
      const empty = await clientError(client.getTwin({ kind: "counter", id: "" }));
      assert.equal(empty.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(empty.reason, "BAD_FIELD");
      assert.equal(empty.message, 'id is required; for example "bed-4"');
      assert.deepEqual(empty.violations, [{ field: "id", description: "required" }]);
      const long = await clientError(client.sendToTwin({ kind: "counter", id: "x".repeat(257), message: {} }));
      assert.equal(long.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(long.reason, "BAD_FIELD");
      assert.equal(long.message, "id is 257 characters; the limit is 256");
      assert.deepEqual(long.violations, [{ field: "id", description: "at most 256 characters" }]);
    });
    it("answers SendToTwin with a control character in the id, or an idempotency_key over 256 characters, with INVALID_ARGUMENT BAD_FIELD", async () => {
      const { client } = await startNode(t);
      const nul = await clientError(client.sendToTwin({ kind: "counter", id: "c\u00001", message: { add: 1 } }));
      assert.equal(nul.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(nul.reason, "BAD_FIELD");
      assert.equal(nul.message, 'id "c\\u00001" contains control characters; use printable characters');
      assert.deepEqual(nul.violations, [{ field: "id", description: "no control characters" }]);
      const key = await clientError(client.sendToTwin({ kind: "counter", id: "c-1", message: { add: 1 }, idempotencyKey: "k".repeat(257) }));
      assert.equal(key.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(key.reason, "BAD_FIELD");
      assert.equal(key.message, "idempotency_key is 257 characters; the limit is 256");
      assert.deepEqual(key.violations, [{ field: "idempotency_key", description: "at most 256 characters" }]);
      await assert.rejects(client.getTwin({ kind: "counter", id: "c-1" }), { code: grpc.status.NOT_FOUND });
    });

    it("answers SendToTwin with a message over the host's maxMessageBytes with INVALID_ARGUMENT, which no retry can fix", async () => {
      const { client } = await startNode(t, { hostOptions: { maxMessageBytes: 1_024 } });
      const message = { add: 1, note: "n".repeat(2_000) };
      const err = await clientError(client.sendToTwin({ kind: "counter", id: "c-1", message }));
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.reason, "BAD_FIELD");
      assert.equal(
        err.message,
        `message is ${JSON.stringify(message).length} bytes as JSON; the limit is 1024; send less, or raise the node's maxMessageBytes`,
      );
      assert.equal(err.retryable, false);
      assert.deepEqual(err.violations, [{ field: "message", description: "at most 1024 bytes as JSON" }]);
      await assert.rejects(client.getTwin({ kind: "counter", id: "c-1" }), { code: grpc.status.NOT_FOUND });
    });
  });

  describe("input that used to get INTERNAL or half a batch", () => {
    const OUTSIDE = "outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z (RFC 3339); send the time the reading was taken, or leave time unset";
    const BAD_NANOS = "event time is not a valid timestamp (its nanos must be 0 to 999999999); send the time the reading was taken, or leave time unset";
    const deepJson = (levels: number): JsonObject => {
      let value: JsonObject = { leaf: 1 };
      for (let i = 1; i < levels; i++) value = { n: value };
      return value;
    };

    it("rejects event times outside 0001..9999 and nanos outside 0..999999999 with BAD_TIME, and applies the rest of the batch once", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([
        ev("counter", "u-1", 0),
        ev("counter", "t-1", 1, {}, { time: { seconds: 2n ** 62n, nanos: 0 } }),
        ev("counter", "t-2", 1, {}, { time: { seconds: -(2n ** 62n), nanos: 0 } }),
        ev("counter", "t-3", 1, {}, { time: { seconds: 253_402_300_800n, nanos: 0 } }), // 10000-01-01
        ev("counter", "t-4", 1, {}, { time: { seconds: 100n, nanos: -1 } }),
        ev("counter", "t-5", 1, {}, { time: { seconds: 100n, nanos: 1_000_000_000 } }),
        ev("counter", "t-6", 1, {}, { time: { seconds: -62_135_596_800n, nanos: 0 } }), // 0001-01-01, the earliest
        ev("counter", "u-1", 0),
      ]);
      assert.deepEqual(outcomes(res.results), [
        ACCEPTED,
        rejected("BAD_TIME", `event time is 4.611686018427388e+21 ms from 1970-01-01, ${OUTSIDE}`),
        rejected("BAD_TIME", `event time is -4.611686018427388e+21 ms from 1970-01-01, ${OUTSIDE}`),
        rejected("BAD_TIME", `event time is 253402300800000 ms from 1970-01-01, ${OUTSIDE}`),
        rejected("BAD_TIME", BAD_NANOS),
        rejected("BAD_TIME", BAD_NANOS),
        ACCEPTED,
        ACCEPTED,
      ]);
      assert.equal((await twinState(client, "counter", "u-1")).count, 2);
      for (const id of ["t-1", "t-2", "t-3", "t-4", "t-5"]) await assert.rejects(client.getTwin({ kind: "counter", id }), { code: grpc.status.NOT_FOUND });
      const { twin } = await client.getTwin({ kind: "counter", id: "t-6" });
      assert.deepEqual([twin?.lastEventTime?.seconds, twin?.lastEventTime?.nanos], [-62_135_596_800n, 0]);
    });

    it("answers a PublishStream batch with an event time past what a Date holds event by event, and keeps the stream and its other batches going", async () => {
      const { client } = await startNode(t);
      const stream = client.openPublishStream();
      t.defer(() => stream.cancel());
      const [bad, good] = await Promise.all([
        stream.send("b-1", [ev("counter", "c-1", 1), ev("counter", "c-2", 1, {}, { time: { seconds: 2n ** 62n, nanos: 0 } })]),
        stream.send("b-2", [ev("counter", "c-3", 1)]),
      ]);
      assert.deepEqual(outcomes(bad.results), [ACCEPTED, rejected("BAD_TIME", `event time is 4.611686018427388e+21 ms from 1970-01-01, ${OUTSIDE}`)]);
      assert.equal(bad.batchReason, "");
      assert.deepEqual(outcomes(good.results), [ACCEPTED]);
      assert.deepEqual(outcomes((await stream.send("b-3", [ev("counter", "c-1", 2)])).results), [ACCEPTED]);
      await stream.end();
      assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 2, lastSeq: 2, total: 0, messages: 0 });
    });

    it("rejects attributes nested past 32 levels or holding NaN with BAD_ATTRIBUTES per event, and refuses a request nested past what can be decoded with MESSAGE_TOO_DEEP", async () => {
      const { address, client } = await startNode(t);
      const res = await client.publish([
        ev("counter", "c-1", 1, {}, { attributes: deepJson(50) }),
        ev("counter", "c-1", 2, {}, { attributes: { ward: "north", ratio: Number.NaN } }),
        ev("counter", "c-1", 3, {}, { attributes: { list: [1, Number.POSITIVE_INFINITY] } }),
        ev("counter", "c-1", 4, {}, { attributes: deepJson(32) }),
      ]);
      assert.deepEqual(outcomes(res.results), [
        rejected("BAD_ATTRIBUTES", `attributes${".n".repeat(32)} is nested more than 32 levels deep; the limit is 32`),
        rejected("BAD_ATTRIBUTES", "attributes.ratio is NaN; numbers must be finite"),
        rejected("BAD_ATTRIBUTES", "attributes.list[1] is Infinity; numbers must be finite"),
        ACCEPTED,
      ]);
      assert.deepEqual(await twinState(client, "counter", "c-1"), { count: 1, lastSeq: 4, total: 0, messages: 0 });
      const raw = rawClient(address);
      t.defer(() => raw.close());
      const bytes = Buffer.from(
        toBinary(
          TelemetryService.method.publish.input,
          create(TelemetryService.method.publish.input, { events: [ev("counter", "c-2", 1, {}, { attributes: deepJson(200) })] }),
        ),
      );
      const err = await serviceError(unaryBytes(raw, TelemetryService.method.publish, bytes));
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(
        err.details,
        "request to /twinmesh.v1.TelemetryService/Publish nests messages more than 256 levels deep, so none of it can be read; JSON attributes and messages may be at most 32 levels deep: flatten them",
      );
      assert.equal(statusDetails(err).errorInfo?.reason, "MESSAGE_TOO_DEEP");
    });

    it("rejects channel names with control characters with BAD_CHANNEL, as source_ids are, and echoes input escaped", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([ev("counter", "c-1", 1, { "bp\u0000m": 1 }), ev("co\u0000unter", "c-1", 1), ev("counter", "c-1", 2, { bpm: 1 })]);
      assert.deepEqual(outcomes(res.results), [
        rejected("BAD_CHANNEL", 'channel name "bp\\u0000m" contains control characters; use printable characters'),
        rejected("UNKNOWN_KIND", `unknown twin kind "co\\u0000unter"; this node knows ${KNOWN}`),
        ACCEPTED,
      ]);
      for (const r of res.results) assert.ok(!r.message.includes("\u0000"), r.message);
    });

    it("answers SendToTwin with NaN, an infinity or JSON past 32 levels in the message with INVALID_ARGUMENT BAD_FIELD naming the field", async () => {
      const { client } = await startNode(t);
      const cases: [JsonObject, string, string][] = [
        [{ add: Number.NaN }, "message.add", "is NaN; numbers must be finite"],
        [{ add: 1, list: [0, Number.NEGATIVE_INFINITY] }, "message.list[1]", "is -Infinity; numbers must be finite"],
        [deepJson(40), `message${".n".repeat(32)}`, "is nested more than 32 levels deep; the limit is 32"],
      ];
      for (const [message, field, why] of cases) {
        const err = await clientError(client.sendToTwin({ kind: "counter", id: "c-1", message }));
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(err.reason, "BAD_FIELD");
        assert.equal(err.message, `${field} ${why}`);
        assert.deepEqual(err.violations, [{ field, description: why }]);
      }
      await assert.rejects(client.getTwin({ kind: "counter", id: "c-1" }), { code: grpc.status.NOT_FOUND });
    });

    it("answers SendToTwin to a kind without onMessage with FAILED_PRECONDITION NO_MESSAGE_HANDLER and creates no twin", async () => {
      const { client } = await startNode(t);
      const err = await clientError(client.sendToTwin({ kind: "alarm", id: "a-1", message: { add: 1 } }));
      assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
      assert.equal(err.reason, "NO_MESSAGE_HANDLER");
      assert.equal(err.message, 'twin kind "alarm" has no onMessage handler; add onMessage to its class, or send to a kind that has one');
      await assert.rejects(client.getTwin({ kind: "alarm", id: "a-1" }), { code: grpc.status.NOT_FOUND });
    });

    it("answers a 100 KB watch cursor or filter with INVALID_ARGUMENT whose status echoes at most a capped part of it, and the connection keeps working", async () => {
      const { client } = await startNode(t);
      const watch = async (req: { cursor?: string; filter?: string }): Promise<void> => {
        for await (const _ of client.watchAlerts(req)) assert.fail("no change expected");
      };
      const cursor = await clientError(watch({ cursor: "c".repeat(100_000) }));
      assert.equal(cursor.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(cursor.reason, "BAD_CURSOR");
      assert.equal(
        cursor.message,
        `cursor "${"c".repeat(64)}…" (100000 characters) is not a cursor this node issued; pass one from ListAlerts or WatchAlerts, or none to start from now`,
      );
      const nul = await clientError(watch({ cursor: "c1.\u00001" }));
      assert.equal(nul.message, 'cursor "c1.\\u00001" is not a cursor this node issued; pass one from ListAlerts or WatchAlerts, or none to start from now');
      // A filter is echoed by the filter's own error; the status caps it.
      const filter = await clientError(watch({ filter: `state == "${"x".repeat(100_000)}` }));
      assert.equal(filter.code, grpc.status.INVALID_ARGUMENT);
      assert.ok(filter.message.length < 1_100, `a message of ${filter.message.length} characters`);
      assert.deepEqual(outcomes((await client.publish([ev("counter", "c-1", 1)])).results), [ACCEPTED]);
    });
  });

  describe("filters", () => {
    const BAD = "state.count >";

    it("answers a malformed CEL filter with INVALID_ARGUMENT BAD_FILTER and the CEL error, in every RPC that takes one", async () => {
      const { client } = await startNode(t);
      await client.publish([ev("counter", "c-1", 1)]);
      const watch = async (): Promise<void> => {
        for await (const _ of client.watchAlerts({ filter: BAD })) assert.fail("no change expected");
      };
      const query = async (): Promise<void> => {
        for await (const _ of client.queryTwins({ kind: "counter", filter: BAD })) assert.fail("no twin expected");
      };
      const errors = [
        await clientError(query()),
        await clientError(client.aggregateTwins({ kind: "counter", filter: BAD, field: "state.count" })),
        await clientError(client.listAlerts({ filter: BAD })),
        await clientError(watch()),
      ];
      for (const err of errors) {
        assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
        assert.equal(err.reason, "BAD_FILTER");
        assert.equal(err.message, 'filter "state.count >" is not a valid filter: Unexpected token: EOF at line 1, column 14');
        assert.deepEqual(
          err.violations.map((v) => v.field),
          ["filter"],
        );
      }
    });

    it("answers a filter over an unknown variable with BAD_FILTER listing the variables", async () => {
      const { client } = await startNode(t);
      const err = await clientError(client.listAlerts({ filter: 'severity == "critical" && colour == "red"' }));
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.reason, "BAD_FILTER");
      assert.equal(
        err.message,
        'filter "severity == \\"critical\\" && colour == \\"red\\"" is not a valid filter: Unknown variable: colour at line 1, column 27; ' +
          "the filter may use id (string), kind (string), twin_id (string), code (string), severity (string), message (string), state (string), count (double), raised_at (timestamp), updated_at (timestamp)",
      );
    });
  });

  describe("twin handlers", () => {
    it("rejects an event whose handler throws with HANDLER_FAILED and the error text, leaves the state as it was, and keeps the twin working", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([ev("faulty", "f-1", 1), ev("faulty", "f-1", 2, { boom: 1 }), ev("faulty", "f-1", 3)]);
      assert.deepEqual(outcomes(res.results), [ACCEPTED, rejected("HANDLER_FAILED", "faulty/f-1 onTelemetry failed: boom at seq 2"), ACCEPTED]);
      assert.deepEqual(await twinState(client, "faulty", "f-1"), { count: 2, lastSeq: 3 });
      // The failed seq was not marked as applied: a corrected retry is taken.
      assert.deepEqual(outcomes((await client.publish([ev("faulty", "f-1", 2)])).results), [ACCEPTED]);
      assert.deepEqual(await twinState(client, "faulty", "f-1"), { count: 3, lastSeq: 2 });
    });

    it("rejects an event whose handler overruns the turn timeout with TURN_TIMEOUT, and the twin takes the next event", async () => {
      const { client } = await startNode(t, { hostOptions: { turnTimeoutMs: 100 } });
      await client.publish([ev("faulty", "f-1", 1)]);
      const res = await client.publish([ev("faulty", "f-1", 2, { hang: 1 }), ev("faulty", "f-1", 3)]);
      assert.deepEqual(outcomes(res.results), [rejected("TURN_TIMEOUT", "faulty/f-1 onTelemetry timed out: handler did not finish within 100 ms"), ACCEPTED]);
      assert.deepEqual(await twinState(client, "faulty", "f-1"), { count: 2, lastSeq: 3 });
    });

    it("rejects an event whose handler leaves a Date, NaN or a function in the state with BAD_STATE, and keeps the last good state", async () => {
      const { client } = await startNode(t);
      const res = await client.publish([
        ev("faulty", "f-1", 1, { bad: 1 }),
        ev("faulty", "f-1", 2),
        ev("faulty", "f-1", 3, { bad: 2 }),
        ev("faulty", "f-1", 4, { bad: 3 }),
        ev("faulty", "f-1", 5),
      ]);
      assert.deepEqual(outcomes(res.results), [
        rejected("BAD_STATE", "faulty/f-1 onTelemetry failed: state.when is a Date, not a plain object; store an ISO string or epoch ms instead"),
        ACCEPTED,
        rejected("BAD_STATE", "faulty/f-1 onTelemetry failed: state.ratio is NaN, which JSON cannot hold"),
        rejected("BAD_STATE", "faulty/f-1 onTelemetry failed: state.callback is a function, which JSON cannot hold"),
        ACCEPTED,
      ]);
      assert.deepEqual(await twinState(client, "faulty", "f-1"), { count: 2, lastSeq: 5 });
    });

    it("rejects an event whose handler sends to a twin id with control characters with HANDLER_FAILED, and sends nothing", async () => {
      const { client, node } = await startNode(t);
      const res = await client.publish([ev("relay", "r-1", 1, {}, { attributes: { to: "sink\u0000x" } }), ev("relay", "r-1", 2)]);
      assert.deepEqual(outcomes(res.results), [
        rejected("HANDLER_FAILED", 'relay/r-1 onTelemetry failed: ctx.send: target id "sink\\u0000x" must be at most 256 bytes of printable characters'),
        ACCEPTED,
      ]);
      await waitFor(async () => (await twinState(client, "sink", "sink-1").catch(() => undefined))?.received === 1, {
        timeoutMs: 5_000,
        what: "the good message to reach sink-1",
      });
      await waitFor(() => node.runtime.host.idle, { timeoutMs: 5_000, what: "the outbox to drain" });
      assert.deepEqual(await twinState(client, "sink", "sink-1"), { received: 1, seen: ["r-1#2"] });
      assert.deepEqual(await twinState(client, "relay", "r-1"), { sent: 1 });
    });

    it("rejects an event whose handler grows the state over maxStateBytes with STATE_TOO_LARGE, and keeps the last good state", async () => {
      const { client } = await startNode(t, { hostOptions: { maxStateBytes: 1_024 } });
      const res = await client.publish([ev("faulty", "f-1", 1, { grow: 100 }), ev("faulty", "f-1", 2, { grow: 2_000 }), ev("faulty", "f-1", 3)]);
      assert.deepEqual(outcomes(res.results), [
        ACCEPTED,
        rejected(
          "STATE_TOO_LARGE",
          `faulty/f-1 onTelemetry failed: state is ${JSON.stringify({ count: 2, lastSeq: 2, padding: "x".repeat(2_000) }).length} bytes; the limit is 1024`,
        ),
        ACCEPTED,
      ]);
      assert.deepEqual(await twinState(client, "faulty", "f-1"), { count: 2, lastSeq: 3, padding: "x".repeat(100) });
    });

    it("fails SendToTwin to a handler that throws with UNKNOWN HANDLER_FAILED and leaves the state as it was", async () => {
      const { client } = await startNode(t);
      await client.publish([ev("faulty", "f-1", 1)]);
      const err = await clientError(client.sendToTwin({ kind: "faulty", id: "f-1", message: { boom: true } }));
      assert.equal(err.code, grpc.status.UNKNOWN);
      assert.equal(err.reason, "HANDLER_FAILED");
      assert.equal(err.message, "faulty/f-1 onMessage failed: message boom");
      assert.deepEqual(await twinState(client, "faulty", "f-1"), { count: 1, lastSeq: 1 });
      const ok = await client.sendToTwin({ kind: "faulty", id: "f-1", message: {} });
      assert.deepEqual([ok.duplicate, ok.version], [false, 2n]);
    });
  });
});
