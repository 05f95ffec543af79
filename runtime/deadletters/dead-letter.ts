import type { OutboxEntry } from "../host/outbox-entry.js";
import type { PartitionId } from "../partition/partitioning.js";
import { isPlainObject, type JsonObject } from "../util/json.js";

/**
 * A message between twins (`ctx.send`) that could not be delivered, kept for a person to inspect,
 * retry or delete. A dead letter is written in the same batch that removes the message from the
 * outbox, so a message is always in exactly one of the two.
 */
export interface DeadLetter {
  /**
   * Its id: `<partition>-<seq>` (e.g. `"3-17"`), the sender's partition and the dead letter's
   * number there (1, 2, 3, …; later ones of a partition died later; never reused).
   */
  readonly id: string;
  /** The sender's partition, which holds the dead letter as it held the message's outbox entry. */
  readonly partition: PartitionId;
  /** Why delivery failed: a stable code (`HANDLER_FAILED`, `TURN_TIMEOUT`, `NO_MESSAGE_HANDLER`, …). */
  readonly reason: string;
  /** The failure as a sentence. */
  readonly errorMessage: string;
  /** Epoch ms when delivery failed (0 for dead letters written before this was recorded). */
  readonly deadAtMs: number;
  /** The sender (empty for dead letters written before this was recorded). */
  readonly fromKind: string;
  readonly fromId: string;
  /** The twin the message was for (empty for dead letters written before this was recorded). */
  readonly toKind: string;
  readonly toId: string;
  /** The message as the sender passed it to `ctx.send`. */
  readonly message: JsonObject;
  /** Its seq in its partition's outbox; a retry reuses it, so the receiver's dedupe recognises a redelivery. */
  readonly outboxSeq: number;
}

/** Selects dead letters: set fields must all match; an empty filter matches every dead letter. */
export interface DeadLetterFilter {
  readonly toKind?: string;
  readonly toId?: string;
  readonly fromKind?: string;
  readonly fromId?: string;
  readonly reason?: string;
}

/** What a retry of dead letters did: how many it put back, and how many it left (their target kind is not loaded). */
export interface DeadLetterRetry {
  readonly retried: number;
  readonly skipped: number;
}

/** Which dead letters a retry or delete acts on: the named ones, or all that match a filter. */
export type DeadLetterSelection = { readonly ids: readonly string[] } | { readonly all: true; readonly filter?: DeadLetterFilter };

/** The stored form (compact field names stay here, at the store). */
interface StoredDeadLetter {
  /** Outbox seq. */
  o: number;
  fk: string;
  fi: string;
  tk: string;
  ti: string;
  m: JsonObject;
  r: string;
  e: string;
  /** Epoch ms. */
  at: number;
}

/** The form written before dead letters were readable: `{ outboxKey, reason, message, payload }`. */
interface LegacyDeadLetter {
  outboxKey: string;
  reason: string;
  message: string;
  payload: JsonObject;
}

/** The stored JSON of a dead letter for `entry`. */
export function encodeDeadLetter(entry: OutboxEntry, reason: string, errorMessage: string, deadAtMs: number): string {
  const stored: StoredDeadLetter = {
    o: entry.seq,
    fk: entry.fromKind,
    fi: entry.fromId,
    tk: entry.toKind,
    ti: entry.toId,
    m: entry.message,
    r: reason,
    e: errorMessage,
    at: deadAtMs,
  };
  return JSON.stringify(stored);
}

/**
 * Reads dead letter `seq` of partition `partition`, stored in the current or the legacy form.
 * A record that is not a JSON object reads as an `UNREADABLE` letter with its raw text.
 */
export function decodeDeadLetter(partition: PartitionId, seq: number, raw: string): DeadLetter {
  let value: Partial<StoredDeadLetter> & Partial<LegacyDeadLetter>;
  try {
    value = JSON.parse(raw) as Partial<StoredDeadLetter> & Partial<LegacyDeadLetter>;
    if (!isPlainObject(value)) throw new SyntaxError("not a JSON object");
  } catch (err) {
    // A damaged record must not block listing, retention or the other letters: it reads as a
    // letter that can be shown and deleted, not retried (it has no target).
    return {
      id: `${partition}-${seq}`,
      partition,
      reason: "UNREADABLE",
      errorMessage: `the stored dead letter could not be read (${(err as Error).message}); its raw text is in message.raw`,
      deadAtMs: 0,
      fromKind: "",
      fromId: "",
      toKind: "",
      toId: "",
      message: { raw },
      outboxSeq: 0,
    };
  }
  if (value.o === undefined) {
    return {
      id: `${partition}-${seq}`,
      partition,
      reason: String(value.reason ?? ""),
      errorMessage: String(value.message ?? ""),
      deadAtMs: 0,
      fromKind: "",
      fromId: "",
      toKind: "",
      toId: "",
      message: value.payload ?? {},
      // A legacy outbox key ends with the 16-hex seq (in every data format).
      outboxSeq: typeof value.outboxKey === "string" ? Number.parseInt(value.outboxKey.slice(-16), 16) || 0 : 0,
    };
  }
  return {
    id: `${partition}-${seq}`,
    partition,
    reason: value.r ?? "",
    errorMessage: value.e ?? "",
    deadAtMs: value.at ?? 0,
    fromKind: value.fk ?? "",
    fromId: value.fi ?? "",
    toKind: value.tk ?? "",
    toId: value.ti ?? "",
    message: value.m ?? {},
    outboxSeq: value.o,
  };
}

/** True when `d` matches every set field of `filter`. */
export function matchesDeadLetter(d: DeadLetter, filter: DeadLetterFilter | undefined): boolean {
  if (filter === undefined) return true;
  return (
    (!filter.toKind || d.toKind === filter.toKind) &&
    (!filter.toId || d.toId === filter.toId) &&
    (!filter.fromKind || d.fromKind === filter.fromKind) &&
    (!filter.fromId || d.fromId === filter.fromId) &&
    (!filter.reason || d.reason === filter.reason)
  );
}

/** The outbox entry a retry puts back: the original message with its original seq. */
export function outboxEntryOf(d: DeadLetter): OutboxEntry {
  return { partition: d.partition, seq: d.outboxSeq, fromKind: d.fromKind, fromId: d.fromId, toKind: d.toKind, toId: d.toId, message: d.message };
}
