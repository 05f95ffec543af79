#!/usr/bin/env node
/**
 * `npm run bench`: one twinmesh node against the hardware's own ceilings, in one run.
 *
 * The orchestrator (this process) starts every participant as a child process: the load
 * generator, the node under test (`twinmesh start`, the real CLI), and the ceilings (a bare
 * grpc-js server, bare RocksDB writes, a bare decode → JSON → RocksDB pipeline). It only
 * sequences the scenarios, samples the node's RSS and CPU from /proc, and reports: a table on
 * stdout and `bench/results/<name>.json`. See bench/README.md for what each figure means.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { type AddressInfo, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError, Option } from "commander";
import { Consistency, EventStatus, TwinmeshClient } from "../client/index.js";
import { HealthCheckResponse_ServingStatus } from "../proto/gen/grpc/health/v1/health_pb.js";
import { Partitioning } from "../runtime/index.js";
import type { PipelineCeilingRequest, PipelineCeilingResult } from "./bare-pipeline.js";
import type { RocksCeilingRequest, RocksCeilingResult } from "./bare-rocks.js";
import { BENCH_KIND, twinId, twinIdWidth } from "./batch-encoder.js";
import { BenchChild, killAllChildren } from "./bench-child.js";
import { type BenchResults, finishRows, formatValue, type ResultRow, renderTable, type Target, writeResults } from "./bench-report.js";
import { type BenchFlags, type BenchSettings, resolveSettings, SCENARIO_GROUPS, SCENARIOS, type Scenario } from "./bench-settings.js";
import type {
  AggregateResult,
  CallsResult,
  LoadCommand,
  LoadReady,
  LoadResult,
  OpenLoopResult,
  ProbeResult,
  QueryLoad,
  QueryResult,
  SaturateResult,
  SeqMode,
} from "./load-protocol.js";
import { type FsyncProbe, machineInfo, probeFsync } from "./machine-info.js";
import { dirBytes, RssSampler, rssBytes, type StartedNode, startNode } from "./node-process.js";
import { median } from "./stats.js";

const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));
const LOAD_GENERATOR = here("./load-generator.js");
const BARE_GRPC_SERVER = here("./bare-grpc-server.js");
const BARE_ROCKS = here("./bare-rocks.js");
const BARE_PIPELINE = here("./bare-pipeline.js");
const DEFAULT_OUT_DIR = fileURLToPath(new URL("../../bench/results/", import.meta.url));

const KIND = "bench";
const MIB = 1024 * 1024;
/** The node's clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const CLOCK_TICKS = 100;
const NODE_READY_TIMEOUT_MS = 60_000;
const NODE_STOP_GRACE_MS = 20_000;
const CHILD_READY_TIMEOUT_MS = 30_000;
/** Scans during ingest stop starting this long after the first (and the ingest pool lasts that long). */
const SCAN_HORIZON_MS = 90_000;
/** The batches of an ingest-under-query-load run cover this much overrun of its phases by slow queries. */
const STALL_OVERRUN_MS = 20_000;
/** A load generator later than this (p99) to send means the machine was too busy for the figure. */
const GENERATOR_LAG_WARN_MS = 5;

function out(line = ""): void {
  process.stdout.write(`${line}\n`);
}

/** CPU seconds (user + system, all threads) a process has used; NaN when unreadable. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return Number.NaN;
  }
}

function fmtMs(v: number): string {
  return formatValue(v, "ms");
}

function fmtRate(v: number): string {
  return formatValue(v, "events/s");
}

/** What a row shows and what it is compared with. */
interface RowSpec {
  readonly scenario: string;
  readonly unit: string;
  readonly target?: Target;
  readonly ratioTo?: readonly { readonly id: string; readonly label: string }[];
}

/** The table's rows, in print order. Built from the settings so the labels name the real sizes. */
function rowSpecs(s: BenchSettings): [string, RowSpec][] {
  const n = (v: number): string => (v >= 1_000_000 ? `${v / 1_000_000}M` : v >= 1_000 ? `${v / 1_000}k` : String(v));
  const big = n(s.largeTwins);
  const active = n(s.largeMaxActive);
  const open = n(s.openLoopRate);
  const rocks = s.rocksBatchSizes.flatMap((size): [string, RowSpec][] =>
    (["wal", "sync"] as const).map((mode) => [
      `ceiling.rocks.${mode}.b${size}`,
      { scenario: `ceiling: rocksdb batches of ${size.toLocaleString("en-US")} × ${s.rocksRecordBytes} B, ${mode}`, unit: "puts/s" },
    ]),
  );
  return [
    ["disk.fsync.p50", { scenario: `disk: append ${200} B + fsync, p50`, unit: "ms" }],
    ["disk.fsync.p99", { scenario: "disk: append 200 B + fsync, p99", unit: "ms" }],
    ["ceiling.grpc.eventsPerSec", { scenario: "ceiling: bare grpc-js stream, decode + answer, saturated", unit: "events/s" }],
    ["ceiling.grpc.sat.p99", { scenario: "ceiling: bare grpc-js stream, saturated, p99 batch ack", unit: "ms" }],
    ["ceiling.grpc.open.p99", { scenario: `ceiling: bare grpc-js stream, p99 batch ack at ${open}/s offered`, unit: "ms" }],
    ["ceiling.grpc.query.ms", { scenario: `ceiling: bare grpc-js server stream of ${n(prefixTwins(s))} snapshots`, unit: "ms" }],
    ...rocks,
    ["ceiling.pipeline.wal.eventsPerSec", { scenario: "ceiling: bare pipeline decode→JSON→rocksdb group, wal", unit: "events/s" }],
    ["ceiling.pipeline.fsync.eventsPerSec", { scenario: "ceiling: bare pipeline decode→JSON→rocksdb group, sync", unit: "events/s" }],
    [
      "ingest.wal.eventsPerSec",
      {
        scenario: `PublishStream wal, ${n(s.ingestTwins)} twins, saturated`,
        unit: "events/s",
        target: { op: ">=", value: 50_000 },
        ratioTo: [
          { id: "ceiling.grpc.eventsPerSec", label: "grpc" },
          { id: "ceiling.pipeline.wal.eventsPerSec", label: "pipeline" },
          { id: "ceiling.rocks.wal.b1000", label: "rocks b1000" },
        ],
      },
    ],
    ["ingest.wal.pipelineShare", { scenario: "PublishStream wal ÷ bare pipeline wal", unit: "%", target: { op: ">=", value: 70 } }],
    ["ingest.wal.sat.p50", { scenario: "PublishStream wal, saturated, p50 batch ack", unit: "ms" }],
    ["ingest.wal.sat.p99", { scenario: "PublishStream wal, saturated, p99 batch ack", unit: "ms" }],
    ["ingest.wal.open.p50", { scenario: `PublishStream wal, p50 batch ack at ${open}/s offered`, unit: "ms" }],
    [
      "ingest.wal.open.p99",
      {
        scenario: `PublishStream wal, p99 batch ack at ${open}/s offered`,
        unit: "ms",
        target: { op: "<=", value: 25 },
        ratioTo: [{ id: "ceiling.grpc.open.p99", label: "grpc" }],
      },
    ],
    [
      "ingest.fsync.eventsPerSec",
      {
        scenario: `PublishStream fsync, ${n(s.ingestTwins)} twins, saturated`,
        unit: "events/s",
        target: { op: ">=", value: 40_000 },
        ratioTo: [
          { id: "ceiling.pipeline.fsync.eventsPerSec", label: "pipeline sync" },
          { id: "ceiling.rocks.sync.b1000", label: "rocks sync b1000" },
        ],
      },
    ],
    ["ingest.fsync.sat.p50", { scenario: "PublishStream fsync, saturated, p50 batch ack", unit: "ms" }],
    ["ingest.fsync.sat.p99", { scenario: "PublishStream fsync, saturated, p99 batch ack", unit: "ms" }],
    ["ingest.fsync.open.p99", { scenario: `PublishStream fsync, p99 batch ack at ${open}/s offered`, unit: "ms" }],
    ["unary.publish.p50", { scenario: "unary Publish (1 event), wal, p50", unit: "ms" }],
    ["unary.publish.p99", { scenario: "unary Publish (1 event), wal, p99", unit: "ms" }],
    ["getTwin.p50", { scenario: "GetTwin, p50", unit: "ms" }],
    ["getTwin.p99", { scenario: "GetTwin, p99", unit: "ms" }],
    ["memory.perActiveTwin", { scenario: `memory per active twin (RSS delta over ${n(s.memoryTwins)} twins)`, unit: "B", target: { op: "<=", value: 1536 } }],
    ["large.load.eventsPerSec", { scenario: `setup: store ${big} twins (1 event each)`, unit: "events/s" }],
    [
      "large.eventsPerSec",
      {
        scenario: `PublishStream wal, ${big} twins, ${active} active, saturated`,
        unit: "events/s",
        target: { op: ">=", value: 25_000, fullSizeOnly: true },
        ratioTo: [{ id: "ceiling.pipeline.wal.eventsPerSec", label: "pipeline" }],
      },
    ],
    ["large.sat.p99", { scenario: `PublishStream wal, ${big} twins, saturated, p99 batch ack`, unit: "ms" }],
    ["large.open.p99", { scenario: `PublishStream wal, ${big} twins, p99 batch ack at ${open}/s offered`, unit: "ms" }],
    [
      "large.rssMax",
      { scenario: `node RSS max, ${big} stored / ${active} active, all receiving`, unit: "MiB", target: { op: "<=", value: 500, fullSizeOnly: true } },
    ],
    ...TRACING_VARIANTS.map((v): [string, RowSpec] => [
      `tracing.${v.id}.eventsPerSec`,
      {
        scenario: `PublishStream wal, ${n(s.ingestTwins)} twins, saturated, tracing ${v.label}`,
        unit: "events/s",
        ratioTo: v.id === "off" ? undefined : [{ id: "tracing.off.eventsPerSec", label: "off" }],
      },
    ]),
    ["cluster.single.eventsPerSec", { scenario: `1 node (this run), PublishStream wal, ${n(s.ingestTwins)} twins, saturated`, unit: "events/s" }],
    ...(["local", "quorum", "all"] as const).flatMap((level): [string, RowSpec][] => [
      [
        `cluster.${level}.eventsPerSec`,
        {
          scenario: `3 nodes RF 3, ${level.toUpperCase()}, ring-aware clients, saturated`,
          unit: "events/s",
          ratioTo: [{ id: "cluster.single.eventsPerSec", label: "1 node" }],
        },
      ],
      [`cluster.${level}.sat.p50`, { scenario: `3 nodes, ${level.toUpperCase()}, ring-aware, p50 batch ack`, unit: "ms" }],
      [`cluster.${level}.sat.p99`, { scenario: `3 nodes, ${level.toUpperCase()}, ring-aware, p99 batch ack`, unit: "ms" }],
    ]),
    ["cluster.quorumShare", { scenario: "3 nodes QUORUM ring-aware ÷ 1 node", unit: "%", target: { op: ">=", value: 35, fullSizeOnly: true } }],
    [
      "cluster.random.eventsPerSec",
      {
        scenario: "3 nodes, QUORUM, clients sending to random nodes (forwarding), saturated",
        unit: "events/s",
        ratioTo: [{ id: "cluster.quorum.eventsPerSec", label: "ring-aware" }],
      },
    ],
    ["cluster.randomShare", { scenario: "3 nodes QUORUM random nodes ÷ ring-aware", unit: "%", target: { op: ">=", value: 70, fullSizeOnly: true } }],
    ["cluster.single.open.p99", { scenario: "1 node (this run), p99 batch ack at half its saturated rate", unit: "ms" }],
    [
      "cluster.quorum.open.p99",
      {
        scenario: "3 nodes, QUORUM, ring-aware, p99 batch ack at half the saturated rate",
        unit: "ms",
        target: { op: "<=", value: 50, fullSizeOnly: true },
        ratioTo: [{ id: "cluster.single.open.p99", label: "1 node at half rate" }],
      },
    ],
    [
      "cluster.failover.ms",
      { scenario: "failover: kill -9 to the first acknowledged event of one of its twins", unit: "ms", target: { op: "<=", value: 3_000 } },
    ],
    ["cluster.catchUp.ms", { scenario: `catch-up: restart to SERVING and owning again, after ${n(s.catchUpLoadMs / 1000)} s of load without it`, unit: "ms" }],
    ["large.storedBytesPerTwin", { scenario: `data directory bytes per stored twin (${big})`, unit: "B" }],
    [
      "query.selective.ms",
      { scenario: `QueryTwins state.value > 99.0 over ${big} (all pages)`, unit: "ms", target: { op: "<=", value: 4_000, fullSizeOnly: true } },
    ],
    ["query.selective.twinsPerSec", { scenario: "QueryTwins full-scan rate", unit: "twins/s", target: { op: ">=", value: 250_000 } }],
    [
      "query.prefix.ms",
      {
        scenario: `QueryTwins id prefix touching 1 % of ${big}`,
        unit: "ms",
        target: { op: "<=", value: 100, fullSizeOnly: true },
        ratioTo: [{ id: "ceiling.grpc.query.ms", label: "grpc" }],
      },
    ],
    ["aggregate.ms", { scenario: `AggregateTwins avg(state.ewma) over ${big}`, unit: "ms", target: { op: "<=", value: 4_000, fullSizeOnly: true } }],
    ["aggregate.twinsPerSec", { scenario: "AggregateTwins full-scan rate", unit: "twins/s", target: { op: ">=", value: 250_000 } }],
    ["scan.ingest.p99", { scenario: `ingest p99 during full scans (${n(s.scanIngestRate)}/s offered)`, unit: "ms" }],
    ["stall.quiet.p99", { scenario: `ingest p99 at ${open}/s over ${big}, no query (same runs as below)`, unit: "ms" }],
    ...STALL_LOADS.map(({ id, label }): [string, RowSpec] => [
      `stall.${id}.p99`,
      {
        scenario: `ingest p99 at ${open}/s while ${label(s)}`,
        unit: "ms",
        target: { op: "<=", value: 2, relativeTo: { id: "stall.quiet.p99", label: "quiet" } },
        ratioTo: [{ id: "stall.quiet.p99", label: "quiet" }],
      },
    ]),
    ["restart.ms", { scenario: `restart to serving after kill -9, ${big} stored`, unit: "ms", target: { op: "<=", value: 2_000, fullSizeOnly: true } }],
  ];
}

/** Collects runs per figure, raw results and setup facts. */
class Collector {
  readonly specs: Map<string, RowSpec>;
  readonly runs = new Map<string, number[]>();
  readonly notes = new Map<string, string>();
  readonly raw: Record<string, unknown[]> = {};
  readonly setup: Record<string, unknown> = {};
  readonly errors: string[] = [];
  readonly warnings: string[] = [];

  constructor(specs: [string, RowSpec][]) {
    this.specs = new Map(specs);
  }

  add(id: string, value: number): void {
    if (!this.specs.has(id)) throw new Error(`no row spec for ${id}`);
    let list = this.runs.get(id);
    if (list === undefined) {
      list = [];
      this.runs.set(id, list);
    }
    list.push(value);
  }

  note(id: string, text: string): void {
    this.notes.set(id, text);
  }

  keep(key: string, value: unknown): void {
    const list = this.raw[key] ?? [];
    list.push(value);
    this.raw[key] = list;
  }

  median(id: string): number {
    return median(this.runs.get(id) ?? []);
  }

  rows(): ResultRow[] {
    const rows: ResultRow[] = [];
    for (const [id, spec] of this.specs) {
      const runs = this.runs.get(id);
      if (runs === undefined) continue;
      rows.push({ id, scenario: spec.scenario, unit: spec.unit, runs, target: spec.target, ratioTo: spec.ratioTo, note: this.notes.get(id) });
    }
    return rows;
  }
}

/** Shared state of one bench invocation. */
class Bench {
  readonly collect: Collector;
  private readonly started = performance.now();
  /** Events/s of the previous saturation run of a scenario, to size the next pool. */
  private readonly lastRate = new Map<string, number>();
  fsync: FsyncProbe | undefined;

  constructor(
    readonly settings: BenchSettings,
    readonly root: string,
    readonly loadgen: BenchChild,
  ) {
    this.collect = new Collector(rowSpecs(settings));
  }

  log(line: string): void {
    const t = ((performance.now() - this.started) / 1000).toFixed(1).padStart(6);
    out(`[${t}s] ${line}`);
  }

  /** Sends a command to the load generator; the timeout covers the run plus setup and drain. */
  load<T>(command: LoadCommand, timeoutMs: number): Promise<T> {
    return this.loadgen.request<T>(command, timeoutMs);
  }

  /**
   * Runs one part of a scenario; a failure is recorded and the scenario goes on with its next
   * part (so a failed query still leaves the restart measured).
   */
  async step(what: string, body: () => Promise<void>): Promise<void> {
    try {
      await body();
    } catch (err) {
      const text = `${what} failed: ${err instanceof Error ? err.message : String(err)}`;
      this.collect.errors.push(text);
      this.log(`ERROR ${text}`);
    }
  }

  get seqs(): SeqMode {
    return this.settings.seqs;
  }

  runTimeoutMs(extraMs = 0): number {
    return this.settings.warmupMs + this.settings.durationMs + 60_000 + extraMs;
  }

  /** A node child on a data directory under the bench's temp root. */
  async node(name: string, durability: "wal" | "fsync", dataDir: string, maxActive?: number): Promise<StartedNode> {
    const { cpuProfDir, nodeArgs } = this.settings;
    const node = await startNode({ name, dataDir, durability, maxActive, cpuProfDir, nodeArgs, readyTimeoutMs: NODE_READY_TIMEOUT_MS });
    this.log(`${name}: node pid ${node.child.pid} serving on ${node.address} (ready in ${fmtMs(node.readyMs)} ms)`);
    return node;
  }

  async stopNode(node: StartedNode): Promise<void> {
    await this.load({ cmd: "forget", address: node.address }, 10_000).catch(() => undefined);
    await node.child.stop(NODE_STOP_GRACE_MS);
  }

  /** Stores one event for each twin of the data set; returns the load's result. */
  async setupLoad(name: string, address: string, dataset: string, twins: number, from = 0, to = twins): Promise<LoadResult> {
    const s = this.settings;
    const result = await this.load<LoadResult>(
      {
        cmd: "load",
        address,
        dataset,
        twins,
        from,
        to,
        seqs: this.seqs,
        streams: s.loadStreams,
        window: s.loadWindow,
        batchEvents: s.batchEvents,
        timeoutMs: 60_000 + (to - from) / 2,
      },
      120_000 + (to - from) / 2,
    );
    const rate = (result.counts.accepted * 1000) / result.ms;
    this.log(
      `${name}: setup stored ${(to - from).toLocaleString("en-US")} twins in ${(result.ms / 1000).toFixed(1)} s (${fmtRate(rate)} events/s, encode ${(result.encodeMs / 1000).toFixed(1)} s, ${result.passes} pass${result.passes > 1 ? "es" : ""}${result.counts.rejected > 0 ? `, ${result.counts.rejected} never accepted: ${JSON.stringify(result.counts.reasons)}` : ""})`,
    );
    this.collect.setup[`${name}.load`] = { ...result, eventsPerSec: rate };
    return result;
  }

  /** One saturation run against `address`; records nothing, returns the result. */
  async saturate(key: string, address: string, dataset: string, twins: number, seed: number, recycle = false): Promise<SaturateResult> {
    const s = this.settings;
    const expected = Math.max(20_000, 1.5 * (this.lastRate.get(key) ?? s.expectedRate / 1.5));
    const result = await this.load<SaturateResult>(
      {
        cmd: "saturate",
        address,
        dataset,
        twins,
        seqs: this.seqs,
        streams: s.streams,
        window: s.window,
        batchEvents: s.batchEvents,
        warmupMs: s.warmupMs,
        durationMs: s.durationMs,
        seed,
        recycle,
        expectedRate: recycle ? 400_000 : expected,
        maxPoolEvents: recycle ? 100_000 : 3_000_000,
      },
      this.runTimeoutMs(),
    );
    if (Number.isFinite(result.eventsPerSec)) this.lastRate.set(key, result.eventsPerSec);
    const l = result.latencyMs;
    this.log(
      `${key}: saturated ${fmtRate(result.eventsPerSec)} events/s, ack p50 ${fmtMs(l.p50)} ms p99 ${fmtMs(l.p99)} ms${result.exhausted ? " (pool ran out: window cut)" : ""}${rejections(result.counts)}`,
    );
    this.collect.keep(`${key}.saturate`, result);
    return result;
  }

  async openLoop(key: string, address: string, dataset: string, twins: number, seed: number, rate: number, recycle = false): Promise<OpenLoopResult> {
    const s = this.settings;
    const result = await this.load<OpenLoopResult>(
      {
        cmd: "openLoop",
        address,
        dataset,
        twins,
        seqs: this.seqs,
        streams: s.streams,
        batchEvents: s.batchEvents,
        warmupMs: s.warmupMs,
        durationMs: s.durationMs,
        seed,
        recycle,
        rate,
        maxOutstandingBatches: Math.ceil((rate * 10) / s.batchEvents),
        drainTimeoutMs: 15_000,
      },
      this.runTimeoutMs(),
    );
    const l = result.latencyMs;
    if (result.sendLagMs.p99 > GENERATOR_LAG_WARN_MS) {
      this.collect.warnings.push(
        `${key}: the load generator sent late (p99 ${fmtMs(result.sendLagMs.p99)} ms): the machine was busy; latency figures of this run include that`,
      );
    }
    this.log(
      `${key}: open loop at ${fmtRate(rate)}/s: accepted ${fmtRate(result.acceptedPerSec)}/s, ack p50 ${fmtMs(l.p50)} ms p99 ${fmtMs(l.p99)} ms max ${fmtMs(l.max)} ms (generator lag p99 ${fmtMs(result.sendLagMs.p99)} ms)${result.overloaded ? " OVERLOADED: stopped early" : ""}${rejections(result.counts)}`,
    );
    this.collect.keep(`${key}.openLoop`, result);
    return result;
  }
}

function rejections(counts: { rejected: number; duplicate: number; reasons: Record<string, number> }): string {
  const parts: string[] = [];
  if (counts.rejected > 0) parts.push(`${counts.rejected} rejected ${JSON.stringify(counts.reasons)}`);
  if (counts.duplicate > 0) parts.push(`${counts.duplicate} duplicate`);
  return parts.length === 0 ? "" : ` [${parts.join(", ")}]`;
}

async function spawnWorker(name: string, script: string): Promise<BenchChild> {
  const child = BenchChild.spawn(script, [], { name });
  await child.waitForMessage<LoadReady>(CHILD_READY_TIMEOUT_MS, "its ready message");
  return child;
}

// ------------------------------------------------------------------------------------ scenarios

/** The kind of the hostile-filter data set (`BenchListTwin`). */
const HOSTILE_KIND = "bench-list";
/** Backtracks exponentially in the `a`s before a `!` on a backtracking engine; linear on RE2. */
const HOSTILE_REGEX_FILTER = "id.matches('^(a+)+$')";
/** 20^4 iterations per twin, none matching (readings are never negative). */
const HOSTILE_EXISTS_FILTER = "state.readings.exists(a, state.readings.exists(b, state.readings.exists(c, state.readings.exists(d, a + b + c + d < 0.0))))";

/** The query loads of the ingest-under-query-load run, after its quiet phase. */
const STALL_LOADS: readonly { id: string; label: (s: BenchSettings) => string; load: (s: BenchSettings) => QueryLoad }[] = [
  {
    id: "scan",
    label: (s) => `QueryTwins full scans of ${s.largeTwins.toLocaleString("en-US")} twins run back to back`,
    load: () => ({ name: "scan", kind: KIND, filter: "state.value > 1000.0", limit: 0, everyMs: 0 }),
  },
  {
    id: "regex",
    label: (s) => `${HOSTILE_REGEX_FILTER} runs over an id of ${s.hostileRegexAs} a's + '!' (one query per ${s.hostileEveryMs / 1000} s)`,
    load: (s) => ({ name: "regex", kind: HOSTILE_KIND, filter: HOSTILE_REGEX_FILTER, limit: 0, everyMs: s.hostileEveryMs }),
  },
  {
    id: "exists",
    label: (s) => `4 nested .exists over 20-element lists of ${s.hostileListTwins + 1} twins run (one query per ${s.hostileEveryMs / 1000} s)`,
    load: (s) => ({ name: "exists", kind: HOSTILE_KIND, filter: HOSTILE_EXISTS_FILTER, limit: 0, everyMs: s.hostileEveryMs }),
  },
];

/** Twins the id-prefix query returns: fixing the first two id digits selects 1 % of the large scenario's twins. */
function prefixTwins(s: BenchSettings): number {
  return Math.max(1, Math.round(s.largeTwins / 100));
}

async function ceilingGrpc(b: Bench): Promise<void> {
  const s = b.settings;
  const server = BenchChild.spawn(BARE_GRPC_SERVER, [], { name: "bare-grpc" });
  try {
    const { match } = await server.waitForLine(/^bare-grpc serving on (\S+)/, CHILD_READY_TIMEOUT_MS);
    const address = match[1] as string;
    for (let r = 0; r < s.runs; r++) {
      const sat = await b.saturate("ceiling-grpc", address, "bare", s.ingestTwins, 100 + r, true);
      b.collect.add("ceiling.grpc.eventsPerSec", sat.eventsPerSec);
      b.collect.add("ceiling.grpc.sat.p99", sat.latencyMs.p99);
    }
    for (let r = 0; r < s.runs; r++) {
      const open = await b.openLoop("ceiling-grpc", address, "bare", s.ingestTwins, 200 + r, s.openLoopRate, true);
      b.collect.add("ceiling.grpc.open.p99", open.latencyMs.p99);
    }
    // As many snapshots as the id-prefix query returns, through the same client and decoder,
    // after one unmeasured call (the node's query runs after others have warmed the client).
    await b.load<QueryResult>({ cmd: "query", address, kind: KIND, filter: "", limit: prefixTwins(s), maxPages: 1 }, 120_000);
    for (let r = 0; r < s.runs; r++) {
      const query = await b.load<QueryResult>({ cmd: "query", address, kind: KIND, filter: "", limit: prefixTwins(s), maxPages: 1 }, 120_000);
      b.collect.add("ceiling.grpc.query.ms", query.ms);
      b.log(`ceiling-grpc: server stream of ${query.returned} snapshots in ${fmtMs(query.ms)} ms`);
    }
    await b.load({ cmd: "forget", address }, 10_000);
  } finally {
    await server.stop(5_000);
  }
}

async function ceilingRocks(b: Bench): Promise<void> {
  const s = b.settings;
  const worker = await spawnWorker("bare-rocks", BARE_ROCKS);
  const dir = join(b.root, "ceiling-rocks");
  mkdirSync(dir, { recursive: true });
  try {
    for (const sync of [false, true]) {
      for (const size of s.rocksBatchSizes) {
        for (let r = 0; r < s.runs; r++) {
          const req: RocksCeilingRequest = {
            cmd: "rocks",
            dir,
            keys: s.ingestTwins,
            recordBytes: s.rocksRecordBytes,
            batchPuts: size,
            sync,
            warmupMs: Math.min(500, s.rocksDurationMs / 2),
            durationMs: s.rocksDurationMs,
            seed: 300 + r,
          };
          const res = await worker.request<RocksCeilingResult>(req, s.rocksDurationMs * 2 + 60_000);
          const id = `ceiling.rocks.${sync ? "sync" : "wal"}.b${size}`;
          b.collect.add(id, res.putsPerSec);
          b.collect.note(id, `${fmtRate(res.writesPerSec)} writes/s, write p50 ${fmtMs(res.writeMs.p50)} ms p99 ${fmtMs(res.writeMs.p99)} ms`);
          b.collect.keep(id, res);
          b.log(
            `ceiling-rocks: ${size} × ${s.rocksRecordBytes} B ${sync ? "sync" : "wal"}: ${fmtRate(res.putsPerSec)} puts/s, ${fmtRate(res.writesPerSec)} writes/s, write p99 ${fmtMs(res.writeMs.p99)} ms`,
          );
        }
      }
    }
    await worker.request({ cmd: "close" }, 30_000);
  } finally {
    await worker.stop(5_000);
  }
}

async function ceilingPipeline(b: Bench): Promise<void> {
  const s = b.settings;
  const worker = await spawnWorker("bare-pipeline", BARE_PIPELINE);
  const dir = join(b.root, "ceiling-pipeline");
  mkdirSync(dir, { recursive: true });
  try {
    for (const sync of [false, true]) {
      const id = `ceiling.pipeline.${sync ? "fsync" : "wal"}.eventsPerSec`;
      for (let r = 0; r < s.runs; r++) {
        const req: PipelineCeilingRequest = {
          cmd: "pipeline",
          dir,
          twins: s.ingestTwins,
          batchEvents: s.batchEvents,
          groupMinEvents: s.pipelineGroupMinEvents,
          groupMaxEvents: s.pipelineGroupMaxEvents,
          sync,
          warmupMs: s.warmupMs,
          durationMs: s.durationMs,
          poolBatches: 2_000,
          seed: 400 + r,
        };
        const res = await worker.request<PipelineCeilingResult>(req, b.runTimeoutMs());
        b.collect.add(id, res.eventsPerSec);
        b.collect.keep(id, res);
        b.collect.note(
          id,
          `avg group ${formatValue(res.avgGroupEvents, "")} events, write p99 ${fmtMs(res.writeMs.p99)} ms, CPU ${formatValue(res.cpuUsPerEvent, "")} µs/event`,
        );
        b.log(
          `ceiling-pipeline ${sync ? "sync" : "wal"}: ${fmtRate(res.eventsPerSec)} events/s, avg group ${formatValue(res.avgGroupEvents, "")} events, write p99 ${fmtMs(res.writeMs.p99)} ms, CPU ${formatValue(res.cpuUsPerEvent, "")} µs/event`,
        );
      }
    }
  } finally {
    await worker.stop(5_000);
  }
}

async function ingest(b: Bench, durability: "wal" | "fsync"): Promise<void> {
  const s = b.settings;
  const name = `ingest-${durability}`;
  const dataset = name;
  const node = await b.node(name, durability, join(b.root, name));
  try {
    await b.setupLoad(name, node.address, dataset, s.ingestTwins);
    const cpuPerEvent: number[] = [];
    for (let r = 0; r < s.runs; r++) {
      const cpuBefore = cpuSeconds(node.child.pid);
      const sat = await b.saturate(name, node.address, dataset, s.ingestTwins, 500 + r);
      const cpu = cpuSeconds(node.child.pid) - cpuBefore;
      cpuPerEvent.push((cpu * 1e6) / sat.totalAccepted);
      b.collect.add(`ingest.${durability}.eventsPerSec`, sat.eventsPerSec);
      b.collect.add(`ingest.${durability}.sat.p50`, sat.latencyMs.p50);
      b.collect.add(`ingest.${durability}.sat.p99`, sat.latencyMs.p99);
    }
    const notes = [`node CPU ${formatValue(median(cpuPerEvent), "")} µs/event`];
    if (durability === "wal") notes.push("floor 35,000");
    if (durability === "fsync" && b.fsync !== undefined)
      notes.push(`disk fsync p50 ${fmtMs(b.fsync.latencyMs.p50)} ms, p99 ${fmtMs(b.fsync.latencyMs.p99)} ms`);
    b.collect.note(`ingest.${durability}.eventsPerSec`, notes.join(", "));
    b.collect.setup[`${name}.nodeCpuUsPerEvent`] = cpuPerEvent;
    for (let r = 0; r < s.runs; r++) {
      const open = await b.openLoop(name, node.address, dataset, s.ingestTwins, 600 + r, s.openLoopRate);
      if (durability === "wal") b.collect.add("ingest.wal.open.p50", open.latencyMs.p50);
      b.collect.add(`ingest.${durability}.open.p99`, open.latencyMs.p99);
      if (open.overloaded) b.collect.note(`ingest.${durability}.open.p99`, "the node did not keep up with the offered rate");
    }
    if (durability === "wal") {
      for (let r = 0; r < s.runs; r++) {
        const unary = await b.load<CallsResult>(
          { cmd: "unary", address: node.address, dataset, twins: s.ingestTwins, seqs: b.seqs, calls: s.unaryCalls, warmupCalls: 50, seed: 700 + r },
          120_000,
        );
        b.collect.add("unary.publish.p50", unary.latencyMs.p50);
        b.collect.add("unary.publish.p99", unary.latencyMs.p99);
        b.collect.keep("unary.publish", unary);
        b.log(
          `unary Publish: p50 ${fmtMs(unary.latencyMs.p50)} ms p99 ${fmtMs(unary.latencyMs.p99)} ms${unary.failures > 0 ? ` (${unary.failures} failed: ${unary.firstFailure})` : ""}`,
        );
        const get = await b.load<CallsResult>(
          { cmd: "getTwin", address: node.address, dataset, twins: s.ingestTwins, seqs: b.seqs, calls: s.getCalls, warmupCalls: 50, seed: 800 + r },
          120_000,
        );
        b.collect.add("getTwin.p50", get.latencyMs.p50);
        b.collect.add("getTwin.p99", get.latencyMs.p99);
        b.collect.keep("getTwin", get);
        b.log(
          `GetTwin: p50 ${fmtMs(get.latencyMs.p50)} ms p99 ${fmtMs(get.latencyMs.p99)} ms${get.failures > 0 ? ` (${get.failures} failed: ${get.firstFailure})` : ""}`,
        );
      }
    }
  } finally {
    await b.stopNode(node);
  }
}

async function memory(b: Bench): Promise<void> {
  const s = b.settings;
  const total = s.memoryWarmTwins + s.memoryTwins;
  for (let r = 0; r < s.runs; r++) {
    const name = `memory-${r + 1}`;
    const dir = join(b.root, name);
    // Room for every twin, so none is passivated while we count.
    const node = await b.node(name, "wal", dir, total * 2);
    try {
      await b.setupLoad(name, node.address, name, total, 0, s.memoryWarmTwins);
      // Push as many events through the warm twins as the activation will send, so the heap
      // has already grown for the transient garbage of that traffic: the delta is the twins.
      await b.load<SaturateResult>(
        {
          cmd: "saturate",
          address: node.address,
          dataset: name,
          twins: total,
          from: 0,
          to: s.memoryWarmTwins,
          seqs: b.seqs,
          streams: s.loadStreams,
          window: s.loadWindow,
          batchEvents: s.batchEvents,
          warmupMs: 0,
          durationMs: 60_000,
          seed: 1200 + r,
          expectedRate: 1_000,
          maxPoolEvents: s.memoryTwins,
        },
        120_000,
      );
      await delay(1_000);
      const before = rssBytes(node.child.pid);
      await b.setupLoad(name, node.address, name, total, s.memoryWarmTwins, total);
      await delay(1_500);
      const after = rssBytes(node.child.pid);
      const perTwin = (after - before) / s.memoryTwins;
      b.collect.add("memory.perActiveTwin", perTwin);
      b.collect.keep("memory", { rssBeforeBytes: before, rssAfterBytes: after, twins: s.memoryTwins, perTwinBytes: perTwin });
      b.collect.note("memory.perActiveTwin", `RSS ${formatValue(before / MIB, "MiB")} → ${formatValue(after / MIB, "MiB")} MiB`);
      b.log(
        `${name}: RSS ${formatValue(before / MIB, "")} MiB → ${formatValue(after / MIB, "")} MiB for ${s.memoryTwins.toLocaleString("en-US")} active twins: ${formatValue(perTwin, "")} B per twin`,
      );
    } finally {
      await b.stopNode(node);
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

async function large(b: Bench): Promise<void> {
  const s = b.settings;
  const name = "large";
  const dataset = name;
  const dir = join(b.root, name);
  const n = s.largeTwins;
  let node = await b.node(name, "wal", dir, s.largeMaxActive);
  try {
    // RSS while every twin receives events: the setup load and the saturation runs. The open-loop
    // runs may offer more than the node can take, so their RSS is reported apart.
    const rssSetup = new RssSampler(node.child.pid).start();
    const loaded = await b.setupLoad(name, node.address, dataset, n);
    const rssSetupMax = rssSetup.stop();
    const rss = new RssSampler(node.child.pid).start();
    b.collect.add("large.load.eventsPerSec", (loaded.counts.accepted * 1000) / loaded.ms);
    b.collect.note("large.load.eventsPerSec", `${(loaded.ms / 1000).toFixed(1)} s; setup, not a target`);
    await b.step("large saturation", async () => {
      for (let r = 0; r < s.runs; r++) {
        const sat = await b.saturate(name, node.address, dataset, n, 900 + r);
        b.collect.add("large.eventsPerSec", sat.eventsPerSec);
        b.collect.add("large.sat.p99", sat.latencyMs.p99);
      }
    });
    const rssMax = Math.max(rssSetupMax, rss.stop());
    const rssOpen = new RssSampler(node.child.pid).start();
    await b.step("large open loop", async () => {
      for (let r = 0; r < s.runs; r++) {
        const open = await b.openLoop(name, node.address, dataset, n, 1000 + r, s.openLoopRate);
        b.collect.add("large.open.p99", open.latencyMs.p99);
        if (open.overloaded || open.unanswered > 0) b.collect.note("large.open.p99", "the node did not keep up with the offered rate");
      }
    });
    const rssOpenMax = rssOpen.stop();
    b.collect.add("large.rssMax", rssMax / MIB);
    b.collect.note(
      "large.rssMax",
      `sampled every 200 ms: max ${formatValue(rssSetupMax / MIB, "")} MiB during the setup load, ${formatValue(rss.maxBytes / MIB, "")} MiB during the saturation runs, ${formatValue(rssOpenMax / MIB, "")} MiB during the open-loop runs`,
    );
    b.log(
      `${name}: node RSS max ${formatValue(rssMax / MIB, "")} MiB while ${n.toLocaleString("en-US")} twins received events (open loop: ${formatValue(rssOpenMax / MIB, "")} MiB)`,
    );
    const stored = dirBytes(dir);
    b.collect.add("large.storedBytesPerTwin", stored / n);
    b.collect.note("large.storedBytesPerTwin", `${formatValue(stored / MIB, "")} MiB on disk`);

    // Ids are t-<width digits>; fixing the first two digits selects 1 % of them.
    const prefix = String(Math.max(0, n - 1)).length >= 2 ? "t-12" : "t-1";
    await b.step("large queries", async () => {
      for (let r = 0; r < s.runs; r++) {
        const sel = await b.load<QueryResult>(
          { cmd: "query", address: node.address, kind: KIND, filter: "state.value > 99.0", limit: 10_000, maxPages: 1_000 },
          300_000,
        );
        b.collect.add("query.selective.ms", sel.ms);
        b.collect.add("query.selective.twinsPerSec", (sel.scanned * 1000) / sel.ms);
        b.collect.note(
          "query.selective.ms",
          `matched ${sel.matched.toLocaleString("en-US")} of ${sel.scanned.toLocaleString("en-US")} scanned, ${sel.pages} pages`,
        );
        b.collect.keep("query.selective", sel);
        b.log(`QueryTwins state.value > 99.0: ${fmtMs(sel.ms)} ms, ${sel.returned} returned, ${sel.scanned} scanned, ${sel.pages} pages`);
        const pre = await b.load<QueryResult>(
          { cmd: "query", address: node.address, kind: KIND, filter: `id.startsWith("${prefix}")`, limit: 10_000, maxPages: 1_000 },
          300_000,
        );
        b.collect.add("query.prefix.ms", pre.ms);
        b.collect.note(
          "query.prefix.ms",
          `id.startsWith("${prefix}"): ${pre.returned.toLocaleString("en-US")} returned, ${pre.scanned.toLocaleString("en-US")} scanned`,
        );
        b.collect.keep("query.prefix", pre);
        b.log(`QueryTwins id.startsWith("${prefix}"): ${fmtMs(pre.ms)} ms, ${pre.returned} returned, ${pre.scanned} scanned, ${pre.pages} pages`);
        const agg = await b.load<AggregateResult>({ cmd: "aggregate", address: node.address, kind: KIND, field: "state.ewma", filter: "" }, 300_000);
        b.collect.add("aggregate.ms", agg.ms);
        b.collect.add("aggregate.twinsPerSec", (agg.scanned * 1000) / agg.ms);
        b.collect.note("aggregate.ms", `scanned ${agg.scanned.toLocaleString("en-US")}, avg ${formatValue(agg.avg, "")}`);
        b.collect.keep("aggregate", agg);
        b.log(`AggregateTwins avg(state.ewma): ${fmtMs(agg.ms)} ms, ${agg.scanned} scanned, avg ${formatValue(agg.avg, "")}`);
      }
    });
    await b.step("large ingest during scans", async () => {
      for (let r = 0; r < s.runs; r++) {
        const res = await b.load<OpenLoopResult>(
          {
            cmd: "openLoop",
            address: node.address,
            dataset,
            twins: n,
            seqs: b.seqs,
            streams: s.streams,
            batchEvents: s.batchEvents,
            warmupMs: s.warmupMs,
            durationMs: s.durationMs,
            seed: 1100 + r,
            rate: s.scanIngestRate,
            maxOutstandingBatches: Math.ceil((s.scanIngestRate * 10) / s.batchEvents),
            drainTimeoutMs: 15_000,
            scan: { kind: KIND, field: "state.ewma", maxMs: SCAN_HORIZON_MS },
          },
          b.runTimeoutMs(SCAN_HORIZON_MS + 120_000),
        );
        const scan = res.scan;
        if (scan === undefined || scan.error !== undefined) throw new Error(`scan during ingest failed: ${scan?.error ?? "no scan result"}`);
        b.collect.add("scan.ingest.p99", scan.duringScanMs.p99);
        b.collect.note(
          "scan.ingest.p99",
          `${scan.scans} scans of ${formatValue(median(scan.scanMs), "ms")} ms; p99 outside scans ${fmtMs(scan.outsideScanMs.p99)} ms; ${scan.duringScanMs.count} batches during scans, ${fmtRate(res.acceptedPerSec)} events/s accepted`,
        );
        b.collect.keep("scan.ingest", res);
        b.log(
          `ingest during scan: p99 ${fmtMs(scan.duringScanMs.p99)} ms (outside scans ${fmtMs(scan.outsideScanMs.p99)} ms), ${scan.scans} scans of ~${fmtMs(median(scan.scanMs))} ms, accepted ${fmtRate(res.acceptedPerSec)}/s${rejections(res.counts)}`,
        );
      }
    });
    await b.step("large ingest under query load", () => ingestUnderQueryLoad(b, node.address, dataset));
    if (s.cpuProfDir !== undefined) {
      // A killed process writes no profile: stop this one cleanly and kill the next one instead.
      await b.stopNode(node);
      node = await b.node(name, "wal", dir, s.largeMaxActive);
    }
    for (let r = 0; r < s.restarts; r++) {
      node.child.kill("SIGKILL");
      await node.child.waitExit(10_000);
      await b.load({ cmd: "forget", address: node.address }, 10_000);
      node = await b.node(name, "wal", dir, s.largeMaxActive);
      const probe = await b.load<ProbeResult>(
        { cmd: "probe", address: node.address, dataset, twins: n, seqs: b.seqs, twin: Math.floor((n * (r + 1)) / (s.restarts + 2)), timeoutMs: 60_000 },
        90_000,
      );
      const toGet = probe.getOkAtMs - node.child.spawnedAtWallMs;
      const toPublish = probe.publishOkAtMs - node.child.spawnedAtWallMs;
      b.collect.add("restart.ms", toGet);
      b.collect.note("restart.ms", `ready line ${fmtMs(node.readyMs)} ms, first ACCEPTED Publish ${fmtMs(toPublish)} ms after spawn`);
      b.collect.keep("restart", { readyMs: node.readyMs, firstGetMs: toGet, firstPublishMs: toPublish, attempts: probe.attempts });
      b.log(
        `restart ${r + 1}: kill -9, respawn: ready line ${fmtMs(node.readyMs)} ms, first GetTwin ${fmtMs(toGet)} ms, first Publish ${fmtMs(toPublish)} ms after spawn`,
      );
    }
  } finally {
    await b.stopNode(node);
  }
}

/**
 * Ingest at the open-loop rate while, in turn, nothing, full scans and two hostile filters run:
 * one open-loop run per repetition, split into phases (see `QueryPhases`), so the quiet p99 and
 * each loaded p99 come from the same run. The hostile filters run over a small data set of their
 * own kind: one twin whose id is `a`s and a `!`, and twins with 20-element lists.
 */
async function ingestUnderQueryLoad(b: Bench, address: string, dataset: string): Promise<void> {
  const s = b.settings;
  const ids = [`${"a".repeat(s.hostileRegexAs)}!`, ...Array.from({ length: s.hostileListTwins }, (_, i) => `l-${String(i).padStart(3, "0")}`)];
  await b.load({ cmd: "seed", address, kind: HOSTILE_KIND, ids, events: 1 }, 60_000);
  const phases = { phaseMs: s.stallPhaseMs, gapMs: s.stallGapMs, loads: STALL_LOADS.map((l) => l.load(s)), maxOverrunMs: STALL_OVERRUN_MS };
  const plannedMs = (phases.loads.length + 1) * (phases.phaseMs + phases.gapMs) + phases.maxOverrunMs;
  for (let r = 0; r < s.runs; r++) {
    const res = await b.load<OpenLoopResult>(
      {
        cmd: "openLoop",
        address,
        dataset,
        twins: s.largeTwins,
        seqs: b.seqs,
        streams: s.streams,
        batchEvents: s.batchEvents,
        warmupMs: s.warmupMs,
        durationMs: 0,
        seed: 1300 + r,
        rate: s.openLoopRate,
        maxOutstandingBatches: Math.ceil((s.openLoopRate * 10) / s.batchEvents),
        drainTimeoutMs: 15_000,
        phases,
      },
      b.runTimeoutMs(plannedMs + 120_000),
    );
    const byName = new Map((res.phases ?? []).map((p) => [p.name, p]));
    const quiet = byName.get("quiet");
    if (quiet === undefined || res.scan?.error !== undefined) throw new Error(`query phases failed: ${res.scan?.error ?? "no quiet phase"}`);
    b.collect.add("stall.quiet.p99", quiet.latencyMs.p99);
    b.collect.note("stall.quiet.p99", `p50 ${fmtMs(quiet.latencyMs.p50)} ms, ${quiet.latencyMs.count} batches`);
    const parts = [`quiet p99 ${fmtMs(quiet.latencyMs.p99)} ms`];
    for (const { id } of STALL_LOADS) {
      const phase = byName.get(id);
      if (phase === undefined) {
        // The run stopped early (the node fell 10 s behind): the phase never ran.
        b.collect.add(`stall.${id}.p99`, Number.POSITIVE_INFINITY);
        b.collect.note(`stall.${id}.p99`, "the phase did not run: the node fell behind the offered rate before it");
        parts.push(`${id}: did not run`);
        continue;
      }
      b.collect.add(`stall.${id}.p99`, phase.latencyMs.p99);
      const queries =
        phase.failed > 0
          ? `${phase.queries} queries, ${phase.failed} failed (${phase.firstError ?? "?"})`
          : `${phase.queries} queries of ${formatValue(median(phase.queryMs), "ms")} ms, ${phase.scanned.toLocaleString("en-US")} twins scanned`;
      b.collect.note(`stall.${id}.p99`, `max ${fmtMs(phase.latencyMs.max)} ms; ${queries}`);
      parts.push(`${id} p99 ${fmtMs(phase.latencyMs.p99)} ms (max ${fmtMs(phase.latencyMs.max)} ms; ${queries})`);
    }
    b.collect.keep("stall", res);
    b.log(
      `ingest at ${fmtRate(s.openLoopRate)}/s under query load: ${parts.join("; ")}${res.overloaded ? " OVERLOADED: stopped early" : ""}${rejections(res.counts)}`,
    );
  }
}

/** Ports free on 127.0.0.1 now (for a cluster's nodes, which must know each other's addresses before they start). */
async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  return ports;
}

/**
 * Waits until no node has replication shipments unconfirmed (a saturated run leaves the replica
 * a QUORUM owner did not wait for behind, and its catch-up would load the next measurement);
 * returns how long that took. Gives up quietly after `timeoutMs`: the figure is then taken anyway.
 */
async function replicasCaughtUp(addresses: readonly string[], timeoutMs: number): Promise<{ ms: number; behind: number; unanswered: number }> {
  const clients: TwinmeshClient[] = [];
  const started = performance.now();
  try {
    for (const a of addresses) clients.push(new TwinmeshClient(a, { deadlineMs: 2_000 }));
    for (;;) {
      const statuses = await Promise.all(clients.map((c) => c.getNodeStatus().catch(() => undefined)));
      const behind = statuses.reduce((sum, st) => sum + (st?.replicationLag ?? []).reduce((n, lag) => n + Number(lag.shipmentsBehind), 0), 0);
      const unanswered = statuses.filter((st) => st === undefined).length;
      const ms = performance.now() - started;
      if ((behind === 0 && unanswered === 0) || ms > timeoutMs) return { ms, behind, unanswered };
      await delay(100);
    }
  } finally {
    for (const c of clients) c.close();
  }
}

/** Waits until the running members serve every partition between them, each by its own account. */
async function clusterFormed(addresses: readonly string[], timeoutMs: number): Promise<void> {
  const clients = addresses.map((a) => new TwinmeshClient(a, { deadlineMs: 2_000 }));
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const described = await Promise.all(clients.map((c) => c.describeCluster().catch(() => undefined)));
      const owned = described.reduce((sum, d) => sum + (d?.members.find((m) => m.self)?.ownedPartitions ?? 0), 0);
      const health = await Promise.all(
        clients.map((c) =>
          c.health().then(
            (h) => h.status,
            () => undefined,
          ),
        ),
      );
      if (described.every((d) => d !== undefined) && owned === described[0]?.partitions && health.every((h) => h === HealthCheckResponse_ServingStatus.SERVING))
        return;
      if (Date.now() > deadline) throw new Error(`the cluster did not form within ${timeoutMs} ms (${owned} partitions owned)`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    for (const c of clients) c.close();
  }
}

/**
 * Three nodes at replication factor 3 on this machine (sharing its cores with each other and the
 * load generator), beside one node measured in the same run: saturated throughput and batch-ack
 * latency at LOCAL, QUORUM and ALL with ring-aware clients (each client sends the twins one node
 * owns to that node), at QUORUM with clients sending to random nodes (two thirds forwarded), p99
 * at half the saturated rate, failover time and catch-up time.
 */
async function clusterBench(b: Bench): Promise<void> {
  const s = b.settings;
  const twins = s.ingestTwins;
  const dataset = "cluster";
  // The single node of this run, on the same twins.
  const single = await b.node("cluster-single", "wal", join(b.root, "cluster-single"));
  try {
    await b.setupLoad("cluster-single", single.address, "cluster-single", twins);
    const cpuPerEvent: number[] = [];
    const rates: number[] = [];
    for (let r = 0; r < s.runs; r++) {
      const cpuBefore = cpuSeconds(single.child.pid);
      const sat = await b.saturate("cluster-single", single.address, "cluster-single", twins, 900 + r);
      cpuPerEvent.push(((cpuSeconds(single.child.pid) - cpuBefore) * 1e6) / sat.totalAccepted);
      b.collect.add("cluster.single.eventsPerSec", sat.eventsPerSec);
      rates.push(sat.eventsPerSec);
    }
    b.collect.note("cluster.single.eventsPerSec", `node CPU ${formatValue(median(cpuPerEvent), "")} µs/event`);
    // The cluster's half-rate p99 beside the same figure of one node: what the cluster adds to
    // the waiting a half-busy machine has anyway.
    for (let r = 0; r < s.runs; r++) {
      const open = await b.openLoop("cluster-single", single.address, "cluster-single", twins, 950 + r, Math.max(1_000, Math.round(median(rates) / 2)));
      b.collect.add("cluster.single.open.p99", open.latencyMs.p99);
    }
  } finally {
    await b.stopNode(single);
  }
  const ids = ["n1", "n2", "n3"];
  const ports = await freePorts(3);
  const addressOf = (i: number): string => `127.0.0.1:${ports[i]}`;
  const start = (i: number): Promise<StartedNode> =>
    startNode({
      name: `cluster-${ids[i]}`,
      dataDir: join(b.root, "cluster", ids[i] as string),
      durability: "wal",
      port: ports[i],
      nodeArgs: s.nodeArgs,
      cpuProfDir: s.cpuProfDir,
      readyTimeoutMs: NODE_READY_TIMEOUT_MS,
      args: [
        "--node-id",
        ids[i] as string,
        "--replication-factor",
        "3",
        "--peers",
        ids.flatMap((id, j) => (j === i ? [] : [`${id}@${addressOf(j)}`])).join(","),
      ],
    });
  const nodes: (StartedNode | undefined)[] = await Promise.all([0, 1, 2].map(start));
  try {
    await clusterFormed([0, 1, 2].map(addressOf), 30_000);
    b.log(`cluster: 3 nodes formed on ${[0, 1, 2].map(addressOf).join(", ")}`);
    await b.setupLoad("cluster", addressOf(0), dataset, twins);
    // Each node's share of the twins (ring-aware) and a third of them each (random nodes).
    const described = await new TwinmeshClient(addressOf(0)).describeCluster();
    const partitioning = new Partitioning(described.partitions);
    const width = twinIdWidth(twins);
    const owned: number[][] = [[], [], []];
    const thirds: number[][] = [[], [], []];
    for (let i = 0; i < twins; i++) {
      const head = described.placements[partitioning.partitionOf(BENCH_KIND, twinId(i, width))]?.nodeIds[0] ?? "n1";
      owned[ids.indexOf(head)]?.push(i);
      thirds[i % 3]?.push(i);
    }
    // CPU µs the three nodes spent per acknowledged event, per figure: steadier than events/s
    // when the machine drifts, and it says whether a level costs work or only waiting.
    const clusterCpu = new Map<string, number[]>();
    // Each measurement starts from replicas that confirmed everything so far.
    const settle = async (before: string): Promise<void> => {
      const { ms, behind, unanswered } = await replicasCaughtUp([0, 1, 2].map(addressOf), 30_000);
      if (unanswered > 0) b.log(`before ${before}: ${unanswered} node(s) did not answer GetNodeStatus for ${fmtMs(ms)} ms; measuring anyway`);
      else if (behind > 0) b.log(`before ${before}: replicas still ${behind} shipments behind after ${fmtMs(ms)} ms; measuring anyway`);
      else if (ms > 200) b.log(`before ${before}: waited ${fmtMs(ms)} ms for replicas to confirm the previous run`);
    };
    const together = async (key: string, lists: number[][], consistency: Consistency, seed: number): Promise<SaturateResult[]> => {
      await settle(key);
      const pids = nodes.map((n) => n?.child.pid ?? -1);
      const cpuBefore = pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0);
      return Promise.all(
        lists.map((list, i) =>
          b.load<SaturateResult>(
            {
              cmd: "saturate",
              address: addressOf(i),
              dataset,
              twins,
              list,
              consistency,
              seqs: b.seqs,
              streams: s.streams,
              window: s.window,
              batchEvents: s.batchEvents,
              warmupMs: s.warmupMs,
              durationMs: s.durationMs,
              seed: seed + i,
              recycle: false,
              expectedRate: 60_000,
              maxPoolEvents: 1_000_000,
            },
            b.runTimeoutMs(),
          ),
        ),
      ).then((results) => {
        const eps = results.reduce((sum, r) => sum + r.eventsPerSec, 0);
        const p50 = Math.max(...results.map((r) => r.latencyMs.p50));
        const p99 = Math.max(...results.map((r) => r.latencyMs.p99));
        const cpuUs = ((pids.reduce((sum, pid) => sum + cpuSeconds(pid), 0) - cpuBefore) * 1e6) / results.reduce((sum, r) => sum + r.totalAccepted, 0);
        clusterCpu.set(key, [...(clusterCpu.get(key) ?? []), cpuUs]);
        b.log(
          `${key}: ${fmtRate(eps)} events/s, ack p50 ${fmtMs(p50)} ms p99 ${fmtMs(p99)} ms, nodes' CPU ${formatValue(cpuUs, "")} µs/event${results.map((r) => rejections(r.counts)).join("")}`,
        );
        return results;
      });
    };
    const levels = [
      ["local", Consistency.LOCAL],
      ["quorum", Consistency.QUORUM],
      ["all", Consistency.ALL],
    ] as const;
    let quorumRate = Number.NaN;
    for (let r = 0; r < s.runs; r++) {
      for (const [level, consistency] of levels) {
        const results = await together(`cluster ${level}`, owned, consistency, 1000 + r * 10);
        const eps = results.reduce((sum, x) => sum + x.eventsPerSec, 0);
        if (level === "quorum") quorumRate = eps;
        b.collect.add(`cluster.${level}.eventsPerSec`, eps);
        b.collect.add(`cluster.${level}.sat.p50`, Math.max(...results.map((x) => x.latencyMs.p50)));
        b.collect.add(`cluster.${level}.sat.p99`, Math.max(...results.map((x) => x.latencyMs.p99)));
      }
      const random = await together("cluster random nodes", thirds, Consistency.QUORUM, 1100 + r * 10);
      b.collect.add(
        "cluster.random.eventsPerSec",
        random.reduce((sum, x) => sum + x.eventsPerSec, 0),
      );
      // p99 at half the saturated QUORUM rate, ring-aware.
      await settle("the half-rate run");
      const open = await Promise.all(
        owned.map((list, i) =>
          b.load<OpenLoopResult>(
            {
              cmd: "openLoop",
              address: addressOf(i),
              dataset,
              twins,
              list,
              consistency: Consistency.QUORUM,
              seqs: b.seqs,
              streams: 2,
              batchEvents: s.batchEvents,
              warmupMs: s.warmupMs,
              durationMs: s.durationMs,
              seed: 1200 + r * 10 + i,
              rate: Math.max(1_000, Math.round((quorumRate / 2) * (list.length / twins))),
              maxOutstandingBatches: Math.ceil((quorumRate * 10) / s.batchEvents),
              drainTimeoutMs: 15_000,
            },
            b.runTimeoutMs(),
          ),
        ),
      );
      b.collect.add("cluster.quorum.open.p99", Math.max(...open.map((o) => o.latencyMs.p99)));
      for (const [level] of levels) {
        const cpu = clusterCpu.get(`cluster ${level}`);
        if (cpu !== undefined) b.collect.note(`cluster.${level}.eventsPerSec`, `nodes' CPU ${formatValue(median(cpu), "")} µs/event`);
      }
      b.log(`cluster quorum at ${fmtRate(quorumRate / 2)}/s offered: p99 ${fmtMs(Math.max(...open.map((o) => o.latencyMs.p99)))} ms`);
    }
    // Failover: kill -9 n2, time until an event of one of its twins is acknowledged through n1.
    await b.step("cluster failover", async () => {
      const victim = nodes[1] as StartedNode;
      const twin = twinId(owned[1]?.[0] ?? 0, width);
      const client = new TwinmeshClient(addressOf(0), { deadlineMs: 2_000 });
      try {
        let seq = BigInt(Date.now()) * 1000n;
        victim.child.kill("SIGKILL");
        nodes[1] = undefined;
        const killedAt = performance.now();
        for (;;) {
          seq++;
          const res = await client.publish([{ kind: BENCH_KIND, sourceId: twin, seq, channels: { value: 1 } }]).catch(() => undefined);
          if (res?.results[0]?.status === EventStatus.ACCEPTED) break;
          if (performance.now() - killedAt > 30_000) throw new Error("no event of the killed node's twins was acknowledged within 30 s");
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        const ms = performance.now() - killedAt;
        b.collect.add("cluster.failover.ms", ms);
        b.log(`cluster failover: ${fmtMs(ms)} ms from kill -9 to the first acknowledged event of a twin it owned`);
      } finally {
        client.close();
      }
    });
    // Catch-up: load without n2, then restart it and time until it serves and owns again.
    await b.step("cluster catch-up", async () => {
      await b.load({ cmd: "forget", address: addressOf(1) }, 10_000).catch(() => undefined);
      const loadUntil = performance.now() + s.catchUpLoadMs;
      let r = 0;
      while (performance.now() < loadUntil) {
        await Promise.all(
          [0, 2].map((i) =>
            b.load<SaturateResult>(
              {
                cmd: "saturate",
                address: addressOf(i),
                dataset,
                twins,
                list: thirds[i],
                seqs: b.seqs,
                streams: 2,
                window: s.window,
                batchEvents: s.batchEvents,
                warmupMs: 0,
                durationMs: Math.min(5_000, Math.max(500, loadUntil - performance.now())),
                seed: 1300 + r++ * 10 + i,
                recycle: false,
                expectedRate: 60_000,
                maxPoolEvents: 1_000_000,
              },
              b.runTimeoutMs(),
            ),
          ),
        );
      }
      const restartedAt = performance.now();
      nodes[1] = await start(1);
      await clusterFormed([0, 1, 2].map(addressOf), 120_000);
      const ms = performance.now() - restartedAt;
      b.collect.add("cluster.catchUp.ms", ms);
      b.log(`cluster catch-up: ${fmtMs(ms)} ms from restart to serving and owning again after ${(s.catchUpLoadMs / 1000).toFixed(0)} s of load without it`);
    });
  } finally {
    for (const [i, node] of nodes.entries()) if (node !== undefined) await b.load({ cmd: "forget", address: addressOf(i) }, 10_000).catch(() => undefined);
    await Promise.all(nodes.map((node) => (node === undefined ? Promise.resolve() : node.child.stop(NODE_STOP_GRACE_MS))));
  }
}

/** The tracing scenario's variants: off (no OTEL_* variable), and sampled at 1 % and 100 %. */
const TRACING_VARIANTS = [
  { id: "off", label: "off", ratio: undefined },
  { id: "sampled1", label: "sampled 1 %", ratio: "0.01" },
  { id: "sampled100", label: "sampled 100 %", ratio: "1" },
] as const;

/**
 * What tracing costs on the hot path: one node, saturated PublishStream, with tracing off, and
 * with `parentbased_traceidratio` at 1 % and 100 % exporting over OTLP/HTTP to a sink in this
 * process that reads and drops every request (the export's own cost is the node's). The
 * variants take turns on one data directory, one run of each per round, so drift hits all alike.
 */
async function tracingBench(b: Bench): Promise<void> {
  const s = b.settings;
  const name = "tracing";
  const dataDir = join(b.root, name);
  let exports = 0;
  let exportedBytes = 0;
  const sink = createHttpServer((req, res) => {
    req.on("data", (chunk: Buffer) => {
      exportedBytes += chunk.length;
    });
    req.on("end", () => {
      exports++;
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
  const endpoint = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
  try {
    let loaded = false;
    for (let r = 0; r < s.runs; r++) {
      for (const variant of TRACING_VARIANTS) {
        const env: NodeJS.ProcessEnv =
          variant.ratio === undefined
            ? {}
            : { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: variant.ratio };
        const { cpuProfDir, nodeArgs } = s;
        const node = await startNode({
          name: `${name}-${variant.id}`,
          dataDir,
          durability: "wal",
          cpuProfDir,
          nodeArgs,
          env,
          readyTimeoutMs: NODE_READY_TIMEOUT_MS,
        });
        try {
          if (!loaded) {
            await b.setupLoad(name, node.address, name, s.ingestTwins);
            loaded = true;
          }
          const before = { exports, exportedBytes };
          const cpuBefore = cpuSeconds(node.child.pid);
          const sat = await b.saturate(`${name} ${variant.label}`, node.address, name, s.ingestTwins, 1300 + r);
          const cpuUs = ((cpuSeconds(node.child.pid) - cpuBefore) * 1e6) / sat.totalAccepted;
          b.collect.add(`tracing.${variant.id}.eventsPerSec`, sat.eventsPerSec);
          const exported =
            variant.ratio === undefined
              ? ""
              : `, ${exports - before.exports} OTLP exports (${formatValue((exportedBytes - before.exportedBytes) / 1024, "")} KiB)`;
          b.collect.note(`tracing.${variant.id}.eventsPerSec`, `node CPU ${formatValue(cpuUs, "")} µs/event${exported}`);
        } finally {
          await b.stopNode(node);
        }
      }
    }
  } finally {
    sink.closeAllConnections();
    await new Promise<void>((resolve) => sink.close(() => resolve()));
  }
}

const RUNNERS: Record<Scenario, (b: Bench) => Promise<void>> = {
  "ceiling-grpc": ceilingGrpc,
  "ceiling-rocks": ceilingRocks,
  "ceiling-pipeline": ceilingPipeline,
  "ingest-wal": (b) => ingest(b, "wal"),
  "ingest-fsync": (b) => ingest(b, "fsync"),
  memory,
  large,
  cluster: clusterBench,
  tracing: tracingBench,
};

// ------------------------------------------------------------------------------------ main

function parseFlags(argv: string[]): BenchFlags {
  const whole = (name: string, min: number) => (value: string) => {
    const v = Number(value);
    if (!Number.isSafeInteger(v) || v < min) throw new InvalidArgumentError(`${name} must be a whole number >= ${min}`);
    return v;
  };
  const program = new Command("bench")
    .description("benchmark one twinmesh node against the machine's own ceilings; see bench/README.md")
    .option("--quick", "smaller sizes, 1 run per figure, under a minute (a smoke test)", false)
    .option("--only <scenarios>", `comma-separated scenarios: ${[...SCENARIOS, ...Object.keys(SCENARIO_GROUPS)].join(", ")}`)
    .addOption(new Option("--runs <n>", "runs per figure (median shown); default 3, quick 1").argParser(whole("--runs", 1)))
    .addOption(
      new Option("--seqs <mode>", "fresh seqs per run: time = run start ms × 1000; contiguous = each source continues 1, 2, 3…").choices([
        "time",
        "contiguous",
      ]),
    )
    .addOption(new Option("--large-twins <n>", "stored twins of the large scenario; default 1,000,000, quick 100,000").argParser(whole("--large-twins", 100)))
    .addOption(new Option("--duration-ms <ms>", "measured window of each timed run").argParser(whole("--duration-ms", 200)))
    .addOption(
      new Option("--pipeline-group-min <events>", "smallest group the bare pipeline writes (default 1,000)").argParser(whole("--pipeline-group-min", 1)),
    )
    .option("--cpu-prof [dir]", "write V8 CPU profiles of the node children (on their clean exit) into dir (default bench/results/profiles)")
    .option("--node-args <flags>", 'extra Node.js flags for the node under test, e.g. "--max-old-space-size=320"')
    .option("--keep-data", "keep the temporary data directories", false)
    .option("--out <dir>", "directory of the results files", DEFAULT_OUT_DIR)
    .exitOverride((err) => process.exit(err.exitCode));
  program.parse(argv);
  return program.opts<BenchFlags>();
}

function dateName(d: Date): string {
  return d
    .toISOString()
    .replace(/\.\d+Z$/, "")
    .replace(/:/g, "-");
}

async function main(): Promise<number> {
  const settings = resolveSettings(parseFlags(process.argv));
  const startedAt = new Date();
  const watchdogMs = settings.mode === "quick" ? 5 * 60_000 : 90 * 60_000;
  const root = mkdtempSync(join(tmpdir(), "twinmesh-bench-"));
  let cleaned = false;
  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    killAllChildren();
    if (!settings.keepData) rmSync(root, { recursive: true, force: true });
  };
  process.on("exit", cleanup);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(signal, () => {
      out(`\nbench: ${signal}: stopping children and removing ${root}`);
      cleanup();
      process.exit(130);
    });
  }
  const watchdog = setTimeout(() => {
    out(`\nbench: gave up after ${watchdogMs / 60_000} min (watchdog); stopping children`);
    cleanup();
    process.exit(3);
  }, watchdogMs);
  watchdog.unref();
  if (settings.cpuProfDir !== undefined) mkdirSync(resolve(settings.cpuProfDir), { recursive: true });

  const machine = machineInfo(root);
  out(
    `twinmesh bench, ${settings.mode} mode${settings.mode === "quick" ? " (QUICK: smaller sizes, 1 run per figure; a smoke test, not the published figures)" : ` (median of ${settings.runs} runs)`}`,
  );
  out(
    `machine: ${machine.cpuCount} × ${machine.cpuModel}, ${formatValue(machine.memoryBytes / MIB / 1024, "")} GiB, ${machine.os}; node ${machine.versions.node}, rocksdb ${machine.versions.rocksdb}, grpc-js ${machine.versions["@grpc/grpc-js"]}; load average ${machine.loadAverageAtStart.join(" ")}`,
  );
  out(`data: ${root} on ${machine.dataFilesystem}; seqs: ${settings.seqs}; scenarios: ${settings.scenarios.join(", ")}`);
  out();

  const loadgen = await spawnWorker("load-generator", LOAD_GENERATOR);
  const bench = new Bench(settings, root, loadgen);
  const fsync = probeFsync(root, settings.fsyncProbeWrites);
  bench.fsync = fsync;
  bench.collect.add("disk.fsync.p50", fsync.latencyMs.p50);
  bench.collect.add("disk.fsync.p99", fsync.latencyMs.p99);
  bench.collect.note("disk.fsync.p50", `${fsync.writes} fsyncs, mean ${fmtMs(fsync.latencyMs.mean)} ms`);
  bench.log(`disk: ${fsync.writes} × (append ${fsync.recordBytes} B + fsync): p50 ${fmtMs(fsync.latencyMs.p50)} ms, p99 ${fmtMs(fsync.latencyMs.p99)} ms`);

  for (const scenario of settings.scenarios) {
    const t = performance.now();
    bench.log(`== ${scenario}`);
    try {
      await RUNNERS[scenario](bench);
    } catch (err) {
      const text = `${scenario} failed: ${err instanceof Error ? err.message : String(err)}`;
      bench.collect.errors.push(text);
      bench.log(`ERROR ${text}`);
    }
    bench.collect.setup[`${scenario}.seconds`] = Math.round(performance.now() - t) / 1000;
  }
  await loadgen.stop(5_000);

  const rows = bench.collect.rows();
  finishRows(rows);
  // Derived: our wal throughput as a share of the bare pipeline measured in this run.
  const pipeline = rows.find((r) => r.id === "ceiling.pipeline.wal.eventsPerSec")?.median;
  const wal = rows.find((r) => r.id === "ingest.wal.eventsPerSec");
  if (pipeline !== undefined && Number.isFinite(pipeline) && wal !== undefined) {
    const spec = bench.collect.specs.get("ingest.wal.pipelineShare") as RowSpec;
    const share: ResultRow = {
      id: "ingest.wal.pipelineShare",
      scenario: spec.scenario,
      unit: spec.unit,
      target: spec.target,
      runs: wal.runs.map((v) => (v / pipeline) * 100),
    };
    finishRows([share]);
    rows.splice(rows.indexOf(wal) + 1, 0, share);
  }
  // Derived: the cluster's QUORUM rate as a share of one node's, and forwarding's of ring-aware.
  for (const [id, over, under] of [
    ["cluster.quorumShare", "cluster.quorum.eventsPerSec", "cluster.single.eventsPerSec"],
    ["cluster.randomShare", "cluster.random.eventsPerSec", "cluster.quorum.eventsPerSec"],
  ] as const) {
    const top = rows.find((r) => r.id === over);
    const bottom = rows.find((r) => r.id === under);
    if (top === undefined || bottom === undefined) continue;
    const spec = bench.collect.specs.get(id) as RowSpec;
    const share: ResultRow = {
      id,
      scenario: spec.scenario,
      unit: spec.unit,
      target: spec.target,
      runs: top.runs.map((v, i) => (v / (bottom.runs[i] ?? bottom.median ?? Number.NaN)) * 100),
    };
    finishRows([share]);
    rows.splice(rows.indexOf(top) + 1, 0, share);
  }
  const finishedAt = new Date();
  const durationMs = finishedAt.getTime() - startedAt.getTime();
  out();
  out(renderTable(rows, settings.mode === "quick"));
  out();
  if (settings.mode === "quick") out("QUICK mode: sizes are reduced (see the labels); markers in parentheses are for targets set at full size.");
  for (const warning of bench.collect.warnings) out(`warning: ${warning}`);
  for (const error of bench.collect.errors) out(`ERROR: ${error}`);
  const name = `${settings.mode === "quick" ? "quick" : "single-node"}-${dateName(startedAt)}`;
  const results: BenchResults = {
    name,
    mode: settings.mode,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    durationMs,
    machine,
    diskFsync: fsync,
    settings,
    results: rows,
    raw: bench.collect.raw,
    setup: bench.collect.setup,
    errors: bench.collect.errors,
    warnings: bench.collect.warnings,
  };
  const paths = writeResults(settings.outDir, results, settings.mode === "quick" ? "latest-quick" : "latest");
  out(`results: ${paths.join(", ")}`);
  out(`bench finished in ${(durationMs / 1000).toFixed(1)} s${settings.mode === "quick" ? " (quick mode)" : ""}`);
  if (settings.cpuProfDir !== undefined) out(`node CPU profiles: ${resolve(settings.cpuProfDir)} (summarise with: node dist/bench/profile-summary.js <file>)`);
  clearTimeout(watchdog);
  cleanup();
  return bench.collect.errors.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    out(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    killAllChildren();
    process.exit(1);
  },
);
