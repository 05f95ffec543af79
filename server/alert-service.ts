import type { AlertService } from "../proto/gen/twinmesh/v1/alert_pb.js";
import type { TwinRuntime } from "../runtime/index.js";
import type { ServiceImpl } from "./grpc/grpc-adapter.js";
import { requireField, toPbAlert } from "./proto-convert.js";

/** `twinmesh.v1.AlertService` over a {@link TwinRuntime}. */
export function alertService(runtime: TwinRuntime): ServiceImpl<typeof AlertService> {
  const { host, alerts } = runtime;
  return {
    async listAlerts(req) {
      const page = await alerts.list({ filter: req.filter, pageSize: req.pageSize, pageToken: req.pageToken });
      return { $typeName: "twinmesh.v1.ListAlertsResponse", alerts: page.alerts.map(toPbAlert), nextPageToken: page.nextPageToken, cursor: page.cursor };
    },

    async watchAlerts(req, out, call) {
      for await (const change of alerts.watch(req.cursor || undefined, req.filter, call.signal)) {
        await out.write({ $typeName: "twinmesh.v1.WatchAlertsResponse", alert: toPbAlert(change.alert), cursor: change.cursor });
      }
    },

    async acknowledgeAlert(req) {
      const alert = await host.acknowledgeAlert(requireField(req.id, "id", '"patient/bed-4/tachycardia@12"'));
      return { $typeName: "twinmesh.v1.AcknowledgeAlertResponse", alert: toPbAlert(alert) };
    },

    async resolveAlert(req) {
      const alert = await host.resolveAlert(requireField(req.id, "id", '"patient/bed-4/tachycardia@12"'));
      return { $typeName: "twinmesh.v1.ResolveAlertResponse", alert: toPbAlert(alert) };
    },
  };
}
