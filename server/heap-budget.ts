import { constants, type PerformanceEntry, PerformanceObserver } from "node:perf_hooks";
import { getHeapStatistics, setFlagsFromString } from "node:v8";
import { ConfigError, type Logger } from "../runtime/index.js";

/** V8 grows the heap to at most about this many times what survived the last full collection. */
const V8_MAX_GROWTH_FACTOR = 4;
/** The least growth the budget asks for: below it, full collections would follow each other. */
const MIN_GROWTH_PERCENT = 20;
/**
 * The growth asked for until the first full collection tells what is live. V8 sets a limit as a
 * collection ends and the observer hears of it only afterwards, so without this the first limit
 * would be V8's own, up to 4x, and a node loading many twins at start overshot by 100 MiB.
 */
const INITIAL_GROWTH_PERCENT = 100;

/**
 * The heap growth, in percent over what is live, that keeps the next collection's limit near
 * `budgetBytes`; 0 (V8's own policy) while even V8's largest growth stays inside the budget.
 */
export function growthPercentFor(budgetBytes: number, liveBytes: number): number {
  if (liveBytes <= 0 || budgetBytes >= liveBytes * V8_MAX_GROWTH_FACTOR) return 0;
  return Math.max(MIN_GROWTH_PERCENT, Math.floor((budgetBytes / liveBytes - 1) * 100));
}

/**
 * Steers the JavaScript heap toward a size budget, for a node process. V8 sets the next full
 * collection's limit at up to 4x what survived the last one, so a node holding 150 MB of active
 * twins while it cycles a large population through memory let its heap reach 450 MB of mostly
 * garbage. After each full collection this reads what survived and, once V8's growth could pass
 * the budget, asks V8 (`--heap-growing-percent`, read whenever V8 sets a limit) to grow only as
 * far as the budget. A small heap keeps V8's adaptive policy, which collects least often: a
 * fixed growth for every heap cost a 10k-twin node a sixth of its throughput.
 *
 * It is a target, not a limit: the heap grows past it by at least 20 % of what is live, and
 * nothing fails when it does. It sets a V8 flag for the whole process, so only the process's
 * owner starts one (the `twinmesh start` command does), and only one runs at a time.
 *
 * @example
 * ```ts
 * const budget = HeapBudget.start(192 * 1024 * 1024, log);
 * // … run the node
 * budget.close();
 * ```
 */
export class HeapBudget {
  private static running: HeapBudget | undefined;
  private percent = 0;
  private closed = false;
  private readonly observer: PerformanceObserver;

  private constructor(
    /** The heap size to stay near, in bytes. */
    readonly budgetBytes: number,
    private readonly log: Logger,
  ) {
    this.observer = new PerformanceObserver((list) => {
      if (list.getEntries().some(isFullCollection)) this.adjust();
    });
  }

  /**
   * Starts steering toward `budgetBytes`.
   * @throws ConfigError (BAD_OPTION) for a budget that is not a positive whole number of bytes, or
   * when a budget is already running in this process.
   */
  static start(budgetBytes: number, log: Logger): HeapBudget {
    if (!Number.isSafeInteger(budgetBytes) || budgetBytes <= 0) {
      throw new ConfigError("BAD_OPTION", `heap budget is ${budgetBytes}; use a whole number of bytes above 0`);
    }
    if (HeapBudget.running !== undefined) {
      throw new ConfigError("BAD_OPTION", "a heap budget is already running in this process; close it first (the V8 flag it sets is process-wide)");
    }
    const budget = new HeapBudget(budgetBytes, log);
    HeapBudget.running = budget;
    budget.observer.observe({ entryTypes: ["gc"] });
    budget.apply(INITIAL_GROWTH_PERCENT, 0);
    return budget;
  }

  /** The growth currently asked of V8, in percent; 0 while V8's own policy applies. */
  get growthPercent(): number {
    return this.percent;
  }

  /** Stops steering and gives V8 its own policy back. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.observer.disconnect();
    this.apply(0, 0);
    HeapBudget.running = undefined;
  }

  private adjust(): void {
    // Read soon after a full collection, the used size is close to what is live.
    const live = getHeapStatistics().used_heap_size;
    this.apply(growthPercentFor(this.budgetBytes, live), live);
  }

  private apply(percent: number, live: number): void {
    if (percent === this.percent) return;
    setFlagsFromString(`--heap-growing-percent=${percent}`);
    this.percent = percent;
    this.log.debug({ liveMiB: Math.round(live / 2 ** 20), budgetMiB: Math.round(this.budgetBytes / 2 ** 20), growthPercent: percent }, "heap growth set");
  }
}

/** A "gc" entry carries the collection's kind in `detail` (Node's types do not declare it). */
function isFullCollection(entry: PerformanceEntry): boolean {
  const { detail } = entry as PerformanceEntry & { detail?: { kind?: number } | null };
  return detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR;
}
