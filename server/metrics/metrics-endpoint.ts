import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { type PrometheusExporter, PrometheusSerializer } from "@opentelemetry/exporter-prometheus";
import type { MetricData, ResourceMetrics } from "@opentelemetry/sdk-metrics";
import { ConfigError, type Logger } from "../../runtime/index.js";

/** Prometheus's text exposition format. */
const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";
/** Unit suffixes Prometheus names carry (the OpenTelemetry to Prometheus naming rules); other units add none. */
const UNIT_SUFFIXES: Readonly<Record<string, string>> = { s: "seconds", ms: "milliseconds", By: "bytes" };

/**
 * Serves `GET /metrics` in Prometheus's text format from an OpenTelemetry metric reader. The
 * exporter's own server is not used: this one reports the port it bound (port 0 in tests), and
 * names carry their unit suffix as the OpenTelemetry-to-Prometheus rules ask, which the exporter
 * leaves out (`twinmesh.commit.duration` in seconds is `twinmesh_commit_duration_seconds`;
 * monotonic counters get `_total` from the serializer).
 */
export class MetricsEndpoint {
  private constructor(
    private readonly server: Server,
    /** `host:port` it listens on. */
    readonly address: string,
  ) {}

  /** Listens on `host:port` (0: any free port). @throws ConfigError (LISTEN_FAILED) when it cannot bind */
  static async listen(reader: PrometheusExporter, host: string, port: number, log: Logger): Promise<MetricsEndpoint> {
    // No target_info or scope labels: Prometheus's own `instance` and `job` labels say where a series came from.
    const serializer = new PrometheusSerializer("", false, undefined, true, true);
    const server = createServer((req, res) => void serve(req, res, reader, serializer, log));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      server.close();
      const hostPart = host.includes(":") ? `[${host}]` : host;
      throw new ConfigError(
        "LISTEN_FAILED",
        `cannot serve metrics on ${hostPart}:${port}: ${(err as Error).message}; pick another --metrics-port (0 turns metrics off)`,
      );
    }
    const bound = server.address() as AddressInfo;
    const hostPart = bound.family === "IPv6" ? `[${bound.address}]` : bound.address;
    return new MetricsEndpoint(server, `${hostPart}:${bound.port}`);
  }

  /** Stops listening and ends open connections. Idempotent. */
  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) {
        resolve();
        return;
      }
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

async function serve(req: IncomingMessage, res: ServerResponse, reader: PrometheusExporter, serializer: PrometheusSerializer, log: Logger): Promise<void> {
  const path = (req.url ?? "/").split("?")[0];
  if (path !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
    res.writeHead(404, { "content-type": "text/plain" }).end("not found: metrics are at GET /metrics\n");
    return;
  }
  try {
    const { resourceMetrics, errors } = await reader.collect();
    if (errors.length > 0) log.warn({ errors }, "collecting metrics reported errors");
    res.writeHead(200, { "content-type": CONTENT_TYPE }).end(serializer.serialize(withUnitSuffixes(resourceMetrics)));
  } catch (err) {
    log.warn({ err }, "collecting metrics failed");
    res.writeHead(500, { "content-type": "text/plain" }).end("collecting metrics failed; see the node's log\n");
  }
}

/** The same metrics, renamed to end in their unit's Prometheus suffix where they do not yet. */
function withUnitSuffixes(resourceMetrics: ResourceMetrics): ResourceMetrics {
  return {
    ...resourceMetrics,
    scopeMetrics: resourceMetrics.scopeMetrics.map((scope) => ({ ...scope, metrics: scope.metrics.map(withUnitSuffix) })),
  };
}

function withUnitSuffix(metric: MetricData): MetricData {
  const suffix = UNIT_SUFFIXES[metric.descriptor.unit];
  if (suffix === undefined) return metric;
  const { name } = metric.descriptor;
  if (name.endsWith(`_${suffix}`) || name.endsWith(`.${suffix}`)) return metric;
  return { ...metric, descriptor: { ...metric.descriptor, name: `${name}.${suffix}` } };
}
