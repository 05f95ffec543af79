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
 * | `l`      | l NUL ns NUL partition(4 hex) NUL seq(16 hex) | alert change (JSON) |
 * | `x`      | x NUL ns NUL due(12 hex) NUL kind NUL id NUL name | "" (timer index) |
 * | `o`      | o NUL ns NUL partition(4 hex) NUL seq(16 hex) | outbox message (JSON) |
 * | `d`      | d NUL ns NUL partition(4 hex) NUL seq(16 hex) | dead letter (JSON) |
 * | `r`      | r NUL ns NUL resolvedAt(12 hex) NUL alertId | "" (resolved alerts by time, for retention) |
 * | `m`      | m NUL ns NUL partition(4 hex) NUL name | a partition's mark (e.g. its last outbox seq) |
 * | —        | NUL meta NUL name                     | node-local marks (format, partition count, page-token secret) |
 *
 * Data format 3: every key but the node-local `NUL meta` ones belongs to one partition. The
 * sequences (`l`, `o`, `d`) and marks (`m`) carry it; twin records, timers, alerts and the
 * resolved index name a twin (alert ids encode kind and twin id), whose partition
 * {@link Partitioning.partitionOf} computes. {@link Keys.partitionOfKey} reads it from any key,
 * so a partition's state is a set of keys a cluster can ship, compare and resume, and two nodes'
 * numbering never collides.
 */
import type { PartitionId, Partitioning } from "../partition/partitioning.js";

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
  private readonly markPrefix: string;

  constructor(readonly namespace: string = DEFAULT_NAMESPACE) {
    this.twinPrefix = `t${SEP}${namespace}${SEP}`;
    this.alertPrefix = `a${SEP}${namespace}${SEP}`;
    this.logPrefix = `l${SEP}${namespace}${SEP}`;
    this.timerPrefix = `x${SEP}${namespace}${SEP}`;
    this.outboxPrefix = `o${SEP}${namespace}${SEP}`;
    this.deadPrefix = `d${SEP}${namespace}${SEP}`;
    this.markPrefix = `m${SEP}${namespace}${SEP}`;
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

  /** Change `seq` of partition `p`'s alert log. */
  alertLog(p: PartitionId, seq: number): string {
    return `${this.logPrefix}${hex(p, 4)}${SEP}${hex(seq, 16)}`;
  }
  /** Partition `p`'s alert changes after `afterSeq`, up to `uptoSeq`. */
  alertLogRange(p: PartitionId, afterSeq: number, uptoSeq = Number.MAX_SAFE_INTEGER): { gte: string; lt: string } {
    return { gte: this.alertLog(p, afterSeq + 1), lt: this.alertLog(p, uptoSeq + 1) };
  }
  /** Every partition's alert log, in partition order. */
  alertLogs(): { gte: string; lt: string } {
    return { gte: this.logPrefix, lt: `${this.logPrefix}${END}` };
  }
  /** The change seq of a key from {@link alertLogRange}. */
  alertLogSeqOf(key: string): number {
    return seqOf(key);
  }
  /** The partition and change seq of a key from {@link alertLogRange}. */
  alertLogKeyOf(key: string): { partition: PartitionId; seq: number } {
    return { partition: partitionField(key, this.logPrefix.length), seq: seqOf(key) };
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

  /** Message `seq` of partition `p`'s outbox. */
  outbox(p: PartitionId, seq: number): string {
    return `${this.outboxPrefix}${hex(p, 4)}${SEP}${hex(seq, 16)}`;
  }
  /** Partition `p`'s outbox messages with seq `fromSeq` and later. */
  outboxFrom(p: PartitionId, fromSeq = 0): { gte: string; lt: string } {
    return { gte: this.outbox(p, fromSeq), lt: `${this.outboxPrefix}${hex(p, 4)}${SEP}${END}` };
  }
  /** Every outbox message of every partition, in partition order. */
  outboxRange(): { gte: string; lt: string } {
    return { gte: this.outboxPrefix, lt: `${this.outboxPrefix}${END}` };
  }
  /** The partition and seq of a key from {@link outboxFrom}. */
  outboxKeyOf(key: string): { partition: PartitionId; seq: number } {
    return { partition: partitionField(key, this.outboxPrefix.length), seq: seqOf(key) };
  }

  /** Dead letter `seq` of partition `p`. */
  deadLetter(p: PartitionId, seq: number): string {
    return `${this.deadPrefix}${hex(p, 4)}${SEP}${hex(seq, 16)}`;
  }
  /** Partition `p`'s dead letters with seq `fromSeq` and later. */
  deadLettersFrom(p: PartitionId, fromSeq = 0): { gte: string; lt: string } {
    return { gte: this.deadLetter(p, fromSeq), lt: `${this.deadPrefix}${hex(p, 4)}${SEP}${END}` };
  }
  /** Every dead letter of every partition, in partition order. */
  deadLetterRange(): { gte: string; lt: string } {
    return { gte: this.deadPrefix, lt: `${this.deadPrefix}${END}` };
  }
  /** The partition and seq of a dead letter's key. */
  deadLetterKeyOf(key: string): { partition: PartitionId; seq: number } {
    return { partition: partitionField(key, this.deadPrefix.length), seq: seqOf(key) };
  }

  /** Partition `p`'s mark `name` (a position kept when the keys that showed it are gone). */
  mark(p: PartitionId, name: PartitionMark): string {
    return `${this.markPrefix}${hex(p, 4)}${SEP}${name}`;
  }
  /** Every partition's marks. */
  marks(): { gte: string; lt: string } {
    return { gte: this.markPrefix, lt: `${this.markPrefix}${END}` };
  }
  /** The partition and name of a key from {@link marks}. */
  markOf(key: string): { partition: PartitionId; name: string } {
    return { partition: partitionField(key, this.markPrefix.length), name: key.slice(this.markPrefix.length + 5) };
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

  /**
   * The partition of any per-partition key of any namespace: twin records, timers, alerts and
   * the resolved index by the twin they name; the alert log, outbox, dead letters and marks by
   * their partition field. Undefined for node-local keys (`NUL meta NUL …`) and keys of no
   * keyspace.
   */
  static partitionOfKey(key: string, partitioning: Partitioning): PartitionId | undefined {
    if (key.charCodeAt(1) !== 0) return undefined;
    const nsEnd = key.indexOf(SEP, 2);
    if (nsEnd === -1) return undefined;
    const rest = nsEnd + 1;
    switch (key[0]) {
      case "t": {
        const kindEnd = key.indexOf(SEP, rest);
        return kindEnd === -1 ? undefined : partitioning.partitionOf(key.slice(rest, kindEnd), key.slice(kindEnd + 1));
      }
      case "x": {
        const [, kind, id] = key.slice(rest).split(SEP);
        return kind === undefined || id === undefined ? undefined : partitioning.partitionOf(kind, id);
      }
      case "a":
        return partitionOfAlertId(key.slice(rest), partitioning);
      case "r": {
        const idStart = key.indexOf(SEP, rest);
        return idStart === -1 ? undefined : partitionOfAlertId(key.slice(idStart + 1), partitioning);
      }
      case "l":
      case "o":
      case "d":
      case "m": {
        const p = Number.parseInt(key.slice(rest, rest + 4), 16);
        return key[rest + 4] === SEP && p < partitioning.partitions ? (p as PartitionId) : undefined;
      }
      default:
        return undefined;
    }
  }
}

/** The names of the per-partition marks (`m` keyspace). */
export const PartitionMark = {
  /** The last outbox seq handed out: delivered messages are deleted, so the outbox's tail cannot tell it. */
  OUTBOX_SEQ: "outbox-seq",
  /** The last dead letter seq handed out, kept when the newest letters were retried or deleted. */
  DEAD_LETTER_SEQ: "dead-letter-seq",
  /**
   * The last seq of the outbox messages held until their sending writes reach a majority of
   * copies (see HeldMessages): written only to give the partition a write that reaches them.
   */
  HELD_MESSAGES: "held-messages",
} as const;
/** One of {@link PartitionMark}'s names. */
export type PartitionMark = (typeof PartitionMark)[keyof typeof PartitionMark];

/** The 16-hex seq that ends every `l`, `o` and `d` key. */
function seqOf(key: string): number {
  return Number.parseInt(key.slice(-16), 16);
}

/** The 4-hex partition field at `at`. */
function partitionField(key: string, at: number): PartitionId {
  return Number.parseInt(key.slice(at, at + 4), 16) as PartitionId;
}

/** An alert id (`kind/escapedTwinId/code@version`, see alertId) names its twin. */
function partitionOfAlertId(id: string, partitioning: Partitioning): PartitionId | undefined {
  const kindEnd = id.indexOf("/");
  const twinEnd = id.indexOf("/", kindEnd + 1);
  if (kindEnd === -1 || twinEnd === -1) return undefined;
  try {
    return partitioning.partitionOf(id.slice(0, kindEnd), decodeURIComponent(id.slice(kindEnd + 1, twinEnd)));
  } catch {
    return undefined; // not an id alertId made
  }
}
