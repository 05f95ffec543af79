import type { Logger } from "pino";
import type { Alert } from "../alerts/alert.js";
import type { Keys } from "../store/keys.js";
import type { BatchOp } from "../store/rocks-store.js";
import type { Activation } from "./activation.js";
import type { ActivationDirectory } from "./activation-directory.js";
import type { Admission } from "./admission.js";
import type { CommitGroup } from "./commit-group.js";
import type { DiskHealth } from "./disk-health.js";
import type { HeldMessages } from "./held-messages.js";
import type { HostMetrics } from "./host-metrics.js";
import type { OutboxDispatcher } from "./outbox-dispatcher.js";
import type { OutboxEntry } from "./outbox-entry.js";
import type { TimerService } from "./timer-service.js";
import type { TurnEffects } from "./turn-effects.js";
import type { TurnOutcome, TwinMessage } from "./twin-message.js";

/** What a group's writes that are no turn's are told once it is done with (see `CommitGroup.onDone`). */
type DoneCallback = NonNullable<CommitGroup["onDone"]>[number];

/** Hooks called after a commit, in commit order. They must not throw or block. */
export interface HostObserver {
  alertChanged?(alert: Alert): void;
  messageSent?(entry: OutboxEntry): void;
}

/**
 * The stage between a group's local write and its acknowledgement. A cluster plugs in here to
 * ship each committed group to the replicas of its partitions and hold the answers until the
 * copies the callers asked for are durable (design §5); a single node has none.
 */
export interface ReplicationStage {
  /** Durable copies (this node's included) a single-twin operation's answer waits for. @defaultValue 1 */
  readonly operationCopies?: number;
  /**
   * Durable copies (this node's included) a write must reach before the messages it sends
   * leave: a group that sends messages asks for them, whatever its answers asked, and its
   * messages are held until its writes have them (see {@link HeldMessages}). @defaultValue 1
   */
  readonly messageCopies?: number;
  /**
   * Called once per group just before its local write, in commit order, when the group is
   * complete: the stage may add writes (its own bookkeeping) to the group's batch. Must not throw.
   */
  prepare?(group: CommitGroup): void;
  /** The write of a prepared group failed: whatever `prepare` numbered for it is taken back. Must not throw. */
  aborted?(group: CommitGroup): void;
  /**
   * Called once per locally written group, in commit order. Returns undefined when the group
   * needs no other copy; otherwise a promise that resolves once `group.copies` copies (this
   * node's included) are durable, or rejects with a {@link StageFailure} when they cannot be
   * (saying how many were had, for the answers that asked for fewer).
   */
  replicate(group: CommitGroup): Promise<void> | undefined;
}

/** Why a group written here could not be acknowledged at the consistency asked for. */
export interface StageFailure extends Error {
  /** A stable code, e.g. `NOT_ENOUGH_REPLICAS`. */
  readonly reason: string;
  /**
   * Durable copies (this node's included) that every write of the group did reach: its answers
   * that asked for no more are answered as committed, the others get the failure. Absent: every
   * answer gets it.
   */
  readonly copies?: number;
}

/** What {@link CommitCompletion} needs of its host. */
export interface CommitCompletionConfig {
  readonly log: Logger;
  readonly keys: Keys;
  readonly metrics: HostMetrics;
  readonly admission: Admission;
  readonly activations: ActivationDirectory;
  readonly timers: TimerService;
  readonly outbox: OutboxDispatcher;
  /** Where a group's messages go once it is acknowledged: to the dispatcher, or held until its writes are durable enough. */
  readonly messages: HeldMessages;
  readonly effects: TurnEffects;
  readonly disk: DiskHealth;
  readonly observer?: HostObserver;
  readonly replication?: ReplicationStage;
  /** Forgets a twin's working record, which holds turns the disk does not; work queued on it runs on a reload. */
  readonly reload: (act: Activation) => void;
  /** Adds writes that are no turn's to the open commit group; `done` once it is answered (`true`: written). */
  readonly commitWrites: (ops: readonly BatchOp[], done: (written: boolean) => void) => void;
  /** The host may have become idle. */
  readonly settled: () => void;
}

/**
 * Where every message ends: answered, and its trigger released (an event's admission, a timer's
 * index entry, an outbox entry). A turn's answer waits for its group, which passes ordered stages:
 * the local write (CommitPipeline), replication ({@link ReplicationStage}), then acknowledgement,
 * in commit order: answers are released, watchers and the outbox see the group's alert changes
 * and messages, timers are armed, and idle twins beyond `maxActive` are passivated.
 */
export class CommitCompletion {
  /** Groups written here and waiting for their replication stage, in commit order. */
  private waiting = 0;
  private tail: Promise<void> = Promise.resolve();

  constructor(private readonly config: CommitCompletionConfig) {}

  /** True when no written group waits for its replication stage. */
  get idle(): boolean {
    return this.waiting === 0;
  }

  /** Answers `msg`, a turn of `act`, with `outcome` once `group` is acknowledged. */
  ackAfterCommit(group: CommitGroup, act: Activation, msg: TwinMessage, outcome: TurnOutcome): void {
    group.ackMessages.push(msg);
    group.ackOutcomes.push(outcome);
    group.ackTwins.push(act);
    group.asks(msg.sink.copies ?? 1);
  }

  /** Answers `msg` now and releases what it held. */
  finish(msg: TwinMessage, outcome: TurnOutcome): void {
    const { admission, timers, outbox } = this.config;
    if (msg.type === "telemetry") admission.answered();
    // Whatever became of it (committed, failed, dropped with its twin), the timer or outbox
    // entry may be looked at again: a committed one is gone from the index, a failed one retries.
    else if (msg.type === "timer") timers.released(msg.indexKey);
    // A message answered without a commit (reloaded, write failed) is still in the outbox.
    else if (msg.type === "message" && msg.outbox !== undefined) outbox.released(msg.outbox, outcome.status === "rejected" && outcome.retryable === true);
    msg.sink.complete(msg.index, outcome);
  }

  /** The pipeline wrote `group` to this node's disk. */
  written(group: CommitGroup): void {
    const stage = this.config.replication?.replicate(group);
    if (stage === undefined && this.waiting === 0) {
      // Answered at once: a wait of 0, so the histogram counts every group a cluster node writes.
      if (this.config.replication !== undefined) this.config.metrics.timings?.replicated?.(0);
      this.acknowledge(group, undefined);
      return;
    }
    // Later groups wait for earlier ones: answers, watchers and the outbox see groups in order.
    this.waiting++;
    const writtenAt = performance.now();
    const settled = (stage ?? Promise.resolve()).then(
      () => undefined,
      // Whatever the stage rejected with is a failure, even a value that is no Error.
      (err: unknown): StageFailure => (err instanceof Error ? (err as StageFailure) : Object.assign(new Error(String(err)), { reason: "REPLICATION_FAILED" })),
    );
    this.tail = this.tail
      .then(() => settled)
      .then((failure) => {
        this.waiting--;
        this.config.metrics.timings?.replicated?.((performance.now() - writtenAt) / 1000);
        this.acknowledge(group, failure);
      });
  }

  /** The write of `groups` (the failed one and the open one on top of it) failed. */
  failed(groups: CommitGroup[], err: Error): void {
    for (const group of groups) this.config.replication?.aborted?.(group);
    const outcome: TurnOutcome = {
      status: "rejected",
      reason: "COMMIT_FAILED",
      message: `the node could not write to its disk (${err.message}); retry with the same seq (a DUPLICATE answer then means this write reached the disk after all)`,
      retryable: true,
    };
    this.config.disk.writeFailed(err);
    for (const group of groups) {
      for (const act of group.twins) {
        // Its in-memory state ran ahead of the disk: forget it, reload on next use.
        this.config.activations.evict(act);
        for (const msg of act.takeAll()) this.finish(msg, outcome);
      }
      for (const msg of group.ackMessages) this.finish(msg, outcome);
      for (const key of group.timersDone) this.config.timers.released(key);
      this.config.messages.forgetUnacknowledged(group);
      for (const done of group.onDone ?? []) done(false, 0);
    }
    this.config.metrics.commitFailures++;
    this.config.settled();
  }

  /**
   * Releases a group's answers and post-commit work. With a replication `failure`, the group is
   * written here but not on as many copies as some answers asked: those callers get a retryable
   * rejection (their retry is then answered DUPLICATE), the others their outcome; timers go on,
   * and outbox messages leave only once their writes reached `messageCopies`.
   */
  private acknowledge(group: CommitGroup, failure: StageFailure | undefined): void {
    const { observer, effects, timers, outbox, activations } = this.config;
    const callbacks = group.onDone ?? [];
    /** Callbacks told so far: those left are told in the catch below. */
    let called = 0;
    try {
      // First: an answer below may hand a withdrawn twin its next message at once, which must
      // run on the stored record, not on the working one that holds the withdrawn turns.
      for (const act of group.withdrawn ?? []) this.config.reload(act);
      const { ackMessages, ackOutcomes } = group;
      const shortfall: TurnOutcome | undefined =
        failure === undefined
          ? undefined
          : {
              status: "rejected",
              reason: failure.reason ?? "REPLICATION_FAILED",
              message: `written on this node but not on enough replicas (${failure.message}); retry with the same seq (a DUPLICATE answer then means it was applied)`,
              retryable: true,
            };
      // Copies every write of the group reached: what it asked for, or what a shortfall says.
      const reached = failure === undefined ? group.copies : (failure.copies ?? 0);
      const messagesLeave = reached >= (this.config.replication?.messageCopies ?? 1);
      /** Deliveries applied here whose outbox entries are deleted now, answered once that is written. */
      const spent: { msg: TwinMessage; outcome: TurnOutcome; key: string }[] = [];
      for (let i = 0; i < ackMessages.length; i++) {
        const msg = ackMessages[i] as TwinMessage;
        const outcome = ackOutcomes[i] as TurnOutcome;
        if (msg.type === "message" && msg.outbox !== undefined && outcome.status !== "rejected" && group.deliveries?.has(msg) === true) {
          // The receiver's write has the copies: its sender's entry goes. Short of them, the
          // entry stays and the message is offered again (the receiver's inbox marks tell a repeat).
          if (messagesLeave) spent.push({ msg, outcome, key: this.config.keys.outbox(msg.outbox.partition, msg.outbox.seq) });
          else
            this.finish(
              msg,
              shortfall ?? { status: "rejected", reason: "REPLICATION_FAILED", message: "the delivery is not on enough copies", retryable: true },
            );
          continue;
        }
        // A refusal stands (its turn wrote nothing, or was withdrawn); an answer that asked for
        // no more copies than the group reached is met; nobody waits for a timer's or an outbox
        // delivery's copies.
        const shortfallAnswers =
          shortfall !== undefined &&
          outcome.status !== "rejected" &&
          (msg.sink.copies ?? 1) > (failure?.copies ?? 0) &&
          msg.type !== "timer" &&
          !(msg.type === "message" && msg.outbox !== undefined);
        this.finish(msg, shortfallAnswers ? (shortfall as TurnOutcome) : outcome);
      }
      if (observer !== undefined) {
        for (const change of group.alertChanges) observer.alertChanged?.(change.alert);
        for (const entry of group.outbox) observer.messageSent?.(entry);
      }
      effects.committed(group);
      for (const key of group.timersDone) timers.released(key);
      const shortfallReason = failure?.reason ?? (failure === undefined ? undefined : "REPLICATION_FAILED");
      while (called < callbacks.length) (callbacks[called++] as DoneCallback)(true, reached, shortfallReason);
      if (group.earliestTimerMs !== Number.POSITIVE_INFINITY) timers.armedAt(group.earliestTimerMs);
      for (const act of group.twins) outbox.targetFreed(act.entry.kind, act.id);
      this.config.messages.committed(group, messagesLeave);
      if (spent.length > 0) {
        this.config.commitWrites(
          spent.map(({ key }) => ({ type: "del", key })),
          (written) => {
            const retry: TurnOutcome = {
              status: "rejected",
              reason: "COMMIT_FAILED",
              message: "the delivered message's outbox entry could not be deleted",
              retryable: true,
            };
            for (const { msg, outcome } of spent) this.finish(msg, written ? outcome : retry);
          },
        );
      }
      activations.trim();
    } catch (err) {
      this.config.metrics.internalErrors++;
      // Its messages must not stay skipped by outbox reads: they are read again at the next change of owner or start.
      this.config.messages.forgetUnacknowledged(group);
      this.config.log.error({ err }, "acknowledging a committed group failed (a twinmesh bug); its answers may be lost");
      // Whoever waits on its writes and was not told yet (an operator's change, a trim) is told,
      // so nothing waits forever: written here, on no more copies than this one.
      while (called < callbacks.length) {
        try {
          (callbacks[called++] as DoneCallback)(true, 1, "INTERNAL");
        } catch (inner) {
          this.config.log.error({ err: inner }, "a commit callback failed (a twinmesh bug)");
        }
      }
    }
    this.config.settled();
  }
}
