import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { TestScope } from "./test-scope.js";

/** One span as an OTLP/HTTP JSON export carried it, with its ids in hex. */
export interface ReceivedSpan {
  readonly service: string;
  /** `service.instance.id`: the node id. */
  readonly instance: string;
  readonly name: string;
  readonly traceId: string;
  readonly spanId: string;
  /** Empty for a root span. */
  readonly parentSpanId: string;
  readonly links: readonly { readonly traceId: string; readonly spanId: string }[];
  readonly attributes: Readonly<Record<string, string | number | boolean>>;
}

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
interface OtlpAttribute {
  key: string;
  value: OtlpValue;
}
interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  links?: { traceId: string; spanId: string }[];
  attributes?: OtlpAttribute[];
}
interface OtlpExport {
  resourceSpans?: { resource?: { attributes?: OtlpAttribute[] }; scopeSpans?: { spans?: OtlpSpan[] }[] }[];
}

/** OTLP JSON writes ids as hex (the spec); base64 from an older encoder is read too. */
function hex(id: string | undefined): string {
  if (id === undefined || id === "") return "";
  return /^[0-9a-f]+$/i.test(id) && (id.length === 32 || id.length === 16) ? id.toLowerCase() : Buffer.from(id, "base64").toString("hex");
}

function value(v: OtlpValue): string | number | boolean {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  return v.boolValue ?? "";
}

function attributes(list: readonly OtlpAttribute[] | undefined): Record<string, string | number | boolean> {
  return Object.fromEntries((list ?? []).map((a) => [a.key, value(a.value)]));
}

/**
 * A tiny OTLP/HTTP receiver on 127.0.0.1 (JSON `POST /v1/traces`), standing in for an
 * OpenTelemetry collector: nodes started with `OTEL_EXPORTER_OTLP_ENDPOINT` = {@link endpoint}
 * export their spans here. Closed when the test ends.
 */
export class OtlpReceiver {
  readonly spans: ReceivedSpan[] = [];

  private constructor(
    /** `http://127.0.0.1:<port>` */
    readonly endpoint: string,
  ) {}

  static async start(t: TestScope): Promise<OtlpReceiver> {
    let receiver: OtlpReceiver | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        if (req.url === "/v1/traces" && receiver !== undefined) receiver.take(Buffer.concat(chunks).toString("utf8"));
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    receiver = new OtlpReceiver(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    t.defer(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          // The exporters keep their connections alive: closing waits for none of them.
          server.closeAllConnections();
        }),
    );
    return receiver;
  }

  /** The spans of one trace. */
  trace(traceId: string): ReceivedSpan[] {
    return this.spans.filter((s) => s.traceId === traceId);
  }

  private take(body: string): void {
    const parsed = JSON.parse(body) as OtlpExport;
    for (const rs of parsed.resourceSpans ?? []) {
      const resource = attributes(rs.resource?.attributes);
      for (const ss of rs.scopeSpans ?? []) {
        for (const s of ss.spans ?? []) {
          this.spans.push({
            service: String(resource["service.name"] ?? ""),
            instance: String(resource["service.instance.id"] ?? ""),
            name: s.name,
            traceId: hex(s.traceId),
            spanId: hex(s.spanId),
            parentSpanId: hex(s.parentSpanId),
            links: (s.links ?? []).map((l) => ({ traceId: hex(l.traceId), spanId: hex(l.spanId) })),
            attributes: attributes(s.attributes),
          });
        }
      }
    }
  }
}
