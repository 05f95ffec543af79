import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { BenchChild } from "./bench-child.js";

/** `dist/cli/main.js`: the real `twinmesh` command. */
export const CLI_SCRIPT = fileURLToPath(new URL("../cli/main.js", import.meta.url));
/** The compiled bench twin module the node loads with `--twins`. */
export const BENCH_TWINS_MODULE = fileURLToPath(new URL("./bench-twins.js", import.meta.url));

const READY_LINE = /^twinmesh node \S+ serving on (\S+) /;

/** How to start a node. */
export interface NodeSpec {
  readonly name: string;
  readonly dataDir: string;
  readonly durability: "wal" | "fsync";
  readonly maxActive?: number;
  /** Write a V8 CPU profile of the node into this directory (on a clean exit). */
  readonly cpuProfDir?: string;
  /** Extra Node.js flags, before the script. */
  readonly nodeArgs?: readonly string[];
  readonly readyTimeoutMs: number;
  /** Port to listen on; default any free one. */
  readonly port?: number;
  /** More `twinmesh start` arguments (`--node-id`, `--peers`, …). */
  readonly args?: readonly string[];
  /** More environment for the node (`OTEL_*` for the tracing scenario). */
  readonly env?: NodeJS.ProcessEnv;
}

/** A node child process that printed its ready line. */
export interface StartedNode {
  readonly child: BenchChild;
  /** `host:port` from the ready line. */
  readonly address: string;
  /** ms from spawn to the ready line. */
  readonly readyMs: number;
}

/**
 * Starts `twinmesh start` on 127.0.0.1, port 0, with the bench twin, and waits for its ready line.
 * @throws Error with the node's output when it exits or does not get ready in time.
 */
export async function startNode(spec: NodeSpec): Promise<StartedNode> {
  const args = [
    "start",
    "--twins",
    BENCH_TWINS_MODULE,
    "--data",
    spec.dataDir,
    "--host",
    "127.0.0.1",
    "--port",
    String(spec.port ?? 0),
    "--durability",
    spec.durability,
    "--log-level",
    "warn",
    // Off: several bench nodes would all ask for 9464 (spec.args may turn it on again on a free port).
    "--metrics-port",
    "0",
  ];
  if (spec.maxActive !== undefined) args.push("--max-active", String(spec.maxActive));
  args.push(...(spec.args ?? []));
  const nodeArgs = [...(spec.nodeArgs ?? [])];
  if (spec.cpuProfDir !== undefined) nodeArgs.push("--cpu-prof", "--cpu-prof-dir", spec.cpuProfDir, "--cpu-prof-name", `${spec.name}-${Date.now()}.cpuprofile`);
  const child = BenchChild.spawn(CLI_SCRIPT, args, { name: spec.name, nodeArgs, env: spec.env });
  try {
    const { match, at } = await child.waitForLine(READY_LINE, spec.readyTimeoutMs);
    return { child, address: match[1] as string, readyMs: at - child.spawnedAt };
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
}

/** Resident set size of a process in bytes (VmRSS from /proc/<pid>/status); NaN when unreadable. */
export function rssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = status.match(/^VmRSS:\s+(\d+)\s+kB/m);
    return match ? Number(match[1]) * 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Samples a process's RSS on an interval and keeps the largest value. */
export class RssSampler {
  private timer: NodeJS.Timeout | undefined;
  /** Largest RSS seen, bytes. */
  maxBytes = 0;
  samples = 0;

  constructor(
    private readonly pid: number,
    private readonly intervalMs = 200,
  ) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
    return this;
  }

  private sample(): void {
    const rss = rssBytes(this.pid);
    if (!Number.isNaN(rss)) {
      this.samples++;
      if (rss > this.maxBytes) this.maxBytes = rss;
    }
  }

  /** Stops sampling (after one last sample) and returns the largest RSS seen. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.maxBytes;
  }
}

/** Total size of the files under `dir`, bytes (bounded depth: RocksDB directories are flat). */
export function dirBytes(dir: string, depth = 3): number {
  let total = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (depth > 0) total += dirBytes(path, depth - 1);
    } else if (entry.isFile()) {
      total += statSync(path).size;
    }
  }
  return total;
}
