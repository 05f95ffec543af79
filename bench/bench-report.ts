import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { BenchSettings } from "./bench-settings.js";
import type { FsyncProbe, MachineInfo } from "./machine-info.js";
import { median, round } from "./stats.js";

/** A target from the issue: the median must be at least (`>=`) or at most (`<=`) `value`. */
export interface Target {
  readonly op: ">=" | "<=";
  readonly value: number;
  /**
   * The target holds for the full-size scenario only (1,000,000 twins, 100,000 active); a quick
   * run with smaller sizes shows its marker in parentheses.
   */
  readonly fullSizeOnly?: boolean;
  /** The bound is `value` times this row's median in the same run (e.g. ≤ 2× the quiet p99), not `value` itself. */
  readonly relativeTo?: { readonly id: string; readonly label: string };
}

/** One line of the table: a measured figure with its runs and median. */
export interface ResultRow {
  /** Stable key, e.g. `ingest.wal.saturation.eventsPerSec`. */
  readonly id: string;
  readonly scenario: string;
  readonly unit: string;
  /** One value per run. */
  readonly runs: number[];
  readonly target?: Target;
  /** Figures this one is compared with: ratio = this median / that row's median. */
  readonly ratioTo?: readonly { readonly id: string; readonly label: string }[];
  /** Printed after the row (e.g. the disk's fsync latency beside an fsync figure). */
  note?: string;
  /** Filled by {@link finishRows}. */
  median?: number;
  ratios?: { label: string; value: number }[];
  pass?: boolean;
}

/** Computes medians, ratios to the ceilings measured in the same run, and pass/miss. */
export function finishRows(rows: ResultRow[]): void {
  const byId = new Map<string, ResultRow>();
  for (const row of rows) {
    row.median = median(row.runs);
    byId.set(row.id, row);
  }
  for (const row of rows) {
    row.ratios = [];
    for (const ref of row.ratioTo ?? []) {
      const other = byId.get(ref.id);
      if (other?.median === undefined || !Number.isFinite(other.median) || other.median === 0) continue;
      row.ratios.push({ label: ref.label, value: (row.median as number) / other.median });
    }
    const bound = targetBound(row.target, byId);
    if (row.target !== undefined && bound !== undefined && !Number.isNaN(row.median)) {
      const m = row.median as number;
      row.pass = row.target.op === ">=" ? m >= bound : m <= bound;
    }
  }
}

/** The number a target compares with: its value, or its value times the median of the row it is relative to (undefined if that is missing). */
function targetBound(target: Target | undefined, byId: ReadonlyMap<string, ResultRow>): number | undefined {
  if (target === undefined) return undefined;
  if (target.relativeTo === undefined) return target.value;
  const base = byId.get(target.relativeTo.id)?.median;
  return base === undefined || !Number.isFinite(base) ? undefined : target.value * base;
}

/** A number for the table: thousands separators for big values, a few decimals for small ones. */
export function formatValue(v: number | null | undefined, unit: string): string {
  // JSON turns NaN into null on the way from a child process.
  if (v === undefined || v === null || Number.isNaN(v)) return "n/a";
  if (!Number.isFinite(v)) return "∞";
  if (unit === "%") return v.toFixed(1);
  const r = round(v);
  if (Math.abs(r) >= 1_000) return Math.round(r).toLocaleString("en-US");
  return String(r);
}

function formatTarget(t: Target | undefined, unit: string): string {
  if (t === undefined) return "";
  const op = t.op === ">=" ? "≥" : "≤";
  return t.relativeTo === undefined ? `${op} ${formatValue(t.value, unit)}` : `${op} ${t.value}× ${t.relativeTo.label}`;
}

function marker(row: ResultRow, quick: boolean): string {
  if (row.pass === undefined) return row.target === undefined ? "" : "n/a";
  const text = row.pass ? "pass" : "MISS";
  return quick && row.target?.fullSizeOnly ? `(${text})` : text;
}

function formatRatios(row: ResultRow): string {
  return (row.ratios ?? []).map((r) => `${r.value >= 10 ? r.value.toFixed(0) : r.value.toFixed(2)}× ${r.label}`).join(", ");
}

/** The table as text: scenario, value, unit, target, ratio to ceilings, pass/miss, note. */
export function renderTable(rows: readonly ResultRow[], quick: boolean): string {
  const header = ["scenario", "value", "unit", "target", "ratio to ceiling", "", "runs / notes"];
  const lines = rows.map((row) => {
    const runs = row.runs.length > 1 ? `runs ${row.runs.map((v) => formatValue(v, row.unit)).join(" / ")}` : "";
    const note = [runs, row.note ?? ""].filter((s) => s !== "").join("; ");
    return [row.scenario, formatValue(row.median, row.unit), row.unit, formatTarget(row.target, row.unit), formatRatios(row), marker(row, quick), note];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] as string).length)));
  const fmt = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 1 ? c.padStart(widths[i] as number) : i === cells.length - 1 ? c : c.padEnd(widths[i] as number)))
      .join("  ")
      .trimEnd();
  return [fmt(header), widths.map((w) => "-".repeat(w)).join("  "), ...lines.map(fmt)].join("\n");
}

/** Everything a results file holds. */
export interface BenchResults {
  readonly name: string;
  readonly mode: "full" | "quick";
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly durationMs: number;
  readonly machine: MachineInfo;
  readonly diskFsync: FsyncProbe | undefined;
  readonly settings: BenchSettings;
  /** Every figure: its runs, median, target, ratios and pass/miss. */
  readonly results: readonly ResultRow[];
  /** The raw result object of every run of every measurement, by measurement id. */
  readonly raw: Record<string, unknown[]>;
  readonly setup: Record<string, unknown>;
  readonly errors: readonly string[];
  /** Conditions that make some figures less trustworthy (e.g. a busy machine). */
  readonly warnings: readonly string[];
}

/**
 * Writes `<outDir>/<name>.json` and the stable `<outDir>/<latest>.json`, each atomically
 * (through a `.tmp` file). Returns the paths written.
 */
export function writeResults(outDir: string, results: BenchResults, latest: string): string[] {
  mkdirSync(outDir, { recursive: true });
  const text = `${JSON.stringify(results, (_key, value: unknown) => (typeof value === "number" && !Number.isFinite(value) ? String(value) : value), 2)}\n`;
  const paths = [join(outDir, `${results.name}.json`), join(outDir, `${latest}.json`)];
  for (const path of paths) {
    writeFileSync(`${path}.tmp`, text);
    renameSync(`${path}.tmp`, path);
  }
  return paths;
}
