/**
 * Which partition a twin belongs to. A cluster has a fixed number of partitions, chosen when it
 * is created and stored in every node's data directory; a partition is the unit of ownership,
 * replication, catch-up and handoff, so this function must never change for a given count.
 *
 * The hash is part of the contract (a ring-aware client in any language computes it too):
 *
 * ```
 * partition = fmix32(fnv1a32(utf8(kind + "\0" + id))) mod partitions
 * ```
 *
 * FNV-1a (32-bit: offset basis 0x811c9dc5, prime 0x01000193) is cheap on the hot path;
 * MurmurHash3's 32-bit finaliser (`fmix32`) then mixes every input bit into the low bits, which
 * FNV alone leaves poorly spread for short keys that differ only at the end (`bed-1`, `bed-2`).
 */

/** The default partition count of a new cluster. */
export const DEFAULT_PARTITIONS = 256;
/** The largest partition count: partition numbers are four hex digits in keys. */
export const MAX_PARTITIONS = 0x1_0000;

/** A partition number, `0 ≤ p < partitions`. */
export type PartitionId = number & { readonly __partition: unique symbol };

const encoder = new TextEncoder();

/** FNV-1a (32-bit) of `text`'s UTF-8 bytes, then MurmurHash3's finaliser. Unsigned 32-bit. */
export function twinHash(kind: string, id: string): number {
  let h = 0x811c9dc5;
  h = fnvString(h, kind);
  h = Math.imul(h ^ 0, 0x01000193);
  h = fnvString(h, id);
  return fmix32(h);
}

function fnvString(h: number, text: string): number {
  // ASCII is the common case (validated kinds are ASCII; ids usually are): hash the code units
  // directly and fall back to encoding only when a non-ASCII character appears.
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0x80) return fnvBytes(h, encoder.encode(text.slice(i)));
    h = Math.imul(h ^ c, 0x01000193);
  }
  return h;
}

function fnvBytes(h: number, bytes: Uint8Array): number {
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193);
  return h;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Maps twins to partitions for one partition count. Immutable. */
export class Partitioning {
  /**
   * @param partitions the cluster's partition count.
   * @throws RangeError when `partitions` is not a whole number from 1 to {@link MAX_PARTITIONS}.
   */
  constructor(readonly partitions: number = DEFAULT_PARTITIONS) {
    if (!Number.isSafeInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS) {
      throw new RangeError(`partition count ${partitions} is out of range; use a whole number from 1 to ${MAX_PARTITIONS}`);
    }
  }

  /** The partition of twin `(kind, id)`. */
  partitionOf(kind: string, id: string): PartitionId {
    return (twinHash(kind, id) % this.partitions) as PartitionId;
  }

  /** Every partition number, in order. */
  all(): PartitionId[] {
    return Array.from({ length: this.partitions }, (_, p) => p as PartitionId);
  }
}
