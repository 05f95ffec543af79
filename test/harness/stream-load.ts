import assert from "node:assert/strict";
import type { PublishStreamSession, TwinmeshClient } from "../../client/index.js";
import { type EventResult, EventStatus } from "../../proto/gen/twinmesh/v1/telemetry_pb.js";
import { type EventInit, ev } from "./events.js";

/** Options of a {@link StreamLoad}. */
export interface StreamLoadOptions {
  /** The twin kind every event goes to. @defaultValue "counter" */
  readonly kind?: string;
  /** Sources (twins) `s-0` … `s-<n-1>`. @defaultValue 10 */
  readonly sources?: number;
  /** Events per source in each batch. @defaultValue 5 */
  readonly perSource?: number;
  /** Batches sent and not yet answered. @defaultValue 8 */
  readonly inflight?: number;
}

/**
 * A sustained PublishStream load on one stream: batches of `perSource` events for every source,
 * each source's seqs 1, 2, 3, … in order, up to `inflight` batches unanswered. Records every
 * event sent and every answer, so a test can tell acknowledged events from the rest after a
 * crash. Stops on {@link stop}, at the first retryable rejection (the node is going away), or
 * when the stream fails.
 */
export class StreamLoad {
  /** Source ids. */
  readonly sources: string[];
  /** Highest seq sent, per source. */
  readonly sent = new Map<string, number>();
  /** Seqs answered ACCEPTED or DUPLICATE, per source. */
  readonly acked = new Map<string, Set<number>>();
  /** Answers by outcome: `ACCEPTED`, `DUPLICATE`, or the rejection reason. */
  readonly answers = new Map<string, number>();
  /** Why the load stopped. */
  stoppedBy: "stop()" | "retryable rejection" | "stream failed" | undefined;
  /** The error the stream failed with, if it did. */
  failure: Error | undefined;
  private readonly kind: string;
  private readonly perSource: number;
  private readonly inflight: number;
  private stopping = false;

  constructor(
    private readonly client: TwinmeshClient,
    options: StreamLoadOptions = {},
  ) {
    this.kind = options.kind ?? "counter";
    this.perSource = options.perSource ?? 5;
    this.inflight = options.inflight ?? 8;
    this.sources = Array.from({ length: options.sources ?? 10 }, (_, i) => `s-${i}`);
    for (const s of this.sources) {
      this.sent.set(s, 0);
      this.acked.set(s, new Set());
    }
  }

  /** Events answered ACCEPTED or DUPLICATE so far. */
  get ackedCount(): number {
    let n = 0;
    for (const set of this.acked.values()) n += set.size;
    return n;
  }

  /** Makes {@link run} send no more batches. */
  stop(): void {
    this.stopping = true;
    this.stoppedBy ??= "stop()";
  }

  /**
   * Sends batches until stopped, then waits for the answers in flight and half-closes the
   * stream (when it is still open). Never rejects: a failed stream ends the run.
   */
  async run(): Promise<void> {
    const session = this.client.openPublishStream();
    const pending = new Set<Promise<void>>();
    let batch = 0;
    while (!this.stopping) {
      if (pending.size >= this.inflight) {
        await Promise.race(pending);
        continue;
      }
      const events: EventInit[] = [];
      for (const source of this.sources) {
        for (let i = 0; i < this.perSource; i++) {
          const seq = (this.sent.get(source) ?? 0) + 1;
          this.sent.set(source, seq);
          events.push(ev(this.kind, source, seq));
        }
      }
      const p: Promise<void> = this.send(session, `b-${batch++}`, events).finally(() => pending.delete(p));
      pending.add(p);
    }
    await Promise.all(pending);
    if (this.failure === undefined) await session.end().catch(() => undefined);
    else session.cancel();
  }

  private async send(session: PublishStreamSession, batchId: string, events: EventInit[]): Promise<void> {
    let results: EventResult[];
    try {
      results = (await session.send(batchId, events)).results;
    } catch (err) {
      this.failure ??= err as Error;
      this.stoppedBy ??= "stream failed";
      this.stopping = true;
      return;
    }
    results.forEach((r, i) => {
      const e = events[i] as EventInit;
      const outcome = r.status === EventStatus.ACCEPTED ? "ACCEPTED" : r.status === EventStatus.DUPLICATE ? "DUPLICATE" : r.reason;
      this.answers.set(outcome, (this.answers.get(outcome) ?? 0) + 1);
      if (r.status === EventStatus.ACCEPTED || r.status === EventStatus.DUPLICATE) this.acked.get(e.sourceId as string)?.add(Number(e.seq));
      else if (r.retryable) {
        this.stoppedBy ??= "retryable rejection";
        this.stopping = true;
      }
    });
  }

  /** Per source, the seqs sent but not acknowledged, ascending. */
  unacknowledged(): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const source of this.sources) {
      const acked = this.acked.get(source) as Set<number>;
      const missing: number[] = [];
      for (let seq = 1; seq <= (this.sent.get(source) ?? 0); seq++) if (!acked.has(seq)) missing.push(seq);
      out.set(source, missing);
    }
    return out;
  }
}

/** What {@link assertRecovered} found. */
export interface Recovery {
  /** Events acknowledged before the node went away. */
  readonly acknowledged: number;
  /** Unacknowledged events that had been applied anyway (their retry was DUPLICATE). */
  readonly appliedUnacknowledged: number;
  /** Unacknowledged events that had not been applied (their retry was ACCEPTED). */
  readonly lost: number;
}

/**
 * Checks a restarted node against what a {@link StreamLoad} recorded, for counter twins:
 *
 * 1. Every acknowledged event's effect is there: per source, the applied events are exactly seqs
 *    1..lastSeq (count === lastSeq: nothing applied twice, no hole), and lastSeq is at least the
 *    highest acknowledged seq.
 * 2. Retrying every unacknowledged event (in seq order) answers DUPLICATE for those already
 *    applied (seq <= lastSeq) and ACCEPTED for the rest, and afterwards each source's count is
 *    the number of distinct events sent: each applied exactly once.
 */
export async function assertRecovered(client: TwinmeshClient, load: StreamLoad, kind = "counter"): Promise<Recovery> {
  let acknowledged = 0;
  let appliedUnacknowledged = 0;
  let lost = 0;
  const unacknowledged = load.unacknowledged();
  for (const source of load.sources) {
    const acked = load.acked.get(source) as Set<number>;
    acknowledged += acked.size;
    const { twin } = await client.getTwin({ kind, id: source }).catch(() => ({ twin: undefined }));
    const state = (twin?.state ?? { count: 0, lastSeq: 0 }) as { count: number; lastSeq: number };
    assert.equal(state.count, state.lastSeq, `${source}: applied events are not exactly seqs 1..${state.lastSeq}`);
    const highestAcked = Math.max(0, ...acked);
    assert.ok(state.lastSeq >= highestAcked, `${source}: seq ${highestAcked} was acknowledged but only 1..${state.lastSeq} survived`);
    const retry = unacknowledged.get(source) as number[];
    if (retry.length > 0) {
      const res = await client.publish(retry.map((seq) => ev(kind, source, seq)));
      const got = res.results.map((r) =>
        r.status === EventStatus.ACCEPTED ? "ACCEPTED" : r.status === EventStatus.DUPLICATE ? "DUPLICATE" : `REJECTED ${r.reason}`,
      );
      const want = retry.map((seq) => (seq <= state.lastSeq ? "DUPLICATE" : "ACCEPTED"));
      assert.deepEqual(got, want, `${source}: retries of seqs ${retry[0]}..${retry[retry.length - 1]} after recovery to ${state.lastSeq}`);
      for (const seq of retry) {
        if (seq <= state.lastSeq) appliedUnacknowledged++;
        else lost++;
      }
    }
    const after = (await client.getTwin({ kind, id: source })).twin?.state as { count: number; lastSeq: number };
    const sent = load.sent.get(source) ?? 0;
    assert.deepEqual({ count: after.count, lastSeq: after.lastSeq }, { count: sent, lastSeq: sent }, `${source}: after the retries`);
  }
  return { acknowledged, appliedUnacknowledged, lost };
}
