/**
 * The key layout of a twinmesh data directory. Every key starts with a one-letter keyspace and
 * a namespace (tenant) segment, so tenants can be added without rewriting data; segments are
 * separated by NUL, which validated kinds and ids never contain. Numbers are fixed-width hex
 * so that byte order is numeric order.
 *
 * | keyspace | key                                   | value                    |
 * |----------|---------------------------------------|--------------------------|
 * | `t`      | t NUL ns NUL kind NUL id              | twin record (JSON)       |
 * | `a`      | a NUL ns NUL alertId                  | alert (JSON)             |
 * | `l`      | l NUL ns NUL seq(16 hex)              | alert change (JSON)      |
 * | `x`      | x NUL ns NUL due(12 hex) NUL kind NUL id NUL name | "" (timer index) |
 * | `o`      | o NUL ns NUL seq(16 hex)              | outbox message (JSON)    |
 * | `d`      | d NUL ns NUL seq(16 hex)              | dead letter (JSON)       |
 * | `r`      | r NUL ns NUL resolvedAt(12 hex) NUL alertId | "" (resolved alerts by time, for retention) |
 */

const SEP = "\u0000";
/** The namespace of a single-tenant node. */
export const DEFAULT_NAMESPACE = "";
/** Sorts after every key of a prefix. */
const END = "\u{10FFFF}";

/** Fixed-width hex of a non-negative safe integer. */
export function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, "0");
}

/** Keys of one namespace. */
export class Keys {
  private readonly twinPrefix: string;
  private readonly alertPrefix: string;
  private readonly logPrefix: string;
  private readonly timerPrefix: string;
  private readonly outboxPrefix: string;
  private readonly deadPrefix: string;

  constructor(readonly namespace: string = DEFAULT_NAMESPACE) {
    this.twinPrefix = `t${SEP}${namespace}${SEP}`;
    this.alertPrefix = `a${SEP}${namespace}${SEP}`;
    this.logPrefix = `l${SEP}${namespace}${SEP}`;
    this.timerPrefix = `x${SEP}${namespace}${SEP}`;
    this.outboxPrefix = `o${SEP}${namespace}${SEP}`;
    this.deadPrefix = `d${SEP}${namespace}${SEP}`;
  }

  twin(kind: string, id: string): string {
    return `${this.twinPrefix}${kind}${SEP}${id}`;
  }
  /**
   * The range of one kind's twin records: ids starting with `idPrefix` (all when empty), after
   * `afterId` when given.
   */
  twinsOfKind(kind: string, afterId?: string, idPrefix = ""): { gte: string; lt: string } {
    const base = `${this.twinPrefix}${kind}${SEP}`;
    const from = `${base}${idPrefix}`;
    const after = afterId === undefined ? undefined : `${base}${afterId}${SEP}`;
    return { gte: after !== undefined && after > from ? after : from, lt: `${base}${idPrefix}${END}` };
  }
  /** The twin id of a key from {@link twinsOfKind}. */
  twinIdOf(key: string, kind: string): string {
    return key.slice(this.twinPrefix.length + kind.length + 1);
  }
  /**
   * Twin records of the kinds that sort after `kind` (of every kind when absent): reading the
   * first key of this range finds the next stored kind with one seek, skipping `kind`'s records,
   * because every key of `kind` (`kind NUL id`) sorts before `kind \u0001`.
   */
  twinsAfterKind(kind?: string): { gte: string; lt: string } {
    return { gte: kind === undefined ? this.twinPrefix : `${this.twinPrefix}${kind}\u0001`, lt: `${this.twinPrefix}${END}` };
  }
  /** The kind of a twin record's key. */
  twinKindOf(key: string): string {
    const end = key.indexOf(SEP, this.twinPrefix.length);
    return key.slice(this.twinPrefix.length, end === -1 ? undefined : end);
  }

  alert(alertId: string): string {
    return `${this.alertPrefix}${alertId}`;
  }
  alerts(): { gte: string; lt: string } {
    return { gte: this.alertPrefix, lt: `${this.alertPrefix}${END}` };
  }
  alertIdOf(key: string): string {
    return key.slice(this.alertPrefix.length);
  }

  alertLog(seq: number): string {
    return `${this.logPrefix}${hex(seq, 16)}`;
  }
  alertLogRange(afterSeq: number, uptoSeq = Number.MAX_SAFE_INTEGER): { gte: string; lt: string } {
    return { gte: this.alertLog(afterSeq + 1), lt: this.alertLog(uptoSeq + 1) };
  }
  alertLogSeqOf(key: string): number {
    return Number.parseInt(key.slice(this.logPrefix.length), 16);
  }

  timer(dueMs: number, kind: string, id: string, name: string): string {
    return `${this.timerPrefix}${hex(dueMs, 12)}${SEP}${kind}${SEP}${id}${SEP}${name}`;
  }
  /** Timers due in `[fromMs, uptoMs]`. */
  timersDue(fromMs: number, uptoMs: number): { gte: string; lt: string } {
    return { gte: `${this.timerPrefix}${hex(fromMs, 12)}`, lt: `${this.timerPrefix}${hex(uptoMs + 1, 12)}` };
  }
  /** Splits a timer key into its parts. */
  parseTimer(key: string): { dueMs: number; kind: string; id: string; name: string } {
    const rest = key.slice(this.timerPrefix.length);
    const [due = "", kind = "", id = "", name = ""] = rest.split(SEP);
    return { dueMs: Number.parseInt(due, 16), kind, id, name };
  }

  outbox(seq: number): string {
    return `${this.outboxPrefix}${hex(seq, 16)}`;
  }
  outboxRange(): { gte: string; lt: string } {
    return { gte: this.outboxPrefix, lt: `${this.outboxPrefix}${END}` };
  }
  outboxSeqOf(key: string): number {
    return Number.parseInt(key.slice(this.outboxPrefix.length), 16);
  }

  deadLetter(seq: number): string {
    return `${this.deadPrefix}${hex(seq, 16)}`;
  }
  deadLetterRange(): { gte: string; lt: string } {
    return { gte: this.deadPrefix, lt: `${this.deadPrefix}${END}` };
  }

  /** The dead letter seq of a key from {@link deadLetterRange}. */
  deadLetterSeqOf(key: string): number {
    return Number.parseInt(key.slice(this.deadPrefix.length), 16);
  }
  /** Dead letters with seq `fromSeq` and later. */
  deadLettersFrom(fromSeq: number): { gte: string; lt: string } {
    return { gte: this.deadLetter(fromSeq), lt: `${this.deadPrefix}${END}` };
  }

  /** Alerts with ids after `afterId` (all when undefined), in id order. */
  alertsAfter(afterId: string | undefined): { gte: string; lt: string } {
    // The alert key is the prefix plus the id, so the id followed by NUL sorts right after it.
    return { gte: afterId === undefined ? this.alertPrefix : `${this.alertPrefix}${afterId}${SEP}`, lt: `${this.alertPrefix}${END}` };
  }

  /** The retention index entry of an alert resolved at `resolvedAtMs`. */
  resolvedAlert(resolvedAtMs: number, alertId: string): string {
    return `${this.resolvedPrefix}${hex(Math.max(0, resolvedAtMs), 12)}${SEP}${alertId}`;
  }
  /** Retention index entries of alerts resolved at or before `uptoMs`. */
  resolvedAlertsUpTo(uptoMs: number): { gte: string; lt: string } {
    return { gte: this.resolvedPrefix, lt: `${this.resolvedPrefix}${hex(Math.max(0, uptoMs + 1), 12)}` };
  }
  /** The alert id of a key from {@link resolvedAlertsUpTo}. */
  resolvedAlertIdOf(key: string): string {
    return key.slice(this.resolvedPrefix.length + 13);
  }

  private get resolvedPrefix(): string {
    return `r${SEP}${this.namespace}${SEP}`;
  }
}
