/**
 * What the event loop and a filter worker ({@link FilterPool}) tell each other: a chunk of inputs
 * to evaluate one filter on, and one outcome code per input.
 */
import type { CelVariables } from "./cel-filter.js";

/** The outcome of one input, as {@link FilterReply.outcomes} carries it. */
export const FilterOutcome = {
  NOT_MATCHED: 0,
  MATCHED: 1,
  /** The filter could not be evaluated (a missing field…); the message is in `errors`. */
  ERROR: 2,
  /** A deleted twin's tombstone: neither scanned nor matched. */
  ABSENT: 3,
  /** The state is of an older state version: the event loop migrates it and asks again. */
  MIGRATE: 4,
  /** The record does not parse; the message is in `errors`. */
  CORRUPT: 5,
} as const;
/** One of the {@link FilterOutcome} codes. */
export type FilterOutcome = (typeof FilterOutcome)[keyof typeof FilterOutcome];

/** One chunk of work for a filter worker. */
export interface FilterJob {
  /** The filter, compiled (and cached) in the worker as the event loop compiled it. */
  readonly expression: string;
  readonly variables: CelVariables;
  readonly maxCost: number;
  /**
   * Stored twin records (`[id, raw]`, as the store returns them): each is evaluated as
   * `{ id, kind, state }` when its state is of `stateVersion`.
   */
  readonly records?: { readonly kind: string; readonly stateVersion: number; readonly entries: readonly (readonly [string, string])[] };
  /** Or ready activations (migrated twins, alerts). */
  readonly activations?: readonly Readonly<Record<string, unknown>>[];
}

/** A worker's answer to a {@link FilterJob}. */
export type FilterReply =
  | {
      /** One {@link FilterOutcome} per input, in order. */
      readonly outcomes: Uint8Array;
      /** The message of each `ERROR` or `CORRUPT` input, by its index. */
      readonly errors: readonly (readonly [number, string])[];
    }
  | {
      /** The filter spent more than its budget on one input: the message of the QueryLimitError. */
      readonly exceeded: string;
    };

/** A job as posted to a worker, with the id its reply carries. */
export interface PostedFilterJob extends FilterJob {
  readonly jobId: number;
}

/** A worker's message. */
export type FilterWorkerMessage = { readonly jobId: number } & (FilterReply | { readonly failure: string });
