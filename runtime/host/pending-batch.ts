import type { OutcomeSink, TurnOutcome } from "./twin-message.js";

/** Collects the outcomes of one request's events and resolves when all are known. */
export class PendingBatch implements OutcomeSink {
  readonly results: TurnOutcome[];
  readonly done: Promise<TurnOutcome[]>;
  private remaining: number;
  private resolveDone!: (results: TurnOutcome[]) => void;

  /**
   * @param size - how many outcomes to wait for
   * @param copies - durable copies (the owner's included) each answer waits for
   */
  constructor(
    size: number,
    readonly copies = 1,
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
    if (--this.remaining === 0) this.resolveDone(this.results);
  }
}
