import type { Logger } from "pino";
import { type Alert, AlertState } from "../alerts/alert.js";
import { AlertFeed } from "../alerts/alert-feed.js";
import { AlertRetention } from "../alerts/alert-retention.js";
import type { Clock } from "../clock.js";
import { DeadLetterStore } from "../deadletters/dead-letter-store.js";
import {
  AlertNotFoundError,
  HandlerFailedError,
  InternalError,
  InvalidArgumentError,
  isTwinmeshError,
  NoHandlerError,
  OverloadedError,
  TwinDeletedError,
  TwinNotFoundError,
  UnavailableError,
} from "../errors.js";
import { type PartitionId, Partitioning } from "../partition/partitioning.js";
import type { PageTokens } from "../query/page-token.js";
import { Keys } from "../store/keys.js";
import type { BatchOp, RocksStore } from "../store/rocks-store.js";
import type { Tracing } from "../tracing.js";
import { type JsonObject, stringifyJson } from "../util/json.js";
import { checkJsonInput } from "../util/json-input.js";
import type { Activation } from "./activation.js";
import { ActivationDirectory } from "./activation-directory.js";
import { Admission, type OwnershipGate, type RemoteMessages } from "./admission.js";
import { CommitCompletion, type HostObserver, type ReplicationStage } from "./commit-completion.js";
import type { GroupOperation } from "./commit-group.js";
import { CommitPipeline } from "./commit-pipeline.js";
import { DiskHealth } from "./disk-health.js";
import { HeldMessages } from "./held-messages.js";
import { HostMetrics } from "./host-metrics.js";
import { type HostOptions, type ResolvedHostOptions, resolveHostOptions, retentionSweepMs } from "./host-options.js";
import { type IngestEvent, readableEventTime, validateBatch } from "./ingest-event.js";
import { type Delivery, OutboxDispatcher } from "./outbox-dispatcher.js";
import { type OutboxEntry, outboxMessageId } from "./outbox-entry.js";
import { PendingBatch } from "./pending-batch.js";
import { TimerService } from "./timer-service.js";
import { TurnEffects } from "./turn-effects.js";
import { TurnRunner } from "./turn-runner.js";
import { forgetTwin, type TwinDeletion } from "./twin-deletion.js";
import { TwinLoader } from "./twin-loader.js";
import type { ControlMessage, OutcomeSink, TurnOutcome, TwinMessage } from "./twin-message.js";
import { parseMeta, parseRecord, readState, type TwinRecordData } from "./twin-record.js";
import type { KindEntry, TwinRegistry } from "./twin-registry.js";

/** What {@link TwinHost} needs. */
export interface TwinHostConfig {
  readonly store: RocksStore;
  readonly registry: TwinRegistry;
  readonly clock: Clock;
  /** The root logger: the host takes its `host` and `host.*` components from it. */
  readonly log: Logger;
  /** This node's id, reported as a twin's owner. */
  readonly nodeId: string;
  readonly options?: HostOptions;
  /** Told of every committed alert change and sent message (the test kit mirrors them). */
  readonly observer?: HostObserver;
  /** Signs and checks the page tokens of dead-letter listings. */
  readonly tokens: PageTokens;
  /** Which twins this node runs now; absent: all of them (a single node). */
  readonly ownership?: OwnershipGate;
  /** Where committed groups go before they are acknowledged; absent: acknowledged after the local write. */
  readonly replication?: ReplicationStage;
  /** Delivers messages to twins another node owns (with `ownership`); absent: every target is local. */
  readonly remoteMessages?: RemoteMessages;
  /** How twins map to partitions (the data directory's count). @defaultValue 256 partitions */
  readonly partitioning?: Partitioning;
  /** Spans for traced batches' turns and commits; absent: tracing off. */
  readonly tracing?: Tracing;
}

export type { HostObserver, ReplicationStage, StageFailure } from "./commit-completion.js";

/** How {@link TwinHost.publish} answers. */
export interface PublishOptions {
  /**
   * Durable copies (this node's included) each answer waits for; more than 1 only with a
   * {@link ReplicationStage}. @defaultValue 1
   */
  readonly copies?: number;
}

/** A twin's committed state, as `GetTwin` and queries return it. */
export interface TwinView {
  readonly kind: string;
  readonly id: string;
  readonly state: JsonObject;
  readonly version: number;
  readonly lastSeq: number;
  /** Epoch ms, absent when the twin never received telemetry. */
  readonly lastEventTime?: number;
  readonly ownerNodeId: string;
}

const PRECEDING_REJECTED: TurnOutcome = {
  status: "rejected",
  reason: "PRECEDING_EVENT_REJECTED",
  message: "an earlier event of this source in the same batch was rejected with a retryable error; retry this one after it, with the same seq",
  retryable: true,
};

/** A host's queues and in-flight work at one moment (see {@link TwinHost.load}). */
export interface HostLoad {
  /** Twins in memory. */
  readonly activeTwins: number;
  /** Telemetry events admitted and not yet answered (the ingest queue). */
  readonly eventsInFlight: number;
  /** Due timers whose turn is queued or running. */
  readonly timersInFlight: number;
  /** Outbox messages waiting to be delivered, being delivered, and parked behind an unavailable target. */
  readonly outboxQueued: number;
  readonly outboxInFlight: number;
  readonly outboxParked: number;
  /** Outbox messages held until their sending writes are on a majority of copies (see HeldMessages). */
  readonly outboxHeld: number;
}

/**
 * One node's twins: activation and passivation, mailboxes, atomic turns, group commit, alerts,
 * timers and the outbox. Knows nothing of the network: the gRPC services, the test kit and the
 * embedded mode all drive it through these methods.
 *
 * Guarantees: one turn at a time per twin, in arrival order per source; a turn's effects commit
 * together in one RocksDB batch or not at all; an outcome is reported only after the batch that
 * holds it is durable.
 */
export class TwinHost {
  readonly options: ResolvedHostOptions;
  readonly keys = new Keys();
  readonly alerts = new AlertFeed();
  readonly metrics = new HostMetrics();
  private readonly store: RocksStore;
  private readonly registry: TwinRegistry;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly tracing: Tracing | undefined;
  /** This node's id, reported as twins' owner. */
  readonly nodeId: string;
  /** How twins map to partitions. */
  readonly partitioning: Partitioning;
  private readonly activations: ActivationDirectory;
  private readonly loader: TwinLoader;
  private readonly pipeline: CommitPipeline;
  /** Durable copies a single-twin operation's answer waits for (a cluster's QUORUM). */
  private readonly operationCopies: number;
  private readonly turns: TurnRunner;
  private readonly timers: TimerService;
  private readonly outbox: OutboxDispatcher;
  /** Messages whose sending writes are not yet on `messageCopies` copies. */
  private readonly heldMessages: HeldMessages;
  /** Copies a write must reach before the messages it sends leave (1 on one node). */
  private readonly messageCopies: number;
  private readonly effects: TurnEffects;
  /** Undeliverable messages: written here when a delivery fails; listed, retried and trimmed by their store. */
  readonly deadLetters: DeadLetterStore;
  /** Removes resolved alerts past their retention, in the partitions this node owns. */
  readonly alertRetention: AlertRetention;
  private readonly admission: Admission;
  private readonly remoteMessages: RemoteMessages | undefined;
  /** Targets (twin keys) with a message on its way to another node: a local delivery to one waits. */
  private readonly remoteInFlight = new Set<string>();
  private readonly disk: DiskHealth;
  private shuttingDown = false;
  private closed: Promise<void> | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private idleWaiters: (() => void)[] = [];
  private readonly completion: CommitCompletion;
  private readonly servingListeners = new Set<(serving: boolean) => void>();

  constructor(config: TwinHostConfig) {
    this.operationCopies = config.replication?.operationCopies ?? 1;
    const messageCopies = config.replication?.messageCopies ?? 1;
    this.messageCopies = messageCopies;
    this.options = resolveHostOptions(config.options);
    this.store = config.store;
    this.registry = config.registry;
    for (const kind of this.registry.kindNames()) this.metrics.events.register(kind);
    this.clock = config.clock;
    this.log = config.log.child({ component: "host" });
    this.tracing = config.tracing;
    this.nodeId = config.nodeId;
    this.partitioning = config.partitioning ?? new Partitioning();
    const owns = (p: PartitionId): boolean => this.admission.owns(p);
    this.pipeline = new CommitPipeline(
      this.store,
      this.options.maxGroupEvents,
      {
        sealed: (g) => {
          config.replication?.prepare?.(g);
          // After prepare, which may withdraw turns (and their messages) and recount the copies asked.
          if (messageCopies > 1) {
            if (g.outbox.length > 0 || g.rewritesHeldMessages || g.deliveries !== undefined) g.asks(messageCopies);
            if (g.outbox.length > 0) this.heldMessages.sealed(g);
          }
        },
        committed: (g) => {
          this.metrics.timings?.committed(g.writeMs / 1000, g.events);
          this.completion.written(g);
        },
        failed: (groups, err) => this.completion.failed(groups, err),
      },
      this.log,
      this.tracing,
    );
    this.timers = new TimerService(
      this.store,
      this.keys,
      this.clock,
      this.log,
      this.options,
      (kind, id, name, dueMs, indexKey) => this.postTimer(kind, id, name, dueMs, indexKey),
      config.ownership?.owns === undefined ? undefined : { partitioning: this.partitioning, owns },
    );
    this.remoteMessages = config.remoteMessages;
    this.admission = new Admission({
      options: this.options,
      closing: () => this.shuttingDown,
      readOnly: () => this.disk.readOnly,
      gate: config.ownership,
    });
    this.loader = new TwinLoader({
      store: this.store,
      log: this.log,
      metrics: this.metrics,
      afterWrite: () => this.pipeline.afterWrite(),
      loaded: (act) => this.schedule(act),
      failed: (act, outcome) => this.failActivation(act, outcome),
    });
    this.activations = new ActivationDirectory({ options: this.options, metrics: this.metrics, loader: this.loader });
    this.disk = new DiskHealth({
      store: this.store,
      log: this.log,
      commitsIdle: () => this.pipeline.idle,
      changed: () => {
        this.servingChanged();
        // A trim that failed with the disk is due again (see TurnEffects.trimAlertLog).
        if (this.serving) this.effects.trimAlertLog();
      },
    });
    this.effects = new TurnEffects({
      store: this.store,
      keys: this.keys,
      clock: this.clock,
      log: this.log,
      alerts: this.alerts,
      metrics: this.metrics,
      options: this.options,
      partitioning: this.partitioning,
      owns,
      commitWrites: (ops, done) => this.commitWrites(ops, done),
      writable: () => this.serving,
    });
    this.outbox = new OutboxDispatcher({
      store: this.store,
      keys: this.keys,
      log: config.log.child({ component: "host.outbox" }),
      deliver: (entry) => this.deliver(entry),
      quarantine: (key, raw, problem) => this.quarantineOutboxEntry(key, raw, problem),
      owns,
      held: (p, seq) => this.heldMessages.holds(p, seq),
      partitions: this.partitioning.partitions,
      settled: () => this.checkIdle(),
    });
    this.heldMessages = new HeldMessages({
      keys: this.keys,
      partitioning: this.partitioning,
      log: this.log,
      deliver: (entry) => this.outbox.enqueue(entry),
      readOutbox: (p) => this.outbox.partitionChanged(p),
      owns,
      dropped: (p, seq) => this.outbox.forgot(p, seq),
      recommit: (ops) => {
        const group = this.pipeline.current;
        group.ops.push(...ops);
        group.rewritesHeldMessages = true;
        this.pipeline.schedule();
      },
    });
    this.deadLetters = new DeadLetterStore({
      store: this.store,
      keys: this.keys,
      clock: this.clock,
      log: config.log.child({ component: "host.dead-letters" }),
      registry: this.registry,
      tokens: config.tokens,
      retentionMs: this.options.deadLetterRetentionMs,
      maxCount: this.options.maxDeadLetters,
      partitions: this.partitioning.partitions,
      sweepMs: retentionSweepMs(this.options, this.options.deadLetterRetentionMs),
      commit: (ops, sends, partitions) => this.commitOperation(ops, sends, partitions),
      owns,
    });
    this.alertRetention = new AlertRetention({
      store: this.store,
      keys: this.keys,
      clock: this.clock,
      log: config.log.child({ component: "alert-retention" }),
      retentionMs: this.options.resolvedAlertRetentionMs,
      sweepMs: retentionSweepMs(this.options, this.options.resolvedAlertRetentionMs),
      partitioning: this.partitioning,
      owns,
      commit: (ops, partitions) => this.commitOperation(ops, [], partitions),
    });
    this.completion = new CommitCompletion({
      log: this.log,
      keys: this.keys,
      metrics: this.metrics,
      admission: this.admission,
      activations: this.activations,
      timers: this.timers,
      outbox: this.outbox,
      messages: this.heldMessages,
      effects: this.effects,
      disk: this.disk,
      observer: config.observer,
      replication: config.replication,
      reload: (act) => this.reload(act),
      commitWrites: (ops, done) => this.commitWrites(ops, done),
      settled: () => this.checkIdle(),
    });
    this.turns = new TurnRunner({
      keys: this.keys,
      clock: this.clock,
      log: this.log,
      metrics: this.metrics,
      options: this.options,
      services: { clock: this.clock, log: this.log, checkKind: (kind) => void this.registry.get(kind) },
      pipeline: this.pipeline,
      completion: this.completion,
      effects: this.effects,
      loader: this.loader,
      activations: this.activations,
      timers: this.timers,
      deadLetters: this.deadLetters,
      tracing: this.tracing,
      gate: config.ownership,
      settled: () => this.checkIdle(),
      messageCopies,
    });
  }

  /** Reads the log positions, redelivers the outbox, starts the timer and idle loops, and trims an alert log over its budget. */
  async start(): Promise<void> {
    await this.effects.start();
    await this.deadLetters.start();
    this.alertRetention.start();
    this.outbox.start();
    this.timers.start();
    this.sweepTimer = setInterval(() => this.activations.sweepIdle(), Math.min(this.options.idleTimeoutMs, 10_000));
    this.sweepTimer.unref();
    // A log may be over a budget lowered since the last run.
    this.effects.trimAlertLog();
  }

  /**
   * Partitions changed hands, or keys of theirs were written underneath (replicated from their
   * owner): re-reads their alert log, outbox and dead letter positions, so numbering continues
   * after the highest number in the store and never reuses one, and makes the timer service and
   * the outbox dispatcher read them again (when owned) or forget them (when not). Then trims the
   * alert logs if a taken copy put them over this node's budget.
   */
  async partitionsChanged(partitions: Iterable<PartitionId>): Promise<void> {
    const changed = [...partitions];
    // Before any wait: a partition served here from now on lets no new turn's message out ahead
    // of those its outbox already holds, which are read below (or once a write has the copies).
    const taking = new Set<PartitionId>();
    if (this.messageCopies > 1) for (const p of changed) if (this.admission.owns(p)) taking.add(p);
    for (const p of taking) this.heldMessages.taking(p);
    for (const p of changed) {
      await this.effects.resyncPartition(p);
      await this.deadLetters.resyncPartition(p);
      // A partition this node took in a cluster: its copy's tail may be on it alone, so its
      // outbox is read once a write of the new epoch has the copies messages need.
      // An empty outbox has nothing to hold, and writing its mark would only move the copies on.
      if (taking.has(p) && this.admission.owns(p) && ((await this.hasOutbox(p)) || this.heldMessages.heldOnDisk(p))) {
        this.heldMessages.taken(p);
        continue;
      }
      this.heldMessages.partitionChanged(p);
      this.outbox.partitionChanged(p);
    }
    this.timers.partitionsChanged();
    // Once every partition's log is read again: a taken copy may be over this node's budget.
    this.effects.trimAlertLog();
  }

  /** True when partition `p`'s outbox holds an entry (one seek). */
  private async hasOutbox(p: PartitionId): Promise<boolean> {
    for await (const chunk of this.store.scan(this.keys.outboxFrom(p), { values: false })) if (chunk.length > 0) return true;
    return false;
  }

  /** The registered kinds. */
  get kinds(): TwinRegistry {
    return this.registry;
  }

  /** Twins in memory. */
  get activeCount(): number {
    return this.activations.size;
  }

  /** What is queued and in flight now, read by the metrics exporter when it is scraped. */
  get load(): HostLoad {
    const outbox = this.outbox.counts;
    return {
      activeTwins: this.activations.size,
      eventsInFlight: this.admission.inflight,
      timersInFlight: this.timers.counts.inflight,
      outboxQueued: outbox.queued,
      outboxInFlight: outbox.inflight,
      outboxParked: outbox.parked,
      outboxHeld: this.heldMessages.size,
    };
  }

  /** True once {@link close} began: the host takes no new work, and its watches end. */
  get closing(): boolean {
    return this.shuttingDown;
  }

  /** False while the disk refuses writes; the node then answers NOT_SERVING. */
  get serving(): boolean {
    return this.disk.readOnly === undefined && !this.shuttingDown;
  }

  /** What an operator should know while the disk refuses writes (for `twinmesh ring`), else undefined. */
  get diskProblem(): string | undefined {
    const err = this.disk.readOnly;
    if (err === undefined) return undefined;
    return `disk refuses writes (${err.message}); read-only and NOT_SERVING until space is freed in ${this.store.path}, then it serves and catches up by itself`;
  }

  /** Calls `listener` whenever {@link serving} changes; returns the unsubscribe function. */
  onServingChange(listener: (serving: boolean) => void): () => void {
    this.servingListeners.add(listener);
    return () => this.servingListeners.delete(listener);
  }

  private servingChanged(): void {
    for (const listener of this.servingListeners) listener(this.serving);
  }

  // ---------------------------------------------------------------- ingest

  /**
   * Applies a batch of telemetry. `results[i]` answers `events[i]`; a bad event is rejected on
   * its own, and a retryable rejection also rejects the same source's later events in the batch
   * so per-source order holds when the client retries.
   */
  publish(events: readonly IngestEvent[], options: PublishOptions = {}): Promise<TurnOutcome[]> {
    // Every event is checked before any is posted: nothing below throws on bad input.
    const validated = validateBatch(events, this.registry, this.options, this.clock.nowMs());
    const batch = new PendingBatch(events.length, options.copies, { kinds: events, counts: this.metrics.events });
    // One read of the active context per batch, and only with tracing on: a sampled batch's
    // turns become children of its span (the receiving node's publish, or a forward's apply).
    if (this.tracing !== undefined) batch.trace = this.tracing.active();
    let blocked: Set<string> | undefined;
    for (let i = 0; i < events.length; i++) {
      const e = events[i] as IngestEvent;
      const checked = validated[i] as (typeof validated)[number];
      if (!("sourceId" in checked)) {
        this.metrics.rejected++;
        batch.complete(i, checked);
        continue;
      }
      const key = this.keys.twin(e.kind, checked.sourceId);
      if (blocked?.has(key)) {
        batch.complete(i, PRECEDING_REJECTED);
        continue;
      }
      const existing = this.activations.get(key);
      const refusal = this.admission.refusal(e.kind, checked.sourceId, existing, 1);
      if (refusal !== undefined) {
        (blocked ??= new Set()).add(key);
        this.metrics.rejected++;
        batch.complete(i, refusal);
        continue;
      }
      const act = existing ?? this.activations.activate(this.registry.get(e.kind), checked.sourceId, key);
      this.activations.touch(act);
      if (!this.admission.takeToken(act)) {
        (blocked ??= new Set()).add(key);
        this.metrics.rejected++;
        batch.complete(i, {
          status: "rejected",
          reason: "RATE_LIMITED",
          message: `twin ${e.kind}/${checked.sourceId} receives more than ${this.options.maxEventsPerTwinPerSecond} events per second; retry with backoff`,
          retryable: true,
        });
        continue;
      }
      this.admission.admitted();
      this.metrics.received++;
      act.post({ type: "telemetry", telemetry: checked, sink: batch, index: i });
      this.schedule(act);
    }
    return batch.done;
  }

  // ---------------------------------------------------------------- single-twin operations

  /**
   * Delivers `message` to the twin's `onMessage` as one turn; resolves after it commits.
   * With an `idempotencyKey` seen before (among the twin's recent deliveries), the message is
   * not delivered again and `duplicate` is true.
   * @throws UnknownKindError, OverloadedError, UnavailableError, HandlerFailedError
   */
  async sendToTwin(kind: string, id: string, message: JsonObject, idempotencyKey?: string): Promise<{ duplicate: boolean; version: number }> {
    const entry = this.registry.get(kind);
    if (entry.instance.onMessage === undefined) throw new NoHandlerError("NO_MESSAGE_HANDLER", kind);
    checkJsonInput(message, "message");
    const size = stringifyJson(message, "message").length;
    if (size > this.options.maxMessageBytes) {
      // Bad input, not load: the same message can never be taken, so it is not retryable.
      throw new InvalidArgumentError(
        "BAD_FIELD",
        `message is ${size} bytes as JSON; the limit is ${this.options.maxMessageBytes}; send less, or raise the node's maxMessageBytes`,
        [{ field: "message", description: `at most ${this.options.maxMessageBytes} bytes as JSON` }],
      );
    }
    const outcome = await this.postOne(entry, id, (sink) => ({
      type: "message",
      message,
      messageId: idempotencyKey ? messageIdOfKey(idempotencyKey) : undefined,
      sink,
      index: 0,
    }));
    return { duplicate: outcome.status === "duplicate", version: outcome.version ?? 0 };
  }

  /**
   * Deletes a twin: its state, timers and open alerts (resolved, so watchers see it). By default
   * the source's dedupe marks and the twin's idempotency keys go too, so the next event makes a
   * fresh twin; `keepTombstone` keeps them, so late retries are rejected `TWIN_DELETED` (see
   * {@link forgetTwin}). Runs ahead of queued telemetry (control lane).
   * @throws UnknownKindError, OverloadedError, UnavailableError
   */
  async deleteTwin(kind: string, id: string, options: { keepTombstone?: boolean } = {}): Promise<TwinDeletion> {
    const entry = this.registry.get(kind);
    const keepTombstone = options.keepTombstone === true;
    const outcome = await this.postOne(entry, id, (sink) => ({ type: "control", op: "delete", keepTombstone, sink, index: 0 }), true);
    return outcome.deletion ?? { existed: false, timersCancelled: 0, resolvedAlertIds: [], tombstone: keepTombstone, tombstoneSeq: 0 };
  }

  /** Acknowledges an open alert; a no-op for an acknowledged or resolved one. */
  acknowledgeAlert(id: string): Promise<Alert> {
    return this.alertOp(id, "ack-alert");
  }

  /** Resolves an alert; a no-op for a resolved one. */
  resolveAlert(id: string): Promise<Alert> {
    return this.alertOp(id, "resolve-alert");
  }

  private async alertOp(id: string, op: "ack-alert" | "resolve-alert"): Promise<Alert> {
    const stored = await this.getAlert(id);
    if (stored.state === AlertState.RESOLVED) return stored;
    const entry = this.registry.get(stored.kind);
    await this.postOne(entry, stored.twinId, (sink) => ({ type: "control", op, alertId: id, sink, index: 0 }), true);
    return this.getAlert(id);
  }

  /** One stored alert. @throws AlertNotFoundError */
  async getAlert(id: string): Promise<Alert> {
    const raw = await this.store.get(this.keys.alert(id));
    if (raw === undefined) throw new AlertNotFoundError(id);
    const { seq: _seq, ...alert } = JSON.parse(raw) as Alert & { seq?: number };
    return alert;
  }

  private async postOne(entry: KindEntry, id: string, make: (sink: OutcomeSink) => TwinMessage, control = false): Promise<TurnOutcome> {
    const key = this.keys.twin(entry.kind, id);
    const refusal = this.admission.refusal(entry.kind, id, this.activations.get(key), 0);
    if (refusal !== undefined) throw outcomeError(refusal, entry.kind);
    // Operations wait for the copies a cluster asks of them (QUORUM), like default events.
    const batch = new PendingBatch(1, this.operationCopies);
    const act = this.activations.activate(entry, id, key);
    const msg = make(batch);
    if (control) act.postControl(msg as ControlMessage);
    else act.post(msg);
    this.schedule(act);
    const [outcome] = await batch.done;
    if (outcome === undefined) throw new Error("no outcome");
    if (outcome.status === "rejected") throw outcomeError(outcome, entry.kind);
    return outcome;
  }

  /** A twin's committed state, read from the store. @throws TwinNotFoundError */
  async getTwin(kind: string, id: string): Promise<TwinView> {
    this.registry.get(kind);
    const raw = await this.store.get(this.keys.twin(kind, id));
    const view = raw === undefined ? undefined : this.view(kind, id, raw);
    if (view === undefined) throw new TwinNotFoundError(kind, id);
    return view;
  }

  /**
   * Turns a stored record into a view; undefined for tombstones. State written by an older
   * `stateVersion` is migrated on the fly (not written back: the twin's next turn does that), so
   * readers always see the current shape.
   * @throws HandlerFailedError (MIGRATION_FAILED) when the class cannot migrate it.
   */
  view(kind: string, id: string, raw: string): TwinView | undefined {
    const { rec, state } = parseRecord(raw);
    if (state === undefined) return undefined;
    return this.viewFrom(kind, id, rec, this.currentState(kind, rec.sv, state));
  }

  /**
   * A stored record's state in the current shape (migrated as {@link view} does), read without
   * the rest of the record: what a scan filters on. Undefined for a tombstone.
   * @throws SyntaxError on a corrupt record; HandlerFailedError (MIGRATION_FAILED).
   */
  stateOf(kind: string, raw: string): JsonObject | undefined {
    const stored = readState(raw);
    return stored === undefined ? undefined : this.currentState(kind, stored.sv, stored.state);
  }

  /** The view of a stored record whose state {@link stateOf} read. */
  viewOf(kind: string, id: string, raw: string, state: JsonObject): TwinView {
    return this.viewFrom(kind, id, parseMeta(raw), state);
  }

  private viewFrom(kind: string, id: string, rec: TwinRecordData, state: JsonObject): TwinView {
    return { kind, id, state, version: rec.ver, lastSeq: rec.hw, lastEventTime: readableEventTime(rec.let), ownerNodeId: this.nodeId };
  }

  /** A stored state of state version `sv` in the kind's current shape. */
  private currentState(kind: string, sv: number, state: JsonObject): JsonObject {
    const entry = this.registry.find(kind);
    return entry === undefined || sv === entry.stateVersion ? state : this.loader.migrated(entry, sv, state).state;
  }

  // ---------------------------------------------------------------- activation

  private failActivation(act: Activation, outcome: TurnOutcome): void {
    this.activations.evict(act);
    for (const msg of act.takeAll()) this.finish(msg, outcome);
  }

  private schedule(act: Activation): void {
    this.turns.schedule(act);
  }

  private finish(msg: TwinMessage, outcome: TurnOutcome): void {
    this.completion.finish(msg, outcome);
  }

  // ---------------------------------------------------------------- timers and outbox

  private postTimer(kind: string, id: string, name: string, dueMs: number, indexKey: string): boolean {
    const entry = this.registry.find(kind);
    if (entry === undefined) return false;
    const act = this.activations.activate(entry, id, this.keys.twin(kind, id));
    const sink: OutcomeSink = { complete: () => undefined };
    act.post({ type: "timer", name, dueMs, indexKey, sink, index: 0 });
    this.schedule(act);
    return true;
  }

  private deliver(entry: OutboxEntry): Delivery {
    const target = this.registry.find(entry.toKind);
    if (target === undefined) return "unknown-kind";
    const notHere = this.remoteMessages === undefined ? undefined : this.admission.ownerRefusal(entry.toKind, entry.toId);
    // Not knowing yet who owns it (the node is joining its cluster): try again later.
    if (notHere !== undefined && notHere.reason !== "NOT_OWNER") return "busy";
    const key = this.keys.twin(entry.toKind, entry.toId);
    if (notHere !== undefined && this.remoteMessages !== undefined) {
      // No message while another to the same twin is in flight (the count includes those on
      // their way to its owner): one at a time keeps the sender's order at the receiver, and one
      // still queued or in a turn here (the twin was served here until just now), refused, would
      // be sent again after this one.
      if (this.outbox.inFlightTo(entry.toKind, entry.toId) > 0) return "busy";
      this.remoteInFlight.add(key);
      this.deliverRemote(this.remoteMessages, entry, key);
      return "delivered";
    }
    // The target was just served elsewhere: a message still on its way there, refused, would be
    // applied here after this one.
    if (this.remoteInFlight.size > 0 && this.remoteInFlight.has(key)) return "busy";
    const existing = this.activations.get(key);
    if (existing !== undefined && existing.queued >= this.options.mailboxDepth) return "busy";
    const act = this.activations.activate(target, entry.toId, key);
    const sink: OutcomeSink = { complete: () => undefined };
    act.post({ type: "message", message: entry.message, messageId: outboxMessageId(entry), outbox: entry, sink, index: 0 });
    this.schedule(act);
    return "delivered";
  }

  /**
   * Hands a message to the node that owns its target. Applied there: its outbox entry is deleted
   * here. Refused for good (the target's turn failed): it moves to the dead letters here, as a
   * local failure would. Anything else: it is offered again later; the owner recognises a
   * redelivery by the message's id. The delete (or the move) is committed like a turn's writes,
   * so the sender's replicas drop the entry too: a new owner of the sender's partition does not
   * send it again after a failover.
   */
  private deliverRemote(remote: RemoteMessages, entry: OutboxEntry, target: string): void {
    const key = this.keys.outbox(entry.partition, entry.seq);
    const settle = (delivered: boolean, stillInOutbox: boolean): void => {
      this.outbox.released(entry, stillInOutbox);
      this.remoteInFlight.delete(target);
      // After a delivery the next message to that twin goes at once; after a failure it waits
      // for the dispatcher's retry tick (offering it again at once would spin while the owner is down).
      if (delivered) this.outbox.targetFreed(entry.toKind, entry.toId);
      this.checkIdle();
    };
    remote.send(entry).then(
      () =>
        this.commitWrites([{ type: "del", key }], (written) => {
          // Not written: the entry is still in the outbox, and the message is offered again.
          if (!written) this.log.warn({ seq: entry.seq }, "could not record a message delivered to another node; it is offered again");
          settle(written, !written);
        }),
      (err: unknown) => {
        if (isTwinmeshError(err) && !err.retryable) {
          this.commitWrites([{ type: "del", key }, ...this.deadLetters.record(entry, err.reason, err.message)], (written) => {
            if (written) this.metrics.deadLetters++;
            settle(false, !written);
          });
          return;
        }
        this.log.debug({ err, seq: entry.seq, to: `${entry.toKind}/${entry.toId}` }, "message to another node's twin not delivered yet; it is offered again");
        settle(false, true);
      },
    );
  }

  /** Moves an outbox entry that does not parse to the dead letters, in one commit with its delete. */
  private quarantineOutboxEntry(key: string, raw: string, problem: string): Promise<void> {
    const { partition, seq } = this.keys.outboxKeyOf(key);
    const stand: OutboxEntry = { partition, seq, fromKind: "", fromId: "", toKind: "", toId: "", message: { unreadable: raw } };
    return new Promise((resolve, reject) =>
      this.commitWrites(
        [{ type: "del", key }, ...this.deadLetters.record(stand, "UNREADABLE_MESSAGE", `the outbox entry could not be read: ${problem}`)],
        (written) => {
          if (!written) {
            reject(new Error("the commit that moves it to the dead letters failed"));
            return;
          }
          this.metrics.deadLetters++;
          resolve();
        },
      ),
    );
  }

  /**
   * Adds `ops`, writes that are no turn's, to the open commit group: written with it, shipped to
   * the replicas of their partitions with it, withdrawn with it. `done` is called once the group
   * is answered (see {@link CommitGroup.onDone}). `copies`: the group waits for at least as many
   * durable copies; `sends`: outbox entries `ops` writes, which leave as the group's own messages
   * do (once its writes have the copies messages need).
   */
  private commitWrites(
    ops: readonly BatchOp[],
    done: (written: boolean, copies: number, shortfall?: string) => void,
    operation?: { readonly op: GroupOperation; readonly sends: readonly OutboxEntry[] },
  ): void {
    const group = this.pipeline.current;
    group.ops.push(...ops);
    if (operation !== undefined) {
      group.outbox.push(...operation.sends);
      group.asks(operation.op.copies);
      (group.operations ??= []).push(operation.op);
    }
    (group.onDone ??= []).push(done);
    this.pipeline.schedule();
  }

  /**
   * Commits an operator's writes that are no turn's (a dead letter retried, deleted or trimmed)
   * like a single-twin operation: at the copies operations wait for (a cluster's QUORUM).
   * `sends` are outbox entries `ops` writes: they leave as the group's own messages do.
   * @throws UnavailableError `COMMIT_FAILED` (nothing written), `REPLICATION_FAILED` (written here,
   *   on too few copies), `PARTITION_MOVING` (a partition it writes moved to another node meanwhile)
   */
  private commitOperation(ops: readonly BatchOp[], sends: readonly OutboxEntry[], partitions: ReadonlySet<PartitionId>): Promise<void> {
    const op: GroupOperation = { partitions, copies: this.operationCopies, withdrawn: false };
    return new Promise((resolve, reject) =>
      this.commitWrites(
        ops,
        (written, reached, shortfall) => {
          if (op.withdrawn || shortfall === "NOT_OWNER") {
            reject(
              new UnavailableError(
                "PARTITION_MOVING",
                `partition ${[...partitions].join(", ")} moved to another node as this call was written, which may have left some of its changes unmade; list again (through any node) and repeat what is still needed`,
              ),
            );
          } else if (!written) {
            reject(
              new UnavailableError("COMMIT_FAILED", "the commit that carries this call failed (the node's log says why); nothing of it was written; retry"),
            );
          } else if (reached < op.copies) {
            reject(
              new UnavailableError(
                "REPLICATION_FAILED",
                `written on this node but on ${reached} of the ${op.copies} copies this cluster waits for (a replica is down or slow); the replicas get it once they are back; list again before you repeat the call`,
              ),
            );
          } else resolve();
        },
        { op, sends },
      ),
    );
  }

  // ---------------------------------------------------------------- lifecycle

  /** True when no turn is queued or running and every commit is done. */
  get idle(): boolean {
    if (!this.pipeline.idle || !this.completion.idle || this.loader.pending) return false;
    for (const act of this.activations.values()) if (act.running || act.queued > 0 || act.loading) return false;
    return this.outbox.idle;
  }

  /** Resolves when the host is idle (see {@link idle}). */
  async whenIdle(): Promise<void> {
    while (!this.idle) {
      await new Promise<void>((resolve) => {
        this.idleWaiters.push(resolve);
        // Idle is re-checked at every commit and every drained mailbox; this is a safety net.
        setTimeout(resolve, 50).unref();
      });
    }
  }

  private checkIdle(): void {
    if (this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /**
   * Writes another node's committed changes (a replica's shipment, or a catch-up copy) in one
   * batch, without running handlers, and forgets any twin of theirs held in memory here, which
   * can only be stale: its next use reads the written record. A write that fails for lack of
   * space makes the node read-only (NOT_SERVING) as a failed commit does; while it is, every such
   * write is refused without touching the store, and {@link onServingChange} says when it ends.
   * @throws the store's error, or the one that made the disk read-only; nothing was written then.
   */
  async writeReplicated(ops: readonly BatchOp[]): Promise<void> {
    const refusing = this.disk.readOnly;
    if (refusing !== undefined) throw refusing;
    try {
      await this.store.write(ops);
    } catch (err) {
      this.disk.writeFailed(err as Error);
      throw err;
    }
    for (const op of ops) {
      const act = this.activations.get(op.key);
      if (act !== undefined) this.reload(act);
    }
  }

  /**
   * Forgets `act`, whose working record no longer matches the disk (a write replaced it, or the
   * turns it holds were withdrawn from their group); its next use reads the stored record.
   */
  private reload(act: Activation): void {
    this.activations.evict(act);
    // Work queued for the twin was taken for the twin, not for the copy of its state that was
    // just replaced: it runs on the stored state (or is refused there, when this node does not
    // own the twin). Left on the evicted activation, it would never be answered.
    const queued = act.takeAll();
    if (queued.length === 0) return;
    const fresh = this.activations.activate(act.entry, act.id, act.key);
    for (const msg of queued) {
      if (msg.type === "control") fresh.postControl(msg);
      else fresh.post(msg);
    }
    this.schedule(fresh);
  }

  /** Fires due timers now (the test kit calls this after moving virtual time). */
  fireDueTimers(): Promise<number> {
    return this.timers.fireDue();
  }

  /** The earliest pending timer's due time, if any. */
  nextTimerDue(): Promise<number | undefined> {
    return this.timers.nextDue();
  }

  /**
   * Stops taking new work, lets queued turns finish and commit (up to `timeoutMs`), then stops
   * the timer and outbox loops. Idempotent. The caller closes the store afterwards.
   */
  close(timeoutMs = 10_000): Promise<void> {
    this.closed ??= this.shutdown(timeoutMs);
    return this.closed;
  }

  private async shutdown(timeoutMs: number): Promise<void> {
    this.shuttingDown = true;
    this.disk.close();
    this.servingChanged();
    this.alerts.close();
    await this.timers.close();
    this.heldMessages.close();
    await this.outbox.close();
    await this.deadLetters.close();
    await this.alertRetention.close();
    // These timers are not unref'd: an embedding process stays up until its twins have drained.
    const deadline = performance.now() + timeoutMs;
    while (!this.idle && performance.now() < deadline) {
      await new Promise<void>((resolve) => {
        this.idleWaiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    await this.pipeline.whenIdle();
    clearInterval(this.sweepTimer);
  }
}

function outcomeError(outcome: TurnOutcome, kind: string): Error {
  const message = outcome.message ?? outcome.reason ?? "rejected";
  switch (outcome.reason) {
    case "MAILBOX_FULL":
    case "INGEST_QUEUE_FULL":
    case "RATE_LIMITED":
      return new OverloadedError(outcome.reason, message);
    case "TWIN_DELETED":
      return new TwinDeletedError(message);
    case "INTERNAL":
      return new InternalError(message);
    case "NOT_SERVING":
    case "COMMIT_FAILED":
    case "SHUTTING_DOWN":
    case "LOAD_FAILED":
    // Every refusal of a cluster's ownership gate and replication stage is retryable: mapped to
    // anything else (HANDLER_FAILED), a sender's outbox gives the message up to its dead letters.
    case "NOT_OWNER":
    case "PARTITION_MOVING":
    case "OWNER_UNAVAILABLE":
    case "STALE_EPOCH":
    case "NOT_ENOUGH_REPLICAS":
    case "REPLICATION_TIMEOUT":
    case "REPLICATION_FAILED":
      return new UnavailableError(outcome.reason, message);
    case "TURN_TIMEOUT":
    case "BAD_STATE":
    case "STATE_TOO_LARGE":
    case "MIGRATION_FAILED":
    case "TWIN_CORRUPT":
      return new HandlerFailedError(outcome.reason, message);
    case "NO_MESSAGE_HANDLER":
    case "NO_TELEMETRY_HANDLER":
      return new NoHandlerError(outcome.reason, kind);
    default:
      return new HandlerFailedError("HANDLER_FAILED", message);
  }
}

/**
 * The inbox mark of a SendToTwin idempotency key: `k:<key>`, except for the id of a twin-to-twin
 * message (`o:<partition>:<seq>`), which another node delivers by SendToTwin and which must dedupe
 * against the same message delivered locally before a failover. Such keys are reserved.
 */
function messageIdOfKey(key: string): string {
  return /^o:\d{1,5}:\d{1,16}$/.test(key) ? key : `k:${key}`;
}
