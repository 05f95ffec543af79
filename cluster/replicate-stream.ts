import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  PeerService,
  ReplicateRequestSchema,
  type ReplicateResponse,
  ReplicateResponseSchema,
  type Shipment,
} from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import type { Logger } from "../runtime/index.js";
import { LogLimiter } from "./log-limiter.js";
import type { NodeId } from "./node-id.js";
import { callFailure, methodPath } from "./peer-rpc.js";

/** Bytes a replicate stream may hold unsent before it is given up. */
const MAX_BUFFERED_BYTES = 64 * 1024 * 1024;

/** What a {@link ReplicateStream} reports to its owner. */
export interface ReplicateStreamEvents {
  /** The replica says what is durable on it (an answer to a request, or news after a catch-up). */
  durable(peer: NodeId, response: ReplicateResponse): void;
  /** The stream broke: nothing sent on it will be answered. */
  lost(peer: NodeId, why: string): void;
}

/**
 * The Replicate stream from this owner to one replica: opened at the first shipment, opened
 * again at the first shipment after a break. Shipments are written in commit order; the replica
 * applies them in that order and answers with the positions durable on it. A break loses the
 * answers of what was in flight: the owner's waiters give up on this replica, and the replica,
 * seeing a gap at the next shipment, catches up from the owner.
 */
export class ReplicateStream {
  private call: grpc.ClientDuplexStream<Buffer, Buffer> | undefined;
  private closed = false;
  /** A replica that answers garbage does so at every shipment. */
  private readonly unreadable = new LogLimiter();

  constructor(
    readonly self: NodeId,
    readonly peer: NodeId,
    private readonly client: () => grpc.Client,
    private readonly events: ReplicateStreamEvents,
    private readonly log: Logger,
  ) {}

  /** A Replicate request of `self`'s shipments, encoded once (it may go to several replicas); `traceparent` names the owner's replicate span, if traced. */
  static encode(self: NodeId, shipments: Shipment[], traceparent = ""): Uint8Array {
    return toBinary(ReplicateRequestSchema, create(ReplicateRequestSchema, { nodeId: self, shipments, traceparent }));
  }

  /** Sends an {@link encode}d request, in order. Returns false when the stream cannot be opened (the peer's channel is closed). */
  send(request: Uint8Array): boolean {
    if (this.closed) return false;
    let call: grpc.ClientDuplexStream<Buffer, Buffer>;
    try {
      call = this.open();
    } catch (err) {
      this.log.warn({ peer: this.peer, err }, "cannot open a replicate stream");
      return false;
    }
    // A view, not a copy: grpc-js frames the bytes as they are.
    call.write(Buffer.from(request.buffer, request.byteOffset, request.byteLength));
    // A replica that reads slower than the owner commits must not grow the owner's memory: past
    // the bound the stream is given up, and the replica catches up from the owner instead.
    if (call.writableLength > MAX_BUFFERED_BYTES) {
      this.log.warn({ peer: this.peer, bufferedBytes: call.writableLength }, "a replica is too far behind its stream; it catches up instead");
      this.breakStream(`${this.peer} fell more than ${MAX_BUFFERED_BYTES >> 20} MiB behind its replicate stream`);
    }
    return true;
  }

  /** Ends the stream; later sends are refused. */
  close(): void {
    this.closed = true;
    this.breakStream("the node is closing");
  }

  /** Ends the current stream (the next send opens a new one). */
  breakStream(why: string): void {
    const call = this.call;
    if (call === undefined) return;
    this.broke(call, why);
    call.cancel();
  }

  private open(): grpc.ClientDuplexStream<Buffer, Buffer> {
    if (this.call !== undefined) return this.call;
    const raw = (bytes: Buffer): Buffer => bytes;
    const call = this.client().makeBidiStreamRequest<Buffer, Buffer>(methodPath(PeerService.method.replicate), raw, raw);
    this.call = call;
    call.on("data", (bytes: Buffer) => {
      if (call !== this.call) return;
      let res: ReplicateResponse;
      try {
        res = fromBinary(ReplicateResponseSchema, bytes);
      } catch (err) {
        const held = this.unreadable.admit();
        if (held !== undefined) this.log.error({ peer: this.peer, err, held }, "replica sent an unreadable answer; reopening the stream");
        this.breakStream(`${this.peer} sent an unreadable replicate answer`);
        return;
      }
      this.events.durable(this.peer, res);
    });
    call.on("error", (err: unknown) => {
      const failure = callFailure(err);
      this.broke(call, `the replicate stream to ${this.peer} broke (${grpc.status[failure.code] ?? failure.code}: ${failure.message})`);
    });
    call.on("end", () => this.broke(call, `${this.peer} ended the replicate stream`));
    return call;
  }

  private broke(call: grpc.ClientDuplexStream<Buffer, Buffer>, why: string): void {
    if (call !== this.call) return;
    this.call = undefined;
    this.events.lost(this.peer, why);
  }
}
