import type { AlertChange } from "../alerts/alert.js";
import type { PartitionId, Partitioning } from "../partition/partitioning.js";
import { Keys } from "../store/keys.js";
import type { BatchOp } from "../store/rocks-store.js";
import type { TraceRef } from "../tracing.js";
import type { Activation } from "./activation.js";
import type { OutboxEntry } from "./outbox-entry.js";
import type { TurnOutcome, TwinMessage } from "./twin-message.js";

/** An operator's change committed with a group (see `TwinHost.commitOperation`). */
export interface GroupOperation {
  /** The partitions its writes change. */
  readonly partitions: ReadonlySet<PartitionId>;
  /** The durable copies its answer waits for. */
  readonly copies: number;
  /** Set when one of its partitions was withdrawn from the group: its writes there are not made. */
  withdrawn: boolean;
}

/**
 * The effects of a group of turns, across many twins, written as one RocksDB batch. Each
 * touched twin's latest record is added when the group closes, so a twin that ran many turns
 * in the group is written once.
 */
export class CommitGroup {
  readonly twins = new Set<Activation>();
  readonly ops: BatchOp[] = [];
  /** Messages answered when the group is durable, their outcomes and their twins (parallel arrays: no object per ack). */
  readonly ackMessages: TwinMessage[] = [];
  readonly ackOutcomes: TurnOutcome[] = [];
  readonly ackTwins: Activation[] = [];
  /** The key of the dead letter each failed outbox delivery of this group records, by message. */
  deadLetterKeys: Map<TwinMessage, string> | undefined;
  /**
   * Keys of the twins whose records answered a duplicate in this group: those answers say the
   * first attempt is kept, so a replication stage holds them until the records are on as many
   * copies as the group asks for.
   */
  readonly duplicateKeys: string[] = [];
  readonly alertChanges: AlertChange[] = [];
  readonly outbox: OutboxEntry[] = [];
  /** True when it writes held messages again (see {@link HeldMessages}): it asks for the copies messages need. */
  rewritesHeldMessages = false;
  /**
   * In a cluster, the outbox deliveries its turns applied (or found applied before): their
   * entries are deleted in a later commit, once this group has the copies messages need.
   */
  deliveries: Set<TwinMessage> | undefined;
  /**
   * Callbacks of writes that are no turn's (a message another node applied: its outbox delete;
   * an operator's change), which go into the group so they are shipped to the replicas like any
   * other. Each is called once the group is done with: `written` when it was written here, with
   * the durable copies its writes reached (this node's included) and, short of the copies it
   * asked for, the replication stage's reason; `false` and 0 when its write failed or it was
   * abandoned unwritten.
   */
  onDone: ((written: boolean, copies: number, shortfall?: string) => void)[] | undefined;
  /** Operators' changes in it, so a withdrawal can tell them and the copies asked are recounted with them. */
  operations: GroupOperation[] | undefined;
  /** Timer index keys whose turn is in this group (released from in-flight after the write). */
  readonly timersDone: string[] = [];
  /** Durable copies (this node's included) its answers wait for: the most any of them asked. */
  copies = 1;
  /** The copies its answers ask for, one bit each (bit c: an answer asks for c copies). */
  copiesAsked = 0;
  /** Earliest timer due time set in this group. */
  earliestTimerMs = Number.POSITIVE_INFINITY;
  events = 0;
  /**
   * Traced turns in this group (their spans) and the batches they served, both only with tracing
   * on and a sampled batch: the commit span is the first turn's child and links to every batch.
   */
  turnTraces: TraceRef[] | undefined;
  batchTraces: Set<TraceRef> | undefined;
  /** The commit span, once the group is sealed (the parent of its replication hop). */
  trace: TraceRef | undefined;
  /** How long its local RocksDB write took, in ms, once written (set by the pipeline). */
  writeMs = 0;

  /** Records a traced turn whose effects or answer are in this group. */
  traced(turn: TraceRef, batch: TraceRef): void {
    (this.turnTraces ??= []).push(turn);
    (this.batchTraces ??= new Set()).add(batch);
  }

  /**
   * Twins whose turns' writes were taken out of this group by {@link withdraw}: their working
   * records hold those turns, which the disk never will, so they reload once it is answered.
   */
  withdrawn: Activation[] | undefined;

  /**
   * Takes every turn of `partition`'s twins out of this group before it is written: its writes,
   * alert changes and outbox messages, and the sender's outbox entry it delivered. Those turns
   * ran as the partition's owner, but this node no longer writes it (another node took it after
   * they finished, before the group was sealed), so nothing of them may land outside that
   * owner's history; they are answered `NOT_OWNER` (retryable: a retry goes to the new owner, a
   * delivery stays in its sender's outbox), and the group's other turns are answered as usual.
   */
  withdraw(partition: PartitionId, keys: Keys, partitioning: Partitioning): void {
    const inPartition = (key: string) => Keys.partitionOfKey(key, partitioning) === partition;
    const spent = new Set<string>();
    for (let i = 0; i < this.ackTwins.length; i++) {
      const act = this.ackTwins[i] as Activation;
      if (!inPartition(act.key)) continue;
      this.ackOutcomes[i] = {
        status: "rejected",
        reason: "NOT_OWNER",
        message: `${act.entry.kind}/${act.id} moved to another node while this turn ran; nothing of it was written here; retry (with the same seq), and it goes to the new owner`,
        retryable: true,
      };
      const msg = this.ackMessages[i] as TwinMessage;
      if (msg.type !== "message" || msg.outbox === undefined) continue;
      // Its sender's outbox entry is deleted and its dead letter recorded in the sender's partition.
      spent.add(keys.outbox(msg.outbox.partition, msg.outbox.seq));
      const deadLetter = this.deadLetterKeys?.get(msg);
      if (deadLetter !== undefined) spent.add(deadLetter);
    }
    keep(this.ops, (op) => !inPartition(op.key) && !spent.has(op.key));
    keep(this.duplicateKeys, (key) => !inPartition(key));
    keep(this.alertChanges, (change) => change.partition !== partition);
    keep(this.outbox, (entry) => entry.partition !== partition);
    for (const act of this.twins) if (inPartition(act.key)) (this.withdrawn ??= []).push(act);
    for (const op of this.operations ?? []) if (op.partitions.has(partition)) op.withdrawn = true;
    // A refusal waits for no copies: the group waits for what its other answers and operations ask.
    this.copies = 1;
    this.copiesAsked = 0;
    for (let i = 0; i < this.ackMessages.length; i++)
      if ((this.ackOutcomes[i] as TurnOutcome).status !== "rejected") this.asks((this.ackMessages[i] as TwinMessage).sink.copies ?? 1);
    for (const op of this.operations ?? []) if (!op.withdrawn) this.asks(op.copies);
  }

  /** One of its answers waits for `copies` durable copies (this node's included). */
  asks(copies: number): void {
    if (copies > this.copies) this.copies = copies;
    this.copiesAsked |= 1 << Math.min(copies, 30);
  }

  /** True when nothing in it waits for its commit (a group of callbacks alone is not empty: they must be answered). */
  get empty(): boolean {
    return this.ackMessages.length === 0 && this.ops.length === 0 && this.twins.size === 0 && this.onDone === undefined;
  }
}

/** Removes the items of `list` that fail `test`, in place. */
function keep<T>(list: T[], test: (item: T) => boolean): void {
  let kept = 0;
  for (const item of list) if (test(item)) list[kept++] = item;
  list.length = kept;
}
