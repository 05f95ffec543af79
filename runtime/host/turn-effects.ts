import type { Logger } from "pino";
import { type Alert, AlertState, alertId } from "../alerts/alert.js";
import type { AlertFeed } from "../alerts/alert-feed.js";
import { resolvedAlertIndexOp } from "../alerts/alert-retention.js";
import type { Clock } from "../clock.js";
import type { PartitionId, Partitioning } from "../partition/partitioning.js";
import { type Keys, PartitionMark } from "../store/keys.js";
import type { BatchOp, RocksStore } from "../store/rocks-store.js";
import { type PartitionedSequence, sequenceEnds } from "../store/sequence-ends.js";
import type { JsonObject } from "../util/json.js";
import type { Activation } from "./activation.js";
import type { CommitGroup } from "./commit-group.js";
import type { HostMetrics } from "./host-metrics.js";
import type { ResolvedHostOptions } from "./host-options.js";
import type { OutboxEntry } from "./outbox-entry.js";
import type { AlertEffect, TurnContext } from "./turn-context.js";
import type { TwinRecordData } from "./twin-record.js";

/** Alert log changes one trim deletes at most: one commit group, one shipment per replica. */
const MAX_TRIM = 10_000;

/** What {@link TurnEffects} needs of its host. */
export interface TurnEffectsConfig {
  readonly store: RocksStore;
  readonly keys: Keys;
  readonly clock: Clock;
  readonly log: Logger;
  readonly alerts: AlertFeed;
  readonly metrics: HostMetrics;
  readonly options: ResolvedHostOptions;
  readonly partitioning: Partitioning;
  /** True while this node serves partition `p` as its owner: only an owner trims a partition's log. */
  readonly owns: (p: PartitionId) => boolean;
  /**
   * Adds writes that are no turn's to the open commit group, so they are shipped to the
   * partition's replicas with it; `done(true)` once the group is written (also when the writes
   * were withdrawn from it with their partition, which another node took), `done(false)` when
   * its write failed.
   */
  readonly commitWrites: (ops: readonly BatchOp[], done: (written: boolean) => void) => void;
  /** True while the host commits (not closing, and its disk takes writes): no trim starts otherwise. */
  readonly writable: () => boolean;
}

/**
 * Turns a successful turn's effects (alerts raised and resolved, timers set and cancelled,
 * messages sent) into writes of its commit group, and numbers what is numbered per partition:
 * alert log changes and outbox messages, both in the partition of the twin whose turn produced
 * them (for a message, its sender). After a commit it advances the alert feed and trims the logs.
 *
 * Alert log retention: `alertLogRetention` is one budget for all the partitions this node owns
 * together. When their logs hold more, the partition holding the most loses its oldest changes
 * (never its last one, which keeps its numbering), so a busy partition keeps most of the budget
 * and a quiet one keeps its few changes. The trim is a commit like a turn's: in a cluster it is
 * shipped to the partition's replicas, which never trim on their own, so a new owner after a
 * failover holds the log its predecessor kept (a little more when the last trim had not reached
 * it yet). A trim is due after a commit with alert changes and whenever the host calls
 * {@link trimAlertLog} (at start, after taking partitions, when its disk takes writes again);
 * trims follow each other, one commit at a time, while the logs are over the budget by a chunk
 * and a log holds more than its last change.
 */
export class TurnEffects {
  /** Per partition, the last outbox seq handed out. */
  private readonly outboxSeqs = new Map<PartitionId, number>();
  /**
   * Changes retained in the logs of the partitions this node owns: an upper bound (numbers of
   * failed writes, and partitions let go of since the last count, count too), counted again
   * exactly before a trim.
   */
  private retained = 0;
  /** The trim being committed: its partition's changes before `first` are being deleted. */
  private trimming: { readonly partition: PartitionId; readonly first: number } | undefined;
  private readonly store: RocksStore;
  private readonly keys: Keys;
  private readonly clock: Clock;
  private readonly alerts: AlertFeed;
  private readonly partitioning: Partitioning;
  private readonly alertLog: PartitionedSequence;
  private readonly outboxLog: PartitionedSequence;

  constructor(private readonly config: TurnEffectsConfig) {
    this.store = config.store;
    this.keys = config.keys;
    this.clock = config.clock;
    this.alerts = config.alerts;
    this.partitioning = config.partitioning;
    const keys = config.keys;
    this.alertLog = { range: (p) => keys.alertLogRange(p, -1), keyOf: (key) => keys.alertLogKeyOf(key) };
    this.outboxLog = { range: (p) => keys.outboxFrom(p), keyOf: (key) => keys.outboxKeyOf(key) };
  }

  /** Reads every partition's alert log and outbox positions (a few seeks per partition in use). */
  async start(): Promise<void> {
    const last = (this.partitioning.partitions - 1) as PartitionId;
    for (const [p, ends] of await sequenceEnds(this.store, this.alertLog, 0 as PartitionId, last)) this.alerts.resync(p, ends);
    for (const [p, ends] of await sequenceEnds(this.store, this.outboxLog, 0 as PartitionId, last)) this.outboxSeqs.set(p, ends.last);
    for await (const chunk of this.store.scan(this.keys.marks())) {
      for (const [key, raw] of chunk) {
        const { partition, name } = this.keys.markOf(key);
        if (name === PartitionMark.OUTBOX_SEQ) this.outboxSeqs.set(partition, Math.max(this.outboxSeqs.get(partition) ?? 0, Number(raw) || 0));
      }
    }
    this.recount();
  }

  /**
   * Reads partition `p`'s alert log and outbox positions again, after keys of the partition
   * were written underneath (replicated from its owner). Numbers only move forward: a node that
   * becomes the partition's owner continues its numbering and never reuses a number.
   */
  async resyncPartition(p: PartitionId): Promise<void> {
    const log = (await sequenceEnds(this.store, this.alertLog, p, p)).get(p);
    this.alerts.resync(p, log);
    // The disk may not show a trim in flight yet: its changes stay trimmed for watchers.
    const trim = this.trimming;
    if (trim?.partition === p && this.alerts.positions(p).first < trim.first) this.alerts.trimmedTo(p, trim.first);
    const outbox = (await sequenceEnds(this.store, this.outboxLog, p, p)).get(p);
    const mark = Number(await this.store.get(this.keys.mark(p, PartitionMark.OUTBOX_SEQ))) || 0;
    this.outboxSeqs.set(p, Math.max(this.outboxSeqs.get(p) ?? 0, outbox?.last ?? 0, mark));
    this.recount();
  }

  private recount(): void {
    this.retained = 0;
    for (const [p, log] of this.alerts.partitions()) if (this.config.owns(p)) this.retained += Math.max(0, log.last - log.first + 1);
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
    // Each partition's changes are in seq order within the group.
    for (const change of changes) this.alerts.committed(change.partition, change.seq);
    this.retained += changes.length;
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
        this.config.metrics.alertsRaised[severity]++;
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
    const partition = this.partitioning.partitionOf(alert.kind, alert.twinId);
    const seq = this.alerts.allocate(partition);
    // Stored alerts carry the seq of their last logged change (in their partition's log).
    const stored = { ...alert, seq };
    const json = JSON.stringify(stored);
    group.ops.push({ type: "put", key: this.keys.alert(alert.id), value: json }, { type: "put", key: this.keys.alertLog(partition, seq), value: json });
    const indexOp = resolvedAlertIndexOp(this.keys, alert);
    if (indexOp !== undefined) group.ops.push(indexOp);
    group.alertChanges.push({ partition, seq, alert });
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
    if (sends.length === 0) return;
    const partition = this.partitioning.partitionOf(act.entry.kind, act.id);
    let seq = this.outboxSeqs.get(partition) ?? 0;
    for (const send of sends) {
      const entry: OutboxEntry = {
        partition,
        seq: ++seq,
        fromKind: act.entry.kind,
        fromId: act.id,
        toKind: send.kind,
        toId: send.id,
        message: send.message,
      };
      group.ops.push({ type: "put", key: this.keys.outbox(partition, entry.seq), value: JSON.stringify(entry) });
      group.outbox.push(entry);
    }
    this.outboxSeqs.set(partition, seq);
    // Delivered entries are deleted, so the outbox's last key cannot tell the next seq after a
    // restart; message ids (`o:<partition>:<seq>`) must never repeat, or receivers would drop new messages.
    group.ops.push({ type: "put", key: this.keys.mark(partition, PartitionMark.OUTBOX_SEQ), value: String(seq) });
  }

  /**
   * Starts a trim when the logs of the partitions this node owns are over the budget by a chunk,
   * and none is in flight. The host calls it once the logs' positions are read (at start, after
   * taking partitions), never between the reads of one change of owner: a read made while a trim
   * is in flight must not see its deletes half done.
   */
  trimAlertLog(): void {
    const budget = this.config.options.alertLogRetention;
    // Trim in chunks of at least 1,000 so the cost is amortised.
    const chunk = Math.min(1_000, budget);
    if (this.retained - budget < chunk || this.trimming !== undefined || !this.config.writable()) return;
    this.recount();
    const excess = this.retained - budget;
    if (excess < chunk) return;
    let largest: PartitionId | undefined;
    let size = 0;
    for (const [p, log] of this.alerts.partitions()) {
      // A replica's copy is trimmed by its owner's shipments.
      if (!this.config.owns(p)) continue;
      const held = log.last - log.first + 1;
      if (held > size) {
        largest = p;
        size = held;
      }
    }
    // A partition keeps its last change: its numbering is read from it at start. One trim deletes
    // at most MAX_TRIM changes (a node that just took partitions may be far over its budget); the
    // next trim starts once it is written.
    const count = Math.min(excess, size - 1, MAX_TRIM);
    if (largest === undefined || count <= 0) return;
    const p = largest;
    const from = this.alerts.positions(p).first;
    const upto = from + count - 1;
    // Advanced before the write, so a watcher never reads past a hole without noticing.
    this.alerts.trimmedTo(p, upto + 1);
    this.retained -= count;
    this.trimming = { partition: p, first: upto + 1 };
    const ops: BatchOp[] = [];
    for (let seq = from; seq <= upto; seq++) ops.push({ type: "del", key: this.keys.alertLog(p, seq) });
    // A trim withdrawn with its partition (another node took it) is that node's to make; this
    // node reads the log's ends again if it takes the partition back.
    this.config.commitWrites(ops, (written) => {
      this.trimming = undefined;
      if (written) {
        this.trimAlertLog();
        return;
      }
      // The group's write failed as a whole: nothing was deleted. The next commit with alert
      // changes retries, or the host once its disk takes writes again.
      this.alerts.trimmedTo(p, from);
      this.retained += count;
      this.config.log.warn(
        { partition: p },
        "alert log trim failed with its commit; it is retried with the next alert change, or once the disk takes writes again",
      );
    });
  }
}
