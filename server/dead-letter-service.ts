import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { DeadLetterService, DeadLetter as PbDeadLetter, DeadLetterFilter as PbDeadLetterFilter } from "../proto/gen/twinmesh/v1/dead_letter_pb.js";
import type { DeadLetter, DeadLetterFilter, DeadLetterSelection, TwinRuntime } from "../runtime/index.js";
import { InvalidArgumentError } from "../runtime/index.js";
import type { ServiceImpl } from "./grpc/grpc-adapter.js";
import { requireField } from "./proto-convert.js";

/** `twinmesh.v1.DeadLetterService` over a {@link TwinRuntime}'s dead letter store. */
export function deadLetterService(runtime: TwinRuntime): ServiceImpl<typeof DeadLetterService> {
  const deadLetters = runtime.host.deadLetters;
  return {
    async listDeadLetters(req) {
      const page = await deadLetters.list({ filter: toFilter(req.filter), pageSize: req.pageSize, pageToken: req.pageToken });
      return { $typeName: "twinmesh.v1.ListDeadLettersResponse", deadLetters: page.deadLetters.map(toPbDeadLetter), nextPageToken: page.nextPageToken };
    },

    async getDeadLetter(req) {
      const d = await deadLetters.get(requireField(req.id, "id", '"3-17"'));
      return { $typeName: "twinmesh.v1.GetDeadLetterResponse", deadLetter: toPbDeadLetter(d) };
    },

    async retryDeadLetters(req, call) {
      const { retried, skipped } = await deadLetters.retry(toSelection(req), call.signal);
      return { $typeName: "twinmesh.v1.RetryDeadLettersResponse", retriedCount: BigInt(retried), skippedCount: BigInt(skipped) };
    },

    async deleteDeadLetters(req, call) {
      const { deleted } = await deadLetters.delete(toSelection(req), call.signal);
      return { $typeName: "twinmesh.v1.DeleteDeadLettersResponse", deletedCount: BigInt(deleted) };
    },
  };
}

function toFilter(f: PbDeadLetterFilter | undefined): DeadLetterFilter | undefined {
  if (f === undefined) return undefined;
  return { toKind: f.toKind, toId: f.toId, fromKind: f.fromKind, fromId: f.fromId, reason: f.reason };
}

/** Ids, or `all` with a filter; exactly one of the two. @throws InvalidArgumentError (BAD_FIELD) */
function toSelection(req: { ids: string[]; all: boolean; filter?: PbDeadLetterFilter }): DeadLetterSelection {
  if (req.ids.length > 0 && req.all) {
    throw new InvalidArgumentError("BAD_FIELD", "set ids or all, not both", [{ field: "all", description: "must be false when ids are given" }]);
  }
  if (req.ids.length > 0) return { ids: req.ids };
  if (req.all) return { all: true, filter: toFilter(req.filter) };
  throw new InvalidArgumentError(
    "BAD_FIELD",
    'name the dead letters with ids, or set all (with an optional filter) to select every matching one; for example ids: ["3-17"]',
    [{ field: "ids", description: "required unless all is set" }],
  );
}

/** A dead letter message. */
export function toPbDeadLetter(d: DeadLetter): PbDeadLetter {
  return {
    $typeName: "twinmesh.v1.DeadLetter",
    id: d.id,
    reason: d.reason,
    errorMessage: d.errorMessage,
    deadAt: d.deadAtMs > 0 ? timestampFromMs(d.deadAtMs) : undefined,
    fromKind: d.fromKind,
    fromId: d.fromId,
    toKind: d.toKind,
    toId: d.toId,
    message: d.message,
    outboxSeq: BigInt(d.outboxSeq),
  };
}
