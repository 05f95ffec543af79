/**
 * The one adapter between protobuf-es v2 service descriptors and grpc-js. grpc-js moves raw
 * bytes; this module checks their size, decodes and encodes them with protobuf-es, gives handlers
 * a cancellation signal and a back-pressured sink, and maps every failure through
 * {@link toStatus}.
 */
import { type EventEmitter, once } from "node:events";
import { type DescMessage, type DescMethod, type DescService, fromBinary, type Message, type MessageShape, toBinary } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { pino } from "pino";
import { ConfigError, InvalidArgumentError, MAX_JSON_INPUT_DEPTH, StatusCode, TwinmeshError } from "../../runtime/index.js";
import type { Encoded } from "./encoded.js";
import { type ErrorLog, toStatus } from "./to-status.js";

/** gRPC's customary message size limit, 4 MiB. */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * How deep protobuf messages may nest in a request. protobuf-es's default, 100, stops JSON
 * (a `google.protobuf.Struct`, two message levels per JSON level) at 49 levels; 256 reads 127,
 * so JSON deeper than the runtime's limit (32 levels, `MAX_JSON_INPUT_DEPTH`) still decodes and
 * is answered by that limit for the one event or message it is in. Deeper still, the request
 * cannot be read and is refused whole (INVALID_ARGUMENT, `MESSAGE_TOO_DEEP`).
 */
export const MAX_DECODE_DEPTH = 256;

/** What a handler knows about its call. */
export interface CallContext {
  /** Aborted when the call ends before the handler does: the client cancelled, the deadline passed or the connection dropped. */
  readonly signal: AbortSignal;
  /** The request metadata (headers). */
  readonly metadata: grpc.Metadata;
  /** The client's address, `host:port`. */
  readonly peer: string;
}

/** The response side of a streaming call. */
export interface StreamSink<O extends Message> {
  /**
   * Sends one message: a message object, which the adapter encodes with `toBinary`, or its
   * {@link Encoded} bytes, sent as they are (grpc-js keeps them until they are written). Resolves
   * once the stream can take another: when grpc-js's buffer is full it waits for `"drain"`, so a
   * slow client slows the handler instead of growing memory. Concurrent writes are allowed and
   * keep their call order.
   * @throws An `AbortError` when the call has ended (see {@link CallContext.signal}).
   */
  write(msg: O | Encoded<O>): Promise<void>;
}

/** Answers a unary RPC. */
export type UnaryHandler<I, O> = (req: I, call: CallContext) => Promise<O>;

/** Answers a server-streaming RPC; the call ends OK when the returned promise resolves. */
export type ServerStreamHandler<I, O extends Message> = (req: I, out: StreamSink<O>, call: CallContext) => Promise<void>;

/**
 * Answers a bidi-streaming RPC. `input` yields decoded requests as the handler pulls them. A
 * request that is too large or malformed is a stream-level fault: `input` throws it, and the call
 * ends with its status even if the handler catches it.
 */
export type BidiHandler<I, O extends Message> = (input: AsyncIterable<I>, out: StreamSink<O>, call: CallContext) => Promise<void>;

/** The handler type for one method descriptor (client streaming is not supported: `never`). */
export type MethodHandler<M> = M extends {
  readonly methodKind: infer K;
  readonly input: infer I extends DescMessage;
  readonly output: infer O extends DescMessage;
}
  ? K extends "unary"
    ? UnaryHandler<MessageShape<I>, MessageShape<O>>
    : K extends "server_streaming"
      ? ServerStreamHandler<MessageShape<I>, MessageShape<O>>
      : K extends "bidi_streaming"
        ? BidiHandler<MessageShape<I>, MessageShape<O>>
        : never
  : never;

/** One handler per method of service `S`, keyed by the method's `localName` (e.g. `publishStream`). */
export type ServiceImpl<S extends DescService> = {
  readonly [K in keyof S["method"]]: MethodHandler<S["method"][K]>;
};

/** How the adapter treats calls. Every field is optional. */
export interface AdapterOptions {
  /**
   * The largest request message accepted, in bytes. Configure grpc-js's
   * `grpc.max_receive_message_length` above this, so that clients see this adapter's
   * RESOURCE_EXHAUSTED message, which says what to do.
   * @defaultValue {@link DEFAULT_MAX_MESSAGE_BYTES}
   */
  readonly maxMessageBytes?: number;
  /** Where handler bugs are logged. @defaultValue a pino logger named `twinmesh.grpc` on stdout. */
  readonly log?: ErrorLog;
  /** Told how each call ended (its method path and status code), for metrics. @defaultValue none */
  readonly calls?: CallCounter;
}

/** Counts finished calls by method and status; must be cheap and must not throw. */
export interface CallCounter {
  /** A call of `method` (`/package.Service/Method`) ended with `code` (CANCELLED when the client went away). */
  ended(method: string, code: GrpcStatus): void;
}

/** {@link AdapterOptions} with defaults applied and limits checked. */
export interface ResolvedAdapterOptions {
  /** See {@link AdapterOptions.maxMessageBytes}. */
  readonly maxMessageBytes: number;
  /** See {@link AdapterOptions.log}. */
  readonly log: ErrorLog;
  /** See {@link AdapterOptions.calls}. */
  readonly calls: CallCounter | undefined;
}

/**
 * Applies the defaults of {@link AdapterOptions} and checks its limits.
 * @throws ConfigError (`BAD_OPTION`) when `maxMessageBytes` is not a positive safe integer.
 */
export function resolveAdapterOptions(options: AdapterOptions = {}): ResolvedAdapterOptions {
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  if (!Number.isSafeInteger(maxMessageBytes) || maxMessageBytes <= 0) {
    throw new ConfigError(
      "BAD_OPTION",
      `maxMessageBytes must be a positive integer number of bytes, got ${maxMessageBytes}; omit it for ${DEFAULT_MAX_MESSAGE_BYTES}`,
    );
  }
  return { maxMessageBytes, log: options.log ?? pino({ name: "twinmesh.grpc" }), calls: options.calls };
}

/**
 * Registers `impl` for `service` on a grpc-js server. Requests arrive as raw bytes (grpc-js does
 * not decode them), are checked against `maxMessageBytes` (RESOURCE_EXHAUSTED, reason
 * `MESSAGE_TOO_LARGE`) and decoded with `fromBinary` (INVALID_ARGUMENT, reason
 * `MALFORMED_MESSAGE`); responses are encoded with `toBinary`, except {@link Encoded} bytes a
 * handler writes to a stream, which are sent as they are. Whatever a handler throws, before or
 * after a stream started, ends the call with the status {@link toStatus} gives.
 *
 * @throws Error when `service` has a client-streaming method or `impl` lacks a method.
 * @example
 * ```ts
 * const server = new grpc.Server({ "grpc.max_receive_message_length": 2 * maxMessageBytes });
 * addService(server, TwinService, {
 *   async getTwin(req, call) { return create(GetTwinResponseSchema, { twin: await host.get(req.kind, req.id, call.signal) }); },
 *   // ...every other method of TwinService
 * }, { maxMessageBytes, log });
 * ```
 */
export function addService<S extends DescService>(server: grpc.Server, service: S, impl: ServiceImpl<S>, options: AdapterOptions = {}): void {
  const resolved = resolveAdapterOptions(options);
  const definition: Record<string, grpc.MethodDefinition<Buffer, Buffer>> = {};
  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const handler: unknown = (impl as Readonly<Record<string, unknown>>)[method.localName];
    if (typeof handler !== "function") {
      throw new Error(`no handler for ${service.typeName}.${method.name}: implement "${method.localName}"`);
    }
    const path = `/${service.typeName}/${method.name}`;
    const rpc: Rpc = { path, input: method.input, output: method.output, options: resolved };
    definition[method.localName] = {
      path,
      requestStream: method.methodKind === "bidi_streaming" || method.methodKind === "client_streaming",
      responseStream: method.methodKind === "bidi_streaming" || method.methodKind === "server_streaming",
      // grpc-js only moves bytes. Decoding (after our size check) and encoding happen here, so
      // every failure goes through toStatus rather than grpc-js's generic statuses.
      requestSerialize: passThrough,
      requestDeserialize: passThrough,
      responseSerialize: passThrough,
      responseDeserialize: passThrough,
      originalName: method.localName,
    };
    handlers[method.localName] = bind(method, rpc, handler);
  }
  server.addService(definition, handlers);
}

/** What a bound handler needs to know about its method. */
interface Rpc {
  readonly path: string;
  readonly input: DescMessage;
  readonly output: DescMessage;
  readonly options: ResolvedAdapterOptions;
}

// Erased handler types: addService's signature already tied each handler to its method's messages.
type AnyUnary = UnaryHandler<Message, Message>;
type AnyServerStream = ServerStreamHandler<Message, Message>;
type AnyBidi = BidiHandler<Message, Message>;

function passThrough(bytes: Buffer): Buffer {
  return bytes;
}

// grpc-js types its implementations loosely; each branch returns the matching call type.
function bind(method: DescMethod, rpc: Rpc, handler: unknown): grpc.UntypedHandleCall {
  switch (method.methodKind) {
    case "unary":
      return unaryCall(rpc, handler as AnyUnary);
    case "server_streaming":
      return serverStreamCall(rpc, handler as AnyServerStream);
    case "bidi_streaming":
      return bidiCall(rpc, handler as AnyBidi);
    case "client_streaming":
      throw new Error(`${method.parent.typeName}.${method.name} is client-streaming, which the adapter does not support`);
  }
}

function unaryCall(rpc: Rpc, handler: AnyUnary): grpc.handleUnaryCall<Buffer, Buffer> {
  return (call, callback) => {
    void (async () => {
      const { context, release } = openContext(call);
      try {
        const res = await handler(decode(rpc, call.request), context);
        callback(null, encode(rpc.output, res));
        rpc.options.calls?.ended(rpc.path, GrpcStatus.OK);
      } catch (err) {
        const status = failureStatus(err, context.signal, rpc);
        rpc.options.calls?.ended(rpc.path, status?.code ?? GrpcStatus.CANCELLED);
        if (status !== undefined) callback(status);
      } finally {
        release();
      }
    })();
  };
}

function serverStreamCall(rpc: Rpc, handler: AnyServerStream): grpc.handleServerStreamingCall<Buffer, Buffer> {
  return (call) => {
    void runStream(call, rpc, (context) => handler(decode(rpc, call.request), sink(call, rpc.output, context.signal), context));
  };
}

function bidiCall(rpc: Rpc, handler: AnyBidi): grpc.handleBidiStreamingCall<Buffer, Buffer> {
  return (call) => {
    void runStream(call, rpc, async (context) => {
      let fault: unknown;
      async function* input(): AsyncGenerator<Message> {
        // destroyOnReturn: false, because a handler that stops reading (break, throw) must still
        // be able to write and end the call with a status; destroying the duplex would drop both.
        for await (const bytes of call.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
          let msg: Message;
          try {
            msg = decode(rpc, bytes);
          } catch (err) {
            fault = err;
            throw err;
          }
          yield msg;
        }
      }
      await handler(input(), sink(call, rpc.output, context.signal), context);
      // A bad request ends the stream even if the handler swallowed the error.
      if (fault !== undefined) throw fault;
    });
  };
}

type StreamCall = grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>;
// What every kind of grpc-js server call has (grpc-js does not export its ServerSurfaceCall).
type SurfaceCall = Pick<grpc.ServerUnaryCall<Buffer, Buffer>, "cancelled" | "metadata" | "getPeer" | "getDeadline"> & EventEmitter;

async function runStream(call: StreamCall, rpc: Rpc, body: (context: CallContext) => Promise<void>): Promise<void> {
  const { context, release } = openContext(call);
  try {
    await body(context);
    discardUnread(call);
    if (!context.signal.aborted) call.end();
    rpc.options.calls?.ended(rpc.path, context.signal.aborted ? GrpcStatus.CANCELLED : GrpcStatus.OK);
  } catch (err) {
    const status = failureStatus(err, context.signal, rpc);
    rpc.options.calls?.ended(rpc.path, status?.code ?? GrpcStatus.CANCELLED);
    discardUnread(call);
    // grpc-js's own "error" listener records this status and ends the call after the writes
    // already queued, so messages sent before the failure still reach the client.
    if (status !== undefined) call.emit("error", status);
  } finally {
    release();
  }
}

/**
 * A bidi handler may stop reading before the client stops writing (a fault, a shutdown). grpc-js
 * holds the call's status back while a received request waits to be read, so the client would
 * wait until the server is forced down. Drop the abandoned async iterator's "readable" listener
 * (while it is there, the stream cannot flow) and let the rest flow away unread.
 */
function discardUnread(call: StreamCall): void {
  if (!("resume" in call)) return;
  call.removeAllListeners("readable");
  call.on("data", () => undefined);
}

function sink(call: StreamCall, schema: DescMessage, signal: AbortSignal): StreamSink<Message> {
  // Writers that find the buffer full share one wait for "drain": a listener each would pile up
  // (Node warns past ten) when many answers are written at once to a client that does not read.
  let drained: Promise<void> | undefined;
  return {
    async write(msg) {
      signal.throwIfAborted();
      // grpc-js drops writes after a cancel without calling back, so "drain" may never come:
      // the wait must end with the signal.
      const bytes = msg instanceof Uint8Array ? asBuffer(msg) : encode(schema, msg);
      if (call.write(bytes)) return;
      drained ??= once(call, "drain", { signal }).then(
        () => {
          drained = undefined;
        },
        (err: unknown) => {
          drained = undefined;
          throw err;
        },
      );
      await drained;
    },
  };
}

/** The status to send for a failure, or undefined when the call is already over and the failure is that ending. */
function failureStatus(err: unknown, signal: AbortSignal, rpc: Rpc): grpc.StatusObject | undefined {
  if (signal.aborted && isCancellation(err, signal)) return undefined;
  return toStatus(err, rpc.options.log, { method: rpc.path });
}

function isCancellation(err: unknown, signal: AbortSignal): boolean {
  if (err === signal.reason) return true;
  if (!(err instanceof Error)) return false;
  // AbortError from once()/throwIfAborted(); premature close from the input of a cancelled bidi call.
  return err.name === "AbortError" || (err as NodeJS.ErrnoException).code === "ERR_STREAM_PREMATURE_CLOSE";
}

function openContext(call: SurfaceCall): { context: CallContext; release: () => void } {
  const controller = new AbortController();
  const onCancelled = (): void => {
    const deadline = call.getDeadline();
    const expired = (deadline instanceof Date ? deadline.getTime() : deadline) <= Date.now();
    controller.abort(new DOMException(expired ? "the call's deadline passed" : "the client cancelled the call", "AbortError"));
  };
  if (call.cancelled) onCancelled();
  else call.once("cancelled", onCancelled);
  return {
    context: { signal: controller.signal, metadata: call.metadata, peer: call.getPeer() },
    release: () => call.off("cancelled", onCancelled),
  };
}

function decode(rpc: Rpc, bytes: Buffer): Message {
  const limit = rpc.options.maxMessageBytes;
  if (bytes.byteLength > limit) throw new MessageTooLargeError(rpc.path, bytes.byteLength, limit);
  try {
    return fromBinary(rpc.input, bytes, { recursionLimit: MAX_DECODE_DEPTH });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    if (/maximum recursion depth/.test(why)) {
      throw new InvalidArgumentError(
        "MESSAGE_TOO_DEEP",
        `request to ${rpc.path} nests messages more than ${MAX_DECODE_DEPTH} levels deep, so none of it can be read; ` +
          `JSON attributes and messages may be at most ${MAX_JSON_INPUT_DEPTH} levels deep: flatten them`,
      );
    }
    throw new InvalidArgumentError(
      "MALFORMED_MESSAGE",
      `request to ${rpc.path} is not a valid ${rpc.input.typeName} (${why}); check that the client is built from the same .proto files`,
    );
  }
}

function encode(schema: DescMessage, msg: Message): Buffer {
  return asBuffer(toBinary(schema, msg));
}

/** grpc-js writes Buffers; this is the same memory, not a copy. */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A request over the adapter's size limit. A retry of the same request cannot succeed. */
class MessageTooLargeError extends TwinmeshError {
  override readonly name = "MessageTooLargeError";
  readonly code = StatusCode.RESOURCE_EXHAUSTED;
  readonly reason = "MESSAGE_TOO_LARGE";
  constructor(
    readonly method: string,
    readonly sizeBytes: number,
    readonly limitBytes: number,
  ) {
    super(`request to ${method} is ${sizeBytes} bytes, over this node's limit of ${limitBytes} bytes; split the batch into smaller requests`);
  }
}
