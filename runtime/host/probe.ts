import { appendFileSync } from "node:fs";

const on = process.env.TWINMESH_PROBE !== undefined;
const series = new Map<string, number[]>();
export function probe(name: string, ms: number): void {
  if (!on) return;
  let a = series.get(name);
  if (a === undefined) series.set(name, (a = []));
  a.push(ms);
}
if (on) {
  const file = `${process.env.TWINMESH_PROBE}/probe-${process.pid}.log`;
  setInterval(() => {
    const lines: string[] = [];
    for (const [name, a] of series) {
      a.sort((x, y) => x - y);
      const q = (f: number) => (a[Math.min(a.length - 1, Math.floor(f * a.length))] ?? 0).toFixed(1);
      lines.push(`${new Date().toISOString()} ${name} n=${a.length} p50=${q(0.5)} p90=${q(0.9)} p99=${q(0.99)} max=${q(1)}`);
    }
    series.clear();
    if (lines.length > 0) appendFileSync(file, `${lines.join("\n")}\n`);
  }, 2000).unref();
}
