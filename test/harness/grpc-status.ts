import assert from "node:assert/strict";
import { create, type DescMessage, type DescMethod, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { TwinmeshClientError } from "../../client/index.js";
import { type BadRequest, BadRequestSchema, type ErrorInfo, ErrorInfoSchema } from "../../proto/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../proto/gen/google/rpc/status_pb.js";

/** Awaits a call that must fail and returns its TwinmeshClientError. */
export async function clientError(promise: Promise<unknown>): Promise<TwinmeshClientError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof TwinmeshClientError) return err;
    throw err;
  }
  assert.fail("the call succeeded, but it should have failed");
}

/** Awaits a raw grpc-js call that must fail and returns its ServiceError. */
export async function serviceError(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof Error && typeof (err as grpc.ServiceError).code === "number") return err as grpc.ServiceError;
    throw err;
  }
  assert.fail("the call succeeded, but it should have failed");
}

/** The `google.rpc.Status` in a failed call's `grpc-status-details-bin` trailer, with its ErrorInfo and BadRequest. */
export function statusDetails(err: grpc.ServiceError): { code: number; message: string; errorInfo: ErrorInfo | undefined; badRequest: BadRequest | undefined } {
  const [bin] = err.metadata.get("grpc-status-details-bin");
  assert.ok(Buffer.isBuffer(bin), `the grpc-status-details-bin trailer is missing (status ${err.code}: ${err.details})`);
  const status = fromBinary(StatusSchema, bin);
  const errorInfo = status.details.map((d) => anyUnpack(d, ErrorInfoSchema)).find((d) => d !== undefined);
  const badRequest = status.details.map((d) => anyUnpack(d, BadRequestSchema)).find((d) => d !== undefined);
  return { code: status.code, message: status.message, errorInfo, badRequest };
}

/** A raw grpc-js client of `address`, closed after the test by the caller. */
export function rawClient(address: string): grpc.Client {
  return new grpc.Client(address, grpc.credentials.createInsecure(), {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
    "grpc.max_receive_message_length": 64 * 1024 * 1024,
  });
}

/** `/package.Service/Method` of a method descriptor. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** Sends `bytes` as the request of a unary method and resolves with the response bytes. */
export function unaryBytes(client: grpc.Client, method: DescMethod, bytes: Buffer): Promise<Buffer> {
  const raw = (b: Buffer): Buffer => b;
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(methodPath(method), raw, raw, bytes, { deadline: Date.now() + 20_000 }, (err, res) =>
      err || res === undefined ? reject(err) : resolve(res),
    );
  });
}

/** Calls a unary method with a message and decodes the response (for calls the typed client does not expose). */
export async function unaryCall<I extends DescMessage, O extends DescMessage>(
  client: grpc.Client,
  method: DescMethod & { input: I; output: O },
  req: MessageInitShape<I>,
): Promise<MessageShape<O>> {
  const bytes = await unaryBytes(client, method, Buffer.from(toBinary(method.input, create(method.input, req))));
  return fromBinary(method.output, bytes);
}
