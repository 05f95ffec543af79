import type { Logger } from "pino";
import type { RocksStore } from "../store/rocks-store.js";

/** What {@link DiskHealth} needs of its host. */
export interface DiskHealthConfig {
  readonly store: RocksStore;
  readonly log: Logger;
  /** True when no commit is open or being written: the store may be reopened. */
  readonly commitsIdle: () => boolean;
  /** Called when the disk starts or stops refusing writes. */
  readonly changed: () => void;
  /** How often a read-only node probes the disk. */
  readonly probeMs?: number;
}

/** The marker key a probe writes. */
const PROBE_KEY = "\u0000meta\u0000probe";

/**
 * Whether the disk takes writes. After a write fails for lack of space or an I/O error, the node
 * is read-only: it refuses new work (NOT_SERVING) and probes once a second, reopening RocksDB
 * (which refuses every write after a failed WAL append until then) and writing a marker; when
 * that works, the node serves again.
 */
export class DiskHealth {
  private refusing: Error | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly config: DiskHealthConfig) {}

  /** The error that made the disk read-only, or undefined while it takes writes. */
  get readOnly(): Error | undefined {
    return this.refusing;
  }

  /** A write failed with `err`: goes read-only if `err` says the disk refuses writes. */
  writeFailed(err: Error): void {
    if (!/no space|ENOSPC|IO error/i.test(err.message) || this.refusing !== undefined || this.closed) return;
    this.refusing = err;
    this.config.log.error({ err }, "disk refuses writes; node is read-only and NOT_SERVING until space returns");
    this.config.changed();
    this.scheduleProbe();
  }

  /** Stops probing. A probe in flight ends harmlessly (the store's close waits for its reopen). */
  close(): void {
    this.closed = true;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
  }

  private scheduleProbe(): void {
    this.probeTimer = setTimeout(() => void this.probe(), this.config.probeMs ?? 1_000);
    this.probeTimer.unref();
  }

  private async probe(): Promise<void> {
    if (this.closed) return;
    const { store, log } = this.config;
    try {
      if (this.config.commitsIdle()) await store.reopen();
      await store.write([{ type: "put", key: PROBE_KEY, value: String(Date.now()) }]);
      this.refusing = undefined;
      this.probeTimer = undefined;
      log.info("disk accepts writes again; serving");
      this.config.changed();
    } catch (err) {
      if (this.closed) return;
      log.debug({ err }, "disk still refuses writes");
      this.scheduleProbe();
    }
  }
}
