import type { AggregateResult } from "../runtime/index.js";

/** Combines the partial aggregates of disjoint sets of twins into the aggregate of their union. */
export function mergeAggregates(parts: readonly AggregateResult[]): AggregateResult {
  const groups = new Map<string, { key: unknown; count: number; sum: number; min: number; max: number }>();
  let scanned = 0;
  let matched = 0;
  let evaluationErrors = 0;
  for (const part of parts) {
    scanned += part.scanned;
    matched += part.matched;
    evaluationErrors += part.evaluationErrors;
    for (const g of part.groups) {
      const id = typeof g.key === "string" ? `s${g.key}` : JSON.stringify(g.key);
      const merged = groups.get(id);
      if (merged === undefined) groups.set(id, { key: g.key, count: g.count, sum: g.sum, min: g.min, max: g.max });
      else {
        merged.count += g.count;
        merged.sum += g.sum;
        merged.min = Math.min(merged.min, g.min);
        merged.max = Math.max(merged.max, g.max);
      }
    }
  }
  return {
    groups: [...groups.values()].map((g) => ({ key: g.key, count: g.count, sum: g.sum, avg: g.sum / g.count, min: g.min, max: g.max })),
    scanned,
    matched,
    evaluationErrors,
  };
}
