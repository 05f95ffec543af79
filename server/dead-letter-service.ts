import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { routerFor, type TwinRouter } from "../cluster/index.js";
import type { DeadLetterService, DeadLetter as PbDeadLetter, DeadLetterFilter as PbDeadLetterFilter } from "../proto/gen/twinmesh/v1/dead_letter_pb.js";
import type { DeadLetter, DeadLetterFilter, DeadLetterSelection } from "../runtime/index.js";
import { InvalidArgumentError, MAX_DEAD_LETTER_IDS } from "../runtime/index.js";
import type { ServiceImpl } from "./grpc/grpc-adapter.js";
import { requireField } from "./proto-convert.js";

/**
 * `twinmesh.v1.DeadLetterService` over a {@link TwinRouter}: in a cluster, listings cover every
 * partition, and each dead letter is read, retried and deleted on its partition's owner.
 */
export function deadLetterService(router: TwinRouter): ServiceImpl<typeof DeadLetterService> {
  return {
    async listDeadLetters(req, call) {
      const page = await routerFor(router, call).listDeadLetters({ filter: toFilter(req.filter), pageSize: req.pageSize, pageToken: req.pageToken });
      return { $typeName: "twinmesh.v1.ListDeadLettersResponse", deadLetters: page.deadLetters.map(toPbDeadLetter), nextPageToken: page.nextPageToken };
    },

    async getDeadLetter(req, call) {
      const d = await routerFor(router, call).getDeadLetter(requireField(req.id, "id", '"3-17"'));
      return { $typeName: "twinmesh.v1.GetDeadLetterResponse", deadLetter: toPbDeadLetter(d) };
    },

    async retryDeadLetters(req, call) {
      const { retried, skipped } = await routerFor(router, call).retryDeadLetters(toSelection(req), call.signal);
      return { $typeName: "twinmesh.v1.RetryDeadLettersResponse", retriedCount: BigInt(retried), skippedCount: BigInt(skipped) };
    },

    async deleteDeadLetters(req, call) {
      const { deleted } = await routerFor(router, call).deleteDeadLetters(toSelection(req), call.signal);
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
  if (req.ids.length > MAX_DEAD_LETTER_IDS) {
    // Checked before a cluster splits the ids among the partitions' owners.
    throw new InvalidArgumentError(
      "BAD_FIELD",
      `${req.ids.length} ids named; at most ${MAX_DEAD_LETTER_IDS} per call; split the call, or select with a filter`,
      [{ field: "ids", description: `at most ${MAX_DEAD_LETTER_IDS}` }],
    );
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
