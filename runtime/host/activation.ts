import type { Logger } from "pino";
import type { JsonObject } from "../util/json.js";
import { Queue } from "../util/queue.js";
import type { ControlMessage, TwinMessage } from "./twin-message.js";
import type { TwinRecordData } from "./twin-record.js";
import type { KindEntry } from "./twin-registry.js";

/**
 * A twin in memory: its working record and state, and (made lazily) its mailbox and logger.
 * An idle activation is just this record plus the state, so memory per active twin stays small.
 */
export class Activation {
  /** Working record; `undefined` until loaded. */
  record: TwinRecordData | undefined;
  /** Working state (owned by the handler during a turn). */
  state: JsonObject | undefined;
  /** JSON of `state` after the last successful turn: the rollback point and what gets written. */
  stateJson: string | undefined;
  /** True while the record is being read from the store. */
  loading = true;
  /** True while a turn runs or the mailbox is being drained. */
  running = false;
  /** Commit groups (open or being written) holding this twin's changes. */
  uncommitted = 0;
  /** Neighbours in the host's least-recently-used list. */
  lruPrev: Activation | undefined;
  lruNext: Activation | undefined;
  /** Real time of last use, for the idle timeout. */
  lastUsedMs = 0;
  /** Token bucket of the per-twin event rate limit (real time, ms). */
  tokens = -1;
  tokensAtMs = 0;
  /** True once evicted; a late completion must not touch the host's maps. */
  evicted = false;
  private user: Queue<TwinMessage> | undefined;
  private control: Queue<ControlMessage> | undefined;
  private logger: Logger | undefined;

  constructor(
    readonly entry: KindEntry,
    readonly id: string,
    readonly key: string,
  ) {}

  /** Messages waiting (both lanes). */
  get queued(): number {
    return (this.user?.length ?? 0) + (this.control?.length ?? 0);
  }

  /** Appends to the user lane. The caller checks the mailbox bound first. */
  post(msg: TwinMessage): void {
    (this.user ??= new Queue()).push(msg);
  }

  /** Appends to the control lane, which is drained first so a busy twin can still be managed. */
  postControl(msg: ControlMessage): void {
    (this.control ??= new Queue()).push(msg);
  }

  /** The next message, control lane first. */
  next(): TwinMessage | undefined {
    const msg = (this.control !== undefined && this.control.length > 0 ? this.control.shift() : undefined) ?? this.user?.shift();
    if (this.user !== undefined && this.user.length === 0) this.user = undefined;
    if (this.control !== undefined && this.control.length === 0) this.control = undefined;
    return msg;
  }

  /** Removes every queued message (used when the twin fails to load or its commit failed). */
  takeAll(): TwinMessage[] {
    const all: TwinMessage[] = [...(this.control?.drain() ?? []), ...(this.user?.drain() ?? [])];
    this.user = undefined;
    this.control = undefined;
    return all;
  }

  /** The twin's logger, made on first use. */
  log(parent: Logger): Logger {
    return (this.logger ??= parent.child({ kind: this.entry.kind, twin: this.id }));
  }
}
