import type { Logger } from "pino";
import type { PartitionId, Partitioning } from "../partition/partitioning.js";
import { Keys, PartitionMark } from "../store/keys.js";
import type { CommitGroup } from "./commit-group.js";
import type { OutboxEntry } from "./outbox-entry.js";

/** What {@link HeldMessages} works with. */
export interface HeldMessagesConfig {
  readonly keys: Keys;
  readonly partitioning: Partitioning;
  readonly log: Logger;
  /** Hands a message whose sending write is durable enough to the dispatcher. */
  readonly deliver: (entry: OutboxEntry) => void;
  /** Has the dispatcher read partition `p`'s whole outbox, once every write in it is durable enough. */
  readonly readOutbox: (partition: PartitionId) => void;
  /** True while this node writes `partition`: a held message of another is its new owner's. */
  readonly owns: (partition: PartitionId) => boolean;
  /**
   * Held messages of partition `p` from `seq` on were dropped while this node did not serve it:
   * should it serve it again without a change of hands, the dispatcher reads them from disk
   * before a new message of it leaves.
   */
  readonly dropped?: (partition: PartitionId, seq: number) => void;
  /**
   * Writes `ops` (one mark per partition with held messages) in the next commit group, which asks
   * for as many copies as messages need: once it has them, so has every earlier write of their
   * partitions.
   */
  readonly recommit: (ops: { type: "put"; key: string; value: string }[]) => void;
  /** How long held messages wait for a later write of their partition before they are written again. @defaultValue 1000 */
  readonly retryMs?: number;
}

const DEFAULT_RETRY_MS = 1000;
/**
 * Held messages kept in memory per partition. Beyond it the partition's outbox waits as a whole
 * (one flag, the entries are on disk) and is read again once it may leave.
 */
const MAX_HELD_PER_PARTITION = 1000;

/**
 * Outbox messages whose sending write is not yet on as many copies as messages need (a
 * majority of the partition's copies in a cluster, see `ReplicationStage.messageCopies`). Such a
 * write can still be lost with this node, and its sender's retry then applied again on the new
 * owner: had its message left, the receiver would apply it twice, and the new owner would number
 * another message with the same id, which the receiver would drop as a repeat.
 *
 * A held message leaves once a later commit group that wrote its partition reaches the copies
 * (a replica confirms a position only holding every one before it), before that group's own
 * messages, so the sender's order holds. A partition that is not written again meanwhile gets a
 * write of its own after `retryMs` (its `held-messages` mark: not the entries themselves, which
 * a delivery may delete meanwhile), as often as it takes. A partition that moved to another node
 * drops its held messages: the new owner delivers what its copy holds.
 *
 * A partition this node takes waits as a whole ({@link taken}): its copy's tail may be on this
 * copy alone (it was the most advanced of those that promised), so its outbox is read only once
 * a write of the new epoch has the copies. So does a partition with more than 1,000 messages
 * held: memory keeps one flag for it, not its messages.
 */
export class HeldMessages {
  private readonly held = new Map<PartitionId, OutboxEntry[]>();
  /** Held entries, by `partition:seq`: the dispatcher's outbox reads skip them. */
  private readonly ids = new Set<string>();
  /** Partitions whose whole outbox waits: taken, or too many held. Outbox reads skip them. */
  private readonly whole = new Set<PartitionId>();
  /** Partitions of {@link whole} a message short of the copies was left on disk for (see {@link heldOnDisk}). */
  private readonly shortOnDisk = new Set<PartitionId>();
  /** Entries written here whose groups are not acknowledged yet: outbox reads skip them too. */
  private readonly unacknowledged = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly config: HeldMessagesConfig) {}

  /** Messages held in memory now (a partition waiting as a whole counts none). */
  get size(): number {
    return this.ids.size;
  }

  /**
   * True while partition `p`'s message `seq` waits for its sending write to be acknowledged, or
   * to be durable enough: a read of the outbox (after a full queue, say) finds it on disk before
   * either.
   */
  holds(p: PartitionId, seq: number): boolean {
    if (this.whole.size > 0 && this.whole.has(p)) return true;
    const id = `${p}:${seq}`;
    return (this.unacknowledged.size > 0 && this.unacknowledged.has(id)) || (this.ids.size > 0 && this.ids.has(id));
  }

  /** `group` is about to be written; its messages wait for its acknowledgement ({@link committed}) or its failure. */
  sealed(group: CommitGroup): void {
    for (const entry of group.outbox) this.unacknowledged.add(`${entry.partition}:${entry.seq}`);
  }

  /** `group` is done with, acknowledged or not (its write failed, or acknowledging it threw): its messages no longer wait for that. */
  forgetUnacknowledged(group: CommitGroup): void {
    if (this.unacknowledged.size === 0) return;
    for (const entry of group.outbox) this.unacknowledged.delete(`${entry.partition}:${entry.seq}`);
  }

  /**
   * `group` was acknowledged; `durable` when its writes reached the copies messages need. Then
   * the held messages of every partition it wrote leave, and after them its own; otherwise its
   * own are held.
   */
  committed(group: CommitGroup, durable: boolean): void {
    this.forgetUnacknowledged(group);
    if (durable) {
      const readWhole = this.held.size > 0 || this.whole.size > 0 ? this.releaseWritten(group) : undefined;
      // A partition read as a whole (now or later) has the group's own messages read with the rest.
      for (const entry of group.outbox) {
        if (!this.whole.has(entry.partition) && readWhole?.has(entry.partition) !== true) this.config.deliver(entry);
      }
      return;
    }
    for (const entry of group.outbox) this.hold(entry);
    this.arm();
  }

  /**
   * This node took partition `p`: its outbox is read, and its messages leave, once a write of
   * the new epoch has the copies messages need (the mark is written at once).
   */
  taken(p: PartitionId): void {
    this.drop(p);
    this.whole.add(p);
    this.arm(0);
  }

  /**
   * This node serves partition `p` now and has not looked at its outbox yet: until {@link taken}
   * or {@link partitionChanged} says what becomes of it, its messages wait (a new turn's are read
   * with the rest), so none leaves ahead of those the outbox already holds.
   */
  taking(p: PartitionId): void {
    this.drop(p);
    this.whole.add(p);
    this.shortOnDisk.delete(p);
  }

  /**
   * True when a message of partition `p` whose sending write fell short of the copies was left
   * on disk while its whole outbox waited: reading the outbox now would let it out, so it must
   * wait for a write with the copies ({@link taken}).
   */
  heldOnDisk(p: PartitionId): boolean {
    return this.shortOnDisk.has(p);
  }

  /** Partition `p` changed hands: what was held of it is its copy's now. */
  partitionChanged(p: PartitionId): void {
    this.drop(p);
    this.whole.delete(p);
    this.shortOnDisk.delete(p);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private drop(p: PartitionId): void {
    const list = this.held.get(p);
    if (list === undefined) return;
    this.held.delete(p);
    for (const entry of list) this.ids.delete(`${entry.partition}:${entry.seq}`);
  }

  private hold(entry: OutboxEntry): void {
    const p = entry.partition;
    if (this.whole.has(p)) {
      // On disk: read with the rest, once a write has the copies.
      this.shortOnDisk.add(p);
      return;
    }
    let list = this.held.get(p);
    if (list === undefined) this.held.set(p, (list = []));
    if (list.length >= MAX_HELD_PER_PARTITION) {
      this.drop(p);
      this.whole.add(p);
      this.config.log.warn(
        { partition: p, held: MAX_HELD_PER_PARTITION },
        "over 1,000 messages of this partition wait for their sending writes to reach a majority of copies (too few replicas are live); its outbox now waits as a whole on disk, and is read once a write has the copies",
      );
      return;
    }
    list.push(entry);
    this.ids.add(`${p}:${entry.seq}`);
  }

  /** Lets the held messages of the partitions `group` wrote leave; returns those read as a whole. */
  private releaseWritten(group: CommitGroup): Set<PartitionId> {
    const written = new Set<PartitionId>();
    for (const op of group.ops) {
      const p = Keys.partitionOfKey(op.key, this.config.partitioning);
      if (p !== undefined && (this.held.has(p) || this.whole.has(p))) written.add(p);
    }
    const readWhole = new Set<PartitionId>();
    for (const p of [...written].sort((a, b) => a - b)) {
      this.shortOnDisk.delete(p);
      if (this.whole.delete(p)) {
        readWhole.add(p);
        this.config.readOutbox(p);
        continue;
      }
      const list = this.held.get(p) ?? [];
      this.held.delete(p);
      for (const entry of list) {
        this.ids.delete(`${entry.partition}:${entry.seq}`);
        this.config.deliver(entry);
      }
    }
    return readWhole;
  }

  private arm(delayMs = this.config.retryMs ?? DEFAULT_RETRY_MS): void {
    if (this.closed || this.timer !== undefined || (this.held.size === 0 && this.whole.size === 0)) return;
    this.timer = setTimeout(() => this.writeAgain(), delayMs);
    this.timer.unref?.();
  }

  /** Writes each partition this node still owns and holds messages of once more; drops the others' messages. */
  private writeAgain(): void {
    this.timer = undefined;
    if (this.closed) return;
    const ops: { type: "put"; key: string; value: string }[] = [];
    for (const p of new Set([...this.held.keys(), ...this.whole])) {
      if (!this.config.owns(p)) {
        const from = this.whole.has(p) ? 0 : (this.held.get(p)?.[0]?.seq ?? 0);
        this.partitionChanged(p);
        this.config.dropped?.(p, from);
        continue;
      }
      ops.push({ type: "put", key: this.config.keys.mark(p, PartitionMark.HELD_MESSAGES), value: String(this.held.get(p)?.at(-1)?.seq ?? 0) });
    }
    if (ops.length > 0) this.config.recommit(ops);
    this.arm();
  }
}
