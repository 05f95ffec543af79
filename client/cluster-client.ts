import type { MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { type DescribeClusterResponse, MemberState } from "../proto/gen/twinmesh/v1/node_pb.js";
import { type Consistency, type EventResult, EventStatus, type PublishResponse, type TelemetryService } from "../proto/gen/twinmesh/v1/telemetry_pb.js";
// The partition function only: it has no dependencies, so the client stays free of server code.
import { Partitioning } from "../runtime/partition/partitioning.js";
import { TwinmeshClient, TwinmeshClientError, type TwinmeshClientOptions } from "./twinmesh-client.js";

type EventInit = NonNullable<MessageInitShape<typeof TelemetryService.method.publish.input>["events"]>[number];

/** Options of a {@link ClusterClient}. Every field is optional. */
export interface ClusterClientOptions extends TwinmeshClientOptions {
  /** How often the ring is read again, to follow membership changes. @defaultValue 5_000 */
  readonly refreshMs?: number;
  /** Attempts per event (the first and the retries) on retryable failures. @defaultValue 4 */
  readonly attempts?: number;
  /** Wait before a retry, doubled each time. @defaultValue 100 */
  readonly retryDelayMs?: number;
}

/** The ring as the client last read it. */
interface RingView {
  readonly partitioning: Partitioning;
  /** Preference lists by partition, node ids. */
  readonly placements: readonly (readonly string[])[];
  /** Addresses of the members it can reach, by node id. */
  readonly addresses: ReadonlyMap<string, string>;
  /** Members the asked node saw up. */
  readonly up: ReadonlySet<string>;
}

/**
 * A ring-aware client of a twinmesh cluster. It reads the members and each partition's
 * preference list from any node (`NodeService.DescribeCluster`), sends each event straight to
 * its twin's owner (no forwarding hop), reads the ring again every `refreshMs` and whenever a
 * node answers that it does not own a twin, and retries what failed retryably (the node was
 * unreachable, the owner was down, the ring had moved) with the same seqs, on another node if
 * need be: the owner's deduplication makes a retry of an applied event `DUPLICATE`.
 *
 * Per-source order holds: the events of one source go to one node in one request, in order,
 * and a retry resends a source's failed events in their order.
 *
 * @example
 * const cluster = await ClusterClient.connect(["127.0.0.1:7421", "127.0.0.1:7422"]);
 * const { results } = await cluster.publish([{ kind: "patient", sourceId: "bed-4", seq: 1n, channels: { bpm: 72 } }]);
 * cluster.close();
 */
export class ClusterClient {
  private readonly clients = new Map<string, TwinmeshClient>();
  private ring: RingView | undefined;
  private refreshing: Promise<void> | undefined;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  private readonly attempts: number;
  private readonly retryDelayMs: number;

  private constructor(
    private readonly seeds: readonly string[],
    private readonly options: ClusterClientOptions,
  ) {
    this.attempts = options.attempts ?? 4;
    this.retryDelayMs = options.retryDelayMs ?? 100;
    this.timer = setInterval(() => void this.refresh().catch(() => undefined), options.refreshMs ?? 5_000);
    this.timer.unref();
  }

  /**
   * Reads the ring from the first seed that answers.
   * @throws TwinmeshClientError (UNAVAILABLE) when no seed answers.
   */
  static async connect(seeds: readonly string[], options: ClusterClientOptions = {}): Promise<ClusterClient> {
    if (seeds.length === 0) throw new RangeError("ClusterClient needs at least one node address");
    const client = new ClusterClient(seeds, options);
    try {
      await client.refresh();
    } catch (err) {
      client.close();
      throw err;
    }
    return client;
  }

  /** The node that owns twin `kind`/`id`, by the ring as last read. */
  ownerOf(kind: string, id: string): string | undefined {
    const ring = this.ring;
    return ring?.placements[ring.partitioning.partitionOf(kind, id)]?.[0];
  }

  /**
   * Publishes a batch: each event to its twin's owner, `results[i]` answering `events[i]`.
   * Retryable failures are retried (up to `attempts` per event); what still fails is answered
   * with its last rejection, and a node that could not be asked answers its events `REJECTED`
   * with the call's failure (the other nodes' answers are kept).
   */
  async publish(events: readonly EventInit[], consistency?: Consistency): Promise<PublishResponse> {
    const results = new Array<EventResult>(events.length);
    let pending = events.map((_, i) => i);
    for (let attempt = 1; pending.length > 0; attempt++) {
      const last = attempt >= this.attempts;
      const byNode = new Map<string, number[]>();
      for (const i of pending) {
        const e = events[i] as EventInit;
        const node = this.nodeFor(e.kind ?? "", e.sourceId ?? "", attempt);
        let list = byNode.get(node);
        if (list === undefined) {
          list = [];
          byNode.set(node, list);
        }
        list.push(i);
      }
      const retry: number[] = [];
      let ringMoved = false;
      await Promise.all(
        [...byNode].map(async ([node, indexes]) => {
          const part = indexes.map((i) => events[i] as EventInit);
          let answered: EventResult[];
          try {
            answered = (await this.clientOf(node).publish(part, consistency)).results;
          } catch (err) {
            const retryable = err instanceof TwinmeshClientError && err.retryable;
            if (retryable && !last) {
              ringMoved = true;
              retry.push(...indexes);
              return;
            }
            // The other nodes' parts keep their answers: this part is answered with the failure.
            const failed: EventResult = {
              $typeName: "twinmesh.v1.EventResult",
              status: EventStatus.REJECTED,
              reason: err instanceof TwinmeshClientError ? (err.reason ?? grpc.status[err.code] ?? "UNAVAILABLE") : "UNAVAILABLE",
              message: `node ${node} could not be asked: ${(err as Error).message}`,
              retryable,
            };
            for (const i of indexes) results[i] = failed;
            return;
          }
          for (let k = 0; k < indexes.length; k++) {
            const r = answered[k] as EventResult;
            const i = indexes[k] as number;
            results[i] = r;
            if (!last && r.status === EventStatus.REJECTED && r.retryable && RETRY_ELSEWHERE.has(r.reason)) {
              ringMoved ||= r.reason === "NOT_OWNER";
              retry.push(i);
            }
          }
        }),
      );
      // A source's later events must not overtake its failed one: retry them together, in order.
      pending = withLaterEventsOfSameSource(events, retry, results);
      if (pending.length > 0) {
        if (ringMoved) await this.refresh().catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, this.retryDelayMs * 2 ** (attempt - 1)));
      }
    }
    return { $typeName: "twinmesh.v1.PublishResponse", results };
  }

  /** A client of the twin's owner (or of a seed before the ring is known), for single-twin calls. */
  clientFor(kind: string, id: string): TwinmeshClient {
    return this.clientOf(this.nodeFor(kind, id, 1));
  }

  /** Reads the ring again now. */
  refresh(): Promise<void> {
    this.refreshing ??= this.readRing().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
  }

  /** The node to send a twin's events to on attempt `attempt`: its owner when up, else any node that is (it forwards). */
  private nodeFor(kind: string, id: string, attempt: number): string {
    const ring = this.ring;
    const owner = this.ownerOf(kind, id);
    if (ring === undefined || owner === undefined) return this.seeds[0] as string;
    if (attempt === 1 && ring.up.has(owner) && ring.addresses.has(owner)) return ring.addresses.get(owner) as string;
    // Retries go round the other nodes that are up: one of them may see the owner (it forwards).
    const others = [...ring.up].filter((n) => ring.addresses.has(n));
    if (others.length === 0) return this.seeds[attempt % this.seeds.length] as string;
    return ring.addresses.get(others[attempt % others.length] as string) as string;
  }

  private clientOf(address: string): TwinmeshClient {
    if (this.closed) throw new TwinmeshClientError(grpc.status.CANCELLED, "the ClusterClient is closed", "CLIENT_CLOSED", []);
    let client = this.clients.get(address);
    if (client === undefined) {
      client = new TwinmeshClient(address, this.options);
      this.clients.set(address, client);
    }
    return client;
  }

  private async readRing(): Promise<void> {
    const known = this.ring === undefined ? [] : [...this.ring.addresses.values()];
    let lastError: unknown;
    for (const address of [...new Set([...known, ...this.seeds])]) {
      try {
        this.ring = ringView(address, await this.clientOf(address).describeCluster());
        return;
      } catch (err) {
        lastError = err;
      }
    }
    throw lastError instanceof TwinmeshClientError
      ? lastError
      : new TwinmeshClientError(grpc.status.UNAVAILABLE, `no node of ${this.seeds.join(", ")} answered: ${String(lastError)}`, undefined, []);
  }
}

/** Retryable rejections another attempt (after a backoff, on the owner or through another node) may turn into a success. */
const RETRY_ELSEWHERE = new Set([
  "NOT_OWNER",
  "OWNER_UNAVAILABLE",
  "PEER_UNAVAILABLE",
  "FORWARD_CLOSED",
  "SHUTTING_DOWN",
  "NOT_SERVING",
  "PRECEDING_EVENT_REJECTED",
  "MAILBOX_FULL",
  "INGEST_QUEUE_FULL",
  "RATE_LIMITED",
  "COMMIT_FAILED",
  "PARTITION_MOVING",
  "NOT_ENOUGH_REPLICAS",
  "REPLICATION_TIMEOUT",
]);

function ringView(asked: string, res: DescribeClusterResponse): RingView {
  const addresses = new Map<string, string>();
  const up = new Set<string>();
  for (const m of res.members) {
    addresses.set(m.nodeId, m.self ? asked : m.address);
    if (m.state === MemberState.UP) up.add(m.nodeId);
  }
  return { partitioning: new Partitioning(res.partitions), placements: res.placements.map((p) => p.nodeIds), addresses, up };
}

/** `retry` plus every later event of the same sources, in batch order. */
function withLaterEventsOfSameSource(events: readonly EventInit[], retry: readonly number[], results: EventResult[]): number[] {
  if (retry.length === 0) return [];
  const first = new Map<string, number>();
  for (const i of retry) {
    const e = events[i] as EventInit;
    const key = `${e.kind}\u0000${e.sourceId}`;
    const seen = first.get(key);
    if (seen === undefined || i < seen) first.set(key, i);
  }
  const out: number[] = [];
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as EventInit;
    const from = first.get(`${e.kind}\u0000${e.sourceId}`);
    if (from !== undefined && i >= from) {
      // An applied later event is answered DUPLICATE on its retry: harmless, and order holds.
      out.push(i);
      delete results[i];
    }
  }
  return out;
}
