import type { TwinmeshClient } from "../../client/index.js";
import type { BlobState } from "../fixtures/blob-twin.js";

/** A blob twin as `client` reads it: its owner, events applied and last seq, or why the read failed. */
export async function blobVia(client: TwinmeshClient, id: string): Promise<string> {
  try {
    const { twin } = await client.getTwin({ kind: "blob", id });
    const s = (twin?.state ?? {}) as Partial<BlobState>;
    return JSON.stringify({ owner: twin?.ownerNodeId, n: s.n, lastSeq: s.lastSeq, blobBytes: s.blob?.length });
  } catch (err) {
    return `GetTwin failed: ${(err as { reason?: string }).reason ?? ""} ${(err as Error).message}`;
  }
}
