import type { OutboxEntry } from "../../runtime/host/outbox-entry.js";
import { type HostOptions, type Logger, type OwnershipGate, type TurnOutcome, type TwinClass, TwinRuntime, VirtualClock } from "../../runtime/index.js";
import type { TestScope } from "./test-scope.js";

/** A {@link TwinRuntime} in this process on a test-owned data directory, with virtual time. */
export interface OpenedRuntime {
  readonly runtime: TwinRuntime;
  readonly clock: VirtualClock;
  readonly dataDir: string;
  /** Messages committed by `ctx.send` since this runtime opened, in commit order. */
  readonly sent: OutboxEntry[];
  /**
   * Closes this runtime (draining it) and opens a new one on the same directory and clock;
   * `whileClosed` runs in between (to move the clock while nothing runs, say).
   */
  reopen(overrides?: Partial<OpenRuntimeOptions>, whileClosed?: () => void): Promise<OpenedRuntime>;
}

/** What {@link openRuntime} takes; everything but `twins` is optional. */
export interface OpenRuntimeOptions {
  readonly twins: readonly TwinClass[];
  /** Timers are polled once an hour unless set: tests fire them with `host.fireDueTimers()`. */
  readonly host?: HostOptions;
  readonly durability?: "wal" | "fsync";
  readonly dataDir?: string;
  readonly clock?: VirtualClock;
  readonly log?: Logger;
  /** Which partitions this node owns (a cluster's gate); absent: all. */
  readonly ownership?: OwnershipGate;
}

/** 2026-01-01T00:00:00Z, where virtual time starts. */
export const START_MS = Date.parse("2026-01-01T00:00:00Z");

/**
 * Opens the real runtime (real RocksDB, real group commit) in a temp dir the scope removes, and
 * closes it after the test. Unlike `TwinTestKit`, it leaves the timers alone and can reopen the
 * same directory, so a test can look at what a restart finds.
 */
export async function openRuntime(t: TestScope, options: OpenRuntimeOptions): Promise<OpenedRuntime> {
  const clock = options.clock ?? new VirtualClock(START_MS);
  const dataDir = options.dataDir ?? t.tempDir("runtime");
  const sent: OutboxEntry[] = [];
  const runtime = await TwinRuntime.open({
    dataDir,
    twins: options.twins,
    clock,
    durability: options.durability,
    log: options.log,
    ownership: options.ownership,
    host: { timerPollMs: 3_600_000, ...options.host },
    observer: { messageSent: (entry) => void sent.push(entry) },
  });
  t.defer(() => runtime.close());
  // Start-up rescans the outbox; a test starts once that is done, so a message it makes is not
  // also picked up by that scan (which would make its delivery count depend on timing).
  await runtime.host.whenIdle();
  return {
    runtime,
    clock,
    dataDir,
    sent,
    async reopen(overrides = {}, whileClosed) {
      await runtime.close();
      whileClosed?.();
      return openRuntime(t, { ...options, ...overrides, dataDir, clock });
    },
  };
}

/** Publishes one event and returns its outcome (after its commit when accepted). */
export async function publishOne(
  runtime: TwinRuntime,
  kind: string,
  sourceId: string,
  seq: number,
  channels: Record<string, number> = {},
  attributes?: Record<string, string>,
): Promise<TurnOutcome> {
  const [outcome] = await runtime.host.publish([{ kind, sourceId, seq, channels, attributes }]);
  return outcome as TurnOutcome;
}

/** Every key of a keyspace range, read from the store. */
export async function keysIn(runtime: TwinRuntime, range: { gte: string; lt: string }): Promise<string[]> {
  const keys: string[] = [];
  for await (const chunk of runtime.store.scan(range, { values: false })) for (const [key] of chunk) keys.push(key);
  return keys;
}

/** Every entry of a keyspace range, read from the store. */
export async function entriesIn(runtime: TwinRuntime, range: { gte: string; lt: string }): Promise<[string, string][]> {
  const entries: [string, string][] = [];
  for await (const chunk of runtime.store.scan(range)) entries.push(...chunk);
  return entries;
}
