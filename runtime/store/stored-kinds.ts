import type { Keys } from "./keys.js";
import type { RocksStore } from "./rocks-store.js";

/** Most kinds {@link storedTwinKinds} looks for: one seek each, so start-up stays cheap. */
export const MAX_STORED_KINDS = 256;

/** The kinds of the twin records in a store, as far as {@link storedTwinKinds} looked. */
export interface StoredKinds {
  /** Kind names, sorted. */
  readonly kinds: readonly string[];
  /** True when there may be more kinds than `kinds` lists (it stopped at its bound). */
  readonly truncated: boolean;
}

/**
 * Lists the kinds that have twin records (tombstones included) with one bounded seek per kind,
 * never a scan of the twins: each seek reads the first key after the previous kind's records.
 */
export async function storedTwinKinds(store: RocksStore, keys: Keys, maxKinds = MAX_STORED_KINDS): Promise<StoredKinds> {
  const kinds: string[] = [];
  let last: string | undefined;
  while (kinds.length < maxKinds) {
    let next: string | undefined;
    for await (const chunk of store.scan({ ...keys.twinsAfterKind(last), limit: 1 }, { values: false })) {
      const key = chunk[0]?.[0];
      if (key !== undefined) next = keys.twinKindOf(key);
      break;
    }
    if (next === undefined) return { kinds, truncated: false };
    kinds.push(next);
    last = next;
  }
  return { kinds, truncated: true };
}
