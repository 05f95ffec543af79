import type { Alert } from "../alerts/alert.js";
import type { TwinRecordData } from "./twin-record.js";

/** What a `DeleteTwin` did. */
export interface TwinDeletion {
  /** False when the twin had no state (never created, or already deleted). */
  readonly existed: boolean;
  /** Timers that were armed and will not fire. */
  readonly timersCancelled: number;
  /** Ids of the open or acknowledged alerts the delete resolved. */
  readonly resolvedAlertIds: readonly string[];
  /** True when the twin now keeps a tombstone (see {@link forgetTwin}). */
  readonly tombstone: boolean;
  /** With a tombstone: seqs from 1 to this one are rejected `TWIN_DELETED`. */
  readonly tombstoneSeq: number;
}

/** What {@link forgetTwin} took out of a record, for the host to remove from the store. */
export interface ForgottenTwin {
  readonly deletion: TwinDeletion;
  /** The record changed and must be written. */
  readonly changed: boolean;
  /** The armed timers (name → due ms), whose index entries must go. */
  readonly timers: Readonly<Record<string, number>>;
  /** The open or acknowledged alerts, to be logged as resolved. */
  readonly alerts: readonly Alert[];
}

/**
 * Deletes a twin's working record in place: its state flag, timers and alerts always; then
 *
 * - by default, its dedupe marks (high-water mark, gaps), delivered message ids, idempotency
 *   keys and any earlier tombstone, so the next event, whatever its seq, makes a fresh twin;
 * - with `keepTombstone`, none of those: the highest seq becomes the tombstone seq and the
 *   idempotency keys move to the tombstone's keys (at most `keysLimit`), so late retries are
 *   rejected `TWIN_DELETED` rather than answered `DUPLICATE` for an effect that was deleted.
 *
 * The version is kept and advanced, so a version (and an alert id made from one) never names
 * two different states. Nothing changes, and nothing needs writing, when there is no state and
 * no mark to forget.
 */
export function forgetTwin(rec: TwinRecordData, keepTombstone: boolean, keysLimit: number): ForgottenTwin {
  const existed = rec.del !== 1 && rec.ver > 0;
  const hasMarks =
    rec.hw > 0 || rec.gaps !== undefined || rec.inbox !== undefined || rec.keys !== undefined || rec.tomb !== undefined || rec.tombKeys !== undefined;
  const timers = rec.timers ?? {};
  const alerts = Object.values(rec.alerts ?? {});
  const changed = existed || (!keepTombstone && hasMarks);
  if (changed) {
    rec.timers = undefined;
    rec.alerts = undefined;
    rec.let = undefined;
    if (keepTombstone) {
      if (rec.hw > 0) rec.tomb = Math.max(rec.tomb ?? 0, rec.hw);
      if (rec.keys !== undefined) {
        const kept = [...(rec.tombKeys ?? []), ...rec.keys];
        rec.tombKeys = kept.length > keysLimit ? kept.slice(kept.length - keysLimit) : kept;
        rec.keys = undefined;
      }
    } else {
      rec.hw = 0;
      rec.gaps = undefined;
      rec.inbox = undefined;
      rec.keys = undefined;
      rec.tomb = undefined;
      rec.tombKeys = undefined;
    }
    rec.del = 1;
    rec.ver++;
  }
  return {
    deletion: {
      existed,
      timersCancelled: changed ? Object.keys(timers).length : 0,
      resolvedAlertIds: changed ? alerts.map((a) => a.id) : [],
      tombstone: keepTombstone,
      tombstoneSeq: keepTombstone ? (rec.tomb ?? 0) : 0,
    },
    changed,
    timers: changed ? timers : {},
    alerts: changed ? alerts : [],
  };
}

/**
 * The seq a tombstone keeps out: `seq` when it is at or below the record's tombstone seq
 * (seq 0, unsequenced, is never kept out), otherwise undefined.
 */
export function deletedSeq(rec: TwinRecordData, seq: number): number | undefined {
  const tomb = rec.tomb;
  return tomb !== undefined && seq !== 0 && seq <= tomb ? tomb : undefined;
}

/** True when `messageId` is an idempotency key used before a delete that kept a tombstone. */
export function deletedKey(rec: TwinRecordData, messageId: string | undefined): boolean {
  return messageId !== undefined && rec.tombKeys?.includes(messageId) === true;
}
