import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { Metadata, type StatusObject, status } from "@grpc/grpc-js";
import { BadRequestSchema, ErrorInfoSchema } from "../../proto/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../proto/gen/google/rpc/status_pb.js";
import { capText, isTwinmeshError, type TwinmeshError } from "../../runtime/index.js";

/** The `google.rpc.ErrorInfo` domain of every error twinmesh reports. */
export const ERROR_DOMAIN = "twinmesh.dev";

/** The trailer that carries a serialized `google.rpc.Status` (the gRPC "richer error model"). */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** The part of a pino logger that {@link toStatus} needs; a pino `Logger` satisfies it. */
export interface ErrorLog {
  /** Logs a failure a person must act on: values in `obj`, a fixed sentence in `msg`. */
  error(obj: object, msg: string): void;
}

/**
 * The longest status message sent, in characters. A status travels in the call's trailers with
 * its details (message, ErrorInfo, BadRequest), and grpc-js clients refuse trailers over 8 KiB
 * by default: an error that echoed a 100 KB input would reach the client as a transport error
 * instead of itself. Messages are built with `quoteInput`, which already cuts echoed input to
 * 64 characters; these caps bound whatever still gets through.
 */
export const MAX_STATUS_MESSAGE_CHARS = 1_024;
/** The longest ErrorInfo metadata value and BadRequest field or description sent, in characters. */
export const MAX_STATUS_DETAIL_CHARS = 256;

// Fields every TwinmeshError has that are already in the status or ErrorInfo, or are not for clients.
const NOT_METADATA = new Set(["name", "message", "stack", "cause", "code", "reason", "violations"]);

/**
 * Maps anything a handler threw to the one status the client sees. This is the only place an
 * error becomes a gRPC status.
 *
 * - A {@link TwinmeshError} keeps its own `code` and message. The `grpc-status-details-bin`
 *   trailer holds a `google.rpc.Status` whose details are a `google.rpc.ErrorInfo` (its `reason`,
 *   domain {@link ERROR_DOMAIN}, and as metadata `retryable` plus the error's own primitive
 *   fields, such as `kind` or `capacity`) and, when it has violations, a `google.rpc.BadRequest`.
 * - Anything else is a twinmesh bug: it is logged with `log.error` and becomes INTERNAL with a
 *   fixed message, so no internal detail leaks to clients.
 *
 * Messages are cut to {@link MAX_STATUS_MESSAGE_CHARS} and every detail value to
 * {@link MAX_STATUS_DETAIL_CHARS}, so no input a client sent can make the status too large to
 * deliver.
 *
 * The result is a plain object, never the error itself: grpc-js reads any integer `code` field
 * of an error as the status (Node's system errors have string codes, but libraries' do not).
 *
 * @param fields - Extra values for the log entry, e.g. `{ method }`.
 */
export function toStatus(err: unknown, log: ErrorLog, fields: Readonly<Record<string, unknown>> = {}): StatusObject {
  if (isTwinmeshError(err)) return twinmeshStatus(err);
  log.error({ ...fields, err }, "unexpected error in gRPC handler");
  return { code: status.INTERNAL, details: "internal error; see the node's log", metadata: new Metadata() };
}

function twinmeshStatus(err: TwinmeshError): StatusObject {
  const details = [anyPack(ErrorInfoSchema, create(ErrorInfoSchema, { reason: err.reason, domain: ERROR_DOMAIN, metadata: errorInfoMetadata(err) }))];
  if (err.violations.length > 0) {
    const fieldViolations = err.violations.map((v) => ({ field: detail(v.field), description: detail(v.description) }));
    details.push(anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations })));
  }
  const message = capText(err.message, MAX_STATUS_MESSAGE_CHARS);
  const rpcStatus = create(StatusSchema, { code: err.code, message, details });
  const metadata = new Metadata();
  metadata.set(STATUS_DETAILS_KEY, Buffer.from(toBinary(StatusSchema, rpcStatus)));
  return { code: err.code, details: message, metadata };
}

function detail(text: string): string {
  return capText(text, MAX_STATUS_DETAIL_CHARS);
}

/** ErrorInfo metadata is string to string: primitives are stringified, lists of primitives joined by ",". */
function errorInfoMetadata(err: TwinmeshError): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(err)) {
    if (NOT_METADATA.has(key)) continue;
    if (isPrimitive(value)) metadata[key] = detail(String(value));
    else if (Array.isArray(value) && value.every(isPrimitive)) metadata[key] = detail(value.join(","));
  }
  return metadata;
}

function isPrimitive(value: unknown): value is string | number | bigint | boolean {
  const t = typeof value;
  return t === "string" || t === "number" || t === "bigint" || t === "boolean";
}
