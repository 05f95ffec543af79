import { performance } from "node:perf_hooks";
import { setTimeout as delay } from "node:timers/promises";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { TwinmeshClient } from "../../client/index.js";
import type { Logger } from "../../runtime/index.js";
import { allocateSources, createDevices } from "./device-fleet.js";
import { PublishPipeline, type PublishTotals } from "./publish-pipeline.js";
import { SIMULATED_KINDS, type SimulatedKind } from "./simulated-device.js";

/** Options of {@link runSimulator}. `address`, `sources`, `ratePerSecond` and `signal` are required. */
export interface SimulatorOptions {
  /** `host:port` of the node to feed. */
  readonly address: string;
  /** Devices to simulate, spread over `kinds`. */
  readonly sources: number;
  /** Events per second over all devices. */
  readonly ratePerSecond: number;
  /** Stops the run: no new events, then every answer is awaited. */
  readonly signal: AbortSignal;
  readonly log?: Logger;
  /** @defaultValue all of {@link SIMULATED_KINDS}: 60 % patients, 30 % vehicles, 10 % pumps */
  readonly kinds?: readonly SimulatedKind[];
  /** Same seed, same devices and readings. @defaultValue 1 */
  readonly seed?: string | number;
  /** @defaultValue 500 */
  readonly maxBatchEvents?: number;
  /** A partial batch is sent after this long. @defaultValue 50 */
  readonly flushIntervalMs?: number;
  /** @defaultValue 16 */
  readonly maxInflightBatches?: number;
  /** Called about every `progressIntervalMs`, and once at the end. */
  readonly onProgress?: (progress: SimulatorProgress) => void;
  /** @defaultValue 1_000 */
  readonly progressIntervalMs?: number;
  /** Told when the stream failed and is about to be reopened (the run goes on). @defaultValue a warning on `log` */
  readonly onStreamError?: (err: Error, reopenInMs: number) => void;
}

/** What a run did so far. */
export interface SimulatorProgress extends PublishTotals<undefined> {
  readonly elapsedMs: number;
  /** Events the schedule dropped because the node (or this process) could not keep up. */
  readonly skipped: number;
  /** Devices per kind. */
  readonly devices: Readonly<Partial<Record<SimulatedKind, number>>>;
}

/** Most schedule debt kept, in ms of events: beyond it the simulator skips ahead instead of bursting. */
const MAX_LAG_MS = 1_000;

interface ResolvedSimulatorOptions {
  readonly address: string;
  readonly sources: number;
  readonly ratePerSecond: number;
  readonly kinds: readonly SimulatedKind[];
  readonly seed: string | number;
  readonly maxBatchEvents: number;
  readonly flushIntervalMs: number;
  readonly maxInflightBatches: number;
  readonly progressIntervalMs: number;
}

/** Applies the defaults and checks the limits. @throws RangeError naming the bad option */
export function resolveSimulatorOptions(o: SimulatorOptions): ResolvedSimulatorOptions {
  const kinds = o.kinds ?? (Object.keys(SIMULATED_KINDS) as SimulatedKind[]);
  if (!Number.isSafeInteger(o.sources) || o.sources < 1) throw new RangeError(`sources is ${o.sources}; use a whole number >= 1`);
  if (!Number.isFinite(o.ratePerSecond) || o.ratePerSecond <= 0) throw new RangeError(`ratePerSecond is ${o.ratePerSecond}; use a number > 0`);
  if (kinds.length === 0) throw new RangeError(`kinds is empty; use some of ${Object.keys(SIMULATED_KINDS).join(", ")}`);
  for (const kind of kinds) {
    if (!Object.hasOwn(SIMULATED_KINDS, kind))
      throw new RangeError(`kind "${kind}" cannot be simulated; use some of ${Object.keys(SIMULATED_KINDS).join(", ")}`);
  }
  return {
    address: o.address,
    sources: o.sources,
    ratePerSecond: o.ratePerSecond,
    kinds: [...new Set(kinds)],
    seed: o.seed ?? 1,
    maxBatchEvents: o.maxBatchEvents ?? 500,
    flushIntervalMs: o.flushIntervalMs ?? 50,
    maxInflightBatches: o.maxInflightBatches ?? 16,
    progressIntervalMs: o.progressIntervalMs ?? 1_000,
  };
}

/**
 * Feeds a node with realistic telemetry from `sources` simulated devices (patients, vehicles,
 * pumps: see `patient-device.ts`, `vehicle-device.ts`, `pump-device.ts`) until `signal` aborts,
 * then waits for every answer and ends the stream.
 *
 * Devices take turns, so each reports every `sources / ratePerSecond` seconds; an event's `time`
 * is its slot in that schedule. Every device's seq starts above the start time in ms × 1000 and
 * grows by 1, so a restarted simulator is never taken for a duplicate. Events go over one
 * PublishStream in batches (full at `maxBatchEvents`, or sent every `flushIntervalMs`) with at
 * most `maxInflightBatches` unanswered; retryable rejections are sent again with the same seq.
 * When the node cannot keep up, the schedule skips ahead rather than bursting (`skipped`).
 *
 * @returns the totals of the run
 * @throws RangeError for bad options; the stream's failure when it was not retryable
 * @example
 * const stop = new AbortController();
 * const run = runSimulator({ address: "127.0.0.1:7420", sources: 50, ratePerSecond: 200, signal: stop.signal });
 * // … later
 * stop.abort();
 * const totals = await run;
 */
export async function runSimulator(options: SimulatorOptions): Promise<SimulatorProgress> {
  const o = resolveSimulatorOptions(options);
  const { signal, log, onProgress } = options;
  const intervalS = o.sources / o.ratePerSecond;
  const devices = createDevices(o.sources, o.kinds, o.seed, intervalS).map((device) => ({ device, sent: 0n }));
  const perKind = Object.fromEntries(allocateSources(o.sources, o.kinds));
  const client = new TwinmeshClient(o.address);
  const pipeline = new PublishPipeline<undefined>(client, {
    maxBatchEvents: o.maxBatchEvents,
    maxInflightBatches: o.maxInflightBatches,
    onStreamError: options.onStreamError ?? ((err, reopenInMs) => log?.warn({ err: err.message, reopenInMs }, "simulator stream failed; reopening")),
  });
  // Above every seq an earlier run (started at an earlier ms) could have reached, unless it sent
  // over 1000 events per source per ms.
  const seqBase = BigInt(Date.now()) * 1000n;
  const startMs = Date.now();
  const t0 = performance.now();
  const maxLagEvents = Math.max(o.maxBatchEvents, Math.ceil((o.ratePerSecond * MAX_LAG_MS) / 1000));
  let scheduled = 0;
  let skipped = 0;
  let next = 0;
  let lastProgressMs = 0;
  const warned = new Set<string>();
  const progress = (): SimulatorProgress => ({ ...pipeline.totals, elapsedMs: performance.now() - t0, skipped, devices: perKind });
  const report = (force: boolean): void => {
    const now = performance.now();
    if (!force && now - lastProgressMs < o.progressIntervalMs) return;
    lastProgressMs = now;
    const p = progress();
    for (const r of p.rejections) {
      if (warned.has(r.reason)) continue;
      warned.add(r.reason);
      log?.warn({ reason: r.reason, kind: r.kind, sourceId: r.sourceId, message: r.message }, "simulator event rejected");
    }
    onProgress?.(p);
  };

  log?.info({ address: o.address, devices: perKind, ratePerSecond: o.ratePerSecond, seed: o.seed }, "simulator started");
  try {
    try {
      while (!signal.aborted) {
        let due = Math.floor(((performance.now() - t0) * o.ratePerSecond) / 1000) - scheduled;
        if (due > maxLagEvents) {
          skipped += due - maxLagEvents;
          scheduled += due - maxLagEvents;
          due = maxLagEvents;
        }
        for (let i = 0; i < due && !signal.aborted; i++) {
          const slot = devices[next] as (typeof devices)[number];
          next = (next + 1) % devices.length;
          const timeMs = startMs + (scheduled * 1000) / o.ratePerSecond;
          scheduled++;
          const reading = slot.device.read(timeMs);
          slot.sent++;
          await pipeline.push(
            {
              kind: slot.device.kind,
              sourceId: slot.device.id,
              seq: seqBase + slot.sent,
              time: timestampFromMs(Math.round(timeMs)),
              channels: reading.channels,
              attributes: reading.attributes,
            },
            undefined,
          );
        }
        await pipeline.flush();
        report(false);
        const untilNextMs = ((scheduled + 1) * 1000) / o.ratePerSecond - (performance.now() - t0);
        await delay(Math.min(o.flushIntervalMs, Math.max(1, untilNextMs)), undefined, { signal }).catch(() => undefined);
      }
    } finally {
      await pipeline.close();
    }
  } finally {
    client.close();
  }
  report(true);
  const totals = progress();
  log?.info({ sent: totals.pushed, accepted: totals.accepted, duplicate: totals.duplicate, rejected: totals.rejected, skipped }, "simulator stopped");
  return totals;
}
