import type { Logger } from "pino";
import type { PartitionId, Partitioning } from "../partition/partitioning.js";
import { isPlainObject } from "../util/json.js";
import { Keys, PartitionMark } from "./keys.js";
import { type BatchOp, DATA_FORMAT_VERSION, type RocksStore } from "./rocks-store.js";
import { type PartitionedSequence, sequenceEnds } from "./sequence-ends.js";

/** Keys rewritten per write while upgrading: each write is one atomic batch. */
export const UPGRADE_BATCH = 500;

/** The node-wide marks of data formats 1 and 2. */
const OLD_OUTBOX_MARK = "\u0000meta\u0000outbox-seq";
const OLD_DEAD_LETTER_MARK = "\u0000meta\u0000dead-letter-seq";
const SEP = "\u0000";
const END = "\u{10FFFF}";

/** Options of {@link upgradeDataFormat}, for tests. */
export interface UpgradeOptions {
  /** Keys per write. @defaultValue {@link UPGRADE_BATCH} */
  readonly batch?: number;
}

/**
 * Upgrades a data directory of format 1 or 2 to {@link DATA_FORMAT_VERSION} (3), in writes of
 * at most `batch` keys, and stamps it. Crash-safe: the marker is stamped "3, upgrading from N"
 * first (an older build then refuses the directory), every step is idempotent and each write
 * atomic, so running it again after a crash finishes the upgrade.
 *
 * What changes: the node-wide sequences become per partition. Outbox messages keep their seq
 * (dead letters refer to it, and a retry puts the message back under it) and move under their
 * sender's partition; every partition's outbox mark starts at the old node-wide mark, so no seq
 * handed out before is handed out again in any partition. Alert log changes move under their
 * twin's partition, numbered 1, 2, 3, … in their old order, and an alert record whose last
 * change moved takes the new number; dead letters move under their sender's partition (legacy
 * ones without a sender under partition 0), numbered likewise. Twin records, timers, alerts and
 * the resolved index keep their keys: their partition is derived from the twin they name.
 *
 * Messages delivered before the upgrade were remembered by receivers as `o:<seq>`; a message
 * still in the outbox is redelivered as `o:<partition>:<seq>`. On one node that is harmless (a
 * delivered message's outbox entry was deleted with the receiving turn); a message handed to
 * another node whose answer was lost before the upgrade may be applied twice.
 */
export async function upgradeDataFormat(store: RocksStore, partitioning: Partitioning, log: Logger, options: UpgradeOptions = {}): Promise<void> {
  const from = store.formatVersion;
  if (from >= DATA_FORMAT_VERSION) return;
  const batch = options.batch ?? UPGRADE_BATCH;
  log.info({ from, to: DATA_FORMAT_VERSION }, "upgrading the data directory");
  await store.stampFormat(DATA_FORMAT_VERSION, from);
  await copyOutboxMark(store, partitioning, batch);
  const moved = { outbox: 0, alertLog: 0, deadLetters: 0 };
  moved.outbox = await moveOld(store, "o", batch, async (entries) => {
    const ops: BatchOp[] = [];
    for (const { key, keys, seq, raw } of entries) {
      const value = parse(raw);
      const sender =
        value !== undefined && typeof value.fromKind === "string" && typeof value.fromId === "string"
          ? partitioning.partitionOf(value.fromKind, value.fromId)
          : undefined;
      // An entry that does not parse keeps its text, in partition 0: the dispatcher quarantines it.
      const p = sender ?? (0 as PartitionId);
      ops.push({ type: "del", key }, { type: "put", key: keys.outbox(p, seq), value: value === undefined ? raw : JSON.stringify({ partition: p, ...value }) });
    }
    return ops;
  });
  // Numbers already given in the new layout (by a run a crash interrupted) are read once per namespace.
  const logSeqs = new SeqsGiven();
  moved.alertLog = await moveOld(store, "l", batch, async (entries) => {
    const ops: BatchOp[] = [];
    await logSeqs.load(store, entries, (keys) => ({ range: (p) => keys.alertLogRange(p, -1), keyOf: (key) => keys.alertLogKeyOf(key) }), partitioning);
    const next = logSeqs.last;
    const alertKeys = entries.map(({ keys, raw }) => {
      const id = parse(raw)?.id;
      return typeof id === "string" ? keys.alert(id) : undefined;
    });
    const records = await store.getMany(alertKeys.map((k) => k ?? ""));
    /** Alert records rewritten in this batch, by key: a later change of the same alert reads them. */
    const rewritten = new Map<string, Record<string, unknown>>();
    for (let i = 0; i < entries.length; i++) {
      const { key, keys, seq: oldSeq, raw } = entries[i] as OldEntry;
      const value = parse(raw);
      const p =
        value !== undefined && typeof value.kind === "string" && typeof value.twinId === "string"
          ? partitioning.partitionOf(value.kind, value.twinId)
          : (0 as PartitionId);
      const seq = (next.get(keyOfSeq(keys, p)) ?? 0) + 1;
      next.set(keyOfSeq(keys, p), seq);
      ops.push({ type: "del", key }, { type: "put", key: keys.alertLog(p, seq), value: value === undefined ? raw : JSON.stringify({ ...value, seq }) });
      const alertKey = alertKeys[i];
      if (alertKey === undefined) continue;
      const record = rewritten.get(alertKey) ?? parse(records[i]);
      // The record carries the number of its last logged change: renumber it with that change.
      if (record?.seq === oldSeq) {
        const renumbered = { ...record, seq };
        rewritten.set(alertKey, renumbered);
        ops.push({ type: "put", key: alertKey, value: JSON.stringify(renumbered) });
      }
    }
    return ops;
  });
  const letterSeqs = new SeqsGiven();
  moved.deadLetters = await moveOld(store, "d", batch, async (entries) => {
    const ops: BatchOp[] = [];
    await letterSeqs.load(store, entries, (keys) => ({ range: (p) => keys.deadLettersFrom(p), keyOf: (key) => keys.deadLetterKeyOf(key) }), partitioning);
    for (const { key, keys, raw } of entries) {
      const value = parse(raw);
      const p =
        value !== undefined && typeof value.fk === "string" && typeof value.fi === "string" && value.fk !== ""
          ? partitioning.partitionOf(value.fk, value.fi)
          : (0 as PartitionId);
      const seq = (letterSeqs.last.get(keyOfSeq(keys, p)) ?? 0) + 1;
      letterSeqs.last.set(keyOfSeq(keys, p), seq);
      ops.push({ type: "del", key }, { type: "put", key: keys.deadLetter(p, seq), value: raw });
    }
    return ops;
  });
  await store.write([
    { type: "del", key: OLD_OUTBOX_MARK },
    { type: "del", key: OLD_DEAD_LETTER_MARK },
  ]);
  await store.stampFormat(DATA_FORMAT_VERSION);
  log.info({ ...moved, partitions: partitioning.partitions }, "data directory upgraded");
}

/** An old-layout key of a sequence keyspace, read for moving. */
interface OldEntry {
  readonly key: string;
  /** The keys of the entry's namespace. */
  readonly keys: Keys;
  readonly seq: number;
  readonly raw: string;
}

/**
 * Gives every partition's outbox mark at least the old node-wide number (the higher of the old
 * mark and the old outbox's last seq). Runs before any outbox entry moves, so both are intact;
 * the old mark is deleted only at the end.
 */
async function copyOutboxMark(store: RocksStore, partitioning: Partitioning, batch: number): Promise<void> {
  const namespaces = new Set<string>([""]);
  let last = Number(await store.get(OLD_OUTBOX_MARK)) || 0;
  for await (const chunk of store.scan({ gte: `o${SEP}`, lt: `o${SEP}${END}` }, { values: false })) {
    for (const [key] of chunk) {
      const old = parseOld(key);
      if (old === undefined) continue;
      namespaces.add(old.namespace);
      last = Math.max(last, old.seq);
    }
  }
  if (last === 0) return;
  for (const ns of namespaces) {
    const keys = new Keys(ns);
    const marks = await store.getMany(partitioning.all().map((p) => keys.mark(p, PartitionMark.OUTBOX_SEQ)));
    let ops: BatchOp[] = [];
    for (const p of partitioning.all()) {
      if ((Number(marks[p]) || 0) >= last) continue;
      ops.push({ type: "put", key: keys.mark(p, PartitionMark.OUTBOX_SEQ), value: String(last) });
      if (ops.length === batch) {
        await store.write(ops);
        ops = [];
      }
    }
    if (ops.length > 0) await store.write(ops);
  }
}

/**
 * Moves every old-layout key of `keyspace`, a batch at a time, in key (so seq) order, with the
 * writes `rewrite` makes for each batch; returns how many moved. Moved keys land in the same
 * keyspace, so the scan skips new-layout keys it meets.
 */
async function moveOld(store: RocksStore, keyspace: "o" | "l" | "d", batch: number, rewrite: (entries: OldEntry[]) => Promise<BatchOp[]>): Promise<number> {
  const lt = `${keyspace}${SEP}${END}`;
  let from = `${keyspace}${SEP}`;
  let moved = 0;
  for (;;) {
    const entries: OldEntry[] = [];
    let last: string | undefined;
    scan: for await (const chunk of store.scan({ gte: from, lt })) {
      for (const [key, raw] of chunk) {
        last = key;
        const old = parseOld(key);
        if (old === undefined) continue;
        entries.push({ key, keys: new Keys(old.namespace), seq: old.seq, raw });
        if (entries.length === batch) break scan;
      }
    }
    if (entries.length > 0) {
      await store.write(await rewrite(entries));
      moved += entries.length;
    }
    if (last === undefined || entries.length < batch) return moved;
    // A key followed by NUL is the first key after it.
    from = `${last}${SEP}`;
  }
}

/** `X NUL ns NUL seq(16 hex)`, the layout of formats 1 and 2; undefined for any other key. */
function parseOld(key: string): { namespace: string; seq: number } | undefined {
  const nsEnd = key.indexOf(SEP, 2);
  if (key[1] !== SEP || nsEnd === -1) return undefined;
  const rest = key.slice(nsEnd + 1);
  if (!/^[0-9a-f]{16}$/.test(rest)) return undefined;
  return { namespace: key.slice(2, nsEnd), seq: Number.parseInt(rest, 16) };
}

/** A map key for partition `p` of the namespace of `keys`. */
function keyOfSeq(keys: Keys, p: PartitionId): string {
  return `${keys.namespace}${SEP}${p}`;
}

/**
 * The last seq given in the new layout in each partition (keyed by {@link keyOfSeq}): read from
 * the store once per namespace (after a crash, part of a keyspace was moved and numbered
 * already), then counted on in memory.
 */
class SeqsGiven {
  readonly last = new Map<string, number>();
  private readonly loaded = new Set<string>();

  async load(store: RocksStore, entries: readonly OldEntry[], sequence: (keys: Keys) => PartitionedSequence, partitioning: Partitioning): Promise<void> {
    for (const { keys } of entries) {
      if (this.loaded.has(keys.namespace)) continue;
      this.loaded.add(keys.namespace);
      const ends = await sequenceEnds(store, sequence(keys), 0 as PartitionId, (partitioning.partitions - 1) as PartitionId);
      for (const [p, { last }] of ends) this.last.set(keyOfSeq(keys, p), last);
    }
  }
}

function parse(raw: string | undefined): Record<string, unknown> | undefined {
  if (raw === undefined) return undefined;
  try {
    const value: unknown = JSON.parse(raw);
    return isPlainObject(value) ? value : undefined;
  } catch {
    return undefined;
  }
}
