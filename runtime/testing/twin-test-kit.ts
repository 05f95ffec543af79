import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Alert } from "../alerts/alert.js";
import { VirtualClock } from "../clock.js";
import type { HostOptions } from "../host/host-options.js";
import type { OutboxEntry } from "../host/outbox-entry.js";
import type { TwinView } from "../host/twin-host.js";
import type { TurnOutcome } from "../host/twin-message.js";
import type { AnyTwin, MessageOf, StateOf, TwinClass } from "../twin/twin.js";
import { TwinRuntime } from "../twin-runtime.js";
import type { JsonObject } from "../util/json.js";

/** Options for {@link TwinTestKit.start}. */
export interface TwinTestKitOptions {
  /** The twin classes under test (and any they send to). */
  readonly twins: readonly TwinClass[];
  /** Virtual time at start. @defaultValue 2026-01-01T00:00:00Z */
  readonly startTime?: Date | number;
  /** Host limits, e.g. a short `turnTimeoutMs`. */
  readonly host?: HostOptions;
}

/** Optional parts of a published event. */
export interface PublishOptions {
  /** @defaultValue the source's previous seq + 1 */
  readonly seq?: number;
  /** @defaultValue the kit's current virtual time */
  readonly time?: Date;
  readonly attributes?: JsonObject;
}

/** A message a twin sent with `ctx.send`, as committed. */
export interface SentMessage {
  readonly from: { readonly kind: string; readonly id: string };
  readonly to: { readonly kind: string; readonly id: string };
  readonly message: JsonObject;
}

/**
 * Runs the real runtime in process (real RocksDB in a temp dir, real group commit) with virtual
 * time, so a twin class is tested in a few lines. Every call waits until the twins are idle and
 * everything is committed, so assertions see settled state.
 *
 * @example
 * const kit = await TwinTestKit.start({ twins: [PatientTwin] });
 * await kit.publish(PatientTwin, "bed-4", { bpm: 72 });
 * await kit.advance(60_000);
 * assert.deepEqual(kit.openAlerts(PatientTwin, "bed-4").map((a) => a.code), ["missing-signal"]);
 * await kit.close();
 */
export class TwinTestKit {
  private readonly seqs = new Map<string, number>();
  private readonly alerts = new Map<string, Alert>();
  private readonly messages: SentMessage[] = [];

  private constructor(
    /** The virtual clock twins read through `ctx.now()`. */
    readonly clock: VirtualClock,
    /** The runtime under test, for what the kit does not wrap. */
    readonly runtime: TwinRuntime,
    private readonly dir: string,
  ) {}

  /** Starts a kit on a fresh temporary data directory. */
  static async start(options: TwinTestKitOptions): Promise<TwinTestKit> {
    const start = options.startTime ?? Date.parse("2026-01-01T00:00:00Z");
    const clock = new VirtualClock(start instanceof Date ? start.getTime() : start);
    const dir = mkdtempSync(join(tmpdir(), "twinmesh-kit-"));
    let kit: TwinTestKit | undefined;
    const runtime = await TwinRuntime.open({
      dataDir: dir,
      twins: options.twins,
      clock,
      // Timers are driven by advance(), not polled.
      host: { timerPollMs: 3_600_000, ...options.host },
      observer: {
        alertChanged: (alert) => kit?.alerts.set(alert.id, alert),
        messageSent: (entry: OutboxEntry) =>
          kit?.messages.push({ from: { kind: entry.fromKind, id: entry.fromId }, to: { kind: entry.toKind, id: entry.toId }, message: entry.message }),
      },
    });
    kit = new TwinTestKit(clock, runtime, dir);
    return kit;
  }

  /** The current virtual time. */
  now(): Date {
    return new Date(this.clock.nowMs());
  }

  /**
   * Publishes one telemetry event and waits for its outcome (committed when accepted).
   * Seqs count up per source unless given.
   */
  async publish<T extends AnyTwin>(twin: TwinClass<T>, id: string, channels: Record<string, number>, options: PublishOptions = {}): Promise<TurnOutcome> {
    const key = `${twin.kind}\u0000${id}`;
    const seq = options.seq ?? (this.seqs.get(key) ?? 0) + 1;
    if (seq > (this.seqs.get(key) ?? 0)) this.seqs.set(key, seq);
    const [outcome] = await this.runtime.host.publish([
      { kind: twin.kind, sourceId: id, seq, timeMs: (options.time ?? this.now()).getTime(), channels, attributes: options.attributes },
    ]);
    await this.settle();
    return outcome as TurnOutcome;
  }

  /** Sends a message to a twin's `onMessage`, as `SendToTwin` does, and waits for it to commit. */
  async send<T extends AnyTwin>(twin: TwinClass<T>, id: string, message: MessageOf<T>): Promise<void> {
    await this.runtime.host.sendToTwin(twin.kind, id, message as JsonObject);
    await this.settle();
  }

  /**
   * Moves virtual time forward by `ms`, firing due timers in due order; after each, waits until
   * every mailbox is empty and committed (so messages and re-armed timers take effect).
   */
  async advance(ms: number): Promise<void> {
    const target = this.clock.nowMs() + ms;
    await this.settle();
    for (let rounds = 0; rounds < 100_000; rounds++) {
      const due = await this.runtime.host.nextTimerDue();
      if (due === undefined || due > target) break;
      if (due > this.clock.nowMs()) this.clock.set(due);
      const fired = await this.runtime.host.fireDueTimers();
      await this.settle();
      if (fired === 0 && due <= this.clock.nowMs() && (await this.runtime.host.nextTimerDue()) === due) break; // a timer of an unregistered kind
    }
    this.clock.set(target);
    await this.settle();
  }

  /** The committed state of a twin; throws TwinNotFoundError if it has none. */
  async state<T extends AnyTwin>(twin: TwinClass<T>, id: string): Promise<StateOf<T>> {
    return (await this.twin(twin, id)).state as StateOf<T>;
  }

  /** The committed snapshot of a twin (state, version, last seq). */
  twin<T extends AnyTwin>(twin: TwinClass<T>, id: string): Promise<TwinView> {
    return this.runtime.host.getTwin(twin.kind, id);
  }

  /** Open and acknowledged alerts of a twin, oldest first. */
  openAlerts<T extends AnyTwin>(twin: TwinClass<T>, id: string): Alert[] {
    return this.allAlerts(twin, id).filter((a) => a.state !== "RESOLVED");
  }

  /** Every alert of a twin (resolved ones too), in its latest form, oldest first. */
  allAlerts<T extends AnyTwin>(twin: TwinClass<T>, id: string): Alert[] {
    return [...this.alerts.values()].filter((a) => a.kind === twin.kind && a.twinId === id).sort((a, b) => a.raisedAt - b.raisedAt || a.id.localeCompare(b.id));
  }

  /** Messages sent (committed) so far, optionally only those from one twin. */
  sent<T extends AnyTwin>(from?: TwinClass<T>, id?: string): SentMessage[] {
    return this.messages.filter((m) => (from === undefined || m.from.kind === from.kind) && (id === undefined || m.from.id === id));
  }

  private async settle(): Promise<void> {
    await this.runtime.host.fireDueTimers();
    await this.runtime.host.whenIdle();
  }

  /** Closes the runtime and deletes the temp directory. */
  async close(): Promise<void> {
    await this.runtime.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
