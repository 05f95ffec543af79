import type { DescMessage, Message, MessageShape } from "@bufbuild/protobuf";

declare const encodedMessage: unique symbol;

/**
 * The binary encoding of one message of type `M`, which the gRPC adapter's `StreamSink` sends as
 * it is, without `toBinary`. A hot path (one QueryTwins response per twin) encodes its messages itself
 * and hands the bytes over this way.
 *
 * The brand carries `M`'s type name, so bytes of one message cannot be written to a stream of
 * another: a `StreamSink<QueryTwinsResponse>` takes an `Encoded<QueryTwinsResponse>` and rejects an
 * `Encoded<WatchAlertsResponse>` or a plain `Uint8Array` at compile time. The bytes themselves are
 * not checked at run time; {@link preEncoded} is where a producer vouches for them.
 */
export type Encoded<M extends Message> = Uint8Array & { readonly [encodedMessage]: M["$typeName"] };

/**
 * Declares that `bytes` are a `schema` message in the protobuf binary format. Nothing is parsed
 * or copied: the caller guarantees the encoding (a hand-written encoder proves it by tests that
 * compare its output with `toBinary`) and must not change the bytes afterwards, since grpc-js
 * keeps them until they are sent. `schema` only fixes the message type.
 */
export function preEncoded<Desc extends DescMessage>(_schema: Desc, bytes: Uint8Array): Encoded<MessageShape<Desc>> {
  return bytes as Encoded<MessageShape<Desc>>;
}
