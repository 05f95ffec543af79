/**
 * The standard gRPC health service (`grpc.health.v1.Health`: Check, List, Watch) over a
 * {@link HealthState} that the node updates as it starts, degrades and stops.
 */
import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
  HealthListResponseSchema,
} from "../../proto/gen/grpc/health/v1/health_pb.js";
import { StatusCode, TwinmeshError } from "../../runtime/index.js";
import { type AdapterOptions, addService } from "./grpc-adapter.js";

const { SERVING, SERVICE_UNKNOWN } = HealthCheckResponse_ServingStatus;

/** One watcher's mailbox: it holds only the latest status, so a slow watcher skips to the newest instead of queueing. */
interface Watcher {
  readonly service: string;
  pending: HealthCheckResponse_ServingStatus | undefined;
  wake: (() => void) | undefined;
}

/**
 * The serving status of each service of this node; the empty name `""` is the node as a whole.
 * Watchers see each change in order, coalesced: a watcher that falls behind gets the latest
 * status, never a backlog.
 */
export class HealthState {
  private readonly statuses = new Map<string, HealthCheckResponse_ServingStatus>();
  private readonly watchers = new Set<Watcher>();
  private closed = false;

  /** @param initial - Statuses to start with. @defaultValue `{ "": SERVING }` */
  constructor(initial: Readonly<Record<string, HealthCheckResponse_ServingStatus>> = { "": SERVING }) {
    for (const [service, status] of Object.entries(initial)) this.statuses.set(service, status);
  }

  /** Sets the status of `service` (`""` for the whole node) and wakes its watchers if it changed. */
  set(service: string, status: HealthCheckResponse_ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const w of this.watchers) {
      if (w.service !== service) continue;
      w.pending = status;
      w.wake?.();
    }
  }

  /** The status of `service`, or undefined when it was never set. */
  get(service: string): HealthCheckResponse_ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /** Every service's status. */
  list(): ReadonlyMap<string, HealthCheckResponse_ServingStatus> {
    return new Map(this.statuses);
  }

  /**
   * Yields the current status of `service` (SERVICE_UNKNOWN if never set), then each change,
   * until `signal` aborts or {@link HealthState.close} is called.
   */
  async *watch(service: string, signal: AbortSignal): AsyncGenerator<HealthCheckResponse_ServingStatus> {
    const w: Watcher = { service, pending: this.statuses.get(service) ?? SERVICE_UNKNOWN, wake: undefined };
    const wake = (): void => w.wake?.();
    this.watchers.add(w);
    signal.addEventListener("abort", wake);
    try {
      let last: HealthCheckResponse_ServingStatus | undefined;
      while (!this.closed && !signal.aborted) {
        const next = w.pending;
        w.pending = undefined;
        if (next === undefined) {
          await new Promise<void>((resolve) => {
            w.wake = resolve;
          });
          w.wake = undefined;
        } else if (next !== last) {
          // A change and its reversal while the watcher was busy coalesce to "no change".
          last = next;
          yield next;
        }
      }
    } finally {
      this.watchers.delete(w);
      signal.removeEventListener("abort", wake);
    }
  }

  /** Ends every watch (their calls complete OK) and any started later. Idempotent. */
  close(): void {
    this.closed = true;
    for (const w of this.watchers) w.wake?.();
  }
}

/**
 * Serves `grpc.health.v1.Health` from `state`. Check of a service that was never set answers
 * NOT_FOUND; Watch of one streams SERVICE_UNKNOWN and keeps the call open for later changes.
 * @example
 * ```ts
 * const health = new HealthState({ "": HealthCheckResponse_ServingStatus.NOT_SERVING });
 * addHealthService(server, health, { log });
 * health.set("", HealthCheckResponse_ServingStatus.SERVING); // once the node is ready
 * ```
 */
export function addHealthService(server: grpc.Server, state: HealthState, options: AdapterOptions = {}): void {
  addService(
    server,
    Health,
    {
      async check(req) {
        const status = state.get(req.service);
        if (status === undefined) throw new UnknownHealthServiceError(req.service, [...state.list().keys()]);
        return create(HealthCheckResponseSchema, { status });
      },
      async list() {
        const statuses: Record<string, HealthCheckResponse> = {};
        for (const [service, status] of state.list()) statuses[service] = create(HealthCheckResponseSchema, { status });
        return create(HealthListResponseSchema, { statuses });
      },
      async watch(req, out, call) {
        for await (const status of state.watch(req.service, call.signal)) {
          await out.write(create(HealthCheckResponseSchema, { status }));
        }
      },
    },
    options,
  );
}

/** Check asked about a service with no health status. */
class UnknownHealthServiceError extends TwinmeshError {
  override readonly name = "UnknownHealthServiceError";
  readonly code = StatusCode.NOT_FOUND;
  readonly reason = "UNKNOWN_SERVICE";
  constructor(
    readonly service: string,
    readonly knownServices: readonly string[],
  ) {
    super(`no health status for service "${service}"; this node reports ${knownServices.map((s) => `"${s}"`).join(", ") || "none"} ("" is the whole node)`);
  }
}
