/**
 * Ceiling: the durable ingest path without the runtime, in a child process. It takes the same
 * pre-encoded PublishStreamRequest batches the load generator sends and, per event, decodes,
 * JSON.parse → {@link applyReading} → JSON.stringify of the twin's state kept in a Map; events
 * are grouped into one RocksDB write batch (the latest record of each touched twin) of at least
 * `groupMinEvents` events, with one write in flight, and each batch's PublishStreamResponse is encoded once its group is durable.
 * No gRPC, no mailboxes, no dedupe, no validation: what is left is the work no design can avoid.
 */
import { join } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { type EventResult, EventStatus, PublishStreamRequestSchema, PublishStreamResponseSchema } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { type BareOp, BareRocks, twinKey } from "./bare-rocks-db.js";
import { encodePool, SeqBook } from "./batch-encoder.js";
import { applyReading, type BenchState, initialBenchState } from "./bench-twins.js";
import { serveCommands } from "./ipc-worker.js";
import { type LatencySummary, summarize } from "./stats.js";

export interface PipelineCeilingRequest {
  readonly cmd: "pipeline";
  readonly dir: string;
  readonly twins: number;
  readonly batchEvents: number;
  /** A group is written when no write is in flight and it holds at least this many events. */
  readonly groupMinEvents: number;
  /** Input stops while a write is in flight and the open group holds this many events. */
  readonly groupMaxEvents: number;
  readonly sync: boolean;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Batches encoded up front and cycled through. */
  readonly poolBatches: number;
  readonly seed: number;
}

export interface PipelineCeilingResult {
  readonly sync: boolean;
  /** Events durable (and answered) per second in the measured window. */
  readonly eventsPerSec: number;
  readonly groups: number;
  readonly avgGroupEvents: number;
  readonly writeMs: LatencySummary;
  /** CPU time of this process per event, µs (user + system). */
  readonly cpuUsPerEvent: number;
  /** PublishStreamResponses encoded (one per batch, after its group was durable), and their bytes. */
  readonly answeredBatches: number;
  readonly answeredBytes: number;
}

interface TwinSlot {
  json: string;
  ver: number;
  hw: number;
  let: number;
}

interface Group {
  readonly twins: Map<string, TwinSlot>;
  readonly batches: { id: string; events: number }[];
  events: number;
}

const ACCEPTED: EventResult = { $typeName: "twinmesh.v1.EventResult", status: EventStatus.ACCEPTED, reason: "", message: "", retryable: false };
const KIND = "bench";

function timestampMs(t: Timestamp | undefined): number {
  return t === undefined ? Date.now() : Number(t.seconds) * 1000 + Math.floor(t.nanos / 1_000_000);
}

function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function pipeline(req: PipelineCeilingRequest): Promise<PipelineCeilingResult> {
  const db = await BareRocks.open(join(req.dir, `pipeline-${req.sync ? "sync" : "wal"}-${req.seed}`));
  try {
    const pool = encodePool(new SeqBook(req.twins), {
      from: 0,
      to: req.twins,
      streams: 1,
      batchEvents: req.batchEvents,
      order: "random",
      eventsPerStream: req.poolBatches * req.batchEvents,
      seqBase: 0,
      seed: req.seed,
    });
    const batches = (pool.streams[0] ?? []).map((b) => b.bytes);
    const slots = new Map<string, TwinSlot>();
    const initialJson = JSON.stringify(initialBenchState());
    const newGroup = (): Group => ({ twins: new Map(), batches: [], events: 0 });
    let open = newGroup();
    let writing: Promise<void> | undefined;
    let groups = 0;
    let groupedEvents = 0;
    let committedInWindow = 0;
    const writeLatencies: number[] = [];
    let answered = 0;
    let answeredBytes = 0;

    const start = performance.now();
    const warmEnd = start + req.warmupMs;
    const end = warmEnd + req.durationMs;
    let cpuAtWarmEnd: NodeJS.CpuUsage | undefined;
    let committedAtWarmEnd = 0;
    let committed = 0;

    const flush = (): void => {
      const group = open;
      open = newGroup();
      const ops: BareOp[] = [];
      for (const [id, slot] of group.twins) {
        ops.push({ type: "put", key: twinKey(KIND, id), value: `{"sv":1,"ver":${slot.ver},"hw":${slot.hw},"let":${slot.let},"state":${slot.json}}` });
      }
      const before = performance.now();
      writing = db.write(ops, req.sync).then(() => {
        const t = performance.now();
        writeLatencies.push(t - before);
        groups++;
        groupedEvents += group.events;
        committed += group.events;
        if (t >= warmEnd && t <= end) committedInWindow += group.events;
        // Answer every batch of the group now that it is durable.
        for (const b of group.batches) {
          const out = toBinary(PublishStreamResponseSchema, {
            $typeName: "twinmesh.v1.PublishStreamResponse",
            batchId: b.id,
            batchReason: "",
            results: new Array<EventResult>(b.events).fill(ACCEPTED),
          });
          answered++;
          answeredBytes += out.byteLength;
        }
        writing = undefined;
        if (open.events >= req.groupMinEvents) flush();
      });
    };

    for (let k = 0; performance.now() < end; k++) {
      if (cpuAtWarmEnd === undefined && performance.now() >= warmEnd) {
        cpuAtWarmEnd = process.cpuUsage();
        committedAtWarmEnd = committed;
      }
      const bytes = batches[k % batches.length] as Buffer;
      const batch = fromBinary(PublishStreamRequestSchema, bytes);
      for (const e of batch.events) {
        let slot = slots.get(e.sourceId);
        if (slot === undefined) {
          slot = { json: initialJson, ver: 0, hw: 0, let: 0 };
          slots.set(e.sourceId, slot);
        }
        const state = JSON.parse(slot.json) as BenchState;
        const timeMs = timestampMs(e.time);
        applyReading(state, e.sourceId, e.channels.value ?? 0, timeMs);
        slot.json = JSON.stringify(state);
        slot.ver++;
        slot.hw = Number(e.seq);
        slot.let = timeMs;
        open.twins.set(e.sourceId, slot);
      }
      open.events += batch.events.length;
      open.batches.push({ id: batch.batchId, events: batch.events.length });
      if (writing === undefined) {
        if (open.events >= req.groupMinEvents) flush();
      } else if (open.events >= req.groupMaxEvents) await writing;
      // Let the write callback in, as a server's event loop would between messages.
      await yieldToLoop();
    }
    const cpu = process.cpuUsage(cpuAtWarmEnd);
    const cpuEvents = committed - committedAtWarmEnd;
    for (let guard = 0; writing !== undefined && guard < 1_000; guard++) await writing;
    if (open.events > 0) flush();
    for (let guard = 0; writing !== undefined && guard < 1_000; guard++) await writing;
    return {
      sync: req.sync,
      eventsPerSec: (committedInWindow * 1000) / req.durationMs,
      groups,
      avgGroupEvents: groups > 0 ? groupedEvents / groups : 0,
      writeMs: summarize(writeLatencies),
      cpuUsPerEvent: cpuEvents > 0 ? (cpu.user + cpu.system) / cpuEvents : Number.NaN,
      answeredBatches: answered,
      answeredBytes,
    };
  } finally {
    await db.close();
  }
}

serveCommands<PipelineCeilingRequest>("bare-pipeline", pipeline);
