import assert from "node:assert/strict";
import type { TwinmeshClient } from "../../client/index.js";
import type { ClusterHarness } from "./cluster-harness.js";
import type { SeqWriter } from "./seq-writer.js";
import { waitFor } from "./wait-for.js";

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

/** What a counter shows after seqs 1..n, each applied once: `count lastSeq total`, or why it could not be read. */
export async function counterText(client: TwinmeshClient, id: string): Promise<string> {
  const read = await counterVia(client, id);
  return typeof read === "string" ? read : `${read.count} ${read.lastSeq} ${read.total}`;
}

/** Reads every twin of `writer` through every node of `via`; fails listing the twins whose acknowledged seqs are not each there once. */
export async function assertAllAcked(c: ClusterHarness, via: readonly string[], writer: SeqWriter, what: string): Promise<void> {
  // Reads answered retryably (a partition still being taken) are read again, for 20 s at most.
  await waitFor(
    async () => {
      for (const node of via) {
        const client = c.client(node, 10_000);
        for (const id of writer.acked.keys()) {
          const got = await counterText(client, id);
          if (/PARTITION_MOVING|UNAVAILABLE|NOT_SERVING|OWNER_UNAVAILABLE/.test(got)) return undefined;
        }
      }
      return true;
    },
    { timeoutMs: 20_000, what: `every twin readable through ${via.join(", ")}` },
  );
  const wrong: string[] = [];
  const lost = new Set<string>();
  for (const node of via) {
    const client = c.client(node, 10_000);
    for (const [id, n] of writer.acked) {
      const got = await counterText(client, id);
      const want = `${n} ${n} ${sumTo(n)}`;
      if (got !== want) {
        wrong.push(`${id} (owner ${await c.ownerOf("counter", id)}) through ${node}: got ${got}, want ${want}`);
        lost.add(id);
      }
    }
  }
  assert.equal(
    wrong.length,
    0,
    `${what}: ${lost.size} of ${writer.acked.size} twins differ (${wrong.length} reads), e.g.\n  ${wrong.slice(0, 12).join("\n  ")}\nwriter answers: ${writer.describe()}`,
  );
}
