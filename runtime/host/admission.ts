import type { PartitionId } from "../partition/partitioning.js";
import type { Activation } from "./activation.js";
import type { ResolvedHostOptions } from "./host-options.js";
import type { OutboxEntry } from "./outbox-entry.js";
import type { TurnOutcome } from "./twin-message.js";

/**
 * Decides whether this node may run a twin's turns now. A single node owns every twin; in a
 * cluster, the node that owns the twin's partition at the current epoch does (design §5), and
 * the others refuse with a retryable outcome (`NOT_OWNER`, `STALE_EPOCH`, …) so the router sends
 * the work where it belongs. Checked for every event and operation before it reaches a mailbox.
 */
export interface OwnershipGate {
  /** Undefined when this node runs `kind`/`id` now; otherwise the retryable refusal. */
  refusal(kind: string, id: string): TurnOutcome | undefined;
  /**
   * True when this node owns partition `p` now: its timers fire here, its outbox is delivered
   * from here, and its alerts are listed and watched here. Called often: keep it cheap.
   * Absent: every partition.
   */
  owns?(p: PartitionId): boolean;
}

/**
 * Delivers a twin-to-twin message whose target another node owns (in a cluster). Resolves once
 * the owner has applied it (or recognised it as a redelivery); rejects with a TwinmeshError whose
 * `retryable` says whether to try again later or to give the message up to the dead letters.
 */
export interface RemoteMessages {
  send(entry: OutboxEntry): Promise<void>;
}

/** What {@link Admission} needs of its host. */
export interface AdmissionConfig {
  readonly options: ResolvedHostOptions;
  /** True once the host is shutting down. */
  readonly closing: () => boolean;
  /** The error that made the disk read-only, if it is. */
  readonly readOnly: () => Error | undefined;
  readonly gate?: OwnershipGate;
}

/**
 * The door of the host: every event, message and operation passes it before it is queued. It
 * refuses, with a retryable outcome, work this node must not take now (shutting down, disk
 * read-only, twin owned elsewhere) or cannot take yet (too many events in flight, a full
 * mailbox, a twin over its event rate), and counts the telemetry in flight.
 */
export class Admission {
  /** Telemetry events admitted and not yet answered. */
  private inflightEvents = 0;

  constructor(private readonly config: AdmissionConfig) {}

  /** Events admitted and not yet answered. */
  get inflight(): number {
    return this.inflightEvents;
  }

  /**
   * Why `count` new messages for `kind`/`id` (in memory as `act`, if it is) cannot be taken now,
   * or undefined.
   */
  refusal(kind: string, id: string, act: Activation | undefined, count: number): TurnOutcome | undefined {
    const { options } = this.config;
    if (this.config.closing()) {
      return { status: "rejected", reason: "SHUTTING_DOWN", message: "the node is shutting down; retry on another node or after it restarts", retryable: true };
    }
    const readOnly = this.config.readOnly();
    if (readOnly !== undefined) {
      return {
        status: "rejected",
        reason: "NOT_SERVING",
        message: `the node cannot write to its disk (${readOnly.message}); retry with backoff`,
        retryable: true,
      };
    }
    const notOwner = this.config.gate?.refusal(kind, id);
    if (notOwner !== undefined) return notOwner;
    if (this.inflightEvents + count > options.maxInflightEvents) {
      return {
        status: "rejected",
        reason: "INGEST_QUEUE_FULL",
        message: `the node has ${this.inflightEvents} events in flight (limit ${options.maxInflightEvents}); retry with backoff`,
        retryable: true,
      };
    }
    if (act !== undefined && act.queued >= options.mailboxDepth) {
      return {
        status: "rejected",
        reason: "MAILBOX_FULL",
        message: `twin ${act.entry.kind}/${act.id} has ${act.queued} messages queued (limit ${options.mailboxDepth}); retry with backoff`,
        retryable: true,
      };
    }
    return undefined;
  }

  /**
   * Takes one event from the twin's token bucket (refilled at `maxEventsPerTwinPerSecond`, burst
   * of one second); false when the twin is over its rate or the limit is off (0: always true).
   */
  takeToken(act: Activation): boolean {
    const rate = this.config.options.maxEventsPerTwinPerSecond;
    if (rate <= 0) return true;
    const now = performance.now();
    act.tokens = act.tokens < 0 ? rate : Math.min(rate, act.tokens + ((now - act.tokensAtMs) * rate) / 1000);
    act.tokensAtMs = now;
    if (act.tokens < 1) return false;
    act.tokens -= 1;
    return true;
  }

  /** The ownership gate's refusal of `kind`/`id` alone (no load checks), or undefined when this node runs it. */
  ownerRefusal(kind: string, id: string): TurnOutcome | undefined {
    return this.config.gate?.refusal(kind, id);
  }

  /** True when this node owns partition `p` (always, without an ownership gate). */
  owns(p: PartitionId): boolean {
    return this.config.gate?.owns?.(p) ?? true;
  }

  /** A telemetry event was admitted. */
  admitted(): void {
    this.inflightEvents++;
  }

  /** An admitted telemetry event was answered. */
  answered(): void {
    this.inflightEvents--;
  }
}
