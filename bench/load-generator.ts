/**
 * The load generator: a child process of `run.ts` that drives a node (or the bare gRPC ceiling)
 * over real gRPC. It takes one JSON command at a time over its IPC channel and answers each with
 * a JSON result (see `load-protocol.ts`). Batches are encoded before the timed part of a run; the
 * timed loop only patches batch ids and writes bytes. It exits when its parent goes away.
 */
import { setTimeout as delay } from "node:timers/promises";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventStatus, type PublishStreamResponse, type PublishStreamSession, TwinmeshClient } from "twinmesh/client";
import { BENCH_KIND, commitSent, type EncodedPool, encodePool, patchBatchId, readingValue, SeqBook, seededRandom, twinId } from "./batch-encoder.js";
import { serveCommands } from "./ipc-worker.js";
import type {
  AggregateRequest,
  AggregateResult,
  CallsResult,
  EventCounts,
  GetTwinRequest,
  LoadMessage,
  LoadRequest,
  LoadResult,
  OpenLoopRequest,
  OpenLoopResult,
  PhaseResult,
  ProbeRequest,
  ProbeResult,
  QueryRequest,
  QueryResult,
  SaturateRequest,
  SaturateResult,
  SeedRequest,
  TwinSelection,
  UnaryRequest,
} from "./load-protocol.js";
import { summarize } from "./stats.js";

/** Deadline of unary calls, long enough for a full scan of a million twins. */
const CALL_DEADLINE_MS = 120_000;
/** How long a run waits for the answers of batches in flight when it stops. */
const DRAIN_TIMEOUT_MS = 15_000;
/** Spacing of the queries of a phase once one has failed (a refused query returns at once). */
const FAILED_QUERY_SPACING_MS = 100;
/** Retry passes of the setup load for events the node rejected (e.g. overloaded). */
const LOAD_PASSES = 4;

const books = new Map<string, SeqBook>();
const clients = new Map<string, TwinmeshClient>();

function now(): number {
  return performance.now();
}

/** Wall-clock time in epoch ms with sub-ms precision, comparable across processes. */
function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

function bookOf(sel: TwinSelection): SeqBook {
  let book = books.get(sel.dataset);
  if (book === undefined || book.twins !== sel.twins) {
    book = new SeqBook(sel.twins);
    books.set(sel.dataset, book);
  }
  return book;
}

function seqBase(sel: TwinSelection): number {
  return sel.seqs === "time" ? Date.now() * 1000 : 0;
}

function clientOf(address: string): TwinmeshClient {
  let client = clients.get(address);
  if (client === undefined) {
    client = new TwinmeshClient(address, { deadlineMs: CALL_DEADLINE_MS });
    clients.set(address, client);
  }
  return client;
}

function newCounts(): EventCounts {
  return { accepted: 0, duplicate: 0, rejected: 0, reasons: {} };
}

/** Adds a response's outcomes to `counts`; returns its ACCEPTED events. */
function tally(counts: EventCounts, res: PublishStreamResponse): number {
  let accepted = 0;
  for (const r of res.results) {
    if (r.status === EventStatus.ACCEPTED) accepted++;
    else if (r.status === EventStatus.DUPLICATE) counts.duplicate++;
    else {
      counts.rejected++;
      counts.reasons[r.reason] = (counts.reasons[r.reason] ?? 0) + 1;
    }
  }
  counts.accepted += accepted;
  return accepted;
}

/** Half-closes the streams, waiting a bounded time, then cancels whatever is left. */
async function closeSessions(sessions: PublishStreamSession[], graceful: boolean): Promise<void> {
  if (graceful) await Promise.race([Promise.all(sessions.map((s) => s.end())), delay(5_000)]);
  for (const s of sessions) s.cancel();
}

// ------------------------------------------------------------------------------------ saturate

async function saturate(req: SaturateRequest): Promise<SaturateResult> {
  const book = bookOf(req);
  const streams = req.streams;
  const totalMs = req.warmupMs + req.durationMs;
  const poolEvents = Math.min(req.maxPoolEvents, Math.ceil((req.expectedRate * totalMs) / 1000));
  const pool = encodePool(book, {
    from: req.from ?? 0,
    to: req.to ?? req.twins,
    list: req.list === undefined ? undefined : Uint32Array.from(req.list),
    streams,
    batchEvents: req.batchEvents,
    order: "random",
    eventsPerStream: Math.ceil(poolEvents / streams),
    seqBase: seqBase(req),
    seed: req.seed,
    consistency: req.consistency,
  });
  const client = clientOf(req.address);
  const sessions = Array.from({ length: streams }, () => client.openPublishStream());
  const sent = new Array<number>(streams).fill(0);
  const inflight = new Array<number>(streams).fill(0);
  const counts = newCounts();
  const outside = newCounts();
  const latencies: number[] = [];
  let outstanding = 0;
  let stopping = false;
  let exhausted = false;
  let failure: Error | undefined;
  let acceptedInWindow = 0;
  let totalAccepted = 0;
  let lastAckInWindow = Number.NaN;
  const start = now();
  const warmEnd = start + req.warmupMs;
  const end = warmEnd + req.durationMs;

  await new Promise<void>((resolve) => {
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(stopTimer);
      clearTimeout(drainTimer);
      resolve();
    };
    let drainTimer: NodeJS.Timeout | undefined;
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      if (outstanding === 0) finish();
      else drainTimer = setTimeout(finish, DRAIN_TIMEOUT_MS);
    };
    const stopTimer = setTimeout(stop, end - now());
    const pump = (s: number): void => {
      const list = pool.streams[s] ?? [];
      const session = sessions[s] as PublishStreamSession;
      while (!stopping && (inflight[s] as number) < req.window) {
        const n = sent[s] as number;
        if (n >= list.length && !(req.recycle && list.length > 0)) break;
        const batch = list[n % list.length];
        if (batch === undefined) break;
        const batchId = patchBatchId(batch.bytes, n, "b");
        sent[s] = n + 1;
        inflight[s] = (inflight[s] as number) + 1;
        outstanding++;
        const sentAt = now();
        session.sendEncoded(batchId, batch.bytes).then(
          (res) => {
            const t = now();
            inflight[s] = (inflight[s] as number) - 1;
            outstanding--;
            const ok = tally(t >= warmEnd && t <= end ? counts : outside, res);
            totalAccepted += ok;
            if (t >= warmEnd && t <= end) {
              acceptedInWindow += ok;
              lastAckInWindow = t;
            }
            if (sentAt >= warmEnd && sentAt <= end) latencies.push(t - sentAt);
            pump(s);
            if (!stopping && outstanding === 0) {
              // Every stream ran out of batches before the end.
              exhausted = true;
              stop();
            }
            if (stopping && outstanding === 0) finish();
          },
          (err: Error) => {
            inflight[s] = (inflight[s] as number) - 1;
            outstanding--;
            failure ??= err;
            stop();
            if (outstanding === 0) finish();
          },
        );
      }
    };
    for (let s = 0; s < streams; s++) pump(s);
    if (outstanding === 0) {
      exhausted = true;
      stop();
    }
  });
  const unanswered = outstanding;
  // Batches still unanswered are cancelled by closeSessions: that is not a stream failure.
  const streamFailure: Error | undefined = failure;
  await closeSessions(sessions, streamFailure === undefined && unanswered === 0);
  if (!req.recycle) commitSent(book, pool, sent);
  if (streamFailure !== undefined) throw new Error(`PublishStream failed during the run: ${streamFailure.message}`);
  const windowEnd = exhausted ? lastAckInWindow : end;
  const measuredMs = windowEnd - warmEnd;
  return {
    eventsPerSec: measuredMs > 0 ? (acceptedInWindow * 1000) / measuredMs : Number.NaN,
    measuredMs,
    latencyMs: summarize(latencies),
    counts,
    totalAccepted,
    exhausted,
    unanswered,
    poolEvents: pool.events,
    encodeMs: pool.encodeMs,
    bytesPerBatch: pool.events > 0 ? (pool.bytes / pool.events) * req.batchEvents : 0,
  };
}

// ------------------------------------------------------------------------------------ open loop

async function openLoop(req: OpenLoopRequest): Promise<OpenLoopResult> {
  const book = bookOf(req);
  const streams = req.streams;
  const intervalMs = (req.batchEvents * 1000) / req.rate;
  const phases = req.phases;
  const phasesMs = phases === undefined ? 0 : (phases.loads.length + 1) * (phases.phaseMs + phases.gapMs) + phases.maxOverrunMs;
  const horizonMs = req.warmupMs + (phases === undefined ? req.durationMs : 0) + (req.scan?.maxMs ?? 0) + phasesMs;
  const totalBatches = Math.ceil(horizonMs / intervalMs) + streams;
  const pool = encodePool(book, {
    from: req.from ?? 0,
    to: req.to ?? req.twins,
    streams,
    batchEvents: req.batchEvents,
    order: "random",
    eventsPerStream: Math.ceil(totalBatches / streams) * req.batchEvents,
    seqBase: seqBase(req),
    seed: req.seed,
    list: req.list === undefined ? undefined : Uint32Array.from(req.list),
    consistency: req.consistency,
  });
  const client = clientOf(req.address);
  const sessions = Array.from({ length: streams }, () => client.openPublishStream());
  const sched = new Float64Array(totalBatches);
  const sentAt = new Float64Array(totalBatches);
  const ackAt = new Float64Array(totalBatches).fill(Number.NaN);
  const accepted = new Uint32Array(totalBatches);
  const sent = new Array<number>(streams).fill(0);
  const counts = newCounts();
  let k = 0;
  let outstanding = 0;
  let overloaded = false;
  let failure: Error | undefined;
  const t0 = now() + 20;
  const measureFrom = t0 + req.warmupMs;
  // With phases, the measured window is theirs: ingest goes on until the last one ends.
  const measureTo = measureFrom + (phases === undefined ? req.durationMs : 0);

  // Scans (optional) run back to back from the end of the warm-up until the measured window ends.
  const scanIntervals: [number, number][] = [];
  let scanned = 0;
  let scanError: string | undefined;
  let scanDone = req.scan === undefined && phases === undefined;
  const runScans = async (): Promise<void> => {
    const scan = req.scan;
    if (scan === undefined) return;
    const firstAt = measureFrom + req.durationMs / 3;
    await delay(Math.max(0, firstAt - now()));
    try {
      do {
        const s = now();
        const res = await client.aggregateTwins({ kind: scan.kind, field: scan.field, filter: "" });
        scanIntervals.push([s, now()]);
        scanned += Number(res.scanned);
      } while (now() < measureTo && now() < firstAt + scan.maxMs);
    } catch (err) {
      scanError = (err as Error).message;
    } finally {
      scanDone = true;
    }
  };
  // Query phases (optional): a quiet phase, then each load for its phase, with gaps between.
  const phaseRecords: ({ -readonly [K in keyof Omit<PhaseResult, "latencyMs" | "fromMs" | "toMs">]: PhaseResult[K] } & { from: number; to: number })[] = [];
  const runPhases = async (): Promise<void> => {
    if (phases === undefined) return;
    try {
      phaseRecords.push({ name: "quiet", from: measureFrom, to: measureFrom + phases.phaseMs, queries: 0, queryMs: [], failed: 0, scanned: 0, matched: 0 });
      let at = measureFrom + phases.phaseMs + phases.gapMs;
      for (const load of phases.loads) {
        await delay(Math.max(0, at - now()));
        const rec: (typeof phaseRecords)[number] = { name: load.name, from: now(), to: Number.NaN, queries: 0, queryMs: [], failed: 0, scanned: 0, matched: 0 };
        phaseRecords.push(rec);
        const end = rec.from + phases.phaseMs;
        while (now() < end) {
          const started = now();
          rec.queries++;
          try {
            for await (const page of client.queryTwins({ kind: load.kind, filter: load.filter, limit: load.limit }, AbortSignal.timeout(CALL_DEADLINE_MS))) {
              if (page.summary !== undefined) {
                rec.scanned += Number(page.summary.scanned);
                rec.matched += Number(page.summary.matched);
              }
            }
            rec.queryMs.push(now() - started);
          } catch (err) {
            rec.failed++;
            rec.firstError ??= (err as Error).message;
          }
          // A refused query comes back at once: space them, so the load is the filter, not the call rate.
          const next = started + Math.max(load.everyMs, rec.failed > 0 ? FAILED_QUERY_SPACING_MS : 0);
          if (next >= end) break;
          await delay(Math.max(0, next - now()));
        }
        rec.to = Math.max(end, now());
        at = rec.to + phases.gapMs;
      }
    } catch (err) {
      scanError = (err as Error).message;
    } finally {
      scanDone = true;
    }
  };
  const scanning = phases === undefined ? runScans() : runPhases();

  // The first scheduled time not sent: the end of the measured window.
  let scheduleEnd = Number.POSITIVE_INFINITY;
  await new Promise<void>((resolve) => {
    let finished = false;
    let drainTimer: NodeJS.Timeout | undefined;
    let tickTimer: NodeJS.Timeout | undefined;
    let scheduling = true;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(drainTimer);
      clearTimeout(tickTimer);
      resolve();
    };
    const stopScheduling = (t: number): void => {
      scheduling = false;
      scheduleEnd = t;
      if (outstanding === 0) finish();
      else drainTimer = setTimeout(finish, req.drainTimeoutMs);
    };
    const tick = (): void => {
      const t = now();
      while (scheduling && k < totalBatches) {
        const at = t0 + k * intervalMs;
        if (at > t) break;
        // With a scan, keep the load on until the last scan has finished.
        if (at > measureTo && scanDone) {
          stopScheduling(at);
          break;
        }
        if (failure !== undefined || outstanding >= req.maxOutstandingBatches) {
          overloaded = failure === undefined;
          stopScheduling(at);
          break;
        }
        const s = k % streams;
        const list = pool.streams[s] ?? [];
        const n = sent[s] as number;
        const batch = list[req.recycle ? n % Math.max(1, list.length) : n];
        if (batch === undefined) {
          stopScheduling(at);
          break;
        }
        const index = k;
        const batchId = patchBatchId(batch.bytes, n, "o");
        sent[s] = n + 1;
        sched[index] = at;
        sentAt[index] = t;
        outstanding++;
        k++;
        (sessions[s] as PublishStreamSession).sendEncoded(batchId, batch.bytes).then(
          (res) => {
            ackAt[index] = now();
            accepted[index] = tally(counts, res);
            outstanding--;
            if (!scheduling && outstanding === 0) finish();
          },
          (err: Error) => {
            failure ??= err;
            outstanding--;
            if (!scheduling && outstanding === 0) finish();
          },
        );
      }
      if (scheduling && k >= totalBatches) stopScheduling(t);
      if (scheduling) tickTimer = setTimeout(tick, Math.max(0, t0 + k * intervalMs - now()));
    };
    tickTimer = setTimeout(tick, Math.max(0, t0 - now()));
  });
  const unanswered = outstanding;
  // Batches still unanswered are cancelled by closeSessions: that is not a stream failure.
  const streamFailure: Error | undefined = failure;
  await closeSessions(sessions, streamFailure === undefined && unanswered === 0);
  await scanning;
  if (!req.recycle) commitSent(book, pool, sent);
  if (streamFailure !== undefined) throw new Error(`PublishStream failed during the run: ${streamFailure.message}`);

  const latencies: number[] = [];
  const latencyAt: number[] = [];
  const lags: number[] = [];
  const during: number[] = [];
  const outside: number[] = [];
  let acceptedInWindow = 0;
  for (let i = 0; i < k; i++) {
    const at = sched[i] as number;
    if (at < measureFrom || at >= scheduleEnd) continue;
    const ack = ackAt[i] as number;
    const latency = Number.isNaN(ack) ? Number.POSITIVE_INFINITY : ack - at;
    latencies.push(latency);
    latencyAt.push(at - measureFrom);
    lags.push((sentAt[i] as number) - at);
    acceptedInWindow += accepted[i] as number;
    if (req.scan !== undefined) (scanIntervals.some(([a, b]) => at >= a && at <= b) ? during : outside).push(latency);
  }
  const measuredMs = scheduleEnd - measureFrom;
  const phaseResults: PhaseResult[] = phaseRecords.map(({ from, to, ...rec }) => {
    const during: number[] = [];
    for (let i = 0; i < k; i++) {
      const at = sched[i] as number;
      if (at < from || at >= to || at >= scheduleEnd) continue;
      const ack = ackAt[i] as number;
      during.push(Number.isNaN(ack) ? Number.POSITIVE_INFINITY : ack - at);
    }
    return { ...rec, fromMs: from - measureFrom, toMs: to - measureFrom, latencyMs: summarize(during) };
  });
  return {
    offeredPerSec: req.rate,
    acceptedPerSec: measuredMs > 0 ? (acceptedInWindow * 1000) / measuredMs : Number.NaN,
    measuredMs,
    latencyMs: summarize(latencies),
    sendLagMs: summarize(lags),
    counts,
    unanswered,
    overloaded,
    scan:
      req.scan === undefined
        ? undefined
        : {
            scans: scanIntervals.length,
            scanMs: scanIntervals.map(([a, b]) => b - a),
            scanned,
            duringScanMs: summarize(during),
            outsideScanMs: summarize(outside),
            error: scanError,
          },
    phases: phases === undefined ? undefined : phaseResults,
    batches: req.keepBatches === true ? { atMs: Float64Array.from(latencyAt), latencyMs: Float64Array.from(latencies) } : undefined,
  };
}

// ------------------------------------------------------------------------------------ setup load

/**
 * Sends every batch of `pool`, `window` batches in flight per stream, and returns the twins whose
 * event was rejected. Cancels the streams (and fails) at `deadlineAt`.
 */
async function runPool(
  address: string,
  pool: EncodedPool,
  window: number,
  counts: EventCounts,
  deadlineAt: number,
): Promise<{ retry: number[]; sent: number[] }> {
  const client = clientOf(address);
  const streams = pool.streams.length;
  const sessions = Array.from({ length: streams }, () => client.openPublishStream());
  const sent = new Array<number>(streams).fill(0);
  const retry: number[] = [];
  let failure: Error | undefined;
  let timedOut = false;
  const timer = setTimeout(
    () => {
      timedOut = true;
      for (const session of sessions) session.cancel();
    },
    Math.max(0, deadlineAt - now()),
  );
  try {
    await Promise.all(
      pool.streams.map(async (list, s) => {
        const session = sessions[s] as PublishStreamSession;
        const inflight = new Set<Promise<void>>();
        for (let n = 0; n < list.length && failure === undefined && !timedOut; n++) {
          const batch = list[n] as (typeof list)[number];
          const batchId = patchBatchId(batch.bytes, n, "l");
          sent[s] = n + 1;
          const tracked: Promise<void> = session
            .sendEncoded(batchId, batch.bytes)
            .then(
              (res) => {
                tally(counts, res);
                res.results.forEach((r, i) => {
                  if (r.status === EventStatus.REJECTED) retry.push(batch.twins[i] as number);
                });
              },
              (err: Error) => {
                failure ??= err;
              },
            )
            .finally(() => inflight.delete(tracked));
          inflight.add(tracked);
          if (inflight.size >= window) await Promise.race(inflight);
        }
        await Promise.all(inflight);
      }),
    );
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) throw new Error("setup load timed out; the node stopped answering");
  await closeSessions(sessions, failure === undefined);
  if (failure !== undefined) throw new Error(`PublishStream failed during the setup load: ${(failure as Error).message}`);
  return { retry, sent };
}

async function load(req: LoadRequest): Promise<LoadResult> {
  const book = bookOf(req);
  const counts = newCounts();
  const started = now();
  const deadline = started + req.timeoutMs;
  let list: Uint32Array | undefined;
  let passes = 0;
  let encodeMs = 0;
  let events = 0;
  for (; passes < LOAD_PASSES; passes++) {
    if (now() > deadline) throw new Error(`setup load did not finish within ${req.timeoutMs} ms`);
    const pool = encodePool(book, {
      from: req.from ?? 0,
      to: req.to ?? req.twins,
      list,
      streams: req.streams,
      batchEvents: req.batchEvents,
      order: "sequential",
      eventsPerStream: 0,
      seqBase: seqBase(req),
      seed: passes + 1,
    });
    encodeMs += pool.encodeMs;
    events += pool.events;
    const passCounts = newCounts();
    const { retry, sent } = await runPool(req.address, pool, req.window, passCounts, deadline);
    commitSent(book, pool, sent);
    counts.accepted += passCounts.accepted;
    counts.duplicate += passCounts.duplicate;
    for (const [reason, n] of Object.entries(passCounts.reasons)) counts.reasons[reason] = (counts.reasons[reason] ?? 0) + n;
    if (retry.length === 0) {
      passes++;
      break;
    }
    if (passes === LOAD_PASSES - 1) counts.rejected += retry.length;
    list = Uint32Array.from(retry);
    await delay(200); // the node said it was overloaded: let it drain before the retry pass
  }
  return { events, ms: now() - started, counts, passes, encodeMs };
}

// ------------------------------------------------------------------------------------ unary calls

async function unary(req: UnaryRequest): Promise<CallsResult> {
  const book = bookOf(req);
  const client = clientOf(req.address);
  const base = seqBase(req);
  const values = seededRandom(req.seed + 1);
  return timedCalls(req, async (i) => {
    const res = await client.publish([
      {
        kind: BENCH_KIND,
        sourceId: twinId(i, book.width),
        seq: BigInt(book.take(i, base)),
        time: timestampFromMs(Date.now()),
        channels: { value: readingValue(values) },
      },
    ]);
    const status = res.results[0]?.status;
    if (status !== EventStatus.ACCEPTED) throw new Error(`status ${status} ${res.results[0]?.reason ?? ""}`);
  });
}

async function getTwin(req: GetTwinRequest): Promise<CallsResult> {
  const book = bookOf(req);
  const client = clientOf(req.address);
  return timedCalls(req, async (i) => {
    const id = twinId(i, book.width);
    const res = await client.getTwin({ kind: BENCH_KIND, id });
    if (res.twin?.id !== id) throw new Error(`GetTwin answered ${res.twin?.id} for ${id}`);
  });
}

/**
 * Calls `call` for `warmupCalls + calls` random twins in `[from, to)`, one at a time, and
 * summarises the latency of the measured calls. A call that throws counts as a failure.
 */
async function timedCalls(req: UnaryRequest | GetTwinRequest, call: (twin: number) => Promise<void>): Promise<CallsResult> {
  const random = seededRandom(req.seed);
  const from = req.from ?? 0;
  const span = (req.to ?? req.twins) - from;
  const latencies: number[] = [];
  let failures = 0;
  let firstFailure: string | undefined;
  for (let n = 0; n < req.warmupCalls + req.calls; n++) {
    const twin = from + Math.floor(random() * span);
    const t = now();
    try {
      await call(twin);
    } catch (err) {
      failures++;
      firstFailure ??= (err as Error).message;
    }
    if (n >= req.warmupCalls) latencies.push(now() - t);
  }
  return { latencyMs: summarize(latencies), failures, firstFailure };
}

// ------------------------------------------------------------------------------------ queries

async function query(req: QueryRequest): Promise<QueryResult> {
  const client = clientOf(req.address);
  const started = now();
  let firstMs = Number.NaN;
  let pages = 0;
  let returned = 0;
  let matched = 0;
  let scanned = 0;
  let pageToken = "";
  do {
    let next = "";
    for await (const msg of client.queryTwins({ kind: req.kind, filter: req.filter, limit: req.limit, pageToken })) {
      if (msg.twins.length > 0) {
        returned += msg.twins.length;
        if (Number.isNaN(firstMs)) firstMs = now() - started;
      }
      if (msg.summary !== undefined) {
        matched += Number(msg.summary.matched);
        scanned += Number(msg.summary.scanned);
        next = msg.summary.nextPageToken;
      }
    }
    pages++;
    pageToken = next;
  } while (pageToken !== "" && pages < req.maxPages);
  return { ms: now() - started, firstMs, pages, returned, matched, scanned };
}

async function aggregate(req: AggregateRequest): Promise<AggregateResult> {
  const client = clientOf(req.address);
  const started = now();
  const res = await client.aggregateTwins({ kind: req.kind, field: req.field, filter: req.filter });
  const group = res.groups[0];
  return { ms: now() - started, scanned: Number(res.scanned), matched: Number(res.matched), avg: group?.avg ?? Number.NaN };
}

/** Publishes `events` unsequenced events to each twin of `ids` (one batch per 500 events); fails on any rejection. */
async function seed(req: SeedRequest): Promise<{ events: number }> {
  const client = clientOf(req.address);
  const events = req.ids.flatMap((id) => Array.from({ length: req.events }, (_, i) => ({ kind: req.kind, sourceId: id, seq: 0n, channels: { value: i } })));
  for (let from = 0; from < events.length; from += 500) {
    const res = await client.publish(events.slice(from, from + 500));
    const bad = res.results.find((r) => r.status !== EventStatus.ACCEPTED);
    if (bad !== undefined) throw new Error(`seeding ${req.kind} twins: ${bad.reason} ${bad.message}`);
  }
  return { events: events.length };
}

// ------------------------------------------------------------------------------------ restart probe

async function probe(req: ProbeRequest): Promise<ProbeResult> {
  const book = bookOf(req);
  // A fresh client with short deadlines: the node may still be opening its store.
  const client = new TwinmeshClient(req.address, { deadlineMs: 1_000 });
  const deadline = Date.now() + req.timeoutMs;
  const id = twinId(req.twin, book.width);
  let attempts = 0;
  try {
    let getOkAtMs = Number.NaN;
    while (Number.isNaN(getOkAtMs)) {
      attempts++;
      try {
        await client.getTwin({ kind: BENCH_KIND, id });
        getOkAtMs = wallNow();
      } catch (err) {
        if (Date.now() > deadline)
          throw new Error(`node at ${req.address} did not answer GetTwin(${id}) within ${req.timeoutMs} ms: ${(err as Error).message}`);
        await delay(2);
      }
    }
    const base = seqBase(req);
    for (;;) {
      attempts++;
      const seq = book.take(req.twin, base);
      try {
        const res = await client.publish([{ kind: BENCH_KIND, sourceId: id, seq: BigInt(seq), channels: { value: 50 } }]);
        if (res.results[0]?.status === EventStatus.ACCEPTED) return { getOkAtMs, publishOkAtMs: wallNow(), attempts };
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`node at ${req.address} did not accept a Publish within ${req.timeoutMs} ms: ${(err as Error).message}`);
      }
      if (Date.now() > deadline) throw new Error(`node at ${req.address} did not accept a Publish within ${req.timeoutMs} ms`);
      await delay(2);
    }
  } finally {
    client.close();
  }
}

// ------------------------------------------------------------------------------------ command loop

function execute(msg: LoadMessage): Promise<unknown> {
  switch (msg.cmd) {
    case "saturate":
      return saturate(msg);
    case "openLoop":
      return openLoop(msg);
    case "load":
      return load(msg);
    case "unary":
      return unary(msg);
    case "getTwin":
      return getTwin(msg);
    case "query":
      return query(msg);
    case "aggregate":
      return aggregate(msg);
    case "probe":
      return probe(msg);
    case "seed":
      return seed(msg);
    case "forget": {
      clients.get(msg.address)?.close();
      clients.delete(msg.address);
      return Promise.resolve(undefined);
    }
  }
}

serveCommands<LoadMessage>("load-generator", execute);
