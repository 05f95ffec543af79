import { create, type DescMethod, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { BadRequestSchema, ErrorInfoSchema } from "../proto/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../proto/gen/google/rpc/status_pb.js";
import { Health, HealthCheckRequestSchema } from "../proto/gen/grpc/health/v1/health_pb.js";
import { AlertService } from "../proto/gen/twinmesh/v1/alert_pb.js";
import { DeadLetterService } from "../proto/gen/twinmesh/v1/dead_letter_pb.js";
import { NodeService } from "../proto/gen/twinmesh/v1/node_pb.js";
import { type Consistency, type Event, type PublishStreamResponse, TelemetryService } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
import { TwinService } from "../proto/gen/twinmesh/v1/twin_pb.js";
import { decodeQueryTwinsResponse } from "./query-decoder.js";

/** An RPC that failed, with the gRPC status and twinmesh's reason and field violations. */
export class TwinmeshClientError extends Error {
  override readonly name = "TwinmeshClientError";
  constructor(
    /** The gRPC status code. */
    readonly code: grpc.status,
    message: string,
    /** twinmesh's stable reason (from google.rpc.ErrorInfo), when the server sent one. */
    readonly reason: string | undefined,
    /** Bad fields (from google.rpc.BadRequest). */
    readonly violations: readonly { field: string; description: string }[],
  ) {
    super(message);
  }
  /** True for statuses worth retrying with backoff (UNAVAILABLE, RESOURCE_EXHAUSTED). */
  get retryable(): boolean {
    return this.code === grpc.status.UNAVAILABLE || this.code === grpc.status.RESOURCE_EXHAUSTED;
  }
}

function toClientError(err: grpc.ServiceError): TwinmeshClientError {
  let reason: string | undefined;
  const violations: { field: string; description: string }[] = [];
  const raw = err.metadata?.get("grpc-status-details-bin")[0];
  if (raw instanceof Buffer) {
    try {
      const status = fromBinary(StatusSchema, raw);
      for (const detail of status.details) {
        const info = anyUnpack(detail, ErrorInfoSchema);
        if (info !== undefined) reason = info.reason;
        const bad = anyUnpack(detail, BadRequestSchema);
        if (bad !== undefined) for (const v of bad.fieldViolations) violations.push({ field: v.field, description: v.description });
      }
    } catch {
      // Details are a courtesy; the status itself is what matters.
    }
  }
  return new TwinmeshClientError(err.code, err.details || err.message, reason, violations);
}

/** Options for {@link TwinmeshClient}. */
export interface TwinmeshClientOptions {
  /** Deadline of unary calls. @defaultValue 30_000 */
  readonly deadlineMs?: number;
}

/**
 * A TypeScript client of a twinmesh node (any language can use the .proto files; this one
 * adds typed helpers, error decoding and a correlated PublishStream).
 *
 * @example
 * const client = new TwinmeshClient("127.0.0.1:7420");
 * await client.publish([{ kind: "patient", sourceId: "bed-4", seq: 1n, channels: { bpm: 72 } }]);
 * const { twin } = await client.getTwin({ kind: "patient", id: "bed-4" });
 * client.close();
 */
export class TwinmeshClient {
  private readonly client: grpc.Client;
  private readonly deadlineMs: number;

  constructor(
    readonly address = "127.0.0.1:7420",
    options: TwinmeshClientOptions = {},
  ) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
    });
    this.deadlineMs = options.deadlineMs ?? 30_000;
  }

  private unary<M extends DescMethod & { methodKind: "unary" }>(method: M, request: MessageInitShape<M["input"]>): Promise<MessageShape<M["output"]>> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<Buffer, MessageShape<M["output"]>>(
        path(method),
        () => Buffer.from(toBinary(method.input, create(method.input, request))),
        (buf: Buffer) => fromBinary(method.output, buf) as MessageShape<M["output"]>,
        Buffer.alloc(0),
        new grpc.Metadata(),
        { deadline: Date.now() + this.deadlineMs },
        (err, res) => (err ? reject(toClientError(err)) : resolve(res as MessageShape<M["output"]>)),
      );
    });
  }

  /** Calls a server-streaming method; `decode` reads each response, protobuf-es's `fromBinary` unless a method has a faster one. */
  private async *serverStream<M extends DescMethod & { methodKind: "server_streaming" }>(
    method: M,
    request: MessageInitShape<M["input"]>,
    signal?: AbortSignal,
    decode: (bytes: Uint8Array) => MessageShape<M["output"]> = (bytes) => fromBinary(method.output, bytes) as MessageShape<M["output"]>,
  ): AsyncGenerator<MessageShape<M["output"]>> {
    const call = this.client.makeServerStreamRequest<Buffer, MessageShape<M["output"]>>(
      path(method),
      () => Buffer.from(toBinary(method.input, create(method.input, request))),
      decode,
      Buffer.alloc(0),
    );
    const cancel = (): void => call.cancel();
    signal?.addEventListener("abort", cancel, { once: true });
    try {
      for await (const msg of call) yield msg as MessageShape<M["output"]>;
    } catch (err) {
      if ((err as grpc.ServiceError).code === grpc.status.CANCELLED && signal?.aborted) return;
      throw toClientError(err as grpc.ServiceError);
    } finally {
      signal?.removeEventListener("abort", cancel);
      call.cancel();
    }
  }

  /** Publishes a batch; `results[i]` answers `events[i]`. */
  publish(events: MessageInitShape<typeof TelemetryService.method.publish.input>["events"], consistency?: Consistency) {
    return this.unary(TelemetryService.method.publish, { events, consistency });
  }

  /** Opens a PublishStream with request/response correlation by batch id. */
  openPublishStream(): PublishStreamSession {
    return new PublishStreamSession(this.client);
  }

  /** Which node this is, the twin kinds it serves and how many copies of a twin it keeps. */
  describeNode() {
    return this.unary(NodeService.method.describeNode, {});
  }

  /** The members of this node's cluster as it sees them now (up, down, incompatible) and each partition's preference list. */
  describeCluster() {
    return this.unary(NodeService.method.describeCluster, {});
  }

  /** The node's health, cluster view, partition progress and counts now (what `twinmesh status` shows). */
  getNodeStatus() {
    return this.unary(NodeService.method.getNodeStatus, {});
  }

  getTwin(req: MessageInitShape<typeof TwinService.method.getTwin.input>) {
    return this.unary(TwinService.method.getTwin, req);
  }
  /**
   * Streams the matching twins in pages (`twins` of each message, in the query's order), then the
   * summary (`summary` of the last message; read its `twins` too). Messages are read by
   * `decodeQueryTwinsResponse`, which returns what `fromBinary` would, faster.
   * @example
   * for await (const page of client.queryTwins({ kind: "patient", filter: "state.ewma > 120.0" })) {
   *   for (const twin of page.twins) console.log(twin.id, twin.state);
   *   if (page.summary !== undefined) console.log(`${page.summary.matched} matched`);
   * }
   */
  queryTwins(req: MessageInitShape<typeof TwinService.method.queryTwins.input>, signal?: AbortSignal) {
    return this.serverStream(TwinService.method.queryTwins, req, signal, decodeQueryTwinsResponse);
  }
  aggregateTwins(req: MessageInitShape<typeof TwinService.method.aggregateTwins.input>) {
    return this.unary(TwinService.method.aggregateTwins, req);
  }
  sendToTwin(req: MessageInitShape<typeof TwinService.method.sendToTwin.input>) {
    return this.unary(TwinService.method.sendToTwin, req);
  }
  deleteTwin(req: MessageInitShape<typeof TwinService.method.deleteTwin.input>) {
    return this.unary(TwinService.method.deleteTwin, req);
  }
  listAlerts(req: MessageInitShape<typeof AlertService.method.listAlerts.input> = {}) {
    return this.unary(AlertService.method.listAlerts, req);
  }
  /** Streams alert changes until `signal` aborts. */
  watchAlerts(req: MessageInitShape<typeof AlertService.method.watchAlerts.input>, signal?: AbortSignal) {
    return this.serverStream(AlertService.method.watchAlerts, req, signal);
  }
  acknowledgeAlert(id: string) {
    return this.unary(AlertService.method.acknowledgeAlert, { id });
  }
  resolveAlert(id: string) {
    return this.unary(AlertService.method.resolveAlert, { id });
  }
  /** Lists dead letters (undeliverable messages between twins), oldest first; a page may be short while next_page_token is set. */
  listDeadLetters(req: MessageInitShape<typeof DeadLetterService.method.listDeadLetters.input> = {}) {
    return this.unary(DeadLetterService.method.listDeadLetters, req);
  }
  getDeadLetter(id: string) {
    return this.unary(DeadLetterService.method.getDeadLetter, { id });
  }
  /** Requeues dead letters (by ids, or `all` matching a filter) into the outbox for another delivery. */
  retryDeadLetters(req: MessageInitShape<typeof DeadLetterService.method.retryDeadLetters.input>) {
    return this.unary(DeadLetterService.method.retryDeadLetters, req);
  }
  deleteDeadLetters(req: MessageInitShape<typeof DeadLetterService.method.deleteDeadLetters.input>) {
    return this.unary(DeadLetterService.method.deleteDeadLetters, req);
  }
  /** grpc.health.v1 Check of the whole node ("") or one service. */
  health(service = "") {
    return this.unary(Health.method.check, create(HealthCheckRequestSchema, { service }));
  }

  /** Closes the channel. */
  close(): void {
    this.client.close();
  }
}

/**
 * One PublishStream: `send` resolves with the response for that batch (responses may arrive out
 * of order; they are matched by batch id). `end` half-closes and waits for every answer.
 */
export class PublishStreamSession {
  private readonly call: grpc.ClientDuplexStream<Buffer, PublishStreamResponse>;
  private readonly waiting = new Map<string, { resolve: (r: PublishStreamResponse) => void; reject: (e: Error) => void }>();
  private failure: Error | undefined;
  private readonly ended: Promise<void>;

  constructor(client: grpc.Client) {
    const method = TelemetryService.method.publishStream;
    this.call = client.makeBidiStreamRequest<Buffer, PublishStreamResponse>(
      path(method),
      (b: Buffer) => b,
      (buf: Buffer) => fromBinary(method.output, buf),
    );
    this.call.on("data", (res: PublishStreamResponse) => {
      const waiter = this.waiting.get(res.batchId);
      if (waiter === undefined) return;
      this.waiting.delete(res.batchId);
      waiter.resolve(res);
    });
    this.ended = new Promise((resolve) => {
      const fail = (err: Error): void => {
        this.failure = err;
        for (const w of this.waiting.values()) w.reject(err);
        this.waiting.clear();
        resolve();
      };
      this.call.on("error", (err: grpc.ServiceError) => fail(toClientError(err)));
      this.call.on("end", () => fail(new Error("PublishStream ended")));
    });
  }

  /** Sends one batch, already encoded or as events. */
  send(batchId: string, events: Event[] | MessageInitShape<typeof TelemetryService.method.publishStream.input>["events"]): Promise<PublishStreamResponse> {
    const bytes = Buffer.from(toBinary(TelemetryService.method.publishStream.input, create(TelemetryService.method.publishStream.input, { batchId, events })));
    return this.sendEncoded(batchId, bytes);
  }

  /**
   * Sends a batch pre-encoded as a PublishStreamRequest (the load generator's fast path).
   * A `batchId` still waiting for its answer is refused here, before anything is sent: answers
   * are matched by id, and the server would refuse it anyway (`BATCH_ID_IN_FLIGHT`).
   */
  sendEncoded(batchId: string, bytes: Buffer): Promise<PublishStreamResponse> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.waiting.has(batchId)) {
      return Promise.reject(
        new Error(`batch_id ${JSON.stringify(batchId)} is still waiting for its answer on this stream; use a new batch_id for every batch`),
      );
    }
    return new Promise((resolve, reject) => {
      this.waiting.set(batchId, { resolve, reject });
      this.call.write(bytes);
    });
  }

  /** Batches sent and not yet answered. */
  get pending(): number {
    return this.waiting.size;
  }

  /** Half-closes the stream and waits until the server ends it. */
  async end(): Promise<void> {
    this.call.end();
    await this.ended;
  }

  /** Cancels the stream. */
  cancel(): void {
    this.call.cancel();
  }
}

function path(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}
