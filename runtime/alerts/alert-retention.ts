import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { PartitionId, Partitioning } from "../partition/partitioning.js";
import { Keys } from "../store/keys.js";
import type { BatchOp, RocksStore } from "../store/rocks-store.js";
import { type Alert, AlertState } from "./alert.js";

/** Resolved alerts removed per write: each trim batch is one atomic RocksDB write. */
export const ALERT_TRIM_BATCH = 500;
/** Every this many sweeps one reads the index from its start again (see {@link AlertRetention}). */
const FULL_SWEEP_EVERY = 10;

/** What {@link AlertRetention} needs. */
export interface AlertRetentionConfig {
  readonly store: RocksStore;
  readonly keys: Keys;
  readonly clock: Clock;
  readonly log: Logger;
  /** Resolved alerts are removed this long after they resolved. */
  readonly retentionMs: number;
  /** How often the trim runs. */
  readonly sweepMs: number;
  /** Which partition an index entry's alert is in (the alert id names its twin). */
  readonly partitioning: Partitioning;
  /** True while this node owns partition `p`: only the owner removes its resolved alerts. */
  readonly owns: (p: PartitionId) => boolean;
  /**
   * Commits the removals of `partitions`' alerts through the node's commit pipeline, so they are
   * shipped to the partitions' replicas. Rejects when they were not written (or not on as many
   * copies as operations wait for); the next sweep tries again.
   */
  readonly commit: (ops: readonly BatchOp[], partitions: ReadonlySet<PartitionId>) => Promise<void>;
}

/**
 * The write that indexes a resolved alert by the time it resolved, so the retention finds expired
 * ones without reading the alert keyspace. The host adds it to the batch that resolves the alert.
 * An alert id is resolved at most once (a later raise opens a new id), so it has one entry.
 */
export function resolvedAlertIndexOp(keys: Keys, alert: Alert): BatchOp | undefined {
  if (alert.state !== AlertState.RESOLVED) return undefined;
  return { type: "put", key: keys.resolvedAlert(alert.updatedAt, alert.id), value: "" };
}

/**
 * Removes resolved alerts older than the retention, in the background, oldest first, in batches
 * of {@link ALERT_TRIM_BATCH}, reading only the resolved-at index up to the cutoff. Open and
 * acknowledged alerts are never removed; the alert change log has its own retention (a count).
 * Resolved alerts stored before the index existed have no entry and are kept.
 *
 * Only the owner of an alert's partition removes it, by a commit like a turn's: in a cluster the
 * removal is shipped to the partition's replicas, which never remove alerts on their own clocks
 * or settings. So every copy holds the same alerts, and one gone from `ListAlerts` does not come
 * back when another node takes its partition.
 *
 * Entries of partitions another node owns stay in the index until their owner's removal arrives,
 * which with a longer retention there may be long after this node's cutoff. So that each sweep
 * does not read them all again, a sweep starts where the last complete one ended, as long as
 * this node owns no partition it did not own when that one began (a partition taken since may
 * hold entries before that point). Every {@link FULL_SWEEP_EVERY}th sweep, and every one after a
 * sweep that failed, reads from the start: an entry written before the last cutoff after it
 * passed (a resolve committed late under a tiny retention, a clock stepped back) is removed then.
 */
export class AlertRetention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private closed = false;
  /** Where the last complete sweep's range ended, and the partitions owned when it began. */
  private resume: { readonly from: string; readonly owned: ReadonlySet<PartitionId> } | undefined;
  /** Sweeps since the last that read the index from its start. */
  private sinceFull = 0;
  /** Index entries read, for tests and benches. */
  readonly stats = { scanned: 0 };

  constructor(private readonly config: AlertRetentionConfig) {}

  /** Starts the background loop. */
  start(): void {
    this.timer = setInterval(() => {
      if (this.running !== undefined || this.closed) return;
      this.trim().catch((err: unknown) => this.config.log.warn({ err }, "resolved alert retention failed; it will run again"));
    }, this.config.sweepMs);
    this.timer.unref();
  }

  /** Removes every resolved alert past the retention now; resolves to how many. */
  trim(): Promise<number> {
    this.running ??= this.trimAll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async trimAll(): Promise<number> {
    const { store, keys, clock, retentionMs, partitioning, owns, commit } = this.config;
    const range = keys.resolvedAlertsUpTo(clock.nowMs() - retentionMs);
    const owned = new Set<PartitionId>();
    for (let p = 0; p < partitioning.partitions; p++) if (owns(p as PartitionId)) owned.add(p as PartitionId);
    const { resume } = this;
    const incremental = resume !== undefined && this.sinceFull < FULL_SWEEP_EVERY - 1 && [...owned].every((p) => resume.owned.has(p));
    // Until this sweep completes, the next one reads from the start.
    this.resume = undefined;
    let from = incremental && resume.from > range.gte ? resume.from : range.gte;
    let trimmed = 0;
    while (!this.closed) {
      const scanned: string[] = [];
      for await (const chunk of store.scan({ gte: from, lt: range.lt, limit: ALERT_TRIM_BATCH }, { values: false })) {
        for (const [key] of chunk) scanned.push(key);
      }
      this.stats.scanned += scanned.length;
      if (scanned.length === 0) break;
      // Entries of partitions this node does not own stay, so the next batch starts past them.
      from = `${scanned[scanned.length - 1] as string}\u0000`;
      const partitions = new Set<PartitionId>();
      const indexKeys = scanned.filter((key) => {
        const p = Keys.partitionOfKey(key, partitioning);
        if (p === undefined || !owns(p)) return false;
        partitions.add(p);
        return true;
      });
      if (indexKeys.length > 0) {
        const ids = indexKeys.map((k) => keys.resolvedAlertIdOf(k));
        const raws = await store.getMany(ids.map((id) => keys.alert(id)));
        const ops: BatchOp[] = [];
        for (let i = 0; i < ids.length; i++) {
          ops.push({ type: "del", key: indexKeys[i] as string });
          const raw = raws[i];
          // Only a still-resolved alert goes (a resolved id is never reopened; this is a safety net).
          if (raw !== undefined && (JSON.parse(raw) as Alert).state === AlertState.RESOLVED) ops.push({ type: "del", key: keys.alert(ids[i] as string) });
        }
        await commit(ops, partitions);
        trimmed += ids.length;
      }
      if (scanned.length < ALERT_TRIM_BATCH) break;
    }
    if (!this.closed) {
      this.resume = { from: range.lt, owned };
      this.sinceFull = incremental ? this.sinceFull + 1 : 0;
    }
    if (trimmed > 0) this.config.log.info({ trimmed }, "resolved alerts trimmed by retention");
    return trimmed;
  }

  /** Stops the loop and waits for a running trim. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.running?.catch(() => undefined);
  }
}
