import { type Alert, AlertState } from "./alerts/alert.js";
import type { PartitionId, Partitioning } from "./partition/partitioning.js";
import { Keys } from "./store/keys.js";
import type { RocksStore } from "./store/rocks-store.js";
import type { AlertSeverity } from "./twin/twin.js";

/** Alerts of one state, by severity. */
export type AlertsBySeverity = Record<AlertSeverity, number>;

/** What {@link StoredCounts.read} found, over the partitions this node owns. */
export interface StoredCountsView {
  /** Alerts in the state OPEN, by severity. */
  readonly openAlerts: AlertsBySeverity;
  /** Alerts acknowledged and not yet resolved, by severity. */
  readonly acknowledgedAlerts: AlertsBySeverity;
  /** Durable timers armed and not yet fired (a due timer whose turn is queued included). */
  readonly timersPending: number;
  /** Messages in the dead letters. */
  readonly deadLetters: number;
}

/**
 * Counts what lives only in the store, over the partitions this node owns: unresolved alerts by
 * severity, pending timers and dead letters. The host keeps no running count of these, because
 * their keys are also written underneath it (a replica's shipments, a new owner's catch-up,
 * retention), and a count kept beside them would drift; so a read scans the three keyspaces
 * (keys only, except the alerts' JSON). It costs time in proportion to the alerts (resolved ones
 * until retention trims them), timers and dead letters stored, and runs in the background of the
 * event loop (the scan yields between chunks). Read by `GetNodeStatus` and the metrics exporter,
 * not on the event path: reads made while one runs, or within {@link FRESH_MS} of its end, share
 * its answer, so scrapes and status calls together scan at most about once a second. The owned
 * partitions are taken once per scan, so one answer counts one set of partitions.
 */
export class StoredCounts {
  constructor(
    private readonly store: RocksStore,
    private readonly keys: Keys,
    private readonly partitioning: Partitioning,
    /** True for the partitions this node owns now; absent: all. */
    private readonly owns: (p: PartitionId) => boolean = () => true,
  ) {}

  private last: { readonly view: Promise<StoredCountsView>; endedAt: number } | undefined;

  /** The counts: a scan of the store, or the answer of one that ended less than {@link FRESH_MS} ago or still runs. */
  read(): Promise<StoredCountsView> {
    const last = this.last;
    if (last !== undefined && performance.now() - last.endedAt < FRESH_MS) return last.view;
    const entry = { view: this.scan(), endedAt: Number.POSITIVE_INFINITY };
    this.last = entry;
    entry.view.then(
      () => {
        entry.endedAt = performance.now();
      },
      () => {
        if (this.last === entry) this.last = undefined; // a failed scan is not shared
      },
    );
    return entry.view;
  }

  private async scan(): Promise<StoredCountsView> {
    const owned = this.partitioning.all().map((p) => this.owns(p));
    const [alerts, timersPending, deadLetters] = await Promise.all([
      this.alerts(owned),
      this.countKeys(this.keys.timersDue(0, LAST_DUE_MS), owned),
      this.countKeys(this.keys.deadLetterRange(), owned),
    ]);
    return { ...alerts, timersPending, deadLetters };
  }

  private async alerts(owned: readonly boolean[]): Promise<Pick<StoredCountsView, "openAlerts" | "acknowledgedAlerts">> {
    const openAlerts: AlertsBySeverity = { info: 0, warning: 0, critical: 0 };
    const acknowledgedAlerts: AlertsBySeverity = { info: 0, warning: 0, critical: 0 };
    for await (const chunk of this.store.scan(this.keys.alerts())) {
      for (const [key, raw] of chunk) {
        if (!this.isOwned(key, owned)) continue;
        const alert = JSON.parse(raw) as Pick<Alert, "state" | "severity">;
        const counts = alert.state === AlertState.OPEN ? openAlerts : alert.state === AlertState.ACKNOWLEDGED ? acknowledgedAlerts : undefined;
        if (counts !== undefined && alert.severity in counts) counts[alert.severity]++;
      }
    }
    return { openAlerts, acknowledgedAlerts };
  }

  private async countKeys(range: { gte: string; lt: string }, owned: readonly boolean[]): Promise<number> {
    let n = 0;
    for await (const chunk of this.store.scan(range, { values: false })) for (const [key] of chunk) if (this.isOwned(key, owned)) n++;
    return n;
  }

  private isOwned(key: string, owned: readonly boolean[]): boolean {
    const p = Keys.partitionOfKey(key, this.partitioning);
    return p !== undefined && owned[p] === true;
  }
}

/** How long a scan's answer serves later reads. */
const FRESH_MS = 1000;

/** The latest due time the timer index can hold (12 hex digits). */
const LAST_DUE_MS = 0xffff_ffff_fffe;
