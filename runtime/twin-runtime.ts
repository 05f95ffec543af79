import { AlertQueries } from "./alerts/alert-queries.js";
import type { AlertRetention } from "./alerts/alert-retention.js";
import { type Clock, SYSTEM_CLOCK } from "./clock.js";
import { ConfigError, DataDirectoryError } from "./errors.js";
import type { OwnershipGate, RemoteMessages } from "./host/admission.js";
import type { HostObserver, ReplicationStage } from "./host/commit-completion.js";
import type { HostOptions } from "./host/host-options.js";
import type { IngestEvent } from "./host/ingest-event.js";
import { TwinHost, type TwinView } from "./host/twin-host.js";
import type { TurnOutcome } from "./host/twin-message.js";
import { TwinRegistry } from "./host/twin-registry.js";
import type { Logger } from "./log.js";
import { silentLogger } from "./log.js";
import { DEFAULT_PARTITIONS, MAX_PARTITIONS, type PartitionId, Partitioning } from "./partition/partitioning.js";
import { FilterPool } from "./query/filter-pool.js";
import { PageTokens } from "./query/page-token.js";
import { type QueryOptions, resolveQueryOptions } from "./query/query-options.js";
import { TwinQueries } from "./query/twin-query.js";
import { upgradeDataFormat } from "./store/format-upgrade.js";
import { type Durability, RocksStore, type RocksStoreOptions } from "./store/rocks-store.js";
import { storedTwinKinds } from "./store/stored-kinds.js";
import { StoredCounts } from "./stored-counts.js";
import type { Tracing } from "./tracing.js";
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
  /** Which twins this node runs now (the cluster's partition ownership); absent: all of them. */
  readonly ownership?: OwnershipGate;
  /** Where committed groups go before they are acknowledged (the cluster's replication); absent: none. */
  readonly replication?: ReplicationStage;
  /** Delivers twin-to-twin messages whose target another node owns; absent: every target is local. */
  readonly remoteMessages?: RemoteMessages;
  /**
   * The cluster's partition count. Fixed when the data directory is created: a directory made
   * with another count is refused (`DATA_DIR_PARTITIONS`). Absent: the directory's count, or
   * 256 for a new one.
   */
  readonly partitions?: number;
  /** RocksDB cache and memtable sizes. */
  readonly store?: Pick<RocksStoreOptions, "cacheBytes" | "writeBufferBytes">;
  /** Makes spans for traced batches' turns and commits (the server's OpenTelemetry wiring); absent: tracing off, no span is made. */
  readonly tracing?: Tracing;
}

/**
 * One node's runtime without a network: the store, the twin host, queries and alert feeds.
 * The gRPC server, the test kit and embedded users all start from here.
 *
 * @example
 * const runtime = await TwinRuntime.open({ dataDir: "./data", twins: [PatientTwin] });
 * await runtime.publish([{ kind: "patient", sourceId: "bed-4", seq: 1, channels: { bpm: 72 } }]);
 * console.log((await runtime.getTwin("patient", "bed-4")).state);
 * await runtime.close(); // serve it over gRPC meanwhile with TwinmeshNode.serve(runtime)
 */
export class TwinRuntime {
  private closed = false;

  private constructor(
    /** How twins map to partitions: the count this data directory was created with. */
    readonly partitioning: Partitioning,
    readonly store: RocksStore,
    readonly registry: TwinRegistry,
    readonly host: TwinHost,
    readonly queries: TwinQueries,
    readonly alerts: AlertQueries,
    private readonly filterPool: FilterPool,
    /**
     * Kinds that have twins in the data directory but are not registered: their events are
     * rejected `UNKNOWN_KIND` and their timers and messages wait until the kind is loaded again.
     * Found at open with one seek per stored kind (at most `MAX_STORED_KINDS`); sorted.
     */
    readonly unloadedKinds: readonly string[],
    /** @internal The node's page token key: cluster/ turns positions into this node's tokens and back. */
    readonly pageTokens: PageTokens,
    /** @internal Counts kept only in the store (alerts, timers, dead letters), for server/ (status and metrics). */
    readonly storedCounts: StoredCounts,
  ) {}

  /** Trims resolved alerts past their retention (the host's, in the partitions this node owns). */
  get alertRetention(): AlertRetention {
    return this.host.alertRetention;
  }

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
      const partitioning = await storedPartitioning(store, options.dataDir, options.partitions);
      // An older directory is upgraded before anything reads it (a no-op for a current one).
      await upgradeDataFormat(store, partitioning, log.child({ component: "store" }));
      const tokens = await PageTokens.open(store);
      const host = new TwinHost({
        store,
        registry,
        clock: options.clock ?? SYSTEM_CLOCK,
        log,
        nodeId: options.nodeId ?? "local",
        options: options.host,
        observer: options.observer,
        ownership: options.ownership,
        replication: options.replication,
        remoteMessages: options.remoteMessages,
        tokens,
        partitioning,
        tracing: options.tracing,
      });
      // Before the host starts, so a failure here leaves only the store to close.
      const stored = await storedTwinKinds(store, host.keys);
      const loaded = registry.kindNames();
      const unloadedKinds = stored.kinds.filter((kind) => !loaded.includes(kind));
      if (unloadedKinds.length > 0) {
        log.warn({ dataDir: options.dataDir, kinds: unloadedKinds, loaded, more: stored.truncated }, "stored twins of kinds not loaded");
      }
      await host.start();
      const pool = new FilterPool({
        workers: queryOptions.filterWorkers,
        maxQueued: queryOptions.maxQueuedFilterChunks,
        heapMb: queryOptions.filterWorkerHeapMb,
        log: log.child({ component: "query" }),
      });
      return new TwinRuntime(
        partitioning,
        store,
        registry,
        host,
        new TwinQueries(
          store,
          host.keys,
          registry,
          host,
          tokens,
          pool,
          queryOptions,
          options.ownership?.owns === undefined ? undefined : (kind, id) => options.ownership?.owns?.(partitioning.partitionOf(kind, id)) ?? true,
        ),
        new AlertQueries(
          store,
          host.keys,
          host.alerts,
          tokens,
          queryOptions,
          (p) => options.ownership?.owns?.(p) ?? true,
          (kind, id) => partitioning.partitionOf(kind, id),
        ),
        pool,
        unloadedKinds,
        tokens,
        new StoredCounts(store, host.keys, partitioning, (p) => options.ownership?.owns?.(p) ?? true),
      );
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  /**
   * Publishes a batch of events in process, as the gRPC `Publish` does: `outcomes[i]` answers
   * `events[i]`, each after its turn is durable (`accepted`), recognised as a retry of an applied
   * seq (`duplicate`) or refused with a reason (`rejected`).
   */
  publish(events: readonly IngestEvent[]): Promise<TurnOutcome[]> {
    return this.host.publish(events);
  }

  /** A twin's last committed state. @throws TwinNotFoundError for a twin that never received anything */
  getTwin(kind: string, id: string): Promise<TwinView> {
    return this.host.getTwin(kind, id);
  }

  /**
   * Tells the runtime that `partitions` changed hands (this node became or stopped being their
   * owner), or that keys of theirs were written underneath (replicated from their owner). Their
   * numbering (alert log, outbox, dead letters) is read again from the store and continues after
   * the highest number there, so a new owner never reuses one; timers, the outbox and alert
   * watches then follow ownership.
   */
  partitionsChanged(partitions: Iterable<PartitionId>): Promise<void> {
    return this.host.partitionsChanged(partitions);
  }

  /** Drains the host (queued turns finish and commit), then closes the store. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Queries still running fail now rather than hold the store open.
    await this.filterPool.close();
    await this.host.close();
    await this.store.close();
  }
}

/** Where a data directory keeps the partition count it was created with. */
const PARTITIONS_KEY = "\u0000meta\u0000partitions";

/**
 * The data directory's partition count, stamped on first use with `requested` (or the default).
 * @throws DataDirectoryError (DATA_DIR_PARTITIONS) when `requested` differs from the stamped count;
 * ConfigError (BAD_OPTION) for a count out of range.
 */
async function storedPartitioning(store: RocksStore, dataDir: string, requested: number | undefined): Promise<Partitioning> {
  if (requested !== undefined && (!Number.isSafeInteger(requested) || requested < 1 || requested > MAX_PARTITIONS)) {
    throw new ConfigError("BAD_OPTION", `partitions is ${requested}; use a whole number from 1 to ${MAX_PARTITIONS}`);
  }
  const raw = await store.get(PARTITIONS_KEY);
  const stored = raw === undefined ? undefined : Number(raw);
  if (stored !== undefined && (!Number.isSafeInteger(stored) || stored < 1 || stored > MAX_PARTITIONS)) {
    throw new DataDirectoryError(
      "DATA_DIR_CORRUPT",
      dataDir,
      `${dataDir} records an unreadable partition count (${JSON.stringify(raw)}); restore it from a backup`,
    );
  }
  if (stored !== undefined && requested !== undefined && stored !== requested) {
    throw new DataDirectoryError(
      "DATA_DIR_PARTITIONS",
      dataDir,
      `${dataDir} was created with ${stored} partitions, and this node was started with --partitions ${requested}; the count is fixed when a data directory is created: start with --partitions ${stored}, or use a new data directory`,
    );
  }
  const partitions = stored ?? requested ?? DEFAULT_PARTITIONS;
  if (stored === undefined) await store.write([{ type: "put", key: PARTITIONS_KEY, value: String(partitions) }]);
  return new Partitioning(partitions);
}
