#!/usr/bin/env node
/**
 * Summarises a V8 CPU profile (`.cpuprofile`, as `npm run bench -- --cpu-prof` writes for each
 * node child): self time by area (grpc-js, protobuf-es, runtime, server, RocksDB binding, GC, …)
 * and the functions with the most self time. Usage:
 *
 *   node dist/bench/profile-summary.js bench/results/profiles/<file>.cpuprofile [--top 30]
 */
import { readFileSync } from "node:fs";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly hitCount?: number;
  readonly children?: readonly number[];
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** The area a frame belongs to, from its script URL or V8's pseudo-frames. */
function areaOf(url: string, name: string): string {
  if (name === "(garbage collector)") return "GC";
  if (name === "(idle)") return "idle";
  if (name === "(program)") return "V8/native (program)";
  if (url.includes("/@grpc/grpc-js/")) return "grpc-js";
  if (url.includes("/@bufbuild/protobuf/")) return "protobuf-es";
  if (url.includes("/proto/gen/")) return "generated protobuf";
  if (url.includes("/rocksdb/") || url.includes("abstract-leveldown")) return "rocksdb binding (JS)";
  if (url.includes("/pino") || url.includes("sonic-boom")) return "pino";
  if (url.includes("/cel-js/")) return "cel-js";
  if (url.includes("/dist/runtime/")) return `runtime/${url.split("/dist/runtime/")[1]?.split("/")[0] ?? ""}`;
  if (url.includes("/dist/server/")) return "server";
  if (url.includes("/dist/bench/")) return "bench twin";
  if (url.includes("/dist/")) return "twinmesh (other)";
  if (url.startsWith("node:") || url === "") return name === "" ? "native" : `node:${url.replace(/^node:/, "").split("/")[0] ?? ""}`;
  return "other";
}

function main(): void {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith("--"));
  const topAt = args.indexOf("--top");
  const top = topAt >= 0 ? Number(args[topAt + 1]) || 30 : 30;
  if (file === undefined) {
    process.stderr.write("usage: node dist/bench/profile-summary.js <file.cpuprofile> [--top N]\n");
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  // Self time: each sample's time delta goes to the node it landed in.
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i] as number;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const areas = new Map<string, number>();
  const functions = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const area = areaOf(url, functionName);
    if (area === "idle") {
      idle += us;
      continue;
    }
    total += us;
    areas.set(area, (areas.get(area) ?? 0) + us);
    const where = url === "" ? "" : ` ${url.replace(/^.*\/(node_modules|dist)\//, "$1/")}:${lineNumber + 1}`;
    const key = `${functionName || "(anonymous)"}${where}`;
    functions.set(key, (functions.get(key) ?? 0) + us);
  }
  const wall = (profile.endTime - profile.startTime) / 1e6;
  const pct = (us: number): string => `${((us / total) * 100).toFixed(1).padStart(5)} %`;
  process.stdout.write(
    `${file}\nwall ${wall.toFixed(1)} s, busy ${(total / 1e6).toFixed(1)} s (main thread), idle ${(idle / 1e6).toFixed(1)} s\n\nself time by area:\n`,
  );
  for (const [area, us] of [...areas].sort((a, b) => b[1] - a[1])) process.stdout.write(`  ${pct(us)}  ${(us / 1e6).toFixed(2).padStart(7)} s  ${area}\n`);
  process.stdout.write(`\ntop ${top} functions by self time:\n`);
  for (const [fn, us] of [...functions].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`  ${pct(us)}  ${fn}\n`);
}

main();
