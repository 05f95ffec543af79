import type { Alert } from "../alerts/alert.js";
import type { JsonObject } from "../util/json.js";

/**
 * A twin's durable record: metadata and the marks that make delivery idempotent, stored with the
 * twin's state under one key so that one write commits all of it (see {@link serializeRecord}
 * for the layout). In memory it is the twin's *working* record, which may run ahead of the disk
 * by the turns of an uncommitted group; the state lives beside it, on the activation.
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
  /** Recently delivered outbox message ids (`o:<partition>:<seq>`), oldest first, bounded. */
  inbox?: string[];
  /**
   * Recently used SendToTwin idempotency keys (`k:<key>`), oldest first, bounded: kept apart
   * from `inbox` so heavy twin-to-twin traffic cannot push a client's key out.
   */
  keys?: string[];
  /**
   * 1 when deleted: the record has no state. It keeps `ver` (versions, and the alert ids made
   * from them, never repeat) and, only after a delete that kept a tombstone, the dedupe marks.
   */
  del?: 1;
  /**
   * Set by a delete that kept a tombstone: the source's highest seq at that delete. Seqs from 1
   * to it are rejected `TWIN_DELETED` (their effects were deleted), also after the twin starts
   * again with newer seqs.
   */
  tomb?: number;
  /** Idempotency keys (`k:<key>`) used before a delete that kept a tombstone, oldest first, bounded. */
  tombKeys?: string[];
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
 * Serialises a record as `<meta>\n<state>`: the metadata as one JSON object, a newline, then the
 * state's JSON text (a tombstone has no state and no newline). The metadata, written here from
 * numbers and compact `JSON.stringify` output, never holds a raw newline, so the first one splits
 * the two (whatever the state holds). Kept apart, a scan parses only the state it filters
 * on (the metadata is mostly long numbers and cost as much to parse as the state), and a load
 * keeps the state's text as the turn's rollback point instead of stringifying it again.
 *
 * `stateJson` is the state already serialised by the turn that checked it, so state is
 * stringified once per turn. Written field by field: this runs for every twin in every commit
 * group. `sv` comes first, where {@link readState} looks for it.
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
  if (rec.tomb !== undefined) out += `,"tomb":${rec.tomb}`;
  if (rec.tombKeys !== undefined) out += `,"tombKeys":${JSON.stringify(rec.tombKeys)}`;
  return stateJson === undefined ? `${out}}` : `${out}}\n${stateJson}`;
}

/** A stored record, parsed. */
export interface ParsedRecord {
  readonly rec: TwinRecordData;
  /** Undefined in a tombstone. */
  readonly state: JsonObject | undefined;
  /** The state's stored text, when the record kept it apart (data format 2). */
  readonly stateJson: string | undefined;
}

/** Format 1 records were one JSON object holding the state under `state`. */
type Format1Record = TwinRecordData & { state?: JsonObject };

/** Parses a stored record of either data format. @throws SyntaxError on a corrupt record. */
export function parseRecord(raw: string): ParsedRecord {
  const split = raw.indexOf("\n");
  if (split === -1) {
    const { state, ...rec } = JSON.parse(raw) as Format1Record;
    return { rec, state: rec.del === 1 ? undefined : state, stateJson: undefined };
  }
  const rec = JSON.parse(raw.slice(0, split)) as TwinRecordData;
  const stateJson = raw.slice(split + 1);
  return { rec, state: JSON.parse(stateJson) as JsonObject, stateJson };
}

/** Parses only a stored record's metadata. @throws SyntaxError on a corrupt record. */
export function parseMeta(raw: string): TwinRecordData {
  const split = raw.indexOf("\n");
  if (split !== -1) return JSON.parse(raw.slice(0, split)) as TwinRecordData;
  const { state: _state, ...rec } = JSON.parse(raw) as Format1Record;
  return rec;
}

/**
 * Reads a stored record's state and state version without parsing the rest of its metadata:
 * what a scan needs to filter. Undefined for a tombstone.
 * @throws SyntaxError on a corrupt record.
 */
export function readState(raw: string): { sv: number; state: JsonObject } | undefined {
  const split = raw.indexOf("\n");
  if (split === -1) {
    const rec = JSON.parse(raw) as Format1Record;
    return rec.del === 1 || rec.state === undefined ? undefined : { sv: rec.sv, state: rec.state };
  }
  const state = JSON.parse(raw.slice(split + 1)) as JsonObject;
  return { sv: leadingSv(raw) ?? (JSON.parse(raw.slice(0, split)) as TwinRecordData).sv, state };
}

const SV_PREFIX = '{"sv":';

/** The `sv` that {@link serializeRecord} writes first; undefined when the record starts otherwise. */
function leadingSv(raw: string): number | undefined {
  if (!raw.startsWith(SV_PREFIX)) return undefined;
  let sv = 0;
  let i = SV_PREFIX.length;
  for (; i < raw.length; i++) {
    const digit = raw.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) break;
    sv = sv * 10 + digit;
  }
  return i > SV_PREFIX.length && i - SV_PREFIX.length <= 15 && raw.charCodeAt(i) === 44 /* , */ ? sv : undefined;
}
