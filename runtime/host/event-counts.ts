import type { TurnOutcome } from "./twin-message.js";

/** The kind label of events whose kind this node does not run: one series, however many names clients send. */
export const OTHER_KIND = "_other";

/** Outcomes of one kind's events, as they were answered. */
export class KindEventCounts {
  accepted = 0;
  duplicate = 0;
  /** Rejections by reason (UPPER_SNAKE, a closed set in code). */
  readonly rejected = new Map<string, number>();

  constructor(readonly kind: string) {}
}

/**
 * Counts telemetry events by kind and outcome, at the moment each is answered, so a count is
 * exactly what clients were told. Plain numbers on the hot path (one map lookup and one
 * increment per event, no allocation once a kind and reason have been seen); the metrics
 * exporter reads them as observable counters. Kinds are those registered with
 * {@link register}; any other kind counts under {@link OTHER_KIND}, so a client sending made-up
 * kinds cannot grow the number of series.
 */
export class EventCounts {
  private readonly byKind = new Map<string, KindEventCounts>();
  private readonly other = new KindEventCounts(OTHER_KIND);

  /** Gives `kind` its own counts. Idempotent. */
  register(kind: string): void {
    if (!this.byKind.has(kind)) this.byKind.set(kind, new KindEventCounts(kind));
  }

  /** Counts one answered event of `kind`. */
  count(kind: string, outcome: TurnOutcome): void {
    const counts = this.byKind.get(kind) ?? this.other;
    if (outcome.status === "accepted") counts.accepted++;
    else if (outcome.status === "duplicate") counts.duplicate++;
    else {
      const reason = outcome.reason ?? "UNKNOWN";
      counts.rejected.set(reason, (counts.rejected.get(reason) ?? 0) + 1);
    }
  }

  /** Every kind's counts (registered kinds, then the others' bucket). */
  *kinds(): IterableIterator<KindEventCounts> {
    yield* this.byKind.values();
    yield this.other;
  }
}
