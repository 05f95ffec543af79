import { type Telemetry, Twin, type TwinContext } from "twinmesh";

/**
 * The twin kind every bench scenario drives. Its state is about 110 bytes of JSON, the size of a
 * typical sensor twin, and its handler is the same pure function the bare pipeline ceiling runs
 * ({@link applyReading}), so the two do the same work per event.
 */

/** Weight of a new reading in the EWMA. */
const EWMA_ALPHA = 0.1;

/** State of a {@link BenchTwin}. */
export interface BenchState {
  /** Latest reading of channel `value` (uniform in [0, 100) in the bench). */
  value: number;
  /** EWMA of `value`; the first reading seeds it. */
  ewma: number;
  /** Readings received. */
  count: number;
  min: number;
  max: number;
  /** A group label (like a ward or a site), derived from the id: `g-` and its last two digits. */
  group: string;
  /** Time of the latest reading, epoch ms. */
  lastMs: number;
}

/** A fresh state, before any reading. */
export function initialBenchState(): BenchState {
  return { value: 0, ewma: 0, count: 0, min: 0, max: 0, group: "", lastMs: 0 };
}

/**
 * Applies one reading to `s` in place: EWMA, counter, min/max, last value and time. The group
 * label is set on the first reading.
 */
export function applyReading(s: BenchState, id: string, value: number, timeMs: number): void {
  if (s.count === 0) {
    s.ewma = value;
    s.min = value;
    s.max = value;
    s.group = `g-${id.slice(-2)}`;
  } else {
    s.ewma = EWMA_ALPHA * value + (1 - EWMA_ALPHA) * s.ewma;
    if (value < s.min) s.min = value;
    if (value > s.max) s.max = value;
  }
  s.value = value;
  s.count += 1;
  s.lastMs = timeMs;
}

/** The bench's twin: reads channel `value`, keeps {@link BenchState}. No alerts, timers or messages. */
export class BenchTwin extends Twin<BenchState> {
  static readonly kind = "bench";

  initial(): BenchState {
    return initialBenchState();
  }

  override onTelemetry(t: Telemetry, ctx: TwinContext<BenchState>): void {
    const value = t.channels.value;
    if (value === undefined) return;
    applyReading(ctx.state, ctx.id, value, t.time.getTime());
  }
}

/** Readings a {@link BenchListTwin} keeps. */
export const BENCH_LIST_LENGTH = 20;

/** State of a {@link BenchListTwin}: the last {@link BENCH_LIST_LENGTH} readings, oldest first. */
export interface BenchListState {
  readings: number[];
}

/**
 * The twin of the bench's hostile-filter data set (kind `bench-list`): a short list in its state,
 * so a filter can nest comprehensions over it. It starts with a full list of zeros.
 */
export class BenchListTwin extends Twin<BenchListState> {
  static readonly kind = "bench-list";

  initial(): BenchListState {
    return { readings: new Array<number>(BENCH_LIST_LENGTH).fill(0) };
  }

  override onTelemetry(t: Telemetry, ctx: TwinContext<BenchListState>): void {
    const value = t.channels.value;
    if (value === undefined) return;
    ctx.state.readings.push(value);
    if (ctx.state.readings.length > BENCH_LIST_LENGTH) ctx.state.readings.shift();
  }
}
