/**
 * The body of a filter worker thread ({@link FilterPool}): evaluates a filter over the chunks the
 * event loop posts, so that a costly filter runs where it can be stopped (the pool terminates a
 * worker whose query is cancelled or past its deadline) and never delays telemetry acks.
 */
import { parentPort } from "node:worker_threads";
import { isTwinmeshError } from "../errors.js";
import { readState } from "../host/twin-record.js";
import { CelFilter } from "./cel-filter.js";
import { FilterOutcome, type FilterReply, type FilterWorkerMessage, type PostedFilterJob } from "./filter-job.js";

/** Compiled filters kept by one worker; a query posts the same filter for every chunk. */
const MAX_CACHED_FILTERS = 32;
const filters = new Map<string, CelFilter>();

function filterFor(job: PostedFilterJob): CelFilter {
  const key = JSON.stringify([job.expression, job.variables, job.maxCost]);
  let filter = filters.get(key);
  if (filter === undefined) {
    filter = CelFilter.compile(job.expression, job.variables, "filter", { maxCost: job.maxCost });
    if (filters.size >= MAX_CACHED_FILTERS) filters.delete(filters.keys().next().value as string);
    filters.set(key, filter);
  }
  return filter;
}

function run(job: PostedFilterJob): FilterReply {
  const filter = filterFor(job);
  const errors: [number, string][] = [];
  const settle = (index: number, activation: Readonly<Record<string, unknown>>): FilterOutcome => {
    const result = filter.evaluate(activation);
    if ("error" in result) {
      errors.push([index, result.error]);
      return FilterOutcome.ERROR;
    }
    return result.matched ? FilterOutcome.MATCHED : FilterOutcome.NOT_MATCHED;
  };
  if (job.records !== undefined) {
    const { kind, stateVersion, entries } = job.records;
    const outcomes = new Uint8Array(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const [id, raw] = entries[i] as readonly [string, string];
      let stored: ReturnType<typeof readState>;
      try {
        stored = readState(raw);
      } catch (err) {
        errors.push([i, (err as Error).message]);
        outcomes[i] = FilterOutcome.CORRUPT;
        continue;
      }
      if (stored === undefined) outcomes[i] = FilterOutcome.ABSENT;
      else if (stored.sv !== stateVersion) outcomes[i] = FilterOutcome.MIGRATE;
      else outcomes[i] = settle(i, { id, kind, state: stored.state });
    }
    return { outcomes, errors };
  }
  const activations = job.activations ?? [];
  const outcomes = new Uint8Array(activations.length);
  for (let i = 0; i < activations.length; i++) outcomes[i] = settle(i, activations[i] as Readonly<Record<string, unknown>>);
  return { outcomes, errors };
}

parentPort?.on("message", (job: PostedFilterJob) => {
  let message: FilterWorkerMessage;
  try {
    message = { jobId: job.jobId, ...run(job) };
  } catch (err) {
    message =
      isTwinmeshError(err) && err.reason === "FILTER_COST_EXCEEDED"
        ? { jobId: job.jobId, exceeded: err.message }
        : { jobId: job.jobId, failure: err instanceof Error ? (err.stack ?? err.message) : String(err) };
  }
  parentPort?.postMessage(message);
});
