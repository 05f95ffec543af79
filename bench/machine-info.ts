import { closeSync, existsSync, fsyncSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { arch, cpus, loadavg, release, totalmem, type } from "node:os";
import { dirname, join } from "node:path";
import { type LatencySummary, summarize } from "./stats.js";

/** The machine and software a result was measured on. */
export interface MachineInfo {
  readonly os: string;
  readonly arch: string;
  readonly cpuModel: string;
  readonly cpuCount: number;
  readonly memoryBytes: number;
  /** 1, 5 and 15 minute load averages when the bench started (a busy machine shows here). */
  readonly loadAverageAtStart: number[];
  readonly versions: Record<string, string>;
  /** Where the data directories were (the temp dir) and its filesystem, from /proc/mounts. */
  readonly dataFilesystem: string;
}

const require = createRequire(import.meta.url);

/** The version in a package's package.json, found by walking up from its entry point. */
function packageVersion(name: string): string {
  try {
    let dir = dirname(require.resolve(name));
    for (let i = 0; i < 6; i++) {
      const file = join(dir, "package.json");
      if (existsSync(file)) {
        const pkg = JSON.parse(readFileSync(file, "utf8")) as { name?: string; version?: string };
        if (pkg.name === name) return pkg.version ?? "unknown";
      }
      dir = dirname(dir);
    }
  } catch {
    // fall through
  }
  return "unknown";
}

/** The mount (device, type) holding `path`, from /proc/mounts; "unknown" elsewhere. */
function filesystemOf(path: string): string {
  try {
    let best = { mount: "", text: "unknown" };
    for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [device, mount, fsType] = line.split(" ");
      if (device === undefined || mount === undefined || fsType === undefined) continue;
      if ((path === mount || path.startsWith(mount.endsWith("/") ? mount : `${mount}/`)) && mount.length >= best.mount.length) {
        best = { mount, text: `${device} on ${mount} (${fsType})` };
      }
    }
    return best.text;
  } catch {
    return "unknown";
  }
}

/** Describes this machine. `dataDir` is where the bench keeps its data directories. */
export function machineInfo(dataDir: string): MachineInfo {
  const cpuList = cpus();
  return {
    os: `${type()} ${release()}`,
    arch: arch(),
    cpuModel: cpuList[0]?.model ?? "unknown",
    cpuCount: cpuList.length,
    memoryBytes: totalmem(),
    loadAverageAtStart: loadavg().map((v) => Math.round(v * 100) / 100),
    versions: {
      node: process.version,
      v8: process.versions.v8,
      rocksdb: packageVersion("rocksdb"),
      "@grpc/grpc-js": packageVersion("@grpc/grpc-js"),
      "@bufbuild/protobuf": packageVersion("@bufbuild/protobuf"),
      twinmesh: packageVersion("twinmesh"),
    },
    dataFilesystem: filesystemOf(dataDir),
  };
}

/** The disk's own fsync latency: append `recordBytes`, fsync, repeat. */
export interface FsyncProbe {
  readonly writes: number;
  readonly recordBytes: number;
  readonly latencyMs: LatencySummary;
}

/**
 * Appends `recordBytes` to a file in `dir` and fsyncs it, `writes` times, timing each fsync.
 * The file lives where the data directories live, so it is the same disk.
 */
export function probeFsync(dir: string, writes: number, recordBytes = 200): FsyncProbe {
  const file = join(dir, "fsync-probe.bin");
  const fd = openSync(file, "a");
  const record = Buffer.alloc(recordBytes, 0x61);
  const latencies: number[] = [];
  try {
    for (let i = 0; i < writes; i++) {
      writeSync(fd, record);
      const t = performance.now();
      fsyncSync(fd);
      latencies.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    rmSync(file, { force: true });
  }
  return { writes, recordBytes, latencyMs: summarize(latencies) };
}
