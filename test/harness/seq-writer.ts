import { type Consistency, EventStatus, type TwinmeshClient, TwinmeshClientError } from "../../client/index.js";
import { type EventInit, ev } from "./events.js";

/** Options of a {@link SeqWriter}. */
export interface SeqWriterOptions {
  /** The twin kind of every event. */
  readonly kind: string;
  /** One source (twin) per id; each gets seqs 1, 2, 3, … in order. */
  readonly ids: readonly string[];
  /** The clients to pick from at random for each event, asked again before every round (the live nodes). */
  readonly clients: () => readonly TwinmeshClient[];
  /** Sent with every request. @defaultValue unset (the server's default) */
  readonly consistency?: Consistency;
  /** The event's channels. @defaultValue `{ v: seq }`, so a counter's `total` is the sum of its seqs */
  readonly channels?: (seq: number) => Record<string, number>;
  /** Wait before a round that retries something. @defaultValue 100 */
  readonly retryDelayMs?: number;
  /** Attempts per event (the first and the retries) before the writer gives up. @defaultValue 60 */
  readonly maxAttempts?: number;
  /** Stop at the first request that fails (the node went away) instead of retrying it. @defaultValue false */
  readonly stopOnFailedCall?: boolean;
}

/** How {@link SeqWriter.run} ends: at a seq, after a time (then it only finishes what is unanswered), or on {@link SeqWriter.stop}. */
export interface SeqWriterRun {
  /** Stop once every source has this seq acknowledged. */
  readonly untilSeq?: number;
  /** Send new seqs for this long, then only retry the unacknowledged ones. */
  readonly forMs?: number;
}

/**
 * A client that publishes seqs 1, 2, 3, … for each of a set of sources, one event per source in
 * flight, each event to a node picked at random, and retries an event that got no answer (the
 * call failed, whatever its status) or a retryable rejection with the same seq until it is ACCEPTED or DUPLICATE
 * (bounded by `maxAttempts`). Because a source's next seq goes out only after the previous one
 * was acknowledged, every acknowledged seq of a source is 1..{@link acked}: a counter twin that
 * applied each exactly once has `count === lastSeq === acked` and `total` = the sum of 1..acked.
 *
 * It gives up ({@link failure}) on a non-retryable rejection, or when an event ran out of attempts.
 */
export class SeqWriter {
  /** Highest seq acknowledged (ACCEPTED or DUPLICATE), per source. */
  readonly acked = new Map<string, number>();
  /** Highest seq sent at least once, per source. */
  readonly sent = new Map<string, number>();
  /** Answers by outcome: `ACCEPTED`, `DUPLICATE`, the rejection reason, or `call failed: <code>`. */
  readonly answers = new Map<string, number>();
  /** Why the writer gave up, if it did. */
  failure: Error | undefined;
  /** Requests sent and not yet answered. */
  inFlight = 0;
  private readonly attempts = new Map<string, number>();
  private readonly lastAnswer = new Map<string, string>();
  private stopping = false;

  constructor(private readonly options: SeqWriterOptions) {
    for (const id of options.ids) {
      this.acked.set(id, 0);
      this.sent.set(id, 0);
    }
  }

  /** Events acknowledged so far. */
  get ackedCount(): number {
    let n = 0;
    for (const seq of this.acked.values()) n += seq;
    return n;
  }

  /** The answers so far, readable. */
  describe(): string {
    return JSON.stringify(Object.fromEntries(this.answers));
  }

  /** Makes {@link run} end after the round in flight. */
  stop(): void {
    this.stopping = true;
  }

  /** Runs rounds until the goal, {@link stop} or a failure. Never rejects: see {@link failure}. */
  async run(goal: SeqWriterRun = {}): Promise<void> {
    const sendUntil = goal.forMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + goal.forMs;
    while (!this.stopping && this.failure === undefined) {
      const sendNew = Date.now() < sendUntil;
      const batch: { id: string; seq: number }[] = [];
      for (const id of this.options.ids) {
        const acked = this.acked.get(id) ?? 0;
        const sent = this.sent.get(id) ?? 0;
        if (sent > acked) batch.push({ id, seq: acked + 1 });
        else if (sendNew && (goal.untilSeq === undefined || acked < goal.untilSeq)) batch.push({ id, seq: acked + 1 });
      }
      if (batch.length === 0) return;
      const retrying = batch.some(({ id, seq }) => (this.sent.get(id) ?? 0) >= seq);
      if (retrying) await new Promise((resolve) => setTimeout(resolve, this.options.retryDelayMs ?? 100));
      await this.round(batch);
    }
  }

  private async round(batch: readonly { id: string; seq: number }[]): Promise<void> {
    const clients = this.options.clients();
    if (clients.length === 0) {
      this.failure = new Error("no live node to send to");
      return;
    }
    const byClient = new Map<TwinmeshClient, { id: string; seq: number }[]>();
    for (const item of batch) {
      const attempts = (this.attempts.get(`${item.id}#${item.seq}`) ?? 0) + 1;
      if (attempts > (this.options.maxAttempts ?? 60)) {
        this.failure = new Error(
          `${this.options.kind}/${item.id} seq ${item.seq} was not acknowledged after ${attempts - 1} attempts; its last answer: ${this.lastAnswer.get(item.id)}; all answers: ${this.describe()}`,
        );
        return;
      }
      this.attempts.set(`${item.id}#${item.seq}`, attempts);
      this.sent.set(item.id, Math.max(this.sent.get(item.id) ?? 0, item.seq));
      const client = clients[Math.floor(Math.random() * clients.length)] as TwinmeshClient;
      let group = byClient.get(client);
      if (group === undefined) {
        group = [];
        byClient.set(client, group);
      }
      group.push(item);
    }
    await Promise.all([...byClient].map(([client, group]) => this.publish(client, group)));
  }

  private async publish(client: TwinmeshClient, group: readonly { id: string; seq: number }[]): Promise<void> {
    const channels = this.options.channels ?? ((seq: number) => ({ v: seq }));
    const events: EventInit[] = group.map(({ id, seq }) => ev(this.options.kind, id, seq, channels(seq)));
    this.inFlight++;
    try {
      const { results } = await client.publish(events, this.options.consistency);
      results.forEach((r, i) => {
        const { id, seq } = group[i] as { id: string; seq: number };
        const outcome = r.status === EventStatus.ACCEPTED ? "ACCEPTED" : r.status === EventStatus.DUPLICATE ? "DUPLICATE" : r.reason;
        this.count(outcome);
        this.lastAnswer.set(id, r.status === EventStatus.REJECTED ? `REJECTED ${r.reason} (retryable: ${r.retryable}): ${r.message}` : outcome);
        if (r.status === EventStatus.ACCEPTED || r.status === EventStatus.DUPLICATE) this.acked.set(id, Math.max(this.acked.get(id) ?? 0, seq));
        else if (!r.retryable) {
          this.failure ??= new Error(`${this.options.kind}/${id} seq ${seq} through ${client.address} was rejected ${r.reason}, not retryable: ${r.message}`);
        }
      });
    } catch (err) {
      const code = err instanceof TwinmeshClientError ? err.code : "?";
      this.count(`call failed: ${code}`);
      for (const { id } of group) this.lastAnswer.set(id, `call to ${client.address} failed: ${(err as Error).message}`);
      // No answer: the events may or may not have been applied; a retry with the same seqs tells.
      if (this.options.stopOnFailedCall === true) this.stopping = true;
    } finally {
      this.inFlight--;
    }
  }

  private count(outcome: string): void {
    this.answers.set(outcome, (this.answers.get(outcome) ?? 0) + 1);
  }
}
