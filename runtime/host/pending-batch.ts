import type { TraceRef } from "../tracing.js";
import type { EventCounts } from "./event-counts.js";
import type { OutcomeSink, TurnOutcome } from "./twin-message.js";

/** The kinds of a batch's events and where their outcomes are counted. */
export interface BatchTally {
  readonly kinds: readonly { readonly kind: string }[];
  readonly counts: EventCounts;
}

/** Collects the outcomes of one request's events and resolves when all are known. */
export class PendingBatch implements OutcomeSink {
  readonly results: TurnOutcome[];
  readonly done: Promise<TurnOutcome[]>;
  /** The sampled context its turns are traced under (set at admission); undefined: not traced. */
  trace: TraceRef | undefined;
  private remaining: number;
  private resolveDone!: (results: TurnOutcome[]) => void;

  /**
   * @param size - how many outcomes to wait for
   * @param copies - durable copies (the owner's included) each answer waits for
   * @param tally - counts each event's outcome by kind as it is answered (telemetry batches)
   */
  constructor(
    size: number,
    readonly copies = 1,
    private readonly tally?: BatchTally,
  ) {
    this.results = new Array<TurnOutcome>(size);
    this.remaining = size;
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    if (size === 0) this.resolveDone(this.results);
  }

  complete(index: number, outcome: TurnOutcome): void {
    if (this.results[index] !== undefined) return;
    this.results[index] = outcome;
    if (this.tally !== undefined) this.tally.counts.count((this.tally.kinds[index] as { kind: string }).kind, outcome);
    if (--this.remaining === 0) this.resolveDone(this.results);
  }
}
