import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { ClusterNode, type ClusterOptions, LocalRouter, parseNodeId } from "../cluster/index.js";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../proto/gen/grpc/health/v1/health_pb.js";
import { AlertService } from "../proto/gen/twinmesh/v1/alert_pb.js";
import { DeadLetterService } from "../proto/gen/twinmesh/v1/dead_letter_pb.js";
import { NodeService } from "../proto/gen/twinmesh/v1/node_pb.js";
import { TelemetryService } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { TwinService } from "../proto/gen/twinmesh/v1/twin_pb.js";
import {
  ConfigError,
  Durability,
  type HostOptions,
  type Logger,
  type QueryOptions,
  silentLogger,
  type TwinClass,
  TwinRuntime,
  type TwinRuntimeOptions,
} from "../runtime/index.js";
import { alertService } from "./alert-service.js";
import { deadLetterService } from "./dead-letter-service.js";
import { type AdapterOptions, addService, DEFAULT_MAX_MESSAGE_BYTES } from "./grpc/grpc-adapter.js";
import { addHealthService, HealthState } from "./grpc/health-service.js";
import { addReflectionService } from "./grpc/reflection-service.js";
import { DEFAULT_METRICS_PORT, GrpcCallCounts, type MetricsOptions, NodeMetrics } from "./metrics/index.js";
import { nodeService } from "./node-service.js";
import { NodeTracing, type TracingOptions, tracingFromEnv } from "./telemetry/index.js";
import { telemetryService } from "./telemetry-service.js";
import { twinService } from "./twin-service.js";

/**
 * Options of the gRPC server of a node ({@link TwinmeshNode.serve}). Every field is optional.
 */
export interface ServeOptions {
  /** Address to listen on. @defaultValue `"127.0.0.1"` */
  readonly host?: string;
  /** Port, 0 to 65535; 0 picks a free one. @defaultValue 7420 */
  readonly port?: number;
  /** Largest request accepted; grpc-js's own limit is set above it so our message is what a client sees. @defaultValue 4 MiB */
  readonly maxMessageBytes?: number;
  /** Most events in one Publish/PublishStream request. @defaultValue 10_000 */
  readonly maxBatchEvents?: number;
  /** Most batches in flight per PublishStream. @defaultValue 64 */
  readonly maxInflightBatches?: number;
  /** @defaultValue a silent logger */
  readonly log?: Logger;
  /**
   * Serve OpenTelemetry metrics for Prometheus at `GET http://<host>:<port>/metrics` (port 0: any
   * free port). Absent: no metrics endpoint (the `twinmesh start` command serves one on 9464 by default).
   */
  readonly metrics?: MetricsOptions;
}

/** Options of one twinmesh node ({@link TwinmeshNode.start}). Every field but `twins` is optional. */
export interface NodeOptions extends ServeOptions {
  /** The twin classes this node runs. */
  readonly twins: readonly TwinClass[];
  /** @defaultValue `"./data"` */
  readonly dataDir?: string;
  /** @defaultValue `"wal"` */
  readonly durability?: Durability;
  /** @defaultValue `"local"` */
  readonly nodeId?: string;
  /** Runtime limits (max active twins, mailbox depth, turn timeout, …). */
  readonly hostOptions?: HostOptions;
  /** Query limits (filter cost budget, filter workers). */
  readonly queryOptions?: QueryOptions;
  /** RocksDB block cache and memtable sizes. */
  readonly storeOptions?: TwinRuntimeOptions["store"];
  /** The partition count of a new data directory (`--partitions`). @defaultValue the directory's, or 256 */
  readonly partitions?: number;
  /** The static cluster this node is part of (`--peers`, `--replication-factor`); absent or without peers: a one-node cluster. */
  readonly cluster?: ClusterOptions;
  /**
   * Traces (OpenTelemetry): spans per publish batch, turn, commit, forward and replication hop.
   * `false` turns tracing off whatever the environment says.
   * @defaultValue {@link tracingFromEnv}: on when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else off
   */
  readonly tracing?: TracingOptions | false;
}

/** The default gRPC port of a node. */
export const DEFAULT_PORT = 7420;
/** Largest TCP port. */
const MAX_PORT = 65_535;

interface ResolvedServeOptions {
  readonly metrics: MetricsOptions | undefined;
  readonly host: string;
  readonly port: number;
  readonly maxMessageBytes: number;
  readonly maxBatchEvents: number;
  readonly maxInflightBatches: number;
  readonly log: Logger;
}

/** Applies the defaults and checks the limits. @throws ConfigError (BAD_OPTION) naming the bad option */
function resolveServeOptions(options: ServeOptions): ResolvedServeOptions {
  const resolved = {
    metrics: options.metrics,
    host: options.host ?? "127.0.0.1",
    port: options.port ?? DEFAULT_PORT,
    maxMessageBytes: options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    maxBatchEvents: options.maxBatchEvents ?? 10_000,
    maxInflightBatches: options.maxInflightBatches ?? 64,
    log: options.log ?? silentLogger(),
  };
  const { maxMessageBytes, maxBatchEvents, maxInflightBatches, port } = resolved;
  for (const [name, value] of Object.entries({ maxMessageBytes, maxBatchEvents, maxInflightBatches })) {
    if (!Number.isSafeInteger(value) || value < 1) throw new ConfigError("BAD_OPTION", `${name} is ${value}; use a whole number >= 1`);
  }
  if (!Number.isSafeInteger(port) || port < 0 || port > MAX_PORT) {
    throw new ConfigError("BAD_OPTION", `port is ${port}; use a whole number from 0 to ${MAX_PORT} (0 picks a free port)`);
  }
  return resolved;
}

/**
 * A running node: a {@link TwinRuntime} served over gRPC (the twinmesh.v1 services, health,
 * reflection). {@link TwinmeshNode.start} opens a runtime and serves it; {@link TwinmeshNode.serve}
 * serves a runtime the caller opened and keeps owning.
 *
 * @example
 * const node = await TwinmeshNode.start({ twins: [PatientTwin], dataDir: "./my-data", port: 0 });
 * console.log(node.address); // 127.0.0.1:40123
 * await node.close();
 */
export class TwinmeshNode {
  private closing: Promise<void> | undefined;

  private constructor(
    /** The runtime this node serves. */
    readonly runtime: TwinRuntime,
    /** True when the node opened the runtime, and so closes it. */
    private readonly ownsRuntime: boolean,
    private readonly server: grpc.Server,
    private readonly health: HealthState,
    /** `host:port` the node listens on. */
    readonly address: string,
    private readonly log: Logger,
    /** This node's part in its cluster; undefined for a one-node cluster. */
    readonly cluster: ClusterNode | undefined,
    private readonly metrics: NodeMetrics | undefined,
    private readonly tracing: NodeTracing | undefined,
  ) {}

  /** True when this node makes spans (its tracing options or the OpenTelemetry environment turned tracing on). */
  get tracingOn(): boolean {
    return this.tracing !== undefined;
  }

  /** Exports the spans not exported yet (a no-op with tracing off); for tests and tools that read a collector. */
  async flushTraces(): Promise<void> {
    await this.tracing?.flush();
  }

  /** `host:port` of the Prometheus endpoint (`GET /metrics`); undefined when metrics are off. */
  get metricsAddress(): string | undefined {
    return this.metrics?.address;
  }

  /**
   * Opens the data directory and starts serving. When the port cannot be bound, the runtime is
   * closed and a data directory this call created is removed again, so nothing is left behind.
   * @throws ConfigError (BAD_OPTION for a bad option, LISTEN_FAILED when the address cannot be
   * bound), DataDirectoryError for an unusable directory.
   */
  static async start(options: NodeOptions): Promise<TwinmeshNode> {
    const serve = resolveServeOptions(options);
    const dataDir = options.dataDir ?? "./data";
    const existing = await entriesOf(dataDir);
    const tracing = NodeTracing.start(
      options.nodeId ?? "local",
      options.tracing === undefined ? tracingFromEnv() : options.tracing || undefined,
      serve.log.child({ component: "telemetry" }),
    );
    const cluster =
      options.cluster !== undefined && options.cluster.peers.length > 0
        ? new ClusterNode(parseNodeId(options.nodeId ?? "local", "--node-id"), options.cluster, serve.log, tracing?.tracing)
        : undefined;
    let runtime: TwinRuntime;
    try {
      runtime = await TwinRuntime.open({
        partitions: options.partitions,
        ownership: cluster?.ownership,
        remoteMessages: cluster?.remoteMessages,
        replication: cluster?.replication,
        dataDir,
        twins: options.twins,
        durability: options.durability ?? Durability.WAL,
        nodeId: options.nodeId,
        host: options.hostOptions,
        query: options.queryOptions,
        store: options.storeOptions,
        log: serve.log,
        tracing: tracing?.tracing,
      });
    } catch (err) {
      await tracing?.close();
      throw err;
    }
    try {
      return await TwinmeshNode.listen(runtime, true, serve, cluster, tracing);
    } catch (err) {
      await runtime.close();
      await tracing?.close();
      // Only what this call created: an absent or empty directory held nothing of anyone's.
      if (existing === "absent") await rm(dataDir, { recursive: true, force: true });
      else if (existing === 0) for (const entry of await readdir(dataDir)) await rm(join(dataDir, entry), { recursive: true, force: true });
      throw err;
    }
  }

  /**
   * Serves an open runtime over gRPC. The caller keeps owning the runtime: {@link close} stops
   * the server (open calls finish, up to the grace period) and leaves the runtime open, to be
   * closed by the caller afterwards. A runtime should be served by one node at a time.
   * @throws ConfigError (BAD_OPTION, or LISTEN_FAILED when the address cannot be bound)
   *
   * @example
   * const runtime = await TwinRuntime.open({ dataDir: "./my-data", twins: [PatientTwin] });
   * const node = await TwinmeshNode.serve(runtime, { port: 7420 });
   * // … the process publishes to runtime.host directly, clients use gRPC
   * await node.close();
   * await runtime.close();
   */
  static async serve(runtime: TwinRuntime, options: ServeOptions = {}): Promise<TwinmeshNode> {
    return TwinmeshNode.listen(runtime, false, resolveServeOptions(options));
  }

  private static async listen(
    runtime: TwinRuntime,
    ownsRuntime: boolean,
    options: ResolvedServeOptions,
    cluster?: ClusterNode,
    tracing?: NodeTracing,
  ): Promise<TwinmeshNode> {
    const { host, log, maxMessageBytes, maxBatchEvents, maxInflightBatches } = options;
    const server = new grpc.Server({
      // Well above our own limit, so the adapter answers oversize requests with our message;
      // still bounded, so one request cannot take unbounded memory.
      "grpc.max_receive_message_length": 4 * maxMessageBytes,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
      "grpc.keepalive_permit_without_calls": 1,
    });
    const grpcLog = log.child({ component: "grpc" });
    const calls = options.metrics === undefined ? undefined : new GrpcCallCounts();
    const adapter: AdapterOptions = { maxMessageBytes, log: grpcLog, calls };
    const router = cluster === undefined ? new LocalRouter(runtime) : await cluster.attach(runtime);
    cluster?.serve(server, adapter);
    addService(server, TelemetryService, telemetryService(router, { maxBatchEvents, maxInflightBatches }, grpcLog, tracing?.tracing), adapter);
    addService(server, TwinService, twinService(router), adapter);
    addService(server, AlertService, alertService(router), adapter);
    addService(server, DeadLetterService, deadLetterService(router), adapter);
    const health = new HealthState({
      "": Serving.SERVING,
      [TelemetryService.typeName]: Serving.SERVING,
      [TwinService.typeName]: Serving.SERVING,
      [AlertService.typeName]: Serving.SERVING,
      [DeadLetterService.typeName]: Serving.SERVING,
      [NodeService.typeName]: Serving.SERVING,
    });
    addService(server, NodeService, nodeService(runtime, cluster, health), adapter);
    addHealthService(server, health, adapter);
    addReflectionService(server, [Health, TelemetryService, TwinService, AlertService, DeadLetterService, NodeService], adapter);
    const hostPart = host.includes(":") ? `[${host}]` : host;
    let port: number;
    try {
      port = await new Promise<number>((resolve, reject) => {
        server.bindAsync(`${hostPart}:${options.port}`, grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound)));
      });
    } catch (err) {
      server.forceShutdown();
      health.close();
      throw new ConfigError(
        "LISTEN_FAILED",
        `cannot listen on ${hostPart}:${options.port}: ${listenProblem(err)}; pick another --port or stop the process using it`,
      );
    }
    let metrics: NodeMetrics | undefined;
    if (options.metrics !== undefined) {
      try {
        metrics = await NodeMetrics.start(
          { runtime, cluster, calls },
          { host: options.metrics.host ?? host, port: options.metrics.port ?? DEFAULT_METRICS_PORT },
          log.child({ component: "metrics" }),
        );
      } catch (err) {
        server.forceShutdown();
        health.close();
        throw err;
      }
    }
    const node = new TwinmeshNode(runtime, ownsRuntime, server, health, `${hostPart}:${port}`, log.child({ component: "server" }), cluster, metrics, tracing);
    cluster?.start();
    node.watchServing();
    return node;
  }

  /**
   * Mirrors the runtime's serving state (read-only on a full disk) and, in a cluster, catching
   * up after a start, into gRPC health: NOT_SERVING while either holds.
   */
  private watchServing(): void {
    let diskServing = true;
    const update = (): void => {
      const serving = diskServing && this.cluster?.catchingUp !== true;
      const status = serving ? Serving.SERVING : Serving.NOT_SERVING;
      for (const service of this.health.list().keys()) this.health.set(service, status);
    };
    const stopDisk = this.runtime.host.onServingChange((serving) => {
      diskServing = serving;
      update();
    });
    const stopCluster = this.cluster?.onCatchingUpChange(update) ?? (() => undefined);
    this.stopWatch = () => {
      stopDisk();
      stopCluster();
    };
    update();
  }
  private stopWatch: () => void = () => undefined;

  /**
   * Graceful stop: reports NOT_SERVING, lets queued turns finish and commit (new events are
   * rejected `SHUTTING_DOWN`, retryable), ends open calls (after `graceMs` by force), then closes
   * the store. Everything acknowledged is durable. Idempotent.
   */
  close(graceMs = 5_000): Promise<void> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  private async shutdown(graceMs: number): Promise<void> {
    this.stopWatch();
    for (const service of this.health.list().keys()) this.health.set(service, Serving.NOT_SERVING);
    this.log.info({ address: this.address }, "node stopping: draining twins");
    // A served runtime is the caller's: its open calls finish against a running host.
    if (this.ownsRuntime) await this.runtime.host.close(graceMs);
    // Drained: the peers' streams to this node end now, not at the end of the grace. (A node with
    // a cluster always owns its runtime, so the host above has drained.)
    this.cluster?.stopServingPeers();
    this.health.close();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.log.info({ graceMs }, "calls still open after the shutdown grace (clients' streams); closing them");
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    await this.cluster?.close();
    await this.metrics?.close();
    if (this.ownsRuntime) await this.runtime.close();
    // Last: the spans of the drain above are exported too.
    await this.tracing?.close();
    this.log.info("node stopped");
  }
}

/**
 * What grpc-js says when a bind fails, in a few words: "No address added out of total 1
 * resolved errors: [listen EADDRINUSE: address already in use 127.0.0.1:7420]" becomes "the
 * address is in use (EADDRINUSE)".
 */
function listenProblem(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  if (/EADDRINUSE/.test(message)) return "the address is in use (EADDRINUSE)";
  if (/EACCES/.test(message)) return "permission denied (EACCES): ports below 1024 need privileges";
  if (/EADDRNOTAVAIL/.test(message)) return "no such local address (EADDRNOTAVAIL)";
  return message.replace(/\s+/g, " ").replace(/\.$/, "");
}

/** How many entries a directory has, "absent" when it does not exist, undefined when unknown. */
async function entriesOf(dir: string): Promise<number | "absent" | undefined> {
  try {
    return (await readdir(dir)).length;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" ? "absent" : undefined;
  }
}
