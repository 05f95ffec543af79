import type { Logger } from "pino";
import { type Alert, AlertState } from "../alerts/alert.js";
import type { Clock } from "../clock.js";
import type { DeadLetterStore } from "../deadletters/dead-letter-store.js";
import type { Keys } from "../store/keys.js";
import { SpanName, type TraceSpan, type Tracing } from "../tracing.js";
import { isPlainObject, type JsonObject, stringifyJson } from "../util/json.js";
import type { Activation } from "./activation.js";
import type { ActivationDirectory } from "./activation-directory.js";
import type { OwnershipGate } from "./admission.js";
import type { CommitCompletion } from "./commit-completion.js";
import type { CommitGroup } from "./commit-group.js";
import type { CommitPipeline } from "./commit-pipeline.js";
import type { HostMetrics } from "./host-metrics.js";
import type { ResolvedHostOptions } from "./host-options.js";
import { readableEventTime } from "./ingest-event.js";
import type { TimerService } from "./timer-service.js";
import { TurnContext, type TurnServices } from "./turn-context.js";
import type { TurnEffects } from "./turn-effects.js";
import { deletedKey, deletedSeq, forgetTwin } from "./twin-deletion.js";
import type { TwinLoader } from "./twin-loader.js";
import type { ControlMessage, TimerMessage, TurnOutcome, TwinMessage, UserMessage } from "./twin-message.js";
import { checkSeq, markSeq, rememberDelivery, SeqCheck, type TwinRecordData, wasDelivered } from "./twin-record.js";

/** Message ids a twin remembers to recognise a redelivered message. */
const INBOX_REMEMBER = 128;
/** Turns run back to back on one twin before yielding the event loop to others. */
const TURNS_PER_SLICE = 64;
const ACCEPTED: TurnOutcome = Object.freeze({ status: "accepted" });
/** The answer to a turn whose twin was evicted (a failed write) while it ran. */
const RELOADED: TurnOutcome = Object.freeze({
  status: "rejected",
  reason: "COMMIT_FAILED",
  message: "the twin was reloaded from disk after a failed write while this turn ran; retry with the same seq",
  retryable: true,
});

/** What {@link TurnRunner} needs of its host. */
export interface TurnRunnerConfig {
  readonly keys: Keys;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: HostMetrics;
  readonly options: ResolvedHostOptions;
  readonly services: TurnServices;
  readonly pipeline: CommitPipeline;
  readonly completion: CommitCompletion;
  readonly effects: TurnEffects;
  readonly loader: TwinLoader;
  readonly activations: ActivationDirectory;
  readonly timers: TimerService;
  readonly deadLetters: DeadLetterStore;
  /** Spans for the turns of traced batches; absent: tracing off. */
  readonly tracing?: Tracing;
  /**
   * Which twins this node runs (in a cluster), checked again at each turn: work admitted while
   * this node owned a twin is refused (retryable) once its partition has moved.
   */
  readonly gate?: OwnershipGate;
  /** The host may have become idle. */
  readonly settled: () => void;
  /**
   * Copies a delivery's receiving write must reach before its outbox entry is deleted (see
   * `ReplicationStage.messageCopies`). Above 1 (a cluster), the delete is a commit of its own
   * once they are reached; 1 (one node): in the receiving turn's own commit. @defaultValue 1
   */
  readonly messageCopies?: number;
}

/**
 * Runs twins' turns: one message at a time per twin, control lane first, up to
 * `TURNS_PER_SLICE` back to back before yielding. Each turn checks its trigger (dedupe marks,
 * tombstones, a timer still due), runs the handler on a fresh {@link TurnContext}, and on success
 * adds the new state and the turn's effects to the open commit group, answered after it commits;
 * a handler that throws, times out or leaves bad state leaves the twin as before the turn. A turn
 * whose bookkeeping throws (a twinmesh bug) is contained: its group is abandoned and its twins
 * reload from disk.
 */
export class TurnRunner {
  constructor(private readonly config: TurnRunnerConfig) {}

  /** Starts draining `act`'s mailbox unless it is running, loading or evicted. */
  schedule(act: Activation): void {
    if (act.running || act.loading || act.evicted) return;
    act.running = true;
    this.drain(act);
  }

  /** Runs queued turns back to back; an async handler continues the loop when it settles. */
  private drain(act: Activation): void {
    // Timed only while metrics are on. Turns run back to back, so one turn's end is the next
    // one's start: one clock read per turn.
    const timings = this.config.metrics.timings;
    // With tracing off this is the only cost: one field read per slice.
    const tracing = this.config.tracing;
    let started = timings === undefined ? 0 : performance.now();
    for (let n = 0; n < TURNS_PER_SLICE; n++) {
      const msg = act.next();
      if (msg === undefined) {
        act.running = false;
        this.config.pipeline.schedule();
        this.config.settled();
        return;
      }
      const span = tracing === undefined ? undefined : this.turnSpan(tracing, act, msg);
      let pending: Promise<void> | undefined;
      try {
        // A traced turn runs with its span active, so the handler's log lines (and spans of its
        // own) name it; an untraced one pays nothing.
        pending = span === undefined || tracing === undefined ? this.turn(act, msg) : tracing.run(span.ref, () => this.turn(act, msg));
      } catch (err) {
        span?.fail(err);
        span?.end();
        this.turnBroke(act, msg, err);
        return;
      }
      if (pending !== undefined) {
        const from = started;
        pending.then(
          () => {
            if (span !== undefined) this.turnTraced(span, msg);
            timings?.turned((performance.now() - from) / 1000);
            this.drain(act);
          },
          (err: unknown) => {
            span?.fail(err);
            span?.end();
            this.turnBroke(act, msg, err);
          },
        );
        return;
      }
      if (span !== undefined) this.turnTraced(span, msg);
      if (timings !== undefined) {
        const now = performance.now();
        timings.turned((now - started) / 1000);
        started = now;
      }
    }
    this.config.pipeline.schedule();
    setImmediate(() => this.drain(act));
  }

  /** A span for the turn of a message from a traced batch (a child of the batch's span); undefined otherwise. */
  private turnSpan(tracing: Tracing, act: Activation, msg: TwinMessage): TraceSpan | undefined {
    const parent = msg.sink.trace;
    if (parent === undefined) return undefined;
    return tracing.start(SpanName.turn, parent, {
      attributes: { "twinmesh.twin.kind": act.entry.kind, "twinmesh.twin.id": act.id, "twinmesh.turn.trigger": msg.type },
    });
  }

  /** The turn ended: its span ends, and the open group (which holds its effects or its answer) records it for the commit span. */
  private turnTraced(span: TraceSpan, msg: TwinMessage): void {
    span.end();
    const batch = msg.sink.trace;
    if (batch !== undefined) this.config.pipeline.current.traced(span.ref, batch);
  }

  /** Runs one message; returns a promise only when the handler is async. */
  private turn(act: Activation, msg: TwinMessage): Promise<void> | undefined {
    const rec = act.record as TwinRecordData;
    const { instance } = act.entry;
    const moved = this.config.gate?.refusal(act.entry.kind, act.id);
    if (moved !== undefined && msg.type !== "control") {
      this.finish(msg, moved);
      return undefined;
    }
    switch (msg.type) {
      case "telemetry": {
        const seq = msg.telemetry.seq;
        const tomb = deletedSeq(rec, seq);
        if (tomb !== undefined) {
          return this.reject(
            act,
            msg,
            "TWIN_DELETED",
            `seq ${seq} is at or below seq ${tomb}, the highest seq of twin ${act.entry.kind}/${act.id} when it was deleted with a tombstone: its effect was deleted, so it is not applied again; send seqs above ${tomb}, or delete the twin without a tombstone to let its source start again at 1`,
          );
        }
        const check = checkSeq(rec, seq, this.config.options.dedupeWindow);
        if (check === SeqCheck.DUPLICATE) {
          this.config.metrics.duplicates++;
          this.config.pipeline.current.duplicateKeys.push(act.key);
          this.ackAfterCommit(act, msg, { status: "duplicate", version: rec.ver });
          return undefined;
        }
        if (check === SeqCheck.TOO_OLD) {
          this.config.metrics.rejected++;
          this.finish(msg, {
            status: "rejected",
            reason: "SEQ_TOO_OLD",
            message: `seq ${seq} is more than ${this.config.options.dedupeWindow} below the source's highest seq ${rec.hw}; it cannot be checked for duplicates, so it is not applied`,
            retryable: false,
          });
          return undefined;
        }
        const handler = instance.onTelemetry;
        if (handler === undefined) return this.reject(act, msg, "NO_TELEMETRY_HANDLER", `twin kind "${act.entry.kind}" has no onTelemetry handler`);
        this.revive(act);
        return this.invoke(
          act,
          msg,
          (ctx) => handler.call(instance, msg.telemetry, ctx),
          () => {
            markSeq(rec, seq, this.config.options.dedupeWindow);
            // An unreadable stored time (from before times were checked) is replaced, not kept.
            const last = readableEventTime(rec.let);
            if (last === undefined || msg.telemetry.timeMs > last) rec.let = msg.telemetry.timeMs;
          },
        );
      }
      case "message":
        return this.messageTurn(act, msg, rec);
      case "timer":
        return this.timerTurn(act, msg, rec);
      case "control":
        this.controlTurn(act, msg, rec);
        return undefined;
    }
  }

  private messageTurn(act: Activation, msg: UserMessage, rec: TwinRecordData): Promise<void> | undefined {
    const group = this.config.pipeline.current;
    if (deletedKey(rec, msg.messageId)) {
      return this.reject(
        act,
        msg,
        "TWIN_DELETED",
        `idempotency key "${(msg.messageId as string).slice(2)}" was used before twin ${act.entry.kind}/${act.id} was deleted with a tombstone: its effect was deleted, so the message is not delivered again; use a new key`,
      );
    }
    if (msg.messageId !== undefined && wasDelivered(rec, msg.messageId)) {
      this.spend(group, msg);
      group.duplicateKeys.push(act.key);
      this.ackAfterCommit(act, msg, { status: "duplicate", version: rec.ver });
      return undefined;
    }
    const { instance } = act.entry;
    const handler = instance.onMessage;
    if (handler === undefined) {
      return this.reject(act, msg, "NO_MESSAGE_HANDLER", `twin kind "${act.entry.kind}" has no onMessage handler`);
    }
    this.revive(act);
    return this.invoke(
      act,
      msg,
      (ctx) => handler.call(instance, msg.message, ctx),
      (g) => {
        if (msg.messageId !== undefined) rememberDelivery(rec, msg.messageId, INBOX_REMEMBER);
        this.spend(g, msg);
      },
    );
  }

  /**
   * Deletes the outbox entry `msg` delivered: in `group`, or, in a cluster, once `group` has the
   * copies messages need ({@link CommitGroup.deliveries}). In one commit, a replica could keep the
   * delete (the sender's partition) and refuse the receiver's write (its partition had moved
   * to a newer owner unbeknown to this node): the message would be lost.
   */
  private spend(group: CommitGroup, msg: UserMessage): void {
    if (msg.outbox === undefined) return;
    const copies = this.config.messageCopies ?? 1;
    if (copies > 1) {
      // Asked here too: a group of repeats only writes nothing, and is not sealed.
      group.asks(copies);
      (group.deliveries ??= new Set()).add(msg);
    } else group.ops.push({ type: "del", key: this.config.keys.outbox(msg.outbox.partition, msg.outbox.seq) });
  }

  private timerTurn(act: Activation, msg: TimerMessage, rec: TwinRecordData): Promise<void> | undefined {
    const group = this.config.pipeline.current;
    if (rec.timers?.[msg.name] !== msg.dueMs || rec.del === 1) {
      // Moved or cancelled after the index was read: drop the stale index entry.
      group.ops.push({ type: "del", key: msg.indexKey });
      group.timersDone.push(msg.indexKey);
      this.ackAfterCommit(act, msg, { status: "duplicate", version: rec.ver });
      return undefined;
    }
    const { instance } = act.entry;
    const handler = instance.onTimer;
    const consume = (g: CommitGroup): void => {
      // The timer is spent before the handler's own timer effects apply, so re-arming works.
      if (rec.timers !== undefined) {
        delete rec.timers[msg.name];
        if (Object.keys(rec.timers).length === 0) rec.timers = undefined;
      }
      g.ops.push({ type: "del", key: msg.indexKey });
      g.timersDone.push(msg.indexKey);
    };
    if (handler === undefined) {
      consume(group);
      this.config.pipeline.touch(act);
      this.ackAfterCommit(act, msg, { status: "accepted", version: rec.ver });
      return undefined;
    }
    this.config.metrics.timersFired++;
    return this.invoke(act, msg, (ctx) => handler.call(instance, msg.name, ctx), undefined, consume);
  }

  private controlTurn(act: Activation, msg: ControlMessage, rec: TwinRecordData): void {
    const group = this.config.pipeline.current;
    const nowMs = this.config.clock.nowMs();
    if (msg.op === "delete") {
      const forgotten = forgetTwin(rec, msg.keepTombstone === true, INBOX_REMEMBER);
      if (forgotten.changed) {
        for (const [name, due] of Object.entries(forgotten.timers))
          group.ops.push({ type: "del", key: this.config.keys.timer(due, act.entry.kind, act.id, name) });
        for (const alert of forgotten.alerts) this.config.effects.logAlert(group, { ...alert, state: AlertState.RESOLVED, updatedAt: nowMs });
        act.state = undefined;
        act.stateJson = undefined;
        this.config.pipeline.touch(act);
      }
      this.ackAfterCommit(act, msg, { status: "accepted", version: rec.ver, deletion: forgotten.deletion });
      return;
    }
    const alert = Object.values(rec.alerts ?? {}).find((a) => a.id === msg.alertId);
    if (alert !== undefined && (msg.op === "resolve-alert" || alert.state === AlertState.OPEN)) {
      const state = msg.op === "resolve-alert" ? AlertState.RESOLVED : AlertState.ACKNOWLEDGED;
      const changed: Alert = { ...alert, state, updatedAt: nowMs };
      const stored = this.config.effects.logAlert(group, changed);
      if (state === AlertState.RESOLVED) this.config.effects.dropAlert(rec, alert.code);
      else (rec.alerts as Record<string, Alert>)[alert.code] = stored;
      rec.ver++; // the record changed: replicas compare versions
      this.config.pipeline.touch(act);
    }
    this.ackAfterCommit(act, msg, { status: "accepted", version: rec.ver });
  }

  /** A deleted twin that receives a new message starts again from `initial()`. */
  private revive(act: Activation): void {
    const rec = act.record as TwinRecordData;
    if (rec.del === 1) {
      rec.del = undefined;
      this.config.loader.resetState(act);
    }
  }

  /**
   * Runs a handler on a fresh TurnContext. `meta` updates the record's bookkeeping and `before`
   * consumes the trigger (a timer); both run only if the handler succeeds.
   */
  private invoke(
    act: Activation,
    msg: TwinMessage,
    call: (ctx: TurnContext) => void | Promise<void>,
    meta?: (group: CommitGroup) => void,
    before?: (group: CommitGroup) => void,
  ): Promise<void> | undefined {
    const state = act.state as JsonObject;
    if (act.stateJson === undefined) act.stateJson = JSON.stringify(state); // rollback point, made lazily after a load
    const ctx = new TurnContext(act, this.config.services, state);
    let result: void | Promise<void>;
    try {
      result = call(ctx);
    } catch (err) {
      this.failTurn(act, msg, ctx, "HANDLER_FAILED", err, before);
      return undefined;
    }
    if (result === undefined || typeof (result as { then?: unknown }).then !== "function") {
      this.finishTurn(act, msg, ctx, meta, before);
      return undefined;
    }
    // Bookkeeping that throws rejects this promise (drain contains it) instead of leaving it
    // pending forever or throwing out of a callback, where nothing would catch it.
    return new Promise<void>((resolve, reject) => {
      const settle = (end: () => void): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        try {
          end();
          resolve();
        } catch (err) {
          reject(err);
        }
      };
      const timer = setTimeout(
        () =>
          settle(() => {
            this.config.metrics.timeouts++;
            this.failTurn(act, msg, ctx, "TURN_TIMEOUT", new Error(`handler did not finish within ${this.config.options.turnTimeoutMs} ms`), before);
          }),
        this.config.options.turnTimeoutMs,
      );
      let settled = false;
      (result as Promise<void>).then(
        () =>
          settle(() => {
            if (!this.outlived(act, msg, ctx)) this.finishTurn(act, msg, ctx, meta, before);
          }),
        (err: unknown) => settle(() => this.failTurn(act, msg, ctx, "HANDLER_FAILED", err, before)),
      );
    });
  }

  /**
   * A turn's bookkeeping threw: a twinmesh bug, not the handler's. The open commit group may hold
   * half of that turn's effects and the twin's working record half its marks, so the group is
   * abandoned unwritten (its events answered `COMMIT_FAILED`, retryable) and its twins reload from
   * disk, as after a failed write; the message that broke is answered `INTERNAL`. A timer or an
   * outbox message that broke is spent (dead-lettered), or it would come back and break again.
   */
  private turnBroke(act: Activation, msg: TwinMessage, err: unknown): void {
    this.config.metrics.internalErrors++;
    act.log(this.config.log).error({ err, trigger: msg.type }, "turn bookkeeping failed; its commit group was abandoned and its twins reload from disk");
    const abandoned: TurnOutcome = {
      status: "rejected",
      reason: "COMMIT_FAILED",
      message:
        "a twinmesh bug in another turn abandoned the commit group this event was in before it was written; nothing of it was applied; retry with the same seq",
      retryable: true,
    };
    const internal: TurnOutcome = {
      status: "rejected",
      reason: "INTERNAL",
      message: `twinmesh failed while committing this turn of ${act.entry.kind}/${act.id} (a bug, logged on the node); nothing of it was applied and the twin was reloaded from disk`,
      retryable: false,
    };
    const group = this.config.pipeline.abandonOpen();
    act.running = false;
    for (const twin of [act, ...group.twins]) {
      this.config.loader.reloadAfter(twin);
      this.config.activations.evict(twin);
      for (const queued of twin.takeAll()) this.finish(queued, abandoned);
    }
    // The broken message may already wait among the group's acks (its bookkeeping threw later).
    for (const acked of group.ackMessages) if (acked !== msg) this.finish(acked, abandoned);
    for (const key of group.timersDone) this.config.timers.released(key);
    for (const done of group.onDone ?? []) done(false, 0);
    this.config.metrics.rejected++;
    if (msg.type === "timer") {
      const next = this.config.pipeline.current;
      next.ops.push({ type: "del", key: msg.indexKey });
      next.timersDone.push(msg.indexKey);
      this.ackAfterCommit(act, msg, internal);
      this.config.pipeline.schedule();
    } else if (msg.type === "message" && msg.outbox !== undefined) {
      this.deadLetter(act, msg, "INTERNAL", internal.message as string);
      this.config.pipeline.schedule();
    } else this.finish(msg, internal);
    this.config.settled();
  }

  /**
   * True, with `msg` answered, when the twin's partition moved to another node while its async
   * handler ran: the turn began as its owner's, but nothing of it may be written here now, where
   * it would sit outside every owner's history. The gate's retryable refusal sends the retry to
   * the new owner; the twin goes on from its last good state.
   */
  private outlived(act: Activation, msg: TwinMessage, ctx: TurnContext): boolean {
    if (msg.type === "control") return false;
    const moved = this.config.gate?.refusal(act.entry.kind, act.id);
    if (moved === undefined) return false;
    ctx.end();
    if (!act.evicted) act.state = JSON.parse(act.stateJson as string) as JsonObject;
    act.log(this.config.log).info({ trigger: msg.type }, "the twin's partition moved while its handler ran; nothing of the turn is written");
    this.finish(msg, moved);
    return true;
  }

  private finishTurn(act: Activation, msg: TwinMessage, ctx: TurnContext, meta?: (g: CommitGroup) => void, before?: (g: CommitGroup) => void): void {
    ctx.end();
    if (act.evicted) {
      // A failed commit evicted this twin while its async handler ran: its record may hold that
      // group's marks, so nothing of it may be written again. The twin reloads on next use.
      this.finish(msg, RELOADED);
      return;
    }
    const rec = act.record as TwinRecordData;
    let json: string;
    try {
      if (!isPlainObject(ctx.state)) throw new TypeError("state must be a plain JSON object");
      json = stringifyJson(ctx.state, "state");
      if (json.length > this.config.options.maxStateBytes) {
        this.failTurn(act, msg, ctx, "STATE_TOO_LARGE", new Error(`state is ${json.length} bytes; the limit is ${this.config.options.maxStateBytes}`), before);
        return;
      }
      for (const send of ctx.sends ?? []) {
        const size = stringifyJson(send.message, `message to ${send.kind}/${send.id}`).length;
        if (size > this.config.options.maxMessageBytes)
          throw new TypeError(`message to ${send.kind}/${send.id} is ${size} bytes; the limit is ${this.config.options.maxMessageBytes}`);
      }
    } catch (err) {
      this.failTurn(act, msg, ctx, "BAD_STATE", err, before);
      return;
    }
    const group = this.config.pipeline.current;
    before?.(group);
    rec.ver++;
    meta?.(group);
    act.state = ctx.state;
    act.stateJson = json;
    this.config.effects.apply(act, rec, ctx, group);
    this.config.pipeline.touch(act);
    if (msg.type === "telemetry") {
      group.events++;
      this.config.metrics.applied++;
      // One shared outcome: the event path allocates nothing for its answer.
      this.ackAfterCommit(act, msg, ACCEPTED);
      return;
    }
    this.ackAfterCommit(act, msg, { status: "accepted", version: rec.ver });
  }

  private failTurn(
    act: Activation,
    msg: TwinMessage,
    ctx: TurnContext,
    reason: "HANDLER_FAILED" | "TURN_TIMEOUT" | "BAD_STATE" | "STATE_TOO_LARGE",
    err: unknown,
    before?: (g: CommitGroup) => void,
  ): void {
    ctx.end();
    if (act.evicted) {
      this.finish(msg, RELOADED);
      return;
    }
    // Roll back: the handler may have mutated the state object in place, and a timed-out
    // handler may still hold it, so the twin continues on a fresh copy of the last good state.
    act.state = JSON.parse(act.stateJson as string) as JsonObject;
    const { metrics } = this.config;
    metrics.handlerErrors++;
    metrics.handlerErrorsByKind.set(act.entry.kind, (metrics.handlerErrorsByKind.get(act.entry.kind) ?? 0) + 1);
    const text = err instanceof Error ? err.message : String(err);
    act.log(this.config.log).warn({ err, reason, trigger: msg.type }, "turn failed; state left as before the turn");
    const what = msg.type === "telemetry" ? "onTelemetry" : msg.type === "timer" ? `onTimer("${msg.name}")` : "onMessage";
    const message = `${act.entry.kind}/${act.id} ${what} ${reason === "TURN_TIMEOUT" ? "timed out" : "failed"}: ${text}`;
    if (msg.type === "timer" && before !== undefined) {
      // A timer fires at least once, not forever: a failing onTimer spends it.
      const group = this.config.pipeline.current;
      before(group);
      this.config.pipeline.touch(act);
      this.ackAfterCommit(act, msg, { status: "rejected", reason, message, retryable: false });
      return;
    }
    this.config.metrics.rejected++;
    if (msg.type === "message" && msg.outbox !== undefined) {
      this.deadLetter(act, msg, reason, message);
      return;
    }
    this.finish(msg, { status: "rejected", reason, message, retryable: false });
  }

  /** Refuses a message for good; one from the outbox moves to the dead letters (answered when that commits). */
  private reject(act: Activation, msg: TwinMessage, reason: string, message: string): undefined {
    this.config.metrics.rejected++;
    if (msg.type === "message" && msg.outbox !== undefined) this.deadLetter(act, msg, reason, message);
    else this.finish(msg, { status: "rejected", reason, message, retryable: false });
    return undefined;
  }

  /**
   * Moves an undeliverable outbox message aside so it is kept but not retried forever. It is
   * answered, and released from the dispatcher's in-flight set, only once that move commits: a
   * rescan reading the outbox before then must not queue it again.
   */
  private deadLetter(act: Activation, msg: UserMessage, reason: string, message: string): void {
    const { outbox } = msg;
    if (outbox === undefined) throw new Error("deadLetter() called for a message that did not come from the outbox");
    const group = this.config.pipeline.current;
    const recorded = this.config.deadLetters.record(outbox, reason, message);
    group.ops.push({ type: "del", key: this.config.keys.outbox(outbox.partition, outbox.seq) }, ...recorded);
    (group.deadLetterKeys ??= new Map()).set(msg, recorded[0].key);
    this.config.metrics.deadLetters++;
    this.ackAfterCommit(act, msg, { status: "rejected", reason, message, retryable: false });
  }

  // ---------------------------------------------------------------- completion

  private ackAfterCommit(act: Activation, msg: TwinMessage, outcome: TurnOutcome): void {
    this.config.completion.ackAfterCommit(this.config.pipeline.current, act, msg, outcome);
  }

  private finish(msg: TwinMessage, outcome: TurnOutcome): void {
    this.config.completion.finish(msg, outcome);
  }
}
