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
  /** True while this node writes `partition`: a held message of another is its new owner's. */
  readonly owns: (partition: PartitionId) => boolean;
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
/** Held messages beyond this are logged at error level once (they are still held: nothing is dropped). */
const WARN_HELD = 100_000;

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
 */
export class HeldMessages {
  private readonly held = new Map<PartitionId, OutboxEntry[]>();
  /** Held entries, by `partition:seq`: the dispatcher's outbox reads skip them. */
  private readonly ids = new Set<string>();
  /** Entries written here whose groups are not acknowledged yet: outbox reads skip them too. */
  private readonly unacknowledged = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private warned = false;

  constructor(private readonly config: HeldMessagesConfig) {}

  /** Messages held now. */
  get size(): number {
    return this.ids.size;
  }

  /**
   * True while partition `p`'s message `seq` waits for its sending write to be acknowledged, or
   * to be durable enough: a read of the outbox (at start-up, after a full queue, after a change
   * of owner) finds it on disk before either.
   */
  holds(p: PartitionId, seq: number): boolean {
    const id = `${p}:${seq}`;
    return (this.unacknowledged.size > 0 && this.unacknowledged.has(id)) || (this.ids.size > 0 && this.ids.has(id));
  }

  /** `group` is about to be written; its messages wait for its acknowledgement ({@link committed}) or its failure. */
  sealed(group: CommitGroup): void {
    for (const entry of group.outbox) this.unacknowledged.add(`${entry.partition}:${entry.seq}`);
  }

  /** `group`'s write failed: its messages are not on disk. */
  failed(group: CommitGroup): void {
    for (const entry of group.outbox) this.unacknowledged.delete(`${entry.partition}:${entry.seq}`);
  }

  /**
   * `group` was acknowledged; `durable` when its writes reached the copies messages need. Then
   * the held messages of every partition it wrote leave, and after them its own; otherwise its
   * own are held.
   */
  committed(group: CommitGroup, durable: boolean): void {
    if (this.unacknowledged.size > 0) this.failed(group);
    if (durable) {
      if (this.held.size > 0) this.releaseWritten(group);
      for (const entry of group.outbox) this.config.deliver(entry);
      return;
    }
    for (const entry of group.outbox) this.hold(entry);
    this.arm();
  }

  /** Partition `p` changed hands: what was held of it is its copy's now (read again if this node owns it). */
  partitionChanged(p: PartitionId): void {
    const list = this.held.get(p);
    if (list === undefined) return;
    this.held.delete(p);
    for (const entry of list) this.ids.delete(`${entry.partition}:${entry.seq}`);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private hold(entry: OutboxEntry): void {
    let list = this.held.get(entry.partition);
    if (list === undefined) this.held.set(entry.partition, (list = []));
    list.push(entry);
    this.ids.add(`${entry.partition}:${entry.seq}`);
    if (this.ids.size >= WARN_HELD && !this.warned) {
      this.warned = true;
      this.config.log.error(
        { held: this.ids.size },
        "outbox messages pile up waiting for their sending writes to reach a majority of copies: too few replicas are live for too long; they stay in memory and on disk",
      );
    }
  }

  private releaseWritten(group: CommitGroup): void {
    const written = new Set<PartitionId>();
    for (const op of group.ops) {
      const p = Keys.partitionOfKey(op.key, this.config.partitioning);
      if (p !== undefined && this.held.has(p)) written.add(p);
    }
    for (const p of [...written].sort((a, b) => a - b)) {
      const list = this.held.get(p) ?? [];
      this.held.delete(p);
      for (const entry of list) {
        this.ids.delete(`${entry.partition}:${entry.seq}`);
        this.config.deliver(entry);
      }
    }
  }

  private arm(): void {
    if (this.closed || this.timer !== undefined || this.held.size === 0) return;
    this.timer = setTimeout(() => this.writeAgain(), this.config.retryMs ?? DEFAULT_RETRY_MS);
    this.timer.unref?.();
  }

  /** Writes each partition this node still owns and holds messages of once more; drops the others' messages. */
  private writeAgain(): void {
    this.timer = undefined;
    if (this.closed) return;
    const ops: { type: "put"; key: string; value: string }[] = [];
    for (const [p, list] of this.held) {
      if (!this.config.owns(p)) {
        this.partitionChanged(p);
        continue;
      }
      ops.push({ type: "put", key: this.config.keys.mark(p, PartitionMark.HELD_MESSAGES), value: String(list.at(-1)?.seq ?? 0) });
    }
    if (ops.length > 0) this.config.recommit(ops);
    this.arm();
  }
}
