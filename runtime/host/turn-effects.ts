import type { Logger } from "pino";
import { type Alert, AlertState, alertId } from "../alerts/alert.js";
import type { AlertFeed } from "../alerts/alert-feed.js";
import { resolvedAlertIndexOp } from "../alerts/alert-retention.js";
import type { Clock } from "../clock.js";
import type { Keys } from "../store/keys.js";
import type { BatchOp, RocksStore } from "../store/rocks-store.js";
import type { JsonObject } from "../util/json.js";
import type { Activation } from "./activation.js";
import type { CommitGroup } from "./commit-group.js";
import type { HostMetrics } from "./host-metrics.js";
import type { ResolvedHostOptions } from "./host-options.js";
import type { OutboxEntry } from "./outbox-entry.js";
import type { AlertEffect, TurnContext } from "./turn-context.js";
import type { TwinRecordData } from "./twin-record.js";

/** The last outbox seq handed out: delivered entries are deleted, so the outbox's tail cannot tell it. */
const OUTBOX_SEQ_KEY = "\u0000meta\u0000outbox-seq";

/** What {@link TurnEffects} needs of its host. */
export interface TurnEffectsConfig {
  readonly store: RocksStore;
  readonly keys: Keys;
  readonly clock: Clock;
  readonly log: Logger;
  readonly alerts: AlertFeed;
  readonly metrics: HostMetrics;
  readonly options: ResolvedHostOptions;
}

/**
 * Turns a successful turn's effects (alerts raised and resolved, timers set and cancelled,
 * messages sent) into writes of its commit group, and numbers what is numbered node-wide: alert
 * log changes and outbox messages. After a commit it advances the alert feed and trims the log.
 */
export class TurnEffects {
  private nextLogSeq = 0;
  private nextOutboxSeq = 0;
  private trimming = false;
  private readonly store: RocksStore;
  private readonly keys: Keys;
  private readonly clock: Clock;
  private readonly alerts: AlertFeed;

  constructor(private readonly config: TurnEffectsConfig) {
    this.store = config.store;
    this.keys = config.keys;
    this.clock = config.clock;
    this.alerts = config.alerts;
  }

  /** Reads the alert log's and the outbox's positions. */
  async start(): Promise<void> {
    const lastLog = await this.lastKey(this.keys.alertLogRange(0));
    const firstLog = await this.firstKey(this.keys.alertLogRange(0));
    this.nextLogSeq = lastLog === undefined ? 0 : this.keys.alertLogSeqOf(lastLog);
    this.alerts.lastSeq = this.nextLogSeq;
    this.alerts.firstSeq = firstLog === undefined ? this.nextLogSeq + 1 : this.keys.alertLogSeqOf(firstLog);
    const lastOutbox = await this.lastKey(this.keys.outboxRange());
    const outboxMark = Number(await this.store.get(OUTBOX_SEQ_KEY)) || 0;
    this.nextOutboxSeq = Math.max(lastOutbox === undefined ? 0 : this.keys.outboxSeqOf(lastOutbox), outboxMark);
  }

  /** Adds a successful turn's alert, timer and message effects to `group`, updating `rec`. */
  apply(act: Activation, rec: TwinRecordData, ctx: TurnContext, group: CommitGroup): void {
    if (ctx.alerts !== undefined) this.applyAlerts(act, rec, ctx.alerts, group);
    if (ctx.timers !== undefined) this.applyTimers(act, rec, ctx.timers, group);
    if (ctx.sends !== undefined) this.applySends(act, ctx.sends, group);
  }

  /** A group committed: its alert changes are readable by watchers now. */
  committed(group: CommitGroup): void {
    const changes = group.alertChanges;
    if (changes.length === 0) return;
    this.alerts.committed((changes[changes.length - 1] as { seq: number }).seq);
    this.trimAlertLog();
  }

  private applyAlerts(act: Activation, rec: TwinRecordData, effects: readonly AlertEffect[], group: CommitGroup): void {
    const nowMs = this.clock.nowMs();
    let opened: Set<string> | undefined;
    for (const effect of effects) {
      const open = rec.alerts?.[effect.code];
      if (effect.op === "resolve") {
        if (open === undefined) continue;
        this.dropAlert(rec, effect.code);
        this.logAlert(group, { ...open, state: AlertState.RESOLVED, updatedAt: nowMs });
        continue;
      }
      const { severity, message } = effect.options;
      if (open === undefined) {
        // raise, resolve, raise of one code in one turn opens two alerts: keep their ids apart.
        let id = alertId(act.entry.kind, act.id, effect.code, rec.ver);
        if (opened?.has(id)) id = `${id}.${opened.size}`;
        (opened ??= new Set()).add(id);
        const alert: Alert = {
          id,
          kind: act.entry.kind,
          twinId: act.id,
          code: effect.code,
          severity,
          message,
          state: AlertState.OPEN,
          raisedAt: nowMs,
          updatedAt: nowMs,
          count: 1,
        };
        (rec.alerts ??= {})[effect.code] = this.logAlert(group, alert);
        continue;
      }
      const bumped: Alert = { ...open, severity, message, count: open.count + 1, updatedAt: nowMs };
      if (severity !== open.severity || message !== open.message) (rec.alerts as Record<string, Alert>)[effect.code] = this.logAlert(group, bumped);
      else {
        // A bump alone is stored but not streamed.
        (rec.alerts as Record<string, Alert>)[effect.code] = bumped;
        group.ops.push({ type: "put", key: this.keys.alert(bumped.id), value: JSON.stringify(bumped) });
      }
    }
  }

  /** Forgets a twin's open alert of `code` in its record. */
  dropAlert(rec: TwinRecordData, code: string): void {
    if (rec.alerts === undefined) return;
    delete rec.alerts[code];
    if (Object.keys(rec.alerts).length === 0) rec.alerts = undefined;
  }

  /** Stores an alert and appends the change to the log that watchers read. */
  logAlert(group: CommitGroup, alert: Alert): Alert {
    const seq = ++this.nextLogSeq;
    this.alerts.allocated = seq;
    // Stored alerts carry the seq of their last logged change: listings derive cursors from it.
    const stored = { ...alert, seq };
    const json = JSON.stringify(stored);
    group.ops.push({ type: "put", key: this.keys.alert(alert.id), value: json }, { type: "put", key: this.keys.alertLog(seq), value: json });
    const indexOp = resolvedAlertIndexOp(this.keys, alert);
    if (indexOp !== undefined) group.ops.push(indexOp);
    group.alertChanges.push({ seq, alert });
    this.config.metrics.alertChanges++;
    return stored;
  }

  private applyTimers(act: Activation, rec: TwinRecordData, timers: Map<string, number | null>, group: CommitGroup): void {
    const { kind } = act.entry;
    for (const [name, due] of timers) {
      const old = rec.timers?.[name];
      if (old !== undefined) group.ops.push({ type: "del", key: this.keys.timer(old, kind, act.id, name) });
      if (due === null) {
        if (rec.timers !== undefined) {
          delete rec.timers[name];
          if (Object.keys(rec.timers).length === 0) rec.timers = undefined;
        }
        continue;
      }
      (rec.timers ??= {})[name] = due;
      group.ops.push({ type: "put", key: this.keys.timer(due, kind, act.id, name), value: "" });
      if (due < group.earliestTimerMs) group.earliestTimerMs = due;
    }
  }

  private applySends(act: Activation, sends: readonly { kind: string; id: string; message: JsonObject }[], group: CommitGroup): void {
    for (const send of sends) {
      const entry: OutboxEntry = {
        seq: ++this.nextOutboxSeq,
        fromKind: act.entry.kind,
        fromId: act.id,
        toKind: send.kind,
        toId: send.id,
        message: send.message,
      };
      group.ops.push({ type: "put", key: this.keys.outbox(entry.seq), value: JSON.stringify(entry) });
      group.outbox.push(entry);
    }
    // Delivered entries are deleted, so the outbox's last key cannot tell the next seq after a
    // restart; message ids (`o:<seq>`) must never repeat, or receivers would drop new messages.
    group.ops.push({ type: "put", key: OUTBOX_SEQ_KEY, value: String(this.nextOutboxSeq) });
  }

  private trimAlertLog(): void {
    const excess = this.alerts.lastSeq - this.alerts.firstSeq + 1 - this.config.options.alertLogRetention;
    // Trim in chunks of at least 1,000 so the cost is amortised.
    if (excess < Math.min(1_000, this.config.options.alertLogRetention)) return;
    if (this.trimming) return;
    const from = this.alerts.firstSeq;
    const upto = from + excess - 1;
    // Advanced before the write, so a watcher never reads past a hole without noticing.
    this.alerts.firstSeq = upto + 1;
    const ops: BatchOp[] = [];
    for (let s = from; s <= upto; s++) ops.push({ type: "del", key: this.keys.alertLog(s) });
    this.trimming = true;
    this.store.write(ops).then(
      () => {
        this.trimming = false;
      },
      (err: unknown) => {
        // The batch is atomic: nothing was deleted. The next commit with alert changes retries.
        this.alerts.firstSeq = from;
        this.trimming = false;
        this.config.log.warn({ err }, "alert log trim failed; it will be retried");
      },
    );
  }

  private async lastKey(range: { gte: string; lt: string }): Promise<string | undefined> {
    for await (const chunk of this.store.scan({ ...range, limit: 1, reverse: true }, { values: false })) return chunk[0]?.[0];
    return undefined;
  }
  private async firstKey(range: { gte: string; lt: string }): Promise<string | undefined> {
    for await (const chunk of this.store.scan({ ...range, limit: 1 }, { values: false })) return chunk[0]?.[0];
    return undefined;
  }
}
