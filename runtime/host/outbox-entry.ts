import type { PartitionId } from "../partition/partitioning.js";
import type { JsonObject } from "../util/json.js";

/** A message waiting in the durable outbox for delivery to another twin. */
export interface OutboxEntry {
  /** The sender's partition: the outbox of that partition holds it, numbered there. */
  readonly partition: PartitionId;
  /** Its number in its partition's outbox (1, 2, 3, …; never reused in that partition). */
  readonly seq: number;
  readonly fromKind: string;
  readonly fromId: string;
  readonly toKind: string;
  readonly toId: string;
  readonly message: JsonObject;
}

/**
 * The id a receiving twin remembers a delivered outbox message by (its inbox marks):
 * `o:<partition>:<seq>`. It names no node, so a message that a new owner of the sender's
 * partition delivers again after a failover is recognised as a repeat.
 */
export function outboxMessageId(entry: Pick<OutboxEntry, "partition" | "seq">): string {
  return `o:${entry.partition}:${entry.seq}`;
}
