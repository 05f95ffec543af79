/**
 * Ceiling: bare RocksDB batch writes with the `rocksdb` package, in a child process. One write in
 * flight at a time (as the node's group commit), `batchPuts` puts of `recordBytes`-byte records
 * per write over the keys of `keys` twins, with or without `sync`. The write batches are built
 * before the timed loop, so this measures RocksDB and the binding, not JavaScript.
 */
import { join } from "node:path";
import { type BareOp, BareRocks, recordOfSize, twinKey } from "./bare-rocks-db.js";
import { seededRandom, twinId, twinIdWidth } from "./batch-encoder.js";
import { serveCommands } from "./ipc-worker.js";
import { type LatencySummary, summarize } from "./stats.js";

/** Measure one (batch size, sync) combination. */
export interface RocksCeilingRequest {
  readonly cmd: "rocks";
  /** Parent directory; each combination writes into its own database under it. */
  readonly dir: string;
  readonly keys: number;
  readonly recordBytes: number;
  readonly batchPuts: number;
  readonly sync: boolean;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly seed: number;
}

export interface RocksCeilingResult {
  readonly batchPuts: number;
  readonly sync: boolean;
  /** Write batches per second. */
  readonly writesPerSec: number;
  /** Puts (records) per second. */
  readonly putsPerSec: number;
  readonly writeMs: LatencySummary;
}

/** Prepared batches cycled through by the timed loop. */
const PREPARED_BATCHES = 16;
const dbs = new Map<string, BareRocks>();

async function rocks(req: RocksCeilingRequest): Promise<RocksCeilingResult> {
  const path = join(req.dir, `rocks-${req.sync ? "sync" : "wal"}`);
  let db = dbs.get(path);
  if (db === undefined) {
    db = await BareRocks.open(path);
    dbs.set(path, db);
  }
  const random = seededRandom(req.seed);
  const width = twinIdWidth(req.keys);
  const batches: BareOp[][] = [];
  for (let b = 0; b < PREPARED_BATCHES; b++) {
    const ops: BareOp[] = [];
    for (let i = 0; i < req.batchPuts; i++) {
      ops.push({ type: "put", key: twinKey("bench", twinId(Math.floor(random() * req.keys), width)), value: recordOfSize(req.recordBytes, random) });
    }
    batches.push(ops);
  }
  const start = performance.now();
  const warmEnd = start + req.warmupMs;
  const end = warmEnd + req.durationMs;
  const latencies: number[] = [];
  let writes = 0;
  let measuredFrom = Number.NaN;
  let t = start;
  for (let n = 0; t < end; n++) {
    const ops = batches[n % PREPARED_BATCHES] as BareOp[];
    const before = performance.now();
    await db.write(ops, req.sync);
    t = performance.now();
    if (before >= warmEnd) {
      if (Number.isNaN(measuredFrom)) measuredFrom = before;
      writes++;
      latencies.push(t - before);
    }
  }
  const seconds = (t - measuredFrom) / 1000;
  return {
    batchPuts: req.batchPuts,
    sync: req.sync,
    writesPerSec: writes / seconds,
    putsPerSec: (writes * req.batchPuts) / seconds,
    writeMs: summarize(latencies),
  };
}

async function closeAll(): Promise<void> {
  for (const db of dbs.values()) await db.close();
  dbs.clear();
}

serveCommands<RocksCeilingRequest | { readonly cmd: "close" }>("bare-rocks", (cmd) => (cmd.cmd === "rocks" ? rocks(cmd) : closeAll()));
