import assert from "node:assert/strict";
import { create, toBinary } from "@bufbuild/protobuf";
import { WatchAlertsResponseSchema } from "../../../../proto/gen/twinmesh/v1/alert_pb.js";
import { type QueryTwinsResponse, QueryTwinsResponseSchema } from "../../../../proto/gen/twinmesh/v1/twin_pb.js";
import { preEncoded } from "../../../../server/grpc/encoded.js";
import type { StreamSink } from "../../../../server/grpc/grpc-adapter.js";

describe("preEncoded", () => {
  it("returns the same bytes, which a sink of that message takes and, at compile time, a sink of another does not", async () => {
    const written: unknown[] = [];
    const sink: StreamSink<QueryTwinsResponse> = {
      async write(msg) {
        written.push(msg);
      },
    };
    const bytes = toBinary(QueryTwinsResponseSchema, create(QueryTwinsResponseSchema, { twins: [{ id: "bed-4" }] }));
    const encoded = preEncoded(QueryTwinsResponseSchema, bytes);
    assert.equal(encoded, bytes); // branded, not copied
    await sink.write(encoded);
    // The lines below compile only because of their @ts-expect-error: tsc checks that each is refused.
    // @ts-expect-error bytes of a WatchAlertsResponse on a stream of QueryTwinsResponse
    await sink.write(preEncoded(WatchAlertsResponseSchema, bytes));
    // @ts-expect-error bytes that nothing vouches for
    await sink.write(bytes);
    assert.deepEqual(written, [bytes, bytes, bytes]);
  });
});
