import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import { DeadLetterNotFoundError, InvalidArgumentError, UnavailableError } from "../errors.js";
import type { OutboxEntry } from "../host/outbox-entry.js";
import type { TwinRegistry } from "../host/twin-registry.js";
import type { PartitionId } from "../partition/partitioning.js";
import type { PageTokens } from "../query/page-token.js";
import { type Keys, PartitionMark } from "../store/keys.js";
import type { BatchOp, RocksStore } from "../store/rocks-store.js";
import { sequenceEnds } from "../store/sequence-ends.js";
import {
  type DeadLetter,
  type DeadLetterFilter,
  type DeadLetterRetry,
  type DeadLetterSelection,
  decodeDeadLetter,
  encodeDeadLetter,
  matchesDeadLetter,
  outboxEntryOf,
} from "./dead-letter.js";

/** Page size of a listing that asks for none. */
/** A dead letter listing's page size when it gives none. */
export const DEFAULT_DEAD_LETTER_PAGE = 100;
/** Largest page. */
export const MAX_DEAD_LETTER_PAGE = 1_000;
/** Records one listing page reads at most: a rarely matching filter returns a partial page and a token. */
export const DEAD_LETTER_SCAN_PER_PAGE = 10_000;
/** Dead letters per write when retrying, deleting or trimming many: each write is one atomic batch. */
const WRITE_BATCH = 500;
/** Most ids one retry or delete may name. */
export const MAX_DEAD_LETTER_IDS = 1_000;

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
  /** Most dead letters kept per partition; the oldest beyond it are trimmed. */
  readonly maxCount: number;
  /** The partition count. */
  readonly partitions: number;
  /** How often the retention runs. */
  readonly sweepMs: number;
  /**
   * Commits an operator's change (a retry, a delete, a trim) through the node's commit pipeline,
   * so the partition's replicas and a later owner see it too. `sends` are the outbox entries
   * `ops` writes: they are delivered as any sent message is, once durable enough. `partitions`
   * are those `ops` change.
   * @throws UnavailableError (COMMIT_FAILED, REPLICATION_FAILED, PARTITION_MOVING)
   */
  readonly commit: (ops: readonly BatchOp[], sends: readonly OutboxEntry[], partitions: ReadonlySet<PartitionId>) => Promise<void>;
  /** True while this node owns partition `p`: only the owner lists and changes its dead letters. */
  readonly owns: (p: PartitionId) => boolean;
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
 * A dead letter lives in its sender's partition, the partition whose outbox held the message:
 * failing a delivery (outbox entry → dead letter) and retrying it (dead letter → outbox entry,
 * same seq) then change one partition's keys, so a replica or a new owner of that partition sees
 * the message in exactly one of the two. Each partition numbers its dead letters 1, 2, 3, … (a
 * mark keeps numbers from being reused); the id is `<partition>-<seq>`. Listings are ordered by
 * partition, then oldest first. Retention keeps at most `maxCount` per partition.
 *
 * Guarantees: a retry writes the message back into the outbox (with its original outbox seq) and
 * deletes the dead letter in one RocksDB batch, so a message is never in both and never in
 * neither; delivery is then at least once, and the receiver's inbox dedupe (by partition and outbox seq) makes
 * it effectively once. Retries, deletes and trims run one at a time, so two retries of the same
 * dead letter requeue it once.
 */
export class DeadLetterStore {
  /** Per partition, the last dead letter seq handed out. */
  private readonly lastSeqs = new Map<PartitionId, number>();
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

  /** Reads each partition's last dead letter seq and starts the retention loop. */
  async start(): Promise<void> {
    const ends = await sequenceEnds(
      this.store,
      { range: (p) => this.keys.deadLettersFrom(p), keyOf: (key) => this.keys.deadLetterKeyOf(key) },
      0 as PartitionId,
      (this.config.partitions - 1) as PartitionId,
    );
    for (const [p, { last }] of ends) this.lastSeqs.set(p, last);
    // The newest dead letters may have been retried, deleted or trimmed: the mark keeps their
    // ids from being handed out again (an operator's stale `retry 3-17` must not hit another letter).
    for await (const chunk of this.store.scan(this.keys.marks())) {
      for (const [key, raw] of chunk) {
        const { partition, name } = this.keys.markOf(key);
        if (name === PartitionMark.DEAD_LETTER_SEQ) this.lastSeqs.set(partition, Math.max(this.lastSeqs.get(partition) ?? 0, Number(raw) || 0));
      }
    }
    this.sweepTimer = setInterval(() => this.sweepSoon(), this.config.sweepMs);
    this.sweepTimer.unref();
  }

  /**
   * Reads partition `p`'s last dead letter seq again, after keys of the partition were written
   * underneath (replicated). Numbers only move forward, so an id is never handed out twice.
   */
  async resyncPartition(p: PartitionId): Promise<void> {
    const last = (await sequenceEnds(this.store, { range: (q) => this.keys.deadLettersFrom(q), keyOf: (key) => this.keys.deadLetterKeyOf(key) }, p, p)).get(
      p,
    )?.last;
    const mark = Number(await this.store.get(this.keys.mark(p, PartitionMark.DEAD_LETTER_SEQ))) || 0;
    this.lastSeqs.set(p, Math.max(this.lastSeqs.get(p) ?? 0, last ?? 0, mark));
  }

  /**
   * The writes that record a failed delivery of `entry` (the dead letter and the id mark, in the
   * sender's partition); the caller adds them to the batch that removes the entry from the outbox.
   */
  record(entry: OutboxEntry, reason: string, errorMessage: string): [letter: BatchOp, mark: BatchOp] {
    const p = entry.partition;
    const seq = (this.lastSeqs.get(p) ?? 0) + 1;
    this.lastSeqs.set(p, seq);
    return [
      { type: "put", key: this.keys.deadLetter(p, seq), value: encodeDeadLetter(entry, reason, errorMessage, this.config.clock.nowMs()) },
      { type: "put", key: this.keys.mark(p, PartitionMark.DEAD_LETTER_SEQ), value: String(seq) },
    ];
  }

  /**
   * Lists dead letters matching `filter`, by partition, oldest first within one. Each page reads at most
   * {@link DEAD_LETTER_SCAN_PER_PAGE} records, so a page can be short, even empty, while
   * `nextPageToken` is set: follow it until it is empty.
   * @throws InvalidArgumentError (BAD_PAGE_TOKEN)
   */
  async list(req: DeadLetterListing): Promise<DeadLetterPage> {
    const pageSize = req.pageSize === undefined || req.pageSize === 0 ? DEFAULT_DEAD_LETTER_PAGE : Math.min(req.pageSize, MAX_DEAD_LETTER_PAGE);
    const identity = deadLetterListingIdentity(req.filter);
    const after = req.pageToken ? this.config.tokens.decode(req.pageToken, identity, isLetterPosition) : undefined;
    const range = this.keys.deadLetterRange();
    // A key followed by NUL is the first key after it.
    const from = after === undefined ? range.gte : `${this.keys.deadLetter(after[0] as PartitionId, after[1])}\u0000`;
    const deadLetters: DeadLetter[] = [];
    let scanned = 0;
    let last = after;
    let more = false;
    // One more than the page is read so a full page knows whether anything follows it.
    scan: for await (const chunk of this.store.scan({ gte: from, lt: range.lt, limit: DEAD_LETTER_SCAN_PER_PAGE + 1 })) {
      for (const [key, raw] of chunk) {
        if (scanned === DEAD_LETTER_SCAN_PER_PAGE) {
          more = true;
          break scan;
        }
        const d = this.decode(key, raw);
        if (this.config.owns(d.partition) && matchesDeadLetter(d, req.filter)) {
          if (deadLetters.length === pageSize) {
            more = true;
            break scan;
          }
          deadLetters.push(d);
        }
        scanned++;
        const { partition, seq } = this.keys.deadLetterKeyOf(key);
        last = [partition, seq];
      }
    }
    return { deadLetters, nextPageToken: more ? this.config.tokens.encode(identity, last ?? [0, 0]) : "" };
  }

  /** One dead letter. @throws InvalidArgumentError (BAD_FIELD) for a malformed id, DeadLetterNotFoundError, UnavailableError (PARTITION_MOVING) */
  async get(id: string): Promise<DeadLetter> {
    const { partition, seq } = parseDeadLetterId(id, "id");
    this.checkOwned(partition, id);
    const raw = await this.store.get(this.keys.deadLetter(partition, seq));
    if (raw === undefined) throw new DeadLetterNotFoundError(id);
    return decodeDeadLetter(partition, seq, raw);
  }

  /**
   * Puts the selected dead letters back into the outbox and removes them. Named ids must all
   * exist and target loaded kinds, and are retried in one atomic batch, or nothing is retried;
   * with `all`, one batch per {@link WRITE_BATCH}, and dead letters whose target kind is not
   * loaded are left in place and counted.
   * @throws InvalidArgumentError (BAD_FIELD), DeadLetterNotFoundError, UnknownKindError, UnavailableError (COMMIT_FAILED,
   *   REPLICATION_FAILED, PARTITION_MOVING)
   */
  retry(selection: DeadLetterSelection, signal?: AbortSignal): Promise<DeadLetterRetry> {
    return this.exclusive(async () => {
      let retried = 0;
      let skipped = 0;
      const requeue = async (letters: DeadLetter[]): Promise<void> => {
        const ops: BatchOp[] = [];
        const entries: OutboxEntry[] = [];
        for (const d of letters) {
          const entry = outboxEntryOf(d);
          entries.push(entry);
          ops.push({ type: "put", key: this.keys.outbox(entry.partition, entry.seq), value: JSON.stringify(entry) }, { type: "del", key: this.letterKey(d) });
        }
        await this.write(ops, entries, letters);
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
   * @throws InvalidArgumentError (BAD_FIELD), UnavailableError (COMMIT_FAILED, REPLICATION_FAILED, PARTITION_MOVING)
   */
  delete(selection: DeadLetterSelection, signal?: AbortSignal): Promise<{ deleted: number }> {
    return this.exclusive(async () => {
      let deleted = 0;
      const remove = async (letters: DeadLetter[]): Promise<void> => {
        await this.write(
          letters.map((d) => ({ type: "del", key: this.letterKey(d) })),
          [],
          letters,
        );
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
   * Trims dead letters past the retention age or beyond the most kept per partition, oldest
   * first, in batches of {@link WRITE_BATCH}. Resolves to how many were trimmed. The background
   * loop calls it.
   */
  trim(): Promise<number> {
    return this.exclusive(async () => {
      const cutoffMs = this.config.clock.nowMs() - this.config.retentionMs;
      let trimmed = 0;
      for (const [p, lastSeq] of [...this.lastSeqs].sort((a, b) => a[0] - b[0])) {
        // A replica's copy is trimmed by its owner's shipments, not by its own clock.
        if (!this.config.owns(p)) continue;
        // Seqs at or below this are beyond the count (fewer are kept when some were retried or deleted).
        const countFloor = lastSeq - this.config.maxCount;
        for (;;) {
          const ops: BatchOp[] = [];
          let young = false;
          for await (const chunk of this.store.scan({ ...this.keys.deadLettersFrom(p), limit: WRITE_BATCH })) {
            for (const [key, raw] of chunk) {
              const { seq } = this.keys.deadLetterKeyOf(key);
              // Seqs are given in time order, so the partition's first young dead letter ends its trim.
              if (seq > countFloor && this.decode(key, raw).deadAtMs >= cutoffMs) {
                young = true;
                break;
              }
              ops.push({ type: "del", key });
            }
            if (young) break;
          }
          if (ops.length === 0) break;
          await this.write(ops, [], [p]);
          trimmed += ops.length;
          if (young || ops.length < WRITE_BATCH || this.closed) break;
        }
        if (this.closed) break;
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
    const byKey = new Map<string, { partition: PartitionId; seq: number }>();
    for (let i = 0; i < ids.length; i++) {
      const id = parseDeadLetterId(ids[i] as string, `ids[${i}]`);
      if (id.partition >= this.config.partitions && !mustExist) continue; // no such dead letter, as for a deleted one
      this.checkOwned(id.partition, ids[i] as string);
      byKey.set(this.keys.deadLetter(id.partition, id.seq), id);
    }
    const keys = [...byKey.keys()].sort();
    const raws = await this.store.getMany(keys);
    const letters: DeadLetter[] = [];
    for (let i = 0; i < keys.length; i++) {
      const raw = raws[i];
      const { partition, seq } = byKey.get(keys[i] as string) as { partition: PartitionId; seq: number };
      if (raw === undefined) {
        if (mustExist) throw new DeadLetterNotFoundError(`${partition}-${seq}`);
        continue;
      }
      letters.push(decodeDeadLetter(partition, seq, raw));
    }
    return letters;
  }

  /**
   * Calls `act` with the matching dead letters that exist when it is called, a batch at a time,
   * oldest first, until none are left or `signal` aborts. `act` resolves to how many of its batch
   * it left in place. Dead letters recorded meanwhile are not acted on: a retried message that
   * dies again is not retried again by the same call, over and over.
   */
  private async forEachBatch(
    filter: DeadLetterFilter | undefined,
    signal: AbortSignal | undefined,
    act: (letters: DeadLetter[]) => Promise<number>,
  ): Promise<void> {
    const range = this.keys.deadLetterRange();
    // Each partition's last dead letter now (stored, or handed out and not yet written).
    const ends = await sequenceEnds(
      this.store,
      { range: (q) => this.keys.deadLettersFrom(q), keyOf: (key) => this.keys.deadLetterKeyOf(key) },
      0 as PartitionId,
      (this.config.partitions - 1) as PartitionId,
    );
    const existing = new Map<PartitionId, number>(this.lastSeqs);
    for (const [p, { last }] of ends) existing.set(p, Math.max(existing.get(p) ?? 0, last));
    let from = range.gte;
    for (;;) {
      signal?.throwIfAborted();
      const letters: DeadLetter[] = [];
      let last = from;
      let read = 0;
      for await (const chunk of this.store.scan({ gte: from, lt: range.lt, limit: WRITE_BATCH * 4 })) {
        for (const [key, raw] of chunk) {
          read++;
          last = key;
          const d = this.decode(key, raw);
          const existed = this.keys.deadLetterKeyOf(key).seq <= (existing.get(d.partition) ?? 0);
          if (existed && this.config.owns(d.partition) && matchesDeadLetter(d, filter)) letters.push(d);
          if (letters.length === WRITE_BATCH) break;
        }
        if (letters.length === WRITE_BATCH) break;
      }
      if (read === 0) return;
      if (letters.length > 0) await act(letters);
      // A key followed by NUL is the first key after it.
      from = `${last}\u0000`;
    }
  }

  private decode(key: string, raw: string): DeadLetter {
    const { partition, seq } = this.keys.deadLetterKeyOf(key);
    return decodeDeadLetter(partition, seq, raw);
  }

  private letterKey(d: DeadLetter): string {
    const { partition, seq } = parseDeadLetterId(d.id, "id");
    return this.keys.deadLetter(partition, seq);
  }

  /**
   * Commits `ops` (and the outbox entries `sends` they write), which change dead letters of
   * `touched` (letters, or partitions).
   * @throws UnavailableError (COMMIT_FAILED, REPLICATION_FAILED, PARTITION_MOVING)
   */
  private write(ops: BatchOp[], sends: readonly OutboxEntry[], touched: readonly (DeadLetter | PartitionId)[]): Promise<void> {
    if (ops.length === 0) return Promise.resolve();
    return this.config.commit(ops, sends, new Set(touched.map((t) => (typeof t === "number" ? t : t.partition))));
  }

  /** @throws DeadLetterNotFoundError for a partition the cluster does not have, UnavailableError (PARTITION_MOVING) unless this node owns partition `p` now */
  private checkOwned(p: PartitionId, id: string): void {
    if (p >= this.config.partitions) throw new DeadLetterNotFoundError(id);
    if (this.config.owns(p)) return;
    throw new UnavailableError(
      "PARTITION_MOVING",
      `dead letter ${id} is in partition ${p}, which this node does not own now (it moved, or is moving); retry, and the call goes to its owner`,
    );
  }

  /** Runs `op` after every earlier retry, delete and trim. */
  private exclusive<T>(op: () => Promise<T>): Promise<T> {
    const run = this.chain.then(op, op);
    this.chain = run.catch(() => undefined);
    return run;
  }
}

/** The parameters a dead letter listing's page token is bound to. */
export function deadLetterListingIdentity(filter: DeadLetterFilter | undefined): string {
  return JSON.stringify(["dead-letters", filter?.toKind ?? "", filter?.toId ?? "", filter?.fromKind ?? "", filter?.fromId ?? "", filter?.reason ?? ""]);
}

/**
 * The partition and seq of a dead letter id: `<partition>-<seq>`, both decimal, the seq from 1
 * (`field` names it in the error).
 * @throws InvalidArgumentError (BAD_FIELD)
 */
export function parseDeadLetterId(id: string, field: string): { partition: PartitionId; seq: number } {
  const match = /^(\d{1,5})-(\d{1,16})$/.exec(id);
  const partition = match?.[1] === undefined ? Number.NaN : Number(match[1]);
  const seq = match?.[2] === undefined ? Number.NaN : Number(match[2]);
  if (!(partition <= MAX_PARTITION) || !Number.isSafeInteger(seq) || seq < 1) {
    throw new InvalidArgumentError(
      "BAD_FIELD",
      `${field} ${JSON.stringify(id.slice(0, 40))} is not a dead letter id; ids are a partition and a number such as "3-17", as ListDeadLetters returns them`,
      [{ field, description: 'a dead letter id, e.g. "3-17"' }],
    );
  }
  return { partition: partition as PartitionId, seq };
}

/** The largest partition number (four hex digits in keys). */
const MAX_PARTITION = 0xffff;

/** A listing's page position: the partition and seq of the last dead letter read. */
export function isLetterPosition(position: unknown): position is [number, number] {
  return (
    Array.isArray(position) &&
    position.length === 2 &&
    Number.isSafeInteger(position[0]) &&
    Number.isSafeInteger(position[1]) &&
    (position[0] as number) >= 0 &&
    (position[0] as number) <= MAX_PARTITION &&
    (position[1] as number) >= 0
  );
}
