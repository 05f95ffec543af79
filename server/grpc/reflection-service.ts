/**
 * gRPC server reflection, v1 and v1alpha, so that `grpcurl` and similar tools work without the
 * .proto files. The answers come from the protobuf-es descriptors the server is built from.
 */
import { create, type DescFile, type DescService, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { type DescriptorProto, type EnumDescriptorProto, type FieldDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type * as grpc from "@grpc/grpc-js";
import * as v1 from "../../proto/gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../proto/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { type AdapterOptions, addService } from "./grpc-adapter.js";

// grpc.StatusCode values reflection reports inside error_response (it is not a call status).
const NOT_FOUND = 5;
const INVALID_ARGUMENT = 3;

/**
 * Serves `grpc.reflection.v1.ServerReflection` and `grpc.reflection.v1alpha.ServerReflection`.
 * `list_services` names `services` plus both reflection services. Files are found by name or by
 * any symbol they define (service, method, message, nested message, field, enum, enum value,
 * extension) in the files of those services and their imports; the well-known
 * `google/protobuf/*` files come from `@bufbuild/protobuf/wkt`. A file is answered together with
 * its transitive imports, leaving out those already sent on the same stream. Unknown names are
 * answered with an `error_response` of NOT_FOUND (5); the stream goes on.
 *
 * @param services - Every service this server serves apart from reflection, e.g. `[Health, TelemetryService]`.
 * @example
 * ```ts
 * addHealthService(server, health, options);
 * addService(server, TelemetryService, telemetry, options);
 * addReflectionService(server, [Health, TelemetryService], options);
 * ```
 */
export function addReflectionService(server: grpc.Server, services: readonly DescService[], options: AdapterOptions = {}): void {
  const index = new ReflectionIndex([...services, v1.ServerReflection, v1alpha.ServerReflection]);
  addService(server, v1.ServerReflection, { serverReflectionInfo: (input, out) => serve(index, input, out) }, options);
  // v1alpha is v1 under another package name, field for field, so its messages convert through
  // the wire format and one implementation answers both.
  addService(
    server,
    v1alpha.ServerReflection,
    {
      serverReflectionInfo: (input, out) =>
        serve(
          index,
          convert(input, (req) => fromBinary(v1.ServerReflectionRequestSchema, toBinary(v1alpha.ServerReflectionRequestSchema, req))),
          {
            write: (res) => out.write(fromBinary(v1alpha.ServerReflectionResponseSchema, toBinary(v1.ServerReflectionResponseSchema, res))),
          },
        ),
    },
    options,
  );
}

// `out` takes messages only (a StreamSink also takes Encoded bytes), so the v1alpha sink above can convert each one.
async function serve(
  index: ReflectionIndex,
  input: AsyncIterable<v1.ServerReflectionRequest>,
  out: { write(res: v1.ServerReflectionResponse): Promise<void> },
): Promise<void> {
  const sent = new Set<string>(); // file names this stream has received; at most every file of the index
  for await (const req of input) await out.write(index.answer(req, sent));
}

async function* convert<A, B>(input: AsyncIterable<A>, f: (a: A) => B): AsyncGenerator<B> {
  for await (const a of input) yield f(a);
}

type Answer = MessageInitShape<typeof v1.ServerReflectionResponseSchema>["messageResponse"];

/** Files and symbols reachable from a set of services, built once. */
class ReflectionIndex {
  private readonly serviceNames: readonly string[];
  private readonly files = new Map<string, DescFile>();
  private readonly symbols = new Map<string, DescFile>();
  private readonly extensions: { readonly extendee: string; readonly number: number; readonly file: DescFile }[] = [];
  private readonly encoded = new Map<DescFile, Uint8Array>();

  constructor(services: readonly DescService[]) {
    this.serviceNames = [...new Set(services.map((s) => s.typeName))];
    for (const s of services) this.addFile(s.file);
  }

  answer(req: v1.ServerReflectionRequest, sent: Set<string>): v1.ServerReflectionResponse {
    return respond(req, this.messageResponse(req.messageRequest, sent));
  }

  private messageResponse(request: v1.ServerReflectionRequest["messageRequest"], sent: Set<string>): Answer {
    switch (request.case) {
      case "listServices": {
        const service = this.serviceNames.map((name) => ({ name }));
        return { case: "listServicesResponse", value: { service } };
      }
      case "fileByFilename": {
        const file = this.files.get(request.value);
        return file ? this.fileAnswer(file, sent) : notFound(`file "${request.value}" is not among the files this server is built from`);
      }
      case "fileContainingSymbol": {
        // Tools sometimes send fully-qualified names with protoc's leading dot.
        const file = this.symbols.get(request.value.replace(/^\./, ""));
        return file ? this.fileAnswer(file, sent) : notFound(`symbol "${request.value}" is not defined by any service this server serves`);
      }
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = request.value;
        const ext = this.extensions.find((e) => e.extendee === containingType && e.number === extensionNumber);
        return ext ? this.fileAnswer(ext.file, sent) : notFound(`no extension ${extensionNumber} of "${containingType}" is known to this server`);
      }
      case "allExtensionNumbersOfType": {
        const baseTypeName = request.value;
        if (!this.symbols.has(baseTypeName)) return notFound(`type "${baseTypeName}" is not known to this server`);
        const extensionNumber = this.extensions.filter((e) => e.extendee === baseTypeName).map((e) => e.number);
        return { case: "allExtensionNumbersResponse", value: { baseTypeName, extensionNumber } };
      }
      case undefined:
        return error(INVALID_ARGUMENT, "the request names no operation; set one of list_services, file_by_filename, file_containing_symbol, ...");
    }
  }

  /** `file` first, then its imports breadth first; imports already sent on this stream are left out. */
  private fileAnswer(file: DescFile, sent: Set<string>): Answer {
    const fileDescriptorProto: Uint8Array[] = [];
    const queue = [file];
    const visited = new Set<DescFile>();
    for (let f = queue.shift(); f !== undefined; f = queue.shift()) {
      if (visited.has(f)) continue;
      visited.add(f);
      const name = f.proto.name;
      if (f === file || !sent.has(name)) {
        sent.add(name);
        fileDescriptorProto.push(this.encode(f));
      }
      queue.push(...f.dependencies);
    }
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto } };
  }

  private encode(file: DescFile): Uint8Array {
    let bytes = this.encoded.get(file);
    if (bytes === undefined) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.encoded.set(file, bytes);
    }
    return bytes;
  }

  private addFile(file: DescFile): void {
    const proto = file.proto;
    if (this.files.has(proto.name)) return;
    this.files.set(proto.name, file);
    for (const dep of file.dependencies) this.addFile(dep);
    for (const service of proto.service) {
      const name = qualify(proto.package, service.name);
      this.symbols.set(name, file);
      for (const m of service.method) this.symbols.set(`${name}.${m.name}`, file);
    }
    this.addScope(file, proto.package, proto.messageType, proto.enumType, proto.extension);
  }

  // Walks the FileDescriptorProto rather than protobuf-es's DescMessage tree, because the latter
  // leaves out map entry messages (e.g. `Event.ChannelsEntry`), which the file does define.
  private addScope(
    file: DescFile,
    scope: string,
    messages: readonly DescriptorProto[],
    enums: readonly EnumDescriptorProto[],
    extensions: readonly FieldDescriptorProto[],
  ): void {
    for (const message of messages) {
      const name = qualify(scope, message.name);
      this.symbols.set(name, file);
      for (const field of message.field) this.symbols.set(`${name}.${field.name}`, file);
      for (const oneof of message.oneofDecl) this.symbols.set(`${name}.${oneof.name}`, file);
      this.addScope(file, name, message.nestedType, message.enumType, message.extension);
    }
    for (const e of enums) {
      this.symbols.set(qualify(scope, e.name), file);
      // Enum values are siblings of their enum in protobuf scoping.
      for (const value of e.value) this.symbols.set(qualify(scope, value.name), file);
    }
    for (const ext of extensions) {
      this.symbols.set(qualify(scope, ext.name), file);
      this.extensions.push({ extendee: ext.extendee.replace(/^\./, ""), number: ext.number, file });
    }
  }
}

function qualify(scope: string, name: string): string {
  return scope === "" ? name : `${scope}.${name}`;
}

function notFound(message: string): Answer {
  return error(NOT_FOUND, message);
}

function error(errorCode: number, errorMessage: string): Answer {
  return { case: "errorResponse", value: { errorCode, errorMessage } };
}

function respond(req: v1.ServerReflectionRequest, messageResponse: Answer): v1.ServerReflectionResponse {
  return create(v1.ServerReflectionResponseSchema, { validHost: req.host, originalRequest: req, messageResponse });
}
