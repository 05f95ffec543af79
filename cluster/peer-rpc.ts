/** Calling a peer: the pieces the pool's Ping and the Forward streams share. */
import { create, type DescMethod, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { ErrorInfoSchema } from "../proto/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../proto/gen/google/rpc/status_pb.js";
import { STATUS_DETAILS_KEY } from "../server/grpc/index.js";

/** `/package.Service/Method` of a method descriptor. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** Calls a unary method of a peer (its PeerService, or its public services for a routed call); rejects with the grpc-js ServiceError. */
export function callUnary<M extends DescMethod & { methodKind: "unary" }>(
  client: grpc.Client,
  method: M,
  request: MessageInitShape<M["input"]>,
  deadlineMs: number,
  metadata: grpc.Metadata = new grpc.Metadata(),
  /** Cancels the call when it aborts (the peer sees the cancellation). */
  signal?: AbortSignal,
): Promise<MessageShape<M["output"]>> {
  return new Promise((resolve, reject) => {
    const call = client.makeUnaryRequest<Buffer, MessageShape<M["output"]>>(
      methodPath(method),
      () => Buffer.from(toBinary(method.input, create(method.input, request))),
      (bytes: Buffer) => fromBinary(method.output, bytes) as MessageShape<M["output"]>,
      Buffer.alloc(0),
      metadata,
      { deadline: Date.now() + deadlineMs },
      (err, res) => {
        signal?.removeEventListener("abort", cancel);
        if (err || res === undefined) reject(err ?? new Error("empty answer"));
        else resolve(res);
      },
    );
    const cancel = (): void => call.cancel();
    signal?.addEventListener("abort", cancel, { once: true });
    if (signal?.aborted === true) call.cancel();
  });
}

/** What a failed call says about itself: its status, and twinmesh's reason and ErrorInfo metadata when the peer sent them. */
export interface CallFailure {
  readonly code: grpc.status;
  readonly message: string;
  readonly reason: string | undefined;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Reads a grpc-js error (anything else counts as UNKNOWN). */
export function callFailure(err: unknown): CallFailure {
  const e = err as Partial<grpc.ServiceError>;
  const code = typeof e.code === "number" ? e.code : grpc.status.UNKNOWN;
  const message = e.details || (err instanceof Error ? err.message : String(err));
  const raw = e.metadata instanceof grpc.Metadata ? e.metadata.get(STATUS_DETAILS_KEY)[0] : undefined;
  if (Buffer.isBuffer(raw)) {
    try {
      for (const detail of fromBinary(StatusSchema, raw).details) {
        const info = anyUnpack(detail, ErrorInfoSchema);
        if (info !== undefined) return { code, message, reason: info.reason, metadata: info.metadata };
      }
    } catch {
      // The details are a courtesy; the status is what counts.
    }
  }
  return { code, message, reason: undefined, metadata: {} };
}
