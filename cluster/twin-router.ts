import type { IngestEvent, TurnOutcome, TwinHost } from "../runtime/index.js";

/**
 * Where the gRPC services send work. The single-node router hands everything to the local host;
 * the cluster router (next issue) forwards each event to its owner over a pooled gRPC stream and
 * answers after the owner's commit. Services depend on this seam, not on the host.
 */
export interface TwinRouter {
  /** Applies a batch; `results[i]` answers `events[i]`. */
  publish(events: readonly IngestEvent[]): Promise<TurnOutcome[]>;
  /** The node that owns a twin. */
  ownerOf(kind: string, id: string): string;
}

/** Routes everything to this node's host: a single node owns the whole ring. */
export class LocalRouter implements TwinRouter {
  constructor(private readonly host: TwinHost) {}

  publish(events: readonly IngestEvent[]): Promise<TurnOutcome[]> {
    return this.host.publish(events);
  }

  ownerOf(): string {
    return this.host.nodeId;
  }
}
