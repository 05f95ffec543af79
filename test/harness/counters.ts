import type { TwinmeshClient } from "../../client/index.js";

/** `n` consecutive numbers from `from`. */
export function range(n: number, from = 0): number[] {
  return Array.from({ length: n }, (_, i) => from + i);
}

/** 1 + 2 + … + n: a counter fixture's `total` after seqs 1..n, each applied once with `v` = seq. */
export function sumTo(n: number): number {
  return (n * (n + 1)) / 2;
}

/** A counter fixture twin as a node reads it. */
export interface CounterView {
  readonly owner: string | undefined;
  readonly count: number;
  readonly lastSeq: number;
  readonly total: number;
}

/** A counter twin as read through `client`, or why it could not be (`TWIN_NOT_FOUND`, `PARTITION_MOVING`, …). */
export async function counterVia(client: TwinmeshClient, id: string): Promise<CounterView | string> {
  try {
    const { twin } = await client.getTwin({ kind: "counter", id });
    const s = (twin?.state ?? {}) as { count?: number; lastSeq?: number; total?: number };
    return { owner: twin?.ownerNodeId, count: s.count ?? -1, lastSeq: s.lastSeq ?? -1, total: s.total ?? -1 };
  } catch (err) {
    return `GetTwin failed: ${(err as { reason?: string }).reason ?? ""} ${(err as Error).message}`;
  }
}
