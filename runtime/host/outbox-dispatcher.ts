import type { Logger } from "pino";
import type { PartitionId } from "../partition/partitioning.js";
import type { Keys } from "../store/keys.js";
import type { RocksStore } from "../store/rocks-store.js";
import { isPlainObject } from "../util/json.js";
import type { OutboxEntry } from "./outbox-entry.js";

/**
 * What became of handing a message to its target twin: `busy` when it cannot be handed over now
 * (the target's mailbox is full, its owner is not known yet, or an earlier message to it is in
 * flight by another route; it is offered again later), `unknown-kind` when the target's kind is
 * not loaded on this node.
 */
export type Delivery = "delivered" | "busy" | "unknown-kind";

/** Hands a message to its target twin. */
export type Deliverer = (entry: OutboxEntry) => Delivery;

/**
 * Moves an outbox entry that cannot be read aside (deletes it and writes a dead letter, in one
 * batch), so it neither blocks nor is lost.
 */
export type Quarantine = (key: string, raw: string, problem: string) => Promise<void>;

export interface OutboxDispatcherConfig {
  readonly store: RocksStore;
  readonly keys: Keys;
  readonly log: Logger;
  readonly deliver: Deliverer;
  readonly quarantine: Quarantine;
  /** True for the partitions this node owns now: only their outboxes are read. Absent: all. */
  readonly owns?: (p: PartitionId) => boolean;
  /**
   * True for an entry whose sending write is not durable enough yet: a read of the outbox skips it
   * and the rest of its partition (it is enqueued when it is, or its partition read again).
   */
  readonly held?: (p: PartitionId, seq: number) => boolean;
  /** The partition count: the outboxes read at start are those of every owned partition below it. */
  readonly partitions: number;
  /** Called when the dispatcher may have become idle. */
  readonly settled: () => void;
  /** Most messages held in memory; beyond it they wait in RocksDB and are read when room returns. */
  readonly maxQueued?: number;
  /**
   * How often messages whose target was busy are offered again; a message whose turn ended
   * without a commit is offered again after this, then twice as long after each further failure
   * in a row, up to {@link MAX_BACKOFF} times as long.
   */
  readonly retryMs?: number;
}

const DEFAULT_MAX_QUEUED = 10_000;
const DEFAULT_RETRY_MS = 200;
/** The longest wait before a target whose deliveries keep failing is offered its messages again, in retry intervals. */
const MAX_BACKOFF = 16;

/**
 * Delivers durable outbox messages after the sending turn committed. Each message stays in the
 * outbox until the receiving turn commits (which deletes it in the same batch), so delivery is
 * at least once; the receiver's inbox marks make it effectively once.
 *
 * Messages wait in memory in one FIFO per target twin, so a busy target (its mailbox full) holds
 * up only its own messages, in order, and is offered them again when a commit of its turns frees
 * room or on the retry tick. At most `maxQueued` wait in memory; the rest stay in RocksDB and the
 * partitions' outboxes are read, each from the lowest seq memory may not know, once the queue has
 * drained to half: never a full re-read while a target is busy.
 *
 * A message committed while its partition's outbox is to be read (at start-up, after the
 * partition moved here or was released as a whole, with older entries left on disk by a full
 * queue, after a read stopped at a held message) waits for that read, so it never overtakes the
 * older ones: the read finds it, or, when the read's snapshot began before its commit, admits it
 * after the rest. Such a partition is read even while memory is over half full, whenever it has
 * room: its new messages would otherwise wait on busy targets they are not for. A message whose
 * turn ended without a commit goes back before the later ones to its target, over the memory
 * limit if need be.
 *
 * Only the outboxes of partitions this node owns are read and delivered: a message of a
 * partition that moved away is dropped from memory when it is next offered (the new owner
 * delivers it), and one that came back is read again ({@link partitionChanged}). An entry that
 * does not parse is quarantined as a dead letter. Messages to a kind that is not loaded are
 * parked (left in the outbox, not retried) until the node restarts with that kind.
 *
 * A target whose deliveries keep ending without a commit (its owner is down, its write cannot
 * reach the copies messages need) backs off: it is offered its messages again after the retry
 * interval, then after twice that, and so on up to 16 intervals, until one of its deliveries
 * commits. Each failed offer costs a turn or a call, and they would otherwise repeat every
 * interval for as long as the cause lasts.
 */
export class OutboxDispatcher {
  /** Waiting messages per target (`kind NUL id`), oldest first. */
  private readonly waiting = new Map<string, OutboxEntry[]>();
  /** Every waiting message (by {@link entryId}). */
  private readonly queued = new Set<string>();
  /** Handed to their target, until the turn that took them commits or fails (by {@link entryId}). */
  private readonly inflight = new Map<string, OutboxEntry>();
  /** Messages in flight per target (`kind NUL id`). */
  private readonly inflightByTarget = new Map<string, number>();
  /** Messages to kinds not loaded here, by kind (logged once per kind). */
  private readonly parked = new Map<string, Set<string>>();
  /** Targets whose last deliveries ended without a commit: how many in a row, and when they may be offered again (performance.now()). */
  private readonly backoff = new Map<string, { failures: number; notBefore: number }>();
  /** Per partition, outbox entries at or above this seq may be unknown to memory. */
  private readonly scanFrom = new Map<PartitionId, number>();
  /** Partitions the running scan has yet to reach, each with the seq it reads from. */
  private readonly scanAhead = new Map<PartitionId, number>();
  /**
   * The partition the running scan reads now, and its messages committed meanwhile (up to
   * `maxQueued`; beyond, they are left on disk to the next read): admitted after the read when it
   * reads to the end, left on disk otherwise.
   */
  private reading: { partition: PartitionId; late: OutboxEntry[] } | undefined;
  /**
   * Partitions whose outbox holds entries memory let go of, from this seq: a read stopped at a
   * held message there, or the partition was not served for a moment (the ring's view can change
   * back without the node letting the partition go). Read again from there once a message of
   * theirs is enqueued (the held one, released, or a later one, which would otherwise overtake them).
   */
  private readonly stoppedAt = new Map<PartitionId, number>();
  /** Partitions with new messages waiting for a read (due or under way): read even while memory is over half full, when it has room. */
  private readonly deferred = new Set<PartitionId>();
  /** Delivered while a scan ran: its snapshot may still hold them. */
  private readonly doneDuringScan = new Set<string>();
  private scanning: Promise<void> | undefined;
  /** Set after a failed scan: the next one waits for it. */
  private rescanTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly maxQueued: number;
  private readonly retryMs: number;

  constructor(private readonly config: OutboxDispatcherConfig) {
    this.maxQueued = config.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.retryMs = config.retryMs ?? DEFAULT_RETRY_MS;
  }

  /** Redelivers what the owned partitions' outboxes held at start-up. */
  start(): void {
    for (let p = 0; p < this.config.partitions; p++) this.missed(p as PartitionId, 0);
    this.maybeScan();
  }

  /**
   * Partition `p` changed hands or its outbox was written underneath (replicated): when this
   * node owns it, its outbox is read again; when not, its waiting messages are dropped from
   * memory (they stay in the outbox, for its owner).
   */
  partitionChanged(p: PartitionId): void {
    if (this.closed) return;
    if (this.owns(p)) {
      // Read again from its head: what was held or being read is found there.
      this.stoppedAt.delete(p);
      if (this.reading?.partition === p) this.reading.late = [];
      this.missed(p, 0);
      this.maybeScan();
      return;
    }
    this.scanFrom.delete(p);
    this.deferred.delete(p);
    this.stoppedAt.delete(p);
    if (this.reading?.partition === p) this.reading.late = [];
    for (const [target, list] of this.waiting) {
      const kept = list.filter((e) => e.partition !== p);
      for (const e of list) if (e.partition === p) this.queued.delete(entryId(e));
      if (kept.length === 0) this.waiting.delete(target);
      else if (kept.length !== list.length) this.waiting.set(target, kept);
    }
    for (const ids of this.parked.values()) for (const id of ids) if (id.startsWith(`${p}:`)) ids.delete(id);
    this.pruneBackoff();
    this.config.settled();
  }

  /**
   * A committed turn sent this message (or a dead letter was requeued into the outbox). While
   * its partition's outbox is to be read, the message waits for that read, so it does not
   * overtake older messages memory does not know yet: the read finds it on disk, or, when the
   * read's snapshot began before the message's commit, admits it after the rest. A partition
   * whose last read stopped at a held message is read again from there.
   */
  enqueue(entry: OutboxEntry): void {
    const id = entryId(entry);
    const p = entry.partition;
    if (this.closed || this.queued.has(id) || this.inflight.has(id) || !this.owns(p)) return;
    if (this.reading?.partition === p) {
      if (this.reading.late.length < this.maxQueued) this.reading.late.push(entry);
      else this.leaveToRead(p, entry.seq);
      return;
    }
    const ahead = this.scanAhead.size === 0 ? undefined : this.scanAhead.get(p);
    if (ahead !== undefined) {
      // The running scan reads it; unless it is below where that read begins (a requeued dead letter).
      if (entry.seq < ahead) this.missed(p, entry.seq);
      this.deferred.add(p);
      return;
    }
    const stopped = this.stoppedAt.size === 0 ? undefined : this.stoppedAt.get(p);
    if (stopped !== undefined) {
      this.stoppedAt.delete(p);
      this.leaveToRead(p, Math.min(stopped, entry.seq));
      this.maybeScan();
      return;
    }
    if (this.scanFrom.size > 0 && this.scanFrom.has(p)) {
      this.leaveToRead(p, entry.seq);
      this.maybeScan();
      return;
    }
    this.admit(entry);
  }

  /**
   * The turn that took `entry` ended. `stillInOutbox` when it did not commit (the twin was
   * reloaded, the write failed): the message is offered again.
   */
  released(entry: OutboxEntry, stillInOutbox: boolean): void {
    const id = entryId(entry);
    const taken = this.inflight.get(id);
    if (taken === undefined) return;
    this.inflight.delete(id);
    const target = targetKey(taken.toKind, taken.toId);
    const left = (this.inflightByTarget.get(target) ?? 1) - 1;
    if (left === 0) this.inflightByTarget.delete(target);
    else this.inflightByTarget.set(target, left);
    if (this.closed) return;
    if (stillInOutbox && this.owns(entry.partition)) {
      const failures = (this.backoff.get(target)?.failures ?? 0) + 1;
      this.backoff.set(target, { failures, notBefore: performance.now() + this.retryMs * Math.min(2 ** (failures - 1), MAX_BACKOFF) });
      this.admit(entry, true);
      this.scheduleRetry();
    } else {
      this.backoff.delete(target);
      if (stillInOutbox) this.letGo(entry.partition, entry.seq);
      if (this.scanning !== undefined) this.doneDuringScan.add(id);
    }
    this.maybeScan();
  }

  /** A commit of `kind`/`id`'s turns may have freed room in its mailbox: offer it what waits. */
  targetFreed(kind: string, id: string): void {
    const target = targetKey(kind, id);
    const list = this.waiting.get(target);
    if (list !== undefined && !this.backingOff(target, performance.now())) this.offer(target, list);
    this.maybeScan();
  }

  /**
   * Partition `p`'s entries from `seq` on were let go of elsewhere (held messages dropped while
   * the partition was not served): they are read again before a new message of it leaves.
   */
  forgot(p: PartitionId, seq: number): void {
    if (!this.closed) this.letGo(p, seq);
  }

  /** How many messages to twin `kind`/`id` are in flight: handed over, their turns not ended. */
  inFlightTo(kind: string, id: string): number {
    return this.inflightByTarget.size === 0 ? 0 : (this.inflightByTarget.get(targetKey(kind, id)) ?? 0);
  }

  /** Nothing waiting to be handed over or in flight. */
  get idle(): boolean {
    return this.queued.size === 0 && this.scanFrom.size === 0 && this.scanning === undefined && this.inflight.size === 0 && this.rescanTimer === undefined;
  }

  /** Messages waiting in memory, in flight and parked, for operators and tests. */
  get counts(): { queued: number; inflight: number; parked: number } {
    let parked = 0;
    for (const seqs of this.parked.values()) parked += seqs.size;
    return { queued: this.queued.size, inflight: this.inflight.size, parked };
  }

  /** Stops delivering. What is still queued is durable and redelivered at the next start. Idempotent. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.rescanTimer);
    this.retryTimer = undefined;
    this.rescanTimer = undefined;
    this.waiting.clear();
    this.queued.clear();
    this.scanFrom.clear();
    this.scanAhead.clear();
    this.deferred.clear();
    this.stoppedAt.clear();
    this.backoff.clear();
    await this.scanning;
    this.config.settled();
  }

  /**
   * Queues a message (or parks it), delivering it at once when nothing waits before it. `again`
   * for one offered before, whose turn ended without a commit: it goes back before later
   * messages to the same twin, over the memory limit if need be (it was counted in flight; left
   * on disk, the later ones would overtake it).
   */
  private admit(entry: OutboxEntry, again = false): void {
    if (this.parked.has(entry.toKind)) {
      this.park(entry);
      return;
    }
    if (!again && this.queued.size >= this.maxQueued) {
      this.leaveToRead(entry.partition, entry.seq); // it is durable: a later scan reads it
      return;
    }
    const target = targetKey(entry.toKind, entry.toId);
    let list = this.waiting.get(target);
    if (list === undefined) {
      list = [];
      this.waiting.set(target, list);
    }
    if (again) insertBySeq(list, entry);
    else list.push(entry);
    this.queued.add(entryId(entry));
    if (!again && list.length === 1) this.offer(target, list);
    if (this.waiting.has(target)) this.scheduleRetry();
  }

  /** Hands a target its waiting messages, oldest first, until its mailbox is full. */
  private offer(target: string, list: OutboxEntry[]): void {
    let taken = 0;
    for (const entry of list) {
      // Its partition moved to another node, which delivers it from its copy: this node
      // delivering it too, maybe much later, would apply it twice once the receiver's memory of
      // message ids has moved past it.
      if (!this.owns(entry.partition)) {
        taken++;
        this.queued.delete(entryId(entry));
        this.letGo(entry.partition, entry.seq);
        continue;
      }
      const result = this.config.deliver(entry);
      if (result === "busy") break;
      taken++;
      this.queued.delete(entryId(entry));
      if (result === "delivered") {
        this.inflight.set(entryId(entry), entry);
        this.inflightByTarget.set(target, (this.inflightByTarget.get(target) ?? 0) + 1);
      } else this.park(entry);
    }
    if (taken === list.length) this.waiting.delete(target);
    else if (taken > 0) list.splice(0, taken);
  }

  private park(entry: OutboxEntry): void {
    let ids = this.parked.get(entry.toKind);
    if (ids === undefined) {
      ids = new Set();
      this.parked.set(entry.toKind, ids);
      this.config.log.warn(
        { kind: entry.toKind },
        "messages to a twin kind that is not loaded stay in the outbox; they are delivered when the node restarts with that kind",
      );
    }
    ids.add(entryId(entry));
  }

  private scheduleRetry(): void {
    if (this.closed || this.retryTimer !== undefined || this.waiting.size === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      const now = performance.now();
      for (const [target, list] of this.waiting) if (!this.backingOff(target, now)) this.offer(target, list);
      this.pruneBackoff();
      this.scheduleRetry();
      this.maybeScan();
    }, this.retryMs);
    this.retryTimer.unref();
  }

  /** True while `target` waits out its backoff. */
  private backingOff(target: string, now: number): boolean {
    const b = this.backoff.get(target);
    return b !== undefined && now < b.notBefore;
  }

  /** Forgets the backoff of targets with nothing left here (their partition moved, say): no commit will. */
  private pruneBackoff(): void {
    if (this.backoff.size === 0) return;
    for (const target of this.backoff.keys()) if (!this.waiting.has(target) && !this.inflightByTarget.has(target)) this.backoff.delete(target);
  }

  private owns(p: PartitionId): boolean {
    return this.config.owns?.(p) ?? true;
  }

  /** Memory lets go of partition `p`'s entries from `seq` on (see {@link stoppedAt}). */
  private letGo(p: PartitionId, seq: number): void {
    const at = this.stoppedAt.get(p);
    if (at === undefined || seq < at) this.stoppedAt.set(p, seq);
  }

  /** Partition `p`'s message `seq` (and what follows it) waits on disk for a read of the partition. */
  private leaveToRead(p: PartitionId, seq: number): void {
    this.missed(p, seq);
    this.deferred.add(p);
  }

  /** Partition `p`'s outbox entries from `seq` on may not be in memory. */
  private missed(p: PartitionId, seq: number): void {
    const from = this.scanFrom.get(p);
    if (from === undefined || seq < from) this.scanFrom.set(p, seq);
  }

  /**
   * Reads the outboxes when memory may miss entries and has room for them (half empty). Over
   * half full, only the partitions whose new messages wait for their read are read, while there
   * is room: those messages would otherwise wait on busy targets they are not for.
   */
  private maybeScan(): void {
    if (this.closed || this.scanFrom.size === 0 || this.scanning !== undefined || this.rescanTimer !== undefined) return;
    let from: [PartitionId, number][];
    if (this.queued.size <= this.maxQueued / 2) {
      from = [...this.scanFrom];
      this.scanFrom.clear();
    } else {
      if (this.deferred.size === 0 || this.queued.size >= this.maxQueued) return;
      from = [];
      for (const p of this.deferred) {
        const seq = this.scanFrom.get(p);
        if (seq === undefined) continue;
        from.push([p, seq]);
        this.scanFrom.delete(p);
      }
      if (from.length === 0) return;
    }
    from.sort((a, b) => a[0] - b[0]);
    this.scanning = this.scan(from).finally(() => {
      this.scanning = undefined;
      this.doneDuringScan.clear();
      this.maybeScan();
      this.config.settled();
    });
  }

  /** Reads the owned partitions among `from`, each from its seq; others are left to their owner. */
  private async scan(from: [PartitionId, number][]): Promise<void> {
    const { keys, log } = this.config;
    const unreadable: [string, string, string][] = [];
    for (const [p, seq] of from) this.scanAhead.set(p, seq);
    let i = 0;
    try {
      for (; i < from.length; i++) {
        const [p, fromSeq] = from[i] as [PartitionId, number];
        this.scanAhead.delete(p);
        if (!this.owns(p)) {
          this.letGo(p, fromSeq);
          continue;
        }
        this.stoppedAt.delete(p);
        this.reading = { partition: p, late: [] };
        let outcome: ReadOutcome = "failed";
        try {
          outcome = await this.readPartition(p, fromSeq, unreadable);
        } finally {
          this.endRead(p, outcome);
        }
        if (outcome === "closed") return;
        if (outcome === "full") {
          i++;
          break;
        }
      }
    } catch (err) {
      if (this.closed) return;
      log.warn({ err }, "outbox scan failed; retrying");
      this.scheduleRescan();
    }
    this.scanAhead.clear();
    // What this scan did not reach (it stopped at a full queue or failed) is read by the next.
    for (; i < from.length; i++) {
      const [p, fromSeq] = from[i] as [PartitionId, number];
      this.missed(p, fromSeq);
    }
    for (const [key, raw, problem] of unreadable) {
      if (this.closed) return;
      try {
        await this.config.quarantine(key, raw, problem);
        log.error({ key, problem }, "an outbox entry could not be read; it was moved to the dead letters");
      } catch (err) {
        log.warn({ err, key }, "could not move an unreadable outbox entry to the dead letters; retrying");
        const { partition, seq } = keys.outboxKeyOf(key);
        this.missed(partition, seq);
        this.scheduleRescan();
      }
    }
  }

  /**
   * Admits what partition `p`'s outbox holds from `fromSeq` on, until its end, a held message
   * (see {@link stoppedAt}), a full memory (the rest is left to a later read) or the close.
   */
  private async readPartition(p: PartitionId, fromSeq: number, unreadable: [string, string, string][]): Promise<ReadOutcome> {
    const { store, keys } = this.config;
    for await (const chunk of store.scan(keys.outboxFrom(p, fromSeq))) {
      for (const [key, raw] of chunk) {
        if (this.closed) return "closed";
        const { seq } = keys.outboxKeyOf(key);
        const id = `${p}:${seq}`;
        if (this.known(id)) continue;
        // A held message leaves when it is released: by itself, or with a read of its whole
        // partition. A later one of its partition read now would overtake it, so the rest of
        // the partition waits too, and is read from here once a message of it is enqueued.
        if (this.config.held?.(p, seq) === true) {
          this.letGo(p, seq);
          return "held";
        }
        const entry = parseOutboxEntry(raw, p, seq);
        if (typeof entry === "string") {
          unreadable.push([key, raw, entry]);
          continue;
        }
        if (this.queued.size >= this.maxQueued) {
          this.missed(p, seq);
          return "full";
        }
        this.admit(entry);
      }
    }
    return "end";
  }

  /**
   * The read of partition `p` ended. The messages committed meanwhile, which its snapshot may
   * lack, follow what it admitted when it read to the end; otherwise they wait on disk: for the
   * held message it stopped at, or for the next read.
   */
  private endRead(p: PartitionId, outcome: ReadOutcome): void {
    const late = this.reading?.late ?? [];
    this.reading = undefined;
    if (this.closed) return;
    switch (outcome) {
      case "end":
        for (const entry of late) if (!this.known(entryId(entry)) && this.owns(p)) this.admit(entry);
        break;
      case "held": {
        // What follows the held message, messages committed during the read included, is read
        // from it once it leaves: a read due from further on would overtake it.
        const due = this.scanFrom.get(p);
        if (due !== undefined && due >= (this.stoppedAt.get(p) ?? 0)) this.scanFrom.delete(p);
        break;
      }
      default:
        for (const entry of late) this.leaveToRead(p, entry.seq);
        return;
    }
    if (!this.scanFrom.has(p)) this.deferred.delete(p);
  }

  /** True for a message memory holds (waiting or in flight) or that was delivered while this scan ran. */
  private known(id: string): boolean {
    return this.queued.has(id) || this.inflight.has(id) || this.doneDuringScan.has(id);
  }

  /** After a failed scan, scan again after the retry interval rather than at once. */
  private scheduleRescan(): void {
    if (this.closed || this.rescanTimer !== undefined) return;
    this.rescanTimer = setTimeout(() => {
      this.rescanTimer = undefined;
      this.maybeScan();
    }, this.retryMs);
    this.rescanTimer.unref();
  }
}

/** How the read of one partition's outbox ended ({@link OutboxDispatcher.readPartition}); `failed`: it threw. */
type ReadOutcome = "end" | "held" | "full" | "closed" | "failed";

/** Puts `entry` back before the later messages of its sender's partition (seqs of different partitions do not compare). */
function insertBySeq(list: OutboxEntry[], entry: OutboxEntry): void {
  const i = list.findIndex((e) => e.partition === entry.partition && e.seq > entry.seq);
  list.splice(i === -1 ? list.length : i, 0, entry);
}

/** An outbox entry's identity in memory: seqs are numbered per partition. */
function entryId(entry: OutboxEntry): string {
  return `${entry.partition}:${entry.seq}`;
}

function targetKey(kind: string, id: string): string {
  return `${kind}\u0000${id}`;
}

/**
 * Reads a stored outbox entry of partition `partition` (its key says which); a string says why
 * it is not one.
 */
export function parseOutboxEntry(raw: string, partition: PartitionId, seq: number): OutboxEntry | string {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    return `not JSON (${(err as Error).message})`;
  }
  if (!isPlainObject(value)) return "not a JSON object";
  const { fromKind, fromId, toKind, toId, message } = value;
  if (value.seq !== seq) return `its seq ${JSON.stringify(value.seq)} does not match its key's ${seq}`;
  if (value.partition !== undefined && value.partition !== partition) {
    return `its partition ${JSON.stringify(value.partition)} does not match its key's ${partition}`;
  }
  if (typeof fromKind !== "string" || typeof fromId !== "string" || typeof toKind !== "string" || typeof toId !== "string") {
    return "its sender or target is missing";
  }
  if (!isPlainObject(message)) return "its message is not a JSON object";
  return { partition, seq, fromKind, fromId, toKind, toId, message };
}
