import { routerFor, type TwinRouter } from "../cluster/index.js";
import type { AlertService } from "../proto/gen/twinmesh/v1/alert_pb.js";
import { hasControlCharacter, InvalidArgumentError, MAX_PARTITIONS, quoteInput } from "../runtime/index.js";
import type { ServiceImpl } from "./grpc/grpc-adapter.js";
import { requireField, toPbAlert } from "./proto-convert.js";

/**
 * Cursors this node issues name one `<partition>-<seq>` pair (at most 16 characters with its
 * separator) per partition with alert changes, after `c2.`; longer input is not one.
 */
const MAX_CURSOR_CHARS = 3 + 16 * MAX_PARTITIONS;

/** `twinmesh.v1.AlertService` over a {@link TwinRouter}. */
export function alertService(router: TwinRouter): ServiceImpl<typeof AlertService> {
  return {
    async listAlerts(req, call) {
      const page = await routerFor(router, call).listAlerts({ filter: req.filter, pageSize: req.pageSize, pageToken: req.pageToken }, call.signal);
      return { $typeName: "twinmesh.v1.ListAlertsResponse", alerts: page.alerts.map(toPbAlert), nextPageToken: page.nextPageToken, cursor: page.cursor };
    },

    async watchAlerts(req, out, call) {
      for await (const change of routerFor(router, call).watchAlerts(checkCursor(req.cursor), req.filter, call.signal)) {
        await out.write({
          $typeName: "twinmesh.v1.WatchAlertsResponse",
          alert: toPbAlert(change.alert),
          cursor: change.cursor,
          partition: change.partition,
          change: BigInt(change.seq),
        });
      }
    },

    async acknowledgeAlert(req, call) {
      const alert = await routerFor(router, call).acknowledgeAlert(requireField(req.id, "id", '"patient/bed-4/tachycardia@12"'));
      return { $typeName: "twinmesh.v1.AcknowledgeAlertResponse", alert: toPbAlert(alert) };
    },

    async resolveAlert(req, call) {
      const alert = await routerFor(router, call).resolveAlert(requireField(req.id, "id", '"patient/bed-4/tachycardia@12"'));
      return { $typeName: "twinmesh.v1.ResolveAlertResponse", alert: toPbAlert(alert) };
    },
  };
}

/**
 * The watch cursor, or undefined for "from now". Input that cannot be a cursor is refused here,
 * echoed short and escaped: a 100 KB cursor repeated whole in the error would make the status
 * too large to deliver.
 * @throws InvalidArgumentError (`BAD_CURSOR`)
 */
function checkCursor(cursor: string): string | undefined {
  if (cursor.length === 0) return undefined;
  if (cursor.length > MAX_CURSOR_CHARS || hasControlCharacter(cursor)) {
    throw new InvalidArgumentError(
      "BAD_CURSOR",
      `cursor ${quoteInput(cursor)} is not a cursor this node issued; pass one from ListAlerts or WatchAlerts, or none to start from now`,
      [{ field: "cursor", description: "must be a cursor returned by ListAlerts or WatchAlerts" }],
    );
  }
  return cursor;
}
