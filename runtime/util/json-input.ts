import { InvalidArgumentError } from "../errors.js";
import { quoteInput } from "./text.js";

/**
 * The deepest JSON a client may send as event attributes or as a `SendToTwin` message: the value
 * itself is level 1, `{"a":{"b":1}}` is 2 levels deep. Deep enough for any document a device
 * sends, shallow enough that every walk over it (checks, JSON, protobuf) stays far from the stack's
 * limit. The gRPC decoder reads up to 127 levels, so anything between is answered by this
 * limit, per event.
 */
export const MAX_JSON_INPUT_DEPTH = 32;

/** What is wrong with a piece of client-sent JSON, and where: `path` is below the value, e.g. `.a[2]`. */
export interface JsonInputProblem {
  readonly path: string;
  readonly why: string;
}

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;
const MAX_PATH_CHARS = 160;

/**
 * The first thing in client-sent JSON the runtime refuses, or undefined: a number that is NaN or
 * infinite (a `google.protobuf.Value` carries a double, so NaN arrives on the wire although JSON
 * has no such number), or nesting deeper than `maxDepth` levels. It walks at most `maxDepth`
 * levels, so a hostile value cannot overflow the stack.
 */
export function jsonInputProblem(value: unknown, maxDepth = MAX_JSON_INPUT_DEPTH): JsonInputProblem | undefined {
  return walk(value, 1, maxDepth);
}

function walk(value: unknown, depth: number, maxDepth: number): JsonInputProblem | undefined {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : { path: "", why: `is ${value}; numbers must be finite` };
  if (typeof value !== "object" || value === null) return undefined;
  if (depth > maxDepth) return { path: "", why: `is nested more than ${maxDepth} levels deep; the limit is ${maxDepth}` };
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const problem = walk(value[i], depth + 1, maxDepth);
      if (problem !== undefined) return { path: `[${i}]${problem.path}`, why: problem.why };
    }
    return undefined;
  }
  for (const key in value) {
    const problem = walk((value as Record<string, unknown>)[key], depth + 1, maxDepth);
    if (problem !== undefined) return { path: `${pathSegment(key)}${problem.path}`.slice(0, MAX_PATH_CHARS), why: problem.why };
  }
  return undefined;
}

function pathSegment(key: string): string {
  return IDENTIFIER.test(key) ? `.${key}` : `[${quoteInput(key, 32)}]`;
}

/**
 * Checks JSON a client sent as request field `field` (see {@link jsonInputProblem}).
 * @throws InvalidArgumentError (`BAD_FIELD`) naming the path of the first bad value, e.g. `message.ratio`.
 */
export function checkJsonInput(value: unknown, field: string): void {
  const problem = jsonInputProblem(value);
  if (problem === undefined) return;
  const path = `${field}${problem.path}`;
  throw new InvalidArgumentError("BAD_FIELD", `${path} ${problem.why}`, [{ field: path, description: problem.why }]);
}
