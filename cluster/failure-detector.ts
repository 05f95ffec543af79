import type { NodeId } from "./node-id.js";

/** How the {@link FailureDetector} judges silence. Every field is optional. */
export interface FailureDetectorOptions {
  /**
   * A peer heard from less recently than this is down.
   * @defaultValue 1000
   */
  readonly downAfterMs?: number;
  /**
   * How often silence is checked.
   * @defaultValue 100
   */
  readonly checkIntervalMs?: number;
}

/** The options with their defaults applied. */
export interface ResolvedFailureDetectorOptions {
  readonly downAfterMs: number;
  readonly checkIntervalMs: number;
}

/** The default silence after which a peer is down. */
export const DEFAULT_DOWN_AFTER_MS = 1_000;
const DEFAULT_CHECK_INTERVAL_MS = 100;

/**
 * Applies defaults and checks bounds.
 * @throws RangeError naming the option that is not a positive whole number, or a check interval
 * that is not shorter than the down-after time.
 */
export function resolveFailureDetectorOptions(options: FailureDetectorOptions = {}): ResolvedFailureDetectorOptions {
  const downAfterMs = options.downAfterMs ?? DEFAULT_DOWN_AFTER_MS;
  const checkIntervalMs = options.checkIntervalMs ?? Math.min(DEFAULT_CHECK_INTERVAL_MS, Math.max(1, Math.floor(downAfterMs / 4)));
  for (const [name, value] of [
    ["downAfterMs", downAfterMs],
    ["checkIntervalMs", checkIntervalMs],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} is ${value}; use a whole number of milliseconds above 0`);
  }
  if (checkIntervalMs >= downAfterMs) throw new RangeError(`checkIntervalMs (${checkIntervalMs}) must be shorter than downAfterMs (${downAfterMs})`);
  return { downAfterMs, checkIntervalMs };
}

/** Up or down, as the detector sees a peer now. */
export type PeerLiveness = "up" | "down";

interface PeerRecord {
  /** When the peer was last heard from, on the detector's clock, plus credit for our own stalls. */
  lastSeenMs: number;
  liveness: PeerLiveness;
}

/**
 * Decides which peers are alive from the heartbeats they send. A peer is down after
 * `downAfterMs` of silence and up again at its next heartbeat.
 *
 * A slow node is not a dead node, and a busy observer is not a deaf one: when this node's own
 * event loop stalls, heartbeats that arrived meanwhile sit unread in their sockets, and libuv
 * runs due timers before it polls them. So each check measures how late it ran and credits every
 * peer with that lateness: silence that this node could not have observed never counts against a
 * peer.
 *
 * Peers start up, as if heard from when the detector was made: a node that starts beside its
 * peers gives them `downAfterMs` to be heard before it acts on their absence.
 */
export class FailureDetector {
  readonly options: ResolvedFailureDetectorOptions;
  private readonly peers = new Map<NodeId, PeerRecord>();
  private readonly listeners = new Set<(peer: NodeId, liveness: PeerLiveness) => void>();
  private timer: NodeJS.Timeout | undefined;
  private lastCheckMs: number;

  constructor(
    peers: readonly NodeId[],
    options?: FailureDetectorOptions,
    /** Monotonic milliseconds; tests pass their own. */
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    this.options = resolveFailureDetectorOptions(options);
    this.lastCheckMs = this.nowMs();
    for (const peer of peers) this.peers.set(peer, { lastSeenMs: this.lastCheckMs, liveness: "up" });
  }

  /** Checks silence every `checkIntervalMs` until {@link close}. Idempotent. */
  start(): void {
    if (this.timer !== undefined) return;
    this.lastCheckMs = this.nowMs();
    this.timer = setInterval(() => this.check(), this.options.checkIntervalMs);
    this.timer.unref();
  }

  /** Records a heartbeat from `peer` (ignored for a peer the detector does not know). */
  heartbeat(peer: NodeId): void {
    const rec = this.peers.get(peer);
    if (rec === undefined) return;
    rec.lastSeenMs = this.nowMs();
    if (rec.liveness === "down") this.set(peer, rec, "up");
  }

  /** Whether `peer` is up now; unknown peers are down. */
  isUp(peer: NodeId): boolean {
    return this.peers.get(peer)?.liveness === "up";
  }

  /** Every known peer and its liveness. */
  snapshot(): ReadonlyMap<NodeId, PeerLiveness> {
    return new Map([...this.peers].map(([id, rec]) => [id, rec.liveness]));
  }

  /** Calls `listener` when a peer goes down or comes back up; returns the unsubscribe function. */
  onChange(listener: (peer: NodeId, liveness: PeerLiveness) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Marks silent peers down. Runs on the detector's timer; tests call it with their own clock. */
  check(): void {
    const now = this.nowMs();
    // Lateness of this check beyond its interval is time this node's loop was not polling its
    // sockets; heartbeats sent meanwhile have not been read yet, so no peer is blamed for it.
    const lateMs = Math.max(0, now - this.lastCheckMs - this.options.checkIntervalMs);
    this.lastCheckMs = now;
    for (const [peer, rec] of this.peers) {
      rec.lastSeenMs = Math.min(now, rec.lastSeenMs + lateMs);
      if (rec.liveness === "up" && now - rec.lastSeenMs >= this.options.downAfterMs) this.set(peer, rec, "down");
    }
  }

  private set(peer: NodeId, rec: PeerRecord, liveness: PeerLiveness): void {
    rec.liveness = liveness;
    for (const listener of this.listeners) listener(peer, liveness);
  }

  /** Stops checking. Idempotent. */
  close(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }
}
