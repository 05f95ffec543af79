import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { DeadLetterNotFoundError, InvalidArgumentError, UnavailableError } from "../errors.js";
import type { OutboxEntry } from "../host/outbox-entry.js";
import type { TwinRegistry } from "../host/twin-registry.js";
import type { PageTokens } from "../query/page-token.js";
import type { Keys } from "../store/keys.js";
import type { BatchOp, RocksStore } from "../store/rocks-store.js";
import {
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterSelection,
  decodeDeadLetter,
  encodeDeadLetter,
  matchesDeadLetter,
  outboxEntryOf,
} from "./dead-letter.js";

/** Page size of a listing that asks for none. */
const DEFAULT_PAGE = 100;
/** Largest page. */
export const MAX_DEAD_LETTER_PAGE = 1_000;
/** Records one listing page reads at most: a rarely matching filter returns a partial page and a token. */
export const DEAD_LETTER_SCAN_PER_PAGE = 10_000;
/** Dead letters per write when retrying, deleting or trimming many: each write is one atomic batch. */
const WRITE_BATCH = 500;
/** Most ids one retry or delete may name. */
export const MAX_DEAD_LETTER_IDS = 1_000;

/** The last dead letter id handed out, kept when the newest letters are gone. */
const DEAD_LETTER_SEQ_KEY = "\u0000meta\u0000dead-letter-seq";

/** What the store needs of its node. */
export interface DeadLetterStoreConfig {
  readonly store: RocksStore;
  readonly keys: Keys;
  readonly clock: Clock;
  readonly log: Logger;
  readonly registry: TwinRegistry;
  /** Signs and checks listing page tokens. */
  readonly tokens: PageTokens;
  /** Dead letters older than this are trimmed. */
  readonly retentionMs: number;
  /** Most dead letters kept; the oldest beyond it are trimmed. */
  readonly maxCount: number;
  /** How often the retention runs. */
  readonly sweepMs: number;
  /** Hands requeued messages to the outbox dispatcher, after they are durable in the outbox. */
  readonly requeued: (entries: readonly OutboxEntry[]) => void;
}

/** A ListDeadLetters request. */
export interface DeadLetterListing {
  readonly filter?: DeadLetterFilter;
  /** 0 or absent: 100; at most {@link MAX_DEAD_LETTER_PAGE}. */
  readonly pageSize?: number;
  readonly pageToken?: string;
}

/** A page of dead letters, oldest first. */
export interface DeadLetterPage {
  readonly deadLetters: DeadLetter[];
  /** Empty when the listing is complete. */
  readonly nextPageToken: string;
}

/**
 * The dead letters of one node: written by the host when a delivery fails, listed, read, retried
 * and deleted by operators, and trimmed by age and count in the background.
 *
 * Guarantees: a retry writes the message back into the outbox (with its original outbox seq) and
 * deletes the dead letter in one RocksDB batch, so a message is never in both and never in
 * neither; delivery is then at least once, and the receiver's inbox dedupe (by outbox seq) makes
 * it effectively once. Retries, deletes and trims run one at a time, so two retries of the same
 * dead letter requeue it once.
 */
export class DeadLetterStore {
  private nextSeq = 0;
  private chain: Promise<unknown> = Promise.resolve();
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping = false;
  private closed = false;
  private readonly store: RocksStore;
  private readonly keys: Keys;
  private readonly log: Logger;

  constructor(private readonly config: DeadLetterStoreConfig) {
    this.store = config.store;
    this.keys = config.keys;
    this.log = config.log;
  }

  /** Reads the last dead letter seq and starts the retention loop. */
  async start(): Promise<void> {
    // The newest dead letters may have been retried, deleted or trimmed: the mark keeps their
    // ids from being handed out again (an operator's stale `retry 17` must not hit another letter).
    this.nextSeq = Number(await this.store.get(DEAD_LETTER_SEQ_KEY)) || 0;
    for await (const chunk of this.store.scan({ ...this.keys.deadLetterRange(), limit: 1, reverse: true }, { values: false })) {
      const key = chunk[0]?.[0];
      if (key !== undefined) this.nextSeq = Math.max(this.nextSeq, this.keys.deadLetterSeqOf(key));
    }
    this.sweepTimer = setInterval(() => this.sweepSoon(), this.config.sweepMs);
    this.sweepTimer.unref();
  }

  /**
   * The writes that record a failed delivery of `entry` (the dead letter and the id mark); the
   * caller adds them to the batch that removes the entry from the outbox.
   */
  record(entry: OutboxEntry, reason: string, errorMessage: string): BatchOp[] {
    const seq = ++this.nextSeq;
    return [
      { type: "put", key: this.keys.deadLetter(seq), value: encodeDeadLetter(entry, reason, errorMessage, this.config.clock.nowMs()) },
      { type: "put", key: DEAD_LETTER_SEQ_KEY, value: String(seq) },
    ];
  }

  /**
   * Lists dead letters matching `filter`, oldest first. Each page reads at most
   * {@link DEAD_LETTER_SCAN_PER_PAGE} records, so a page can be short, even empty, while
   * `nextPageToken` is set: follow it until it is empty.
   * @throws InvalidArgumentError (BAD_PAGE_TOKEN)
   */
  async list(req: DeadLetterListing): Promise<DeadLetterPage> {
    const pageSize = req.pageSize === undefined || req.pageSize === 0 ? DEFAULT_PAGE : Math.min(req.pageSize, MAX_DEAD_LETTER_PAGE);
    const identity = JSON.stringify([
      "dead-letters",
      req.filter?.toKind ?? "",
      req.filter?.toId ?? "",
      req.filter?.fromKind ?? "",
      req.filter?.fromId ?? "",
      req.filter?.reason ?? "",
    ]);
    const from = req.pageToken ? this.config.tokens.decode(req.pageToken, identity, isSeqPosition) + 1 : 0;
    const deadLetters: DeadLetter[] = [];
    let scanned = 0;
    let lastSeq = from - 1;
    let more = false;
    // One more than the page is read so a full page knows whether anything follows it.
    scan: for await (const chunk of this.store.scan({ ...this.keys.deadLettersFrom(from), limit: DEAD_LETTER_SCAN_PER_PAGE + 1 })) {
      for (const [key, raw] of chunk) {
        if (scanned === DEAD_LETTER_SCAN_PER_PAGE) {
          more = true;
          break scan;
        }
        const d = this.decode(key, raw);
        if (matchesDeadLetter(d, req.filter)) {
          if (deadLetters.length === pageSize) {
            more = true;
            break scan;
          }
          deadLetters.push(d);
        }
        scanned++;
        lastSeq = this.keys.deadLetterSeqOf(key);
      }
    }
    return { deadLetters, nextPageToken: more ? this.config.tokens.encode(identity, lastSeq) : "" };
  }

  /** One dead letter. @throws InvalidArgumentError (BAD_FIELD) for a malformed id, DeadLetterNotFoundError */
  async get(id: string): Promise<DeadLetter> {
    const seq = parseId(id, "id");
    const raw = await this.store.get(this.keys.deadLetter(seq));
    if (raw === undefined) throw new DeadLetterNotFoundError(id);
    return decodeDeadLetter(seq, raw, (k) => this.keys.outboxSeqOf(k));
  }

  /**
   * Puts the selected dead letters back into the outbox and removes them. Named ids must all
   * exist and target loaded kinds, and are retried in one atomic batch, or nothing is retried;
   * with `all`, one batch per {@link WRITE_BATCH}, and dead letters whose target kind is not
   * loaded are left in place and counted.
   * @throws InvalidArgumentError (BAD_FIELD), DeadLetterNotFoundError, UnknownKindError, UnavailableError (COMMIT_FAILED)
   */
  retry(selection: DeadLetterSelection, signal?: AbortSignal): Promise<{ retried: number; skipped: number }> {
    return this.exclusive(async () => {
      let retried = 0;
      let skipped = 0;
      const requeue = async (letters: DeadLetter[]): Promise<void> => {
        const ops: BatchOp[] = [];
        const entries: OutboxEntry[] = [];
        for (const d of letters) {
          const entry = outboxEntryOf(d);
          entries.push(entry);
          ops.push({ type: "put", key: this.keys.outbox(entry.seq), value: JSON.stringify(entry) }, { type: "del", key: this.keys.deadLetter(Number(d.id)) });
        }
        await this.write(ops);
        this.config.requeued(entries);
        retried += letters.length;
      };
      if ("ids" in selection) {
        const letters = await this.named(selection.ids, true);
        // Checked before anything is written, and written in one batch: a retry by ids is all or nothing.
        for (const d of letters) this.config.registry.get(d.toKind);
        await requeue(letters);
      } else {
        await this.forEachBatch(selection.filter, signal, async (letters) => {
          const loaded = letters.filter((d) => this.config.registry.find(d.toKind) !== undefined);
          skipped += letters.length - loaded.length;
          if (loaded.length > 0) await requeue(loaded);
          // Skipped ones stay where they are: move the scan past them.
          return letters.length - loaded.length;
        });
      }
      if (retried > 0) this.log.info({ retried, skipped }, "dead letters requeued");
      return { retried, skipped };
    });
  }

  /**
   * Deletes the selected dead letters; named ids that do not exist are ignored.
   * @throws InvalidArgumentError (BAD_FIELD), UnavailableError (COMMIT_FAILED)
   */
  delete(selection: DeadLetterSelection, signal?: AbortSignal): Promise<{ deleted: number }> {
    return this.exclusive(async () => {
      let deleted = 0;
      const remove = async (letters: DeadLetter[]): Promise<void> => {
        await this.write(letters.map((d) => ({ type: "del", key: this.keys.deadLetter(Number(d.id)) })));
        deleted += letters.length;
      };
      if ("ids" in selection) {
        await remove(await this.named(selection.ids, false));
      } else {
        await this.forEachBatch(selection.filter, signal, async (letters) => {
          await remove(letters);
          return 0;
        });
      }
      return { deleted };
    });
  }

  /**
   * Trims dead letters past the retention age or beyond the most kept, oldest first, in
   * batches of {@link WRITE_BATCH}. Resolves to how many were trimmed. The background loop calls it.
   */
  trim(): Promise<number> {
    return this.exclusive(async () => {
      const cutoffMs = this.config.clock.nowMs() - this.config.retentionMs;
      // Seqs at or below this are beyond the count (fewer are kept when some were retried or deleted).
      const countFloor = this.nextSeq - this.config.maxCount;
      let trimmed = 0;
      for (;;) {
        const ops: BatchOp[] = [];
        let young = false;
        for await (const chunk of this.store.scan({ ...this.keys.deadLetterRange(), limit: WRITE_BATCH })) {
          for (const [key, raw] of chunk) {
            const seq = this.keys.deadLetterSeqOf(key);
            // Seqs are given in time order, so the first young dead letter ends the trim.
            if (seq > countFloor && this.decode(key, raw).deadAtMs >= cutoffMs) {
              young = true;
              break;
            }
            ops.push({ type: "del", key });
          }
          if (young) break;
        }
        if (ops.length === 0) break;
        await this.write(ops);
        trimmed += ops.length;
        if (young || ops.length < WRITE_BATCH || this.closed) break;
      }
      if (trimmed > 0) this.log.info({ trimmed }, "dead letters trimmed by retention");
      return trimmed;
    });
  }

  /** Stops the retention loop and waits for a running operation. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweepTimer);
    await this.chain.catch(() => undefined);
  }

  private sweepSoon(): void {
    if (this.sweeping || this.closed) return;
    this.sweeping = true;
    this.trim().then(
      () => {
        this.sweeping = false;
      },
      (err: unknown) => {
        this.sweeping = false;
        this.log.warn({ err }, "dead letter retention failed; it will run again");
      },
    );
  }

  /** Reads the named dead letters, oldest first. @throws DeadLetterNotFoundError when `mustExist` and one is missing */
  private async named(ids: readonly string[], mustExist: boolean): Promise<DeadLetter[]> {
    if (ids.length > MAX_DEAD_LETTER_IDS) {
      throw new InvalidArgumentError("BAD_FIELD", `${ids.length} ids named; at most ${MAX_DEAD_LETTER_IDS} per call; split the call, or select with a filter`, [
        { field: "ids", description: `at most ${MAX_DEAD_LETTER_IDS}` },
      ]);
    }
    const seqs = [...new Set(ids.map((id, i) => parseId(id, `ids[${i}]`)))].sort((a, b) => a - b);
    const raws = await this.store.getMany(seqs.map((s) => this.keys.deadLetter(s)));
    const letters: DeadLetter[] = [];
    for (let i = 0; i < seqs.length; i++) {
      const raw = raws[i];
      const seq = seqs[i] as number;
      if (raw === undefined) {
        if (mustExist) throw new DeadLetterNotFoundError(String(seq));
        continue;
      }
      letters.push(decodeDeadLetter(seq, raw, (k) => this.keys.outboxSeqOf(k)));
    }
    return letters;
  }

  /**
   * Calls `act` with the matching dead letters, a batch at a time, oldest first, until none are
   * left or `signal` aborts. `act` resolves to how many of its batch it left in place.
   */
  private async forEachBatch(
    filter: DeadLetterFilter | undefined,
    signal: AbortSignal | undefined,
    act: (letters: DeadLetter[]) => Promise<number>,
  ): Promise<void> {
    let from = 0;
    for (;;) {
      signal?.throwIfAborted();
      const letters: DeadLetter[] = [];
      let last = -1;
      let read = 0;
      for await (const chunk of this.store.scan({ ...this.keys.deadLettersFrom(from), limit: WRITE_BATCH * 4 })) {
        for (const [key, raw] of chunk) {
          read++;
          last = this.keys.deadLetterSeqOf(key);
          const d = this.decode(key, raw);
          if (matchesDeadLetter(d, filter)) letters.push(d);
          if (letters.length === WRITE_BATCH) break;
        }
        if (letters.length === WRITE_BATCH) break;
      }
      if (read === 0) return;
      if (letters.length > 0) await act(letters);
      from = last + 1;
    }
  }

  private decode(key: string, raw: string): DeadLetter {
    return decodeDeadLetter(this.keys.deadLetterSeqOf(key), raw, (k) => this.keys.outboxSeqOf(k));
  }

  private async write(ops: BatchOp[]): Promise<void> {
    try {
      await this.store.write(ops);
    } catch (err) {
      throw new UnavailableError("COMMIT_FAILED", `the node could not write to its disk (${(err as Error).message}); nothing of this batch changed; retry`);
    }
  }

  /** Runs `op` after every earlier retry, delete and trim. */
  private exclusive<T>(op: () => Promise<T>): Promise<T> {
    const run = this.chain.then(op, op);
    this.chain = run.catch(() => undefined);
    return run;
  }
}

/** A dead letter id: a decimal seq from 1. @throws InvalidArgumentError (BAD_FIELD) */
function parseId(id: string, field: string): number {
  const seq = /^\d{1,16}$/.test(id) ? Number(id) : Number.NaN;
  if (!Number.isSafeInteger(seq) || seq < 1) {
    throw new InvalidArgumentError(
      "BAD_FIELD",
      `${field} ${JSON.stringify(id.slice(0, 40))} is not a dead letter id; ids are whole numbers such as "17", as ListDeadLetters returns them`,
      [{ field, description: 'a dead letter id, e.g. "17"' }],
    );
  }
  return seq;
}

/** A listing's page position: the seq of the last dead letter read, -1 before the first. */
function isSeqPosition(position: unknown): position is number {
  return typeof position === "number" && Number.isSafeInteger(position) && position >= -1;
}
