import { status as GrpcStatus } from "@grpc/grpc-js";
import type { CallCounter } from "../grpc/grpc-adapter.js";

/** Status codes 0 (OK) to 16 (UNAUTHENTICATED). */
const CODES = 17;

/**
 * Finished gRPC calls by method and status code: one array of counts per method, made on the
 * method's first call, so counting a call allocates nothing.
 */
export class GrpcCallCounts implements CallCounter {
  private readonly byMethod = new Map<string, number[]>();

  ended(method: string, code: GrpcStatus): void {
    let counts = this.byMethod.get(method);
    if (counts === undefined) {
      counts = new Array<number>(CODES).fill(0);
      this.byMethod.set(method, counts);
    }
    // A code outside the known range (none today) counts as UNKNOWN rather than growing the array.
    const at = code >= 0 && code < CODES ? code : GrpcStatus.UNKNOWN;
    counts[at] = (counts[at] ?? 0) + 1;
  }

  /** Every (method, status name) seen, with its count. */
  *counts(): IterableIterator<{ method: string; status: string; count: number }> {
    for (const [method, counts] of this.byMethod) {
      for (let code = 0; code < CODES; code++) {
        const count = counts[code] ?? 0;
        if (count > 0) yield { method, status: GrpcStatus[code] ?? String(code), count };
      }
    }
  }
}
