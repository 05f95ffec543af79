import * as grpc from "@grpc/grpc-js";
import { LocalRouter } from "../cluster/index.js";
import { Health, HealthCheckResponse_ServingStatus as Serving } from "../proto/gen/grpc/health/v1/health_pb.js";
import { AlertService } from "../proto/gen/twinmesh/v1/alert_pb.js";
import { DeadLetterService } from "../proto/gen/twinmesh/v1/dead_letter_pb.js";
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
import { addService, DEFAULT_MAX_MESSAGE_BYTES } from "./grpc/grpc-adapter.js";
import { addHealthService, HealthState } from "./grpc/health-service.js";
import { addReflectionService } from "./grpc/reflection-service.js";
import { telemetryService } from "./telemetry-service.js";
import { twinService } from "./twin-service.js";

/** Options of one twinmesh node. Every field but `twins` is optional. */
export interface NodeOptions {
  /** The twin classes this node runs. */
  readonly twins: readonly TwinClass[];
  /** @defaultValue `"./data"` */
  readonly dataDir?: string;
  /** Address to listen on. @defaultValue `"127.0.0.1"` */
  readonly host?: string;
  /** Port; 0 picks a free one. @defaultValue 7420 */
  readonly port?: number;
  /** @defaultValue `"wal"` */
  readonly durability?: Durability;
  /** @defaultValue `"local"` */
  readonly nodeId?: string;
  /** Largest request accepted; grpc-js's own limit is set above it so our message is what a client sees. @defaultValue 4 MiB */
  readonly maxMessageBytes?: number;
  /** Most events in one Publish/PublishStream request. @defaultValue 10_000 */
  readonly maxBatchEvents?: number;
  /** Most batches in flight per PublishStream. @defaultValue 64 */
  readonly maxInflightBatches?: number;
  /** Runtime limits (max active twins, mailbox depth, turn timeout, …). */
  readonly hostOptions?: HostOptions;
  /** Query limits (filter cost budget, filter workers). */
  readonly queryOptions?: QueryOptions;
  /** RocksDB block cache and memtable sizes. */
  readonly storeOptions?: TwinRuntimeOptions["store"];
  /** @defaultValue a silent logger */
  readonly log?: Logger;
}

/**
 * A running node: the runtime plus the gRPC server (twinmesh.v1 services, health, reflection).
 *
 * @example
 * const node = await TwinmeshNode.start({ twins: exampleTwins, port: 0, dataDir: dir });
 * console.log(node.address); // 127.0.0.1:40123
 * await node.close();
 */
export class TwinmeshNode {
  private closing: Promise<void> | undefined;

  private constructor(
    readonly runtime: TwinRuntime,
    private readonly server: grpc.Server,
    private readonly health: HealthState,
    /** `host:port` the node listens on. */
    readonly address: string,
    private readonly log: Logger,
  ) {}

  /**
   * Opens the data directory and starts serving.
   * @throws ConfigError, DataDirectoryError, or an Error when the port cannot be bound.
   */
  static async start(options: NodeOptions): Promise<TwinmeshNode> {
    const log = options.log ?? silentLogger();
    const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const maxBatchEvents = options.maxBatchEvents ?? 10_000;
    const maxInflightBatches = options.maxInflightBatches ?? 64;
    for (const [name, value] of Object.entries({ maxMessageBytes, maxBatchEvents, maxInflightBatches })) {
      if (!Number.isSafeInteger(value) || value < 1) throw new ConfigError("BAD_OPTION", `${name} is ${value}; use a whole number >= 1`);
    }
    const runtime = await TwinRuntime.open({
      dataDir: options.dataDir ?? "./data",
      twins: options.twins,
      durability: options.durability ?? Durability.WAL,
      nodeId: options.nodeId,
      host: options.hostOptions,
      query: options.queryOptions,
      store: options.storeOptions,
      log,
    });
    const server = new grpc.Server({
      // Well above our own limit, so the adapter answers oversize requests with our message;
      // still bounded, so one request cannot take unbounded memory.
      "grpc.max_receive_message_length": 4 * maxMessageBytes,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
      "grpc.keepalive_permit_without_calls": 1,
    });
    const grpcLog = log.child({ component: "grpc" });
    const adapter = { maxMessageBytes, log: grpcLog };
    addService(server, TelemetryService, telemetryService(new LocalRouter(runtime.host), { maxBatchEvents, maxInflightBatches }, grpcLog), adapter);
    addService(server, TwinService, twinService(runtime), adapter);
    addService(server, AlertService, alertService(runtime), adapter);
    addService(server, DeadLetterService, deadLetterService(runtime), adapter);
    const health = new HealthState({
      "": Serving.SERVING,
      [TelemetryService.typeName]: Serving.SERVING,
      [TwinService.typeName]: Serving.SERVING,
      [AlertService.typeName]: Serving.SERVING,
      [DeadLetterService.typeName]: Serving.SERVING,
    });
    addHealthService(server, health, adapter);
    addReflectionService(server, [Health, TelemetryService, TwinService, AlertService, DeadLetterService], adapter);
    const host = options.host ?? "127.0.0.1";
    let port: number;
    try {
      port = await new Promise<number>((resolve, reject) => {
        server.bindAsync(`${host.includes(":") ? `[${host}]` : host}:${options.port ?? 7420}`, grpc.ServerCredentials.createInsecure(), (err, bound) =>
          err ? reject(err) : resolve(bound),
        );
      });
    } catch (err) {
      server.forceShutdown();
      await runtime.close();
      throw new ConfigError(
        "BAD_OPTION",
        `cannot listen on ${host}:${options.port ?? 7420}: ${(err as Error).message}; pick another --port or stop the process using it`,
      );
    }
    const node = new TwinmeshNode(runtime, server, health, `${host.includes(":") ? `[${host}]` : host}:${port}`, log);
    node.watchServing();
    return node;
  }

  /** Mirrors the runtime's serving state (read-only on a full disk) into gRPC health. */
  private watchServing(): void {
    this.stopWatch = this.runtime.host.onServingChange((serving) => {
      const status = serving ? Serving.SERVING : Serving.NOT_SERVING;
      for (const service of this.health.list().keys()) this.health.set(service, status);
    });
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
    await this.runtime.host.close(graceMs);
    this.health.close();
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    await this.runtime.close();
    this.log.info("node stopped");
  }
}
