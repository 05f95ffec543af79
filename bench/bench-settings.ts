import type { SeqMode } from "./load-protocol.js";

/** The scenarios `--only` can pick, in the order they run. */
export const SCENARIOS = ["ceiling-grpc", "ceiling-rocks", "ceiling-pipeline", "ingest-wal", "ingest-fsync", "memory", "large", "cluster", "tracing"] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** Names that stand for several scenarios in `--only`. */
export const SCENARIO_GROUPS: Readonly<Record<string, readonly Scenario[]>> = {
  ceilings: ["ceiling-grpc", "ceiling-rocks", "ceiling-pipeline"],
  ingest: ["ingest-wal", "ingest-fsync"],
  traces: ["tracing"],
  wal: ["ingest-wal"],
  fsync: ["ingest-fsync"],
  unary: ["ingest-wal"],
  grpc: ["ceiling-grpc"],
  rocks: ["ceiling-rocks"],
  pipeline: ["ceiling-pipeline"],
  query: ["large"],
  stall: ["large"],
  restart: ["large"],
  "1m": ["large"],
  failover: ["cluster"],
};

/** Everything a bench run is parameterised by; written into the results file. */
export interface BenchSettings {
  readonly mode: "full" | "quick";
  readonly scenarios: readonly Scenario[];
  /** Runs per measurement; the table shows their median. */
  readonly runs: number;
  readonly seqs: SeqMode;
  readonly batchEvents: number;
  /** Twins of the 10k ingest scenarios. */
  readonly ingestTwins: number;
  /** Stored twins of the large scenario (1,000,000). */
  readonly largeTwins: number;
  /** `--max-active` of the large scenario (100,000). */
  readonly largeMaxActive: number;
  /** Twins activated to measure memory per active twin (100,000). */
  readonly memoryTwins: number;
  /** Twins activated before the memory baseline is read (warms up code paths and buffers). */
  readonly memoryWarmTwins: number;
  /** Saturation: streams × in-flight batches per stream. */
  readonly streams: number;
  readonly window: number;
  /** Setup loads: streams × in-flight batches per stream. */
  readonly loadStreams: number;
  readonly loadWindow: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Offered rate of the open-loop latency runs (events/s). */
  readonly openLoopRate: number;
  /** Offered rate of the ingest that runs during a full-scan query (events/s). */
  readonly scanIngestRate: number;
  /** Length of each phase of the ingest-under-query-load run (quiet, scan, regex, exists). */
  readonly stallPhaseMs: number;
  /** Gap between those phases that no phase counts (a phase's backlog drains in it). */
  readonly stallGapMs: number;
  /** `a`s before the `!` of the one twin the hostile regex runs on (each one more doubles a backtracking engine's time). */
  readonly hostileRegexAs: number;
  /** Twins of the hostile data set whose 20-element lists the nested comprehensions run over. */
  readonly hostileListTwins: number;
  /** A hostile query starts at most this often during its phase. */
  readonly hostileEveryMs: number;
  readonly unaryCalls: number;
  readonly getCalls: number;
  readonly fsyncProbeWrites: number;
  readonly rocksBatchSizes: readonly number[];
  readonly rocksRecordBytes: number;
  readonly rocksDurationMs: number;
  /** Smallest group the bare pipeline writes (it waits for this many events). */
  readonly pipelineGroupMinEvents: number;
  /** Largest group of the bare pipeline (the node's `maxGroupEvents` default). */
  readonly pipelineGroupMaxEvents: number;
  /** Events/s the first saturation pool is sized for; later runs size from the previous run. */
  readonly expectedRate: number;
  readonly restarts: number;
  /** Load the cluster scenario runs while one node is down, before it restarts and catches up (ms). */
  readonly catchUpLoadMs: number;
  /** Where node CPU profiles go (`--cpu-prof`), or undefined. */
  readonly cpuProfDir: string | undefined;
  /** Extra Node.js flags for the node under test (`--node-args`). */
  readonly nodeArgs: readonly string[];
  readonly keepData: boolean;
  /** Directory of the results files. */
  readonly outDir: string;
}

/** What the command line gave. */
export interface BenchFlags {
  quick?: boolean;
  only?: string;
  runs?: number;
  seqs?: SeqMode;
  largeTwins?: number;
  durationMs?: number;
  cpuProf?: string | boolean;
  nodeArgs?: string;
  keepData?: boolean;
  pipelineGroupMin?: number;
  out: string;
}

/** Applies the full or quick defaults and the flags. @throws Error naming a bad flag. */
export function resolveSettings(flags: BenchFlags): BenchSettings {
  const quick = flags.quick === true;
  const scenarios = resolveScenarios(flags.only);
  const largeTwins = flags.largeTwins ?? (quick ? 100_000 : 1_000_000);
  return {
    mode: quick ? "quick" : "full",
    scenarios,
    runs: flags.runs ?? (quick ? 1 : 3),
    seqs: flags.seqs ?? "time",
    batchEvents: 100,
    ingestTwins: 10_000,
    largeTwins,
    largeMaxActive: Math.max(1, Math.round(largeTwins / 10)),
    memoryTwins: quick ? 20_000 : 100_000,
    memoryWarmTwins: 2_000,
    streams: 4,
    window: 16,
    loadStreams: 8,
    loadWindow: 8,
    warmupMs: quick ? 500 : 2_000,
    durationMs: flags.durationMs ?? (quick ? 1_500 : 8_000),
    openLoopRate: 25_000,
    scanIngestRate: 10_000,
    stallPhaseMs: flags.durationMs ?? (quick ? 1_500 : 8_000),
    stallGapMs: quick ? 500 : 1_000,
    hostileRegexAs: quick ? 23 : 27,
    hostileListTwins: quick ? 4 : 20,
    hostileEveryMs: quick ? 500 : 1_000,
    unaryCalls: quick ? 300 : 2_000,
    getCalls: quick ? 300 : 2_000,
    fsyncProbeWrites: quick ? 200 : 1_000,
    rocksBatchSizes: [1, 100, 1_000, 5_000],
    rocksRecordBytes: 200,
    rocksDurationMs: quick ? 300 : 2_000,
    pipelineGroupMinEvents: flags.pipelineGroupMin ?? 1_000,
    pipelineGroupMaxEvents: 5_000,
    expectedRate: 120_000,
    restarts: quick ? 1 : 3,
    catchUpLoadMs: quick ? 3_000 : 30_000,
    cpuProfDir: flags.cpuProf === undefined || flags.cpuProf === false ? undefined : flags.cpuProf === true ? "bench/results/profiles" : flags.cpuProf,
    nodeArgs: flags.nodeArgs === undefined ? [] : flags.nodeArgs.split(/\s+/).filter((arg) => arg !== ""),
    keepData: flags.keepData === true,
    outDir: flags.out,
  };
}

function resolveScenarios(only: string | undefined): Scenario[] {
  if (only === undefined || only.trim() === "") return [...SCENARIOS];
  const picked = new Set<Scenario>();
  for (const raw of only.split(",")) {
    const name = raw.trim().toLowerCase();
    if (name === "") continue;
    const group = SCENARIO_GROUPS[name];
    if (group !== undefined) for (const s of group) picked.add(s);
    else if ((SCENARIOS as readonly string[]).includes(name)) picked.add(name as Scenario);
    else throw new Error(`--only: unknown scenario "${name}"; use ${[...SCENARIOS, ...Object.keys(SCENARIO_GROUPS)].join(", ")}`);
  }
  return SCENARIOS.filter((s) => picked.has(s));
}
