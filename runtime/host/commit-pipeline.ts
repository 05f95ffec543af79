import type { Logger } from "pino";
import type { RocksStore } from "../store/rocks-store.js";
import { SpanName, type TraceRef, type TraceSpan, type Tracing } from "../tracing.js";
import type { Activation } from "./activation.js";
import { CommitGroup } from "./commit-group.js";
import { serializeRecord } from "./twin-record.js";

/** What the host does when a group is durable, or when its write failed. */
export interface CommitHooks {
  /** The group is complete and about to be written: the last moment to add writes to its batch. */
  sealed?(group: CommitGroup): void;
  committed(group: CommitGroup): void;
  /** `groups` are the failed group and the open one built on top of it. */
  failed(groups: CommitGroup[], err: Error): void;
}

/**
 * Group commit: turns add their effects to the open group; the group closes when no write is in
 * flight (after the current burst of turns, via setImmediate) or at `maxGroupEvents`, and is
 * written as one RocksDB batch. Exactly one write is in flight at a time, so the WAL write (and
 * the fsync in `fsync` mode) is paid per group, never per event, and groups commit in order.
 */
export class CommitPipeline {
  private open = new CommitGroup();
  private writing: CommitGroup | undefined;
  /** Settles when the write in flight has been handled (committed or failed). */
  private written: Promise<void> = Promise.resolve();
  private scheduled = false;
  private idleWaiters: (() => void)[] = [];
  /** Groups written, and events in them, for metrics and benches. */
  readonly stats = { groups: 0, events: 0, writeMs: 0 };

  constructor(
    private readonly store: RocksStore,
    private readonly maxGroupEvents: number,
    private readonly hooks: CommitHooks,
    private readonly log: Logger,
    /** Spans for groups that hold traced turns; absent: tracing off. */
    private readonly tracing?: Tracing,
  ) {}

  /** The group new effects go into. */
  get current(): CommitGroup {
    return this.open;
  }

  /** Marks a twin as changed in the open group. */
  touch(act: Activation): void {
    if (!this.open.twins.has(act)) {
      this.open.twins.add(act);
      act.uncommitted++;
    }
  }

  /** Asks for the open group to be written soon. */
  schedule(): void {
    if (this.writing !== undefined) return; // flushed when the write in flight completes
    if (this.open.events >= this.maxGroupEvents) {
      this.flush();
      return;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        if (this.writing === undefined) this.flush();
      });
    }
  }

  /** True when nothing is waiting or being written. */
  get idle(): boolean {
    return this.writing === undefined && this.open.empty;
  }

  /** Resolves when every group so far is written (or failed). */
  whenIdle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private flush(): void {
    const group = this.open;
    if (group.empty) {
      this.notifyIdle();
      return;
    }
    this.open = new CommitGroup();
    for (const act of group.twins) {
      if (act.record === undefined || act.evicted) continue;
      // A twin changed only by an operator action or a handler-less timer has no stateJson yet
      // (it is made lazily after a load): its state must still be written, never dropped.
      if (act.stateJson === undefined && act.state !== undefined) act.stateJson = JSON.stringify(act.state);
      group.ops.push({ type: "put", key: act.key, value: serializeRecord(act.record, act.stateJson) });
    }
    if (group.ops.length === 0) {
      // Only acks (duplicates) that waited for earlier writes: nothing to write.
      this.done(group);
      return;
    }
    const span = group.turnTraces === undefined ? undefined : this.commitSpan(group, group.turnTraces);
    this.hooks.sealed?.(group);
    span?.set({ "twinmesh.commit.ops": group.ops.length });
    this.writing = group;
    const started = performance.now();
    this.written = this.store.write(group.ops).then(
      () => {
        span?.end();
        this.stats.groups++;
        this.stats.events += group.events;
        group.writeMs = performance.now() - started;
        this.stats.writeMs += group.writeMs;
        this.writing = undefined;
        this.done(group);
      },
      (err: Error) => {
        span?.fail(err);
        span?.end();
        this.writing = undefined;
        const open = this.open;
        this.open = new CommitGroup();
        for (const act of [...group.twins, ...open.twins]) act.uncommitted = 0;
        this.log.error({ err, events: group.events + open.events }, "commit failed; failing the group and reloading its twins");
        this.hooks.failed([group, open], err);
        this.notifyIdle();
      },
    );
  }

  /**
   * The span of a group that holds traced turns: a child of the first one's (so a trace reads
   * client, publish, turn, commit), linked to every batch it answers, since one write serves many.
   */
  private commitSpan(group: CommitGroup, turns: readonly TraceRef[]): TraceSpan | undefined {
    const parent = turns[0];
    if (this.tracing === undefined || parent === undefined) return undefined;
    const span = this.tracing.start(SpanName.commit, parent, {
      links: [...(group.batchTraces ?? [])],
      attributes: { "twinmesh.commit.events": group.events, "twinmesh.commit.twins": group.twins.size },
    });
    group.trace = span.ref;
    return span;
  }

  /** Resolves once the write in flight now (if any) has committed or failed. */
  afterWrite(): Promise<void> {
    return this.writing === undefined ? Promise.resolve() : this.written;
  }

  /**
   * Takes the open group out unwritten (its twins no longer count it as uncommitted) and starts
   * a new one. For a group that a bug left half-built: the caller answers its acks and reloads
   * its twins, exactly as after a failed write.
   */
  abandonOpen(): CommitGroup {
    const group = this.open;
    this.open = new CommitGroup();
    for (const act of group.twins) act.uncommitted--;
    this.notifyIdle();
    return group;
  }

  private done(group: CommitGroup): void {
    for (const act of group.twins) act.uncommitted--;
    this.hooks.committed(group);
    // The hook may have started the next write itself (an acknowledgement whose turns or writes
    // filled the open group): what it left open waits for that write, as a second one in flight
    // would break the order of groups.
    if (this.writing !== undefined) return;
    if (!this.open.empty) this.flush();
    else this.notifyIdle();
  }

  private notifyIdle(): void {
    if (!this.idle || this.idleWaiters.length === 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }
}
