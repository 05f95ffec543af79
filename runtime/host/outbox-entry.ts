import type { JsonObject } from "../util/json.js";

/** A message waiting in the durable outbox for delivery to another twin. */
export interface OutboxEntry {
  readonly seq: number;
  readonly fromKind: string;
  readonly fromId: string;
  readonly toKind: string;
  readonly toId: string;
  readonly message: JsonObject;
}
