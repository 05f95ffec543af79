import type { Logger } from "pino";
import { HandlerFailedError, isTwinmeshError } from "../errors.js";
import type { RocksStore } from "../store/rocks-store.js";
import { isPlainObject, type JsonObject, stringifyJson } from "../util/json.js";
import type { Activation } from "./activation.js";
import type { HostMetrics } from "./host-metrics.js";
import type { TurnOutcome } from "./twin-message.js";
import { parseRecord, type TwinRecordData } from "./twin-record.js";
import type { KindEntry } from "./twin-registry.js";

/** What {@link TwinLoader} needs of its host. */
export interface TwinLoaderConfig {
  readonly store: RocksStore;
  readonly log: Logger;
  readonly metrics: HostMetrics;
  /** Resolves once the commit write in flight now (if any) has finished. */
  readonly afterWrite: () => Promise<void>;
  /** The twin's record and state are in memory: its turns may run. */
  readonly loaded: (act: Activation) => void;
  /** The twin could not be loaded: evict it and answer its queued messages with `outcome`. */
  readonly failed: (act: Activation, outcome: TurnOutcome) => void;
}

/**
 * Reads activated twins' records from RocksDB, batched: every twin activated in one tick is read
 * with one multi-get. Migrates state stored by an older `stateVersion` of its class, and gives a
 * new twin its initial state. A twin evicted because its working record could not be trusted is
 * read again only after the commit write in flight, which may hold its last good turns.
 */
export class TwinLoader {
  private toLoad: Activation[] = [];
  /** Twins evicted by a broken turn while a write held their changes: reloaded after that write. */
  private readonly reloadAfterWrite = new Set<string>();
  private reloadBarrier: Promise<void> = Promise.resolve();

  constructor(private readonly config: TwinLoaderConfig) {}

  /** Reads `act`'s record soon (with the others activated in this tick). */
  load(act: Activation): void {
    this.toLoad.push(act);
    if (this.toLoad.length === 1) setImmediate(() => this.loadPending());
  }

  /** True while twins wait for their read to start. */
  get pending(): boolean {
    return this.toLoad.length > 0;
  }

  /**
   * A twin whose working record cannot be trusted is being evicted. A write in flight may still
   * hold its last good turns, so its next activation reads the store only after that write.
   */
  reloadAfter(act: Activation): void {
    if (act.uncommitted > 0) {
      this.reloadAfterWrite.add(act.key);
      this.reloadBarrier = this.config.afterWrite();
    }
  }

  /** Reads the records of every twin activated in this tick with one multi-get. */
  private loadPending(): void {
    const acts = this.toLoad;
    this.toLoad = [];
    const read = (): Promise<(string | undefined)[]> => this.config.store.getMany(acts.map((a) => a.key));
    let records: Promise<(string | undefined)[]>;
    if (this.reloadAfterWrite.size > 0 && acts.some((a) => this.reloadAfterWrite.has(a.key))) {
      for (const a of acts) this.reloadAfterWrite.delete(a.key);
      records = this.reloadBarrier.then(read);
    } else records = read();
    records.then(
      (raws) => {
        for (let i = 0; i < acts.length; i++) this.loaded(acts[i] as Activation, raws[i]);
      },
      (err: Error) => {
        for (const act of acts)
          this.config.failed(act, { status: "rejected", reason: "LOAD_FAILED", message: `could not read twin state: ${err.message}`, retryable: true });
      },
    );
  }

  private loaded(act: Activation, raw: string | undefined): void {
    if (act.evicted) return;
    const { entry } = act;
    try {
      if (raw === undefined) {
        act.record = { sv: entry.stateVersion, ver: 0, hw: 0 };
        this.resetState(act);
      } else {
        const { rec, state, stateJson } = parseRecord(raw);
        act.record = rec;
        if (state === undefined) {
          this.resetState(act);
        } else if (rec.sv === entry.stateVersion) {
          act.state = state;
          act.stateJson = stateJson; // the rollback point; a format-1 record leaves it to the first turn
        } else {
          this.migrate(act, rec, state);
        }
      }
    } catch (err) {
      const reason = isTwinmeshError(err) ? err.reason : "TWIN_CORRUPT";
      this.config.log.error({ err, kind: entry.kind, twin: act.id }, "twin could not be loaded");
      this.config.failed(act, {
        status: "rejected",
        reason,
        message: `twin ${entry.kind}/${act.id} could not be loaded: ${(err as Error).message}`,
        retryable: false,
      });
      return;
    }
    act.loading = false;
    this.config.loaded(act);
  }

  /** Gives a twin its kind's initial state (a new twin, or a deleted one that receives a message). */
  resetState(act: Activation): void {
    const state = act.entry.instance.initial() as JsonObject;
    act.stateJson = stringifyJson(state, "initial()");
    act.state = JSON.parse(act.stateJson) as JsonObject;
  }

  private migrate(act: Activation, rec: TwinRecordData, stored: JsonObject): void {
    const { state, json } = this.migrated(act.entry, rec.sv, stored);
    act.state = state;
    act.stateJson = json;
    rec.sv = act.entry.stateVersion;
    this.config.metrics.migrations++;
  }

  /** Runs the class's `migrate` on a stored state of an older version. */
  migrated(entry: KindEntry, sv: number, stored: JsonObject): { state: JsonObject; json: string } {
    if (sv > entry.stateVersion) {
      throw new HandlerFailedError(
        "MIGRATION_FAILED",
        `stored state has stateVersion ${sv}, newer than the loaded class (${entry.stateVersion}); run the newer twin module`,
      );
    }
    try {
      const state: unknown = entry.instance.migrate?.(structuredClone(stored), sv);
      if (!isPlainObject(state)) throw new TypeError("migrate() must return a plain JSON object");
      return { state, json: stringifyJson(state, "migrated state") };
    } catch (err) {
      throw new HandlerFailedError("MIGRATION_FAILED", `migrate(state, ${sv}) failed: ${(err as Error).message}`, { cause: err });
    }
  }
}
