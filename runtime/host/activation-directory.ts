import { Activation } from "./activation.js";
import { ActivationLru } from "./activation-lru.js";
import type { HostMetrics } from "./host-metrics.js";
import type { ResolvedHostOptions } from "./host-options.js";
import type { TwinLoader } from "./twin-loader.js";
import type { KindEntry } from "./twin-registry.js";

/** What {@link ActivationDirectory} needs of its host. */
export interface ActivationDirectoryConfig {
  readonly options: ResolvedHostOptions;
  readonly metrics: HostMetrics;
  readonly loader: TwinLoader;
}

/**
 * The twins in memory, by key, in least-recently-used order. Activating a twin that is not in
 * memory starts its load; beyond `maxActive`, and after `idleTimeoutMs` without use, idle twins
 * are passivated (dropped from memory; their state is on disk). A twin with work queued, running
 * or uncommitted is never passivated.
 */
export class ActivationDirectory {
  private readonly activations = new Map<string, Activation>();
  private readonly lru = new ActivationLru();

  constructor(private readonly config: ActivationDirectoryConfig) {}

  /** The twin's activation if it is in memory. */
  get(key: string): Activation | undefined {
    return this.activations.get(key);
  }

  /** Twins in memory. */
  get size(): number {
    return this.activations.size;
  }

  /** Every twin in memory. */
  values(): IterableIterator<Activation> {
    return this.activations.values();
  }

  /** Passivates down to `maxActive`. */
  trim(): void {
    if (this.activations.size > this.config.options.maxActive) this.passivate(this.activations.size - this.config.options.maxActive);
  }

  /** The twin's activation, made (and its load started) when it is not in memory. */
  activate(entry: KindEntry, id: string, key: string): Activation {
    let act = this.activations.get(key);
    if (act === undefined) {
      act = new Activation(entry, id, key);
      this.activations.set(key, act);
      this.lru.append(act);
      this.config.metrics.activations++;
      this.config.loader.load(act);
      if (this.activations.size > this.config.options.maxActive) this.passivate(this.activations.size - this.config.options.maxActive);
    }
    this.touch(act);
    return act;
  }

  /** Marks a twin as just used (LRU order and idle timeout). */
  touch(act: Activation): void {
    this.lru.touch(act);
    act.lastUsedMs = performance.now();
  }

  /** Drops a twin from memory; a late completion sees `evicted` and leaves the maps alone. */
  evict(act: Activation): void {
    if (act.evicted) return;
    act.evicted = true;
    this.lru.remove(act);
    if (this.activations.get(act.key) === act) this.activations.delete(act.key);
  }

  private evictable(act: Activation): boolean {
    return !act.running && !act.loading && act.uncommitted === 0 && act.queued === 0;
  }

  /**
   * Passivates up to `count` idle twins, least recently used first. Twins with work queued,
   * running or uncommitted are skipped (they were used recently, so few are near the head).
   */
  passivate(count: number): void {
    let act = this.lru.first;
    for (let examined = 0; act !== undefined && count > 0 && examined < count * 4 + 16; examined++) {
      const next = act.lruNext;
      if (this.evictable(act)) {
        this.evict(act);
        this.config.metrics.passivations++;
        count--;
      }
      act = next;
    }
  }

  /** Passivates twins idle longer than `idleTimeoutMs`, walking from the least recently used. */
  sweepIdle(): void {
    const cutoff = performance.now() - this.config.options.idleTimeoutMs;
    let act = this.lru.first;
    while (act !== undefined && act.lastUsedMs < cutoff) {
      const next = act.lruNext;
      if (this.evictable(act)) {
        this.evict(act);
        this.config.metrics.passivations++;
      }
      act = next;
    }
  }
}
