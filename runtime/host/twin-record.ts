import type { Alert } from "../alerts/alert.js";
import type { JsonObject } from "../util/json.js";

/**
 * A twin's durable record: state, metadata and the marks that make delivery idempotent, kept
 * together under one key so that one write commits all of it. In memory it is the twin's
 * *working* record, which may run ahead of the disk by the turns of an uncommitted group.
 */
export interface TwinRecordData {
  /** State version (`stateVersion` of the class that wrote it). */
  sv: number;
  /** Turns applied. */
  ver: number;
  /** Highest source seq applied. */
  hw: number;
  /**
   * Seqs inside the dedupe window below `hw` that were never applied (late arrivals are still
   * welcome), as inclusive ranges flattened into pairs `[from1, to1, from2, to2, …]`, ascending.
   * Ranges keep the record small: a source that starts at seq 10^12 leaves one range, not 1,023
   * numbers.
   */
  gaps?: number[];
  /** Last event time, epoch ms. */
  let?: number;
  /** Armed timers: name → due epoch ms. */
  timers?: Record<string, number>;
  /** Open or acknowledged alerts by code. */
  alerts?: Record<string, Alert>;
  /** Recently delivered outbox message ids (`o:<seq>`), oldest first, bounded. */
  inbox?: string[];
  /**
   * Recently used SendToTwin idempotency keys (`k:<key>`), oldest first, bounded: kept apart
   * from `inbox` so heavy twin-to-twin traffic cannot push a client's key out.
   */
  keys?: string[];
  /** 1 when deleted: a tombstone that keeps the dedupe marks. */
  del?: 1;
  /** The twin's state; absent in a tombstone. */
  state?: JsonObject;
}

/** The outcome of checking a seq against a twin's dedupe marks. */
export const SeqCheck = { APPLY: 0, DUPLICATE: 1, TOO_OLD: 2 } as const;
export type SeqCheck = (typeof SeqCheck)[keyof typeof SeqCheck];

/**
 * Checks `seq` against the high-water mark and the window of gaps below it.
 * seq 0 is unsequenced and always applied.
 */
export function checkSeq(rec: TwinRecordData, seq: number, window: number): SeqCheck {
  if (seq === 0 || seq > rec.hw) return SeqCheck.APPLY;
  if (seq <= rec.hw - window) return SeqCheck.TOO_OLD;
  const gaps = rec.gaps;
  if (gaps !== undefined) {
    for (let i = 0; i < gaps.length; i += 2) {
      if (seq >= (gaps[i] as number) && seq <= (gaps[i + 1] as number)) return SeqCheck.APPLY;
    }
  }
  return SeqCheck.DUPLICATE;
}

/** Records that `seq` was applied. Keeps only gaps inside the window, so the record stays bounded. */
export function markSeq(rec: TwinRecordData, seq: number, window: number): void {
  if (seq === 0) return;
  const old = rec.gaps ?? [];
  const next: number[] = [];
  if (seq > rec.hw) {
    const floor = seq - window; // seqs at or below it are out of the window
    for (let i = 0; i < old.length; i += 2) {
      const from = Math.max(old[i] as number, floor + 1);
      const to = old[i + 1] as number;
      if (from <= to) next.push(from, to);
    }
    // The seqs skipped between the old mark and this one may still arrive.
    const from = Math.max(rec.hw + 1, floor + 1);
    if (from <= seq - 1) next.push(from, seq - 1);
    rec.hw = seq;
  } else {
    for (let i = 0; i < old.length; i += 2) {
      const from = old[i] as number;
      const to = old[i + 1] as number;
      if (seq < from || seq > to) next.push(from, to);
      else {
        if (from <= seq - 1) next.push(from, seq - 1);
        if (seq + 1 <= to) next.push(seq + 1, to);
      }
    }
  }
  rec.gaps = next.length > 0 ? next : undefined;
}

/** True when the message id is among the twin's recent deliveries. */
export function wasDelivered(rec: TwinRecordData, messageId: string): boolean {
  return (messageId.startsWith("k:") ? rec.keys : rec.inbox)?.includes(messageId) === true;
}

/** Remembers a delivered message id, keeping the newest `limit` of its kind. */
export function rememberDelivery(rec: TwinRecordData, messageId: string, limit: number): void {
  const list = messageId.startsWith("k:") ? (rec.keys ??= []) : (rec.inbox ??= []);
  list.push(messageId);
  if (list.length > limit) list.splice(0, list.length - limit);
}

/**
 * Serialises a record whose state is already serialised (the turn produced `stateJson` while
 * checking it), so state is stringified once per turn, not twice. Written field by field: this
 * runs for every twin in every commit group.
 */
export function serializeRecord(rec: TwinRecordData, stateJson: string | undefined): string {
  let out = `{"sv":${rec.sv},"ver":${rec.ver},"hw":${rec.hw}`;
  if (rec.gaps !== undefined) out += `,"gaps":[${rec.gaps.join(",")}]`;
  if (rec.let !== undefined) out += `,"let":${rec.let}`;
  if (rec.timers !== undefined) out += `,"timers":${JSON.stringify(rec.timers)}`;
  if (rec.alerts !== undefined) out += `,"alerts":${JSON.stringify(rec.alerts)}`;
  if (rec.inbox !== undefined) out += `,"inbox":${JSON.stringify(rec.inbox)}`;
  if (rec.keys !== undefined) out += `,"keys":${JSON.stringify(rec.keys)}`;
  if (rec.del === 1) out += `,"del":1`;
  if (stateJson !== undefined) out += `,"state":${stateJson}`;
  return `${out}}`;
}

/** Parses a stored record. @throws SyntaxError on a corrupt record. */
export function parseRecord(raw: string): TwinRecordData {
  return JSON.parse(raw) as TwinRecordData;
}
