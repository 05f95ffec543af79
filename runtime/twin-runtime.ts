import { AlertQueries } from "./alerts/alert-queries.js";
import { AlertRetention } from "./alerts/alert-retention.js";
import { type Clock, SYSTEM_CLOCK } from "./clock.js";
import { type HostOptions, retentionSweepMs } from "./host/host-options.js";
import { type HostObserver, TwinHost } from "./host/twin-host.js";
import { TwinRegistry } from "./host/twin-registry.js";
import type { Logger } from "./log.js";
import { silentLogger } from "./log.js";
import { FilterPool } from "./query/filter-pool.js";
import { PageTokens } from "./query/page-token.js";
import { type QueryOptions, resolveQueryOptions } from "./query/query-options.js";
import { TwinQueries } from "./query/twin-query.js";
import { type Durability, RocksStore, type RocksStoreOptions } from "./store/rocks-store.js";
import type { TwinClass } from "./twin/twin.js";

/** Options for {@link TwinRuntime.open}. */
export interface TwinRuntimeOptions {
  /** The data directory (created when absent). */
  readonly dataDir: string;
  /** The twin classes this node runs. */
  readonly twins: readonly TwinClass[];
  /** @defaultValue `"wal"` */
  readonly durability?: Durability;
  /** @defaultValue the wall clock */
  readonly clock?: Clock;
  /** @defaultValue a silent logger */
  readonly log?: Logger;
  /** @defaultValue `"local"` */
  readonly nodeId?: string;
  readonly host?: HostOptions;
  /** Query and filter limits (filter cost budget, filter workers). */
  readonly query?: QueryOptions;
  readonly observer?: HostObserver;
  /** RocksDB cache and memtable sizes. */
  readonly store?: Pick<RocksStoreOptions, "cacheBytes" | "writeBufferBytes">;
}

/**
 * One node's runtime without a network: the store, the twin host, queries and alert feeds.
 * The gRPC server, the test kit and embedded users all start from here.
 *
 * @example
 * const runtime = await TwinRuntime.open({ dataDir: "./data", twins: [PatientTwin] });
 * await runtime.host.publish([{ kind: "patient", sourceId: "bed-4", seq: 1, channels: { bpm: 72 } }]);
 * await runtime.close();
 */
export class TwinRuntime {
  private closed = false;

  private constructor(
    readonly store: RocksStore,
    readonly registry: TwinRegistry,
    readonly host: TwinHost,
    readonly queries: TwinQueries,
    readonly alerts: AlertQueries,
    /** Trims resolved alerts past their retention. */
    readonly alertRetention: AlertRetention,
    private readonly filterPool: FilterPool,
  ) {}

  /**
   * Registers the twin classes, opens the data directory and starts the host.
   * @throws ConfigError for a bad twin class or option, DataDirectoryError for an unusable directory.
   */
  static async open(options: TwinRuntimeOptions): Promise<TwinRuntime> {
    const registry = new TwinRegistry();
    registry.register(...options.twins);
    const queryOptions = resolveQueryOptions(options.query);
    const log = options.log ?? silentLogger();
    const store = await RocksStore.open(options.dataDir, { ...options.store, durability: options.durability });
    try {
      const tokens = await PageTokens.open(store);
      const host = new TwinHost({
        store,
        registry,
        clock: options.clock ?? SYSTEM_CLOCK,
        log: log.child({ component: "host" }),
        nodeId: options.nodeId ?? "local",
        options: options.host,
        observer: options.observer,
        tokens,
      });
      await host.start();
      const alertRetention = new AlertRetention({
        store,
        keys: host.keys,
        clock: options.clock ?? SYSTEM_CLOCK,
        log: log.child({ component: "alert-retention" }),
        retentionMs: host.options.resolvedAlertRetentionMs,
        sweepMs: retentionSweepMs(host.options, host.options.resolvedAlertRetentionMs),
      });
      alertRetention.start();
      const pool = new FilterPool({
        workers: queryOptions.filterWorkers,
        maxQueued: queryOptions.maxQueuedFilterChunks,
        heapMb: queryOptions.filterWorkerHeapMb,
        log: log.child({ component: "query" }),
      });
      return new TwinRuntime(
        store,
        registry,
        host,
        new TwinQueries(store, host.keys, registry, host, tokens, pool, queryOptions),
        new AlertQueries(store, host.keys, host.alerts, tokens, queryOptions),
        alertRetention,
        pool,
      );
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /** Drains the host (queued turns finish and commit), then closes the store. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Queries still running fail now rather than hold the store open.
    await this.filterPool.close();
    await this.host.close();
    await this.alertRetention.close();
    await this.store.close();
  }
}
