import type { Shipment } from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import type { BatchOp } from "../runtime/index.js";

/**
 * A shipment's changes travel packed in one `bytes` field (see `Shipment.changes` in peer.proto):
 * for each write, the key's length and the key, then 0 for a delete or the value's length plus 1
 * and the value, lengths as protobuf varints. One buffer per shipment instead of one message per
 * key: the owner writes keys and values straight into it, and the replica reads keys as strings
 * and values as views into the request, with no objects in between.
 */

/** A packed change list that cannot be read: cut short, or a length past its end. */
export class MalformedChanges extends Error {
  override readonly name = "MalformedChanges";
}

/** Packs `ops` (keys as UTF-8, values as they are; string values as UTF-8). */
export function packChanges(ops: readonly BatchOp[]): Uint8Array {
  let size = 0;
  for (const op of ops) {
    const keyBytes = Buffer.byteLength(op.key, "utf8");
    size += varintSize(keyBytes) + keyBytes;
    if (op.type === "del") size += 1;
    else {
      const valueBytes = typeof op.value === "string" ? Buffer.byteLength(op.value, "utf8") : op.value.byteLength;
      size += varintSize(valueBytes + 1) + valueBytes;
    }
  }
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (const op of ops) {
    const keyBytes = Buffer.byteLength(op.key, "utf8");
    at = writeVarint(out, at, keyBytes);
    if (out.write(op.key, at, "utf8") !== keyBytes)
      throw new Error(`key ${JSON.stringify(op.key.slice(0, 80))} encodes to another length than Buffer.byteLength says`);
    at += keyBytes;
    if (op.type === "del") out[at++] = 0;
    else if (typeof op.value === "string") {
      at = writeVarint(out, at, Buffer.byteLength(op.value, "utf8") + 1);
      at += out.write(op.value, at, "utf8");
    } else {
      at = writeVarint(out, at, op.value.byteLength + 1);
      out.set(op.value, at);
      at += op.value.byteLength;
    }
  }
  return out;
}

/**
 * The writes packed in `bytes`, in order; values are views into `bytes` (no copy).
 * @throws MalformedChanges when `bytes` is cut short or a length runs past its end
 */
export function unpackChanges(bytes: Uint8Array): BatchOp[] {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const ops: BatchOp[] = [];
  let at = 0;
  while (at < buf.length) {
    const keyLength = readVarint(buf, at);
    at = varintEnd;
    const keyEnd = at + keyLength;
    if (keyEnd > buf.length) throw new MalformedChanges(`change ${ops.length}: its key runs past the end of the list`);
    const key = buf.toString("utf8", at, keyEnd);
    const valueLength = readVarint(buf, keyEnd);
    at = varintEnd;
    if (valueLength === 0) {
      ops.push({ type: "del", key });
      continue;
    }
    const valueEnd = at + valueLength - 1;
    if (valueEnd > buf.length) throw new MalformedChanges(`change ${ops.length}: its value runs past the end of the list`);
    ops.push({ type: "put", key, value: buf.subarray(at, valueEnd) });
    at = valueEnd;
  }
  return ops;
}

const unpacked = new WeakMap<Shipment, readonly BatchOp[]>();

/**
 * The writes of `shipment`, unpacked once (the peer service reads them to check the shipment's
 * keys; the replica then writes the same ones).
 * @throws MalformedChanges when its changes cannot be read
 */
export function shipmentOps(shipment: Shipment): readonly BatchOp[] {
  let ops = unpacked.get(shipment);
  if (ops === undefined) {
    ops = unpackChanges(shipment.changes);
    unpacked.set(shipment, ops);
  }
  return ops;
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 0x80);
    size++;
  }
  return size;
}

function writeVarint(out: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n % 0x80) | 0x80;
    n = Math.floor(n / 0x80);
  }
  out[at++] = n;
  return at;
}

/** Where the last {@link readVarint} ended (a module variable: no object per length read). */
let varintEnd = 0;

/** A varint of up to 7 bytes (below 2^49: a length inside one message); sets {@link varintEnd}. */
function readVarint(buf: Buffer, at: number): number {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 7; i++) {
    if (at >= buf.length) throw new MalformedChanges("the list ends inside a length");
    const byte = buf[at++] as number;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      varintEnd = at;
      return value;
    }
    scale *= 0x80;
  }
  throw new MalformedChanges("a length is longer than 7 bytes");
}
