import { setTimeout as sleep } from "node:timers/promises";
import * as grpc from "@grpc/grpc-js";
import { PeerService } from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { type Logger, silentLogger } from "../runtime/index.js";
import { FailureDetector, type FailureDetectorOptions } from "./failure-detector.js";
import type { NodeId } from "./node-id.js";
import { type NodeSettings, nodeSettingsFromMessage, nodeSettingsToMessage, settingsDifference } from "./node-settings.js";
import type { PeerAddress } from "./peer-list.js";
import { callFailure, callUnary } from "./peer-rpc.js";
import type { LocalNode } from "./peer-service.js";

/** How a peer looks from this node. */
export const PeerCondition = {
  /** Answered Pings with matching settings, and heard from within `downAfterMs`. */
  UP: "up",
  /** Not heard from within `downAfterMs`, or never yet. It keeps being tried. */
  DOWN: "down",
  /** Answers, but with settings that differ from this node's: it cannot be part of this cluster. */
  INCOMPATIBLE: "incompatible",
} as const;
/** One of the {@link PeerCondition} values. */
export type PeerCondition = (typeof PeerCondition)[keyof typeof PeerCondition];

/** A peer as the pool sees it now. */
export interface PeerState {
  readonly id: NodeId;
  /** `host:port`. */
  readonly address: string;
  readonly condition: PeerCondition;
  /** The ring epoch of its last Ping answer; undefined before the first. */
  readonly epoch: bigint | undefined;
  /** From its last Ping answer: true while it catches up and does not count toward quorums. */
  readonly catchingUp: boolean;
  /** From its last Ping answer: why its disk refuses writes (it owns nothing and counts toward no quorum meanwhile); undefined while it takes them. */
  readonly diskProblem: string | undefined;
  /** Why it is {@link PeerCondition.INCOMPATIBLE}, naming the difference; undefined otherwise. */
  readonly problem: string | undefined;
}

/**
 * True when a peer in `state` speaks for its copies: up, not catching up, and its disk taking
 * writes. Only such a peer owns partitions and counts toward quorums.
 */
export function isCurrentPeer(state: PeerState | undefined): boolean {
  return state?.condition === PeerCondition.UP && !state.catchingUp && state.diskProblem === undefined;
}

/** How the {@link PeerPool} talks to peers. Every field is optional. */
export interface PeerPoolOptions {
  /**
   * How often each peer is pinged while it answers.
   * @defaultValue 250
   */
  readonly heartbeatIntervalMs?: number;
  /**
   * How long one Ping may take.
   * @defaultValue the failure detector's `downAfterMs`
   */
  readonly pingTimeoutMs?: number;
  /**
   * The longest wait between Pings to a peer that does not answer (the wait doubles from a
   * quarter of `heartbeatIntervalMs` up to this). A peer that starts listening is up within
   * about this long.
   * @defaultValue 1000
   */
  readonly maxRetryDelayMs?: number;
  /** When a silent peer is down. */
  readonly failureDetector?: FailureDetectorOptions;
  /** grpc-js channel options, over the pool's defaults (keepalive, reconnect backoff, message sizes). */
  readonly channelOptions?: grpc.ChannelOptions;
  /** @defaultValue a silent logger */
  readonly log?: Logger;
}

interface ResolvedPeerPoolOptions {
  readonly heartbeatIntervalMs: number;
  readonly pingTimeoutMs: number;
  readonly maxRetryDelayMs: number;
}

const DEFAULT_HEARTBEAT_INTERVAL_MS = 250;
const DEFAULT_MAX_RETRY_DELAY_MS = 1_000;
const MAX_PEER_MESSAGE_BYTES = 64 * 1024 * 1024;

interface PeerRecord {
  readonly id: NodeId;
  readonly address: string;
  readonly client: grpc.Client;
  /** Whether the peer ever answered a Ping with matching settings. */
  answered: boolean;
  epoch: bigint | undefined;
  catchingUp: boolean;
  diskProblem: string | undefined;
  problem: string | undefined;
  /** The state last reported to listeners. */
  reported: PeerState;
}

/**
 * One long-lived grpc-js channel per peer, and the heartbeats that say which peers are up.
 *
 * Each peer is pinged every `heartbeatIntervalMs`; an answer with matching settings is a
 * heartbeat for the {@link FailureDetector}, which marks a peer down after `downAfterMs` of
 * silence and does not blame peers for this node's own event-loop stalls. A peer that does not
 * answer (not started yet, crashed) is down and keeps being pinged, with a wait that doubles up
 * to `maxRetryDelayMs`, cut short when its channel connects; this node never waits for it. A peer
 * whose settings differ is {@link PeerCondition.INCOMPATIBLE}, with the difference named, and is
 * logged once per difference (it is not down: it answers, and a person must act).
 *
 * A peer is up only after it answered: until then its settings are unknown.
 *
 * @example
 * ```ts
 * const pool = new PeerPool(self, parsePeers("n2@127.0.0.1:7422", self.id), { log });
 * pool.start();
 * pool.onChange((peer) => log.info({ peer: peer.id, condition: peer.condition }, "peer changed"));
 * // …
 * await pool.close();
 * ```
 */
export class PeerPool {
  private readonly options: ResolvedPeerPoolOptions;
  private readonly detector: FailureDetector;
  private readonly peers = new Map<NodeId, PeerRecord>();
  private readonly listeners = new Set<(state: PeerState) => void>();
  private readonly log: Logger;
  private readonly stop = new AbortController();
  private loops: Promise<void>[] | undefined;
  private closing: Promise<void> | undefined;

  /** @throws RangeError naming an option that is not a positive whole number, or a peer listed twice. */
  constructor(
    private readonly self: LocalNode,
    peers: readonly PeerAddress[],
    options: PeerPoolOptions = {},
  ) {
    const ids = new Set<NodeId>();
    for (const peer of peers) {
      if (ids.has(peer.id)) throw new RangeError(`peer ${peer.id} is listed twice`);
      ids.add(peer.id);
    }
    this.detector = new FailureDetector(
      peers.map((p) => p.id),
      options.failureDetector,
    );
    const heartbeatIntervalMs = options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS;
    const pingTimeoutMs = options.pingTimeoutMs ?? this.detector.options.downAfterMs;
    const maxRetryDelayMs = options.maxRetryDelayMs ?? Math.max(DEFAULT_MAX_RETRY_DELAY_MS, heartbeatIntervalMs);
    for (const [name, value] of Object.entries({ heartbeatIntervalMs, pingTimeoutMs, maxRetryDelayMs })) {
      if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} is ${value}; use a whole number of milliseconds above 0`);
    }
    if (maxRetryDelayMs < heartbeatIntervalMs) {
      throw new RangeError(`maxRetryDelayMs (${maxRetryDelayMs}) must not be shorter than heartbeatIntervalMs (${heartbeatIntervalMs})`);
    }
    this.options = { heartbeatIntervalMs, pingTimeoutMs, maxRetryDelayMs };
    this.log = (options.log ?? silentLogger()).child({ component: "cluster.peer-pool" });
    const channelOptions: grpc.ChannelOptions = {
      // Keepalive finds a dead connection under a quiet stream (a Forward stream between
      // batches); heartbeats find a dead peer sooner, and ForwardClient acts on them.
      "grpc.keepalive_time_ms": 10_000,
      "grpc.keepalive_timeout_ms": 5_000,
      "grpc.keepalive_permit_without_calls": 1,
      // grpc-js's defaults (1 s, growing to 120 s) would leave a restarted peer unreached for
      // minutes. Half the retry bound, because grpc-js adds up to 20 % jitter and a Ping follows
      // the reconnect: a peer that starts listening is up within about maxRetryDelayMs.
      "grpc.initial_reconnect_backoff_ms": Math.min(100, maxRetryDelayMs),
      "grpc.max_reconnect_backoff_ms": Math.max(1, Math.floor(maxRetryDelayMs / 2)),
      "grpc.max_receive_message_length": MAX_PEER_MESSAGE_BYTES,
      "grpc.max_send_message_length": MAX_PEER_MESSAGE_BYTES,
      // Forwarded batches are retried by the router with the same seqs; grpc-js must not resend on its own.
      "grpc.enable_retries": 0,
      ...options.channelOptions,
    };
    for (const peer of peers) {
      const rec: PeerRecord = {
        id: peer.id,
        address: peer.address,
        client: new grpc.Client(peer.address, grpc.credentials.createInsecure(), channelOptions),
        answered: false,
        epoch: undefined,
        catchingUp: false,
        diskProblem: undefined,
        problem: undefined,
        reported: {
          id: peer.id,
          address: peer.address,
          condition: PeerCondition.DOWN,
          epoch: undefined,
          catchingUp: false,
          diskProblem: undefined,
          problem: undefined,
        },
      };
      this.peers.set(peer.id, rec);
    }
    this.detector.onChange((peer) => {
      const rec = this.peers.get(peer);
      if (rec !== undefined) this.report(rec);
    });
  }

  /**
   * The longest stall of this node's event loop that its peers cannot take for its death: their
   * failure detectors see its silence plus up to one heartbeat interval, less a margin for the
   * network (650 ms with the defaults; 50 ms at least).
   */
  get safeStallMs(): number {
    return Math.max(50, this.detector.options.downAfterMs - this.options.heartbeatIntervalMs - 100);
  }

  /** Starts the heartbeats and the failure detector. Returns at once: peers need not be reachable. Idempotent. */
  start(): void {
    if (this.loops !== undefined || this.closing !== undefined) return;
    this.detector.start();
    this.loops = [...this.peers.values()].map((rec) => this.heartbeat(rec));
  }

  /** The peers, in the order they were given. */
  states(): PeerState[] {
    return [...this.peers.values()].map((rec) => rec.reported);
  }

  /** @throws RangeError for a node that is not a peer. */
  state(peer: NodeId): PeerState {
    return this.record(peer).reported;
  }

  /** True when `peer` is {@link PeerCondition.UP}; false for unknown nodes. */
  isUp(peer: NodeId): boolean {
    return this.peers.get(peer)?.reported.condition === PeerCondition.UP;
  }

  /** Calls `listener` when a peer's condition, epoch, catching-up flag or disk problem changes; returns the unsubscribe function. */
  onChange(listener: (state: PeerState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * The long-lived channel to `peer`, for other node-to-node clients (ForwardClient). Closed by {@link close}.
   * @throws RangeError for a node that is not a peer.
   */
  channel(peer: NodeId): grpc.Client {
    return this.record(peer).client;
  }

  /**
   * Stops the heartbeats and closes every channel. Close the clients that use the channels
   * (ForwardClient) first, so their calls end with their own errors. Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stop.abort();
      this.detector.close();
      await Promise.all(this.loops ?? []);
      for (const rec of this.peers.values()) rec.client.close();
      this.listeners.clear();
    })();
    return this.closing;
  }

  private record(peer: NodeId): PeerRecord {
    const rec = this.peers.get(peer);
    if (rec === undefined) throw new RangeError(`${peer} is not a peer of ${this.self.id}; peers are ${[...this.peers.keys()].join(", ") || "none"}`);
    return rec;
  }

  /** Pings `rec` until close: every heartbeat interval while it answers, with a growing wait while it does not. */
  private async heartbeat(rec: PeerRecord): Promise<void> {
    const { heartbeatIntervalMs, maxRetryDelayMs } = this.options;
    // The first retry comes soon: one lost Ping (a deadline that passed while this node's loop
    // was blocked) must not cost a whole heartbeat interval of silence.
    const firstRetryMs = Math.max(1, Math.ceil(heartbeatIntervalMs / 4));
    let retryDelayMs = firstRetryMs;
    while (!this.stop.signal.aborted) {
      const startedMs = performance.now();
      const answered = await this.ping(rec);
      if (this.stop.signal.aborted) return;
      if (answered) {
        retryDelayMs = firstRetryMs;
        await this.pause(heartbeatIntervalMs - (performance.now() - startedMs));
      } else {
        await this.waitToRetry(rec, retryDelayMs);
        retryDelayMs = Math.min(maxRetryDelayMs, retryDelayMs * 2);
      }
    }
  }

  /** One Ping; true when the peer answered with matching settings. Never rejects. */
  private async ping(rec: PeerRecord): Promise<boolean> {
    const self = this.self;
    try {
      const res = await callUnary(
        rec.client,
        PeerService.method.ping,
        { nodeId: self.id, epoch: self.epoch(), settings: nodeSettingsToMessage(self.settings) },
        this.options.pingTimeoutMs,
      );
      const settings = res.settings === undefined ? undefined : nodeSettingsFromMessage(res.settings);
      if (res.nodeId !== rec.id || settings === undefined) {
        this.setProblem(
          rec,
          `the node at ${rec.address} answers as ${JSON.stringify(res.nodeId.slice(0, 80))}, not ${rec.id}; fix --peers or that node's --node-id`,
        );
        return false;
      }
      const difference = settingsDifference({ id: self.id, settings: self.settings }, { id: rec.id, settings });
      if (difference !== undefined) {
        this.setProblem(rec, difference);
        return false;
      }
      rec.answered = true;
      rec.problem = undefined;
      rec.epoch = res.epoch;
      rec.catchingUp = res.catchingUp;
      rec.diskProblem = res.diskProblem === "" ? undefined : res.diskProblem;
      this.detector.heartbeat(rec.id);
      this.report(rec);
      return true;
    } catch (err) {
      const failure = callFailure(err);
      if (failure.code === grpc.status.FAILED_PRECONDITION && (failure.reason === "INCOMPATIBLE_SETTINGS" || failure.reason === "SAME_NODE_ID")) {
        this.setProblem(rec, refusalProblem(self, rec.id, failure.reason, failure.metadata, failure.message));
      } else {
        // Unreachable, timed out or shutting down: silence, which the failure detector judges.
        this.log.debug({ peer: rec.id, code: failure.code, err: failure.message }, "peer did not answer a ping");
      }
      return false;
    }
  }

  private setProblem(rec: PeerRecord, problem: string): void {
    if (rec.problem !== problem) this.log.error({ peer: rec.id, address: rec.address, problem }, "peer cannot join this cluster");
    rec.problem = problem;
    this.report(rec);
  }

  /** Recomputes `rec`'s state and tells listeners when it changed. */
  private report(rec: PeerRecord): void {
    const condition =
      rec.problem !== undefined ? PeerCondition.INCOMPATIBLE : rec.answered && this.detector.isUp(rec.id) ? PeerCondition.UP : PeerCondition.DOWN;
    const before = rec.reported;
    if (
      before.condition === condition &&
      before.epoch === rec.epoch &&
      before.catchingUp === rec.catchingUp &&
      before.diskProblem === rec.diskProblem &&
      before.problem === rec.problem
    )
      return;
    const state: PeerState = {
      id: rec.id,
      address: rec.address,
      condition,
      epoch: rec.epoch,
      catchingUp: rec.catchingUp,
      diskProblem: rec.diskProblem,
      problem: rec.problem,
    };
    rec.reported = state;
    if (before.condition !== condition) this.log.info({ peer: rec.id, condition, problem: rec.problem }, "peer condition changed");
    for (const listener of this.listeners) {
      try {
        listener(state);
      } catch (err) {
        // A listener's bug must not stop the heartbeats that called it.
        this.log.error({ err, peer: rec.id }, "peer change listener failed");
      }
    }
  }

  private async pause(ms: number): Promise<void> {
    try {
      await sleep(Math.max(0, ms), undefined, { signal: this.stop.signal });
    } catch {
      // Aborted by close().
    }
  }

  /** Waits `delayMs`, or less when the peer's channel becomes ready (a restarted peer is pinged as soon as it is reachable). */
  private waitToRetry(rec: PeerRecord, delayMs: number): Promise<void> {
    const signal = this.stop.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const channel = rec.client.getChannel();
      const deadline = Date.now() + delayMs;
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", finish);
        resolve();
      };
      const timer = setTimeout(finish, delayMs);
      signal.addEventListener("abort", finish, { once: true });
      const watch = (): void => {
        if (done) return;
        // true: an idle channel starts connecting, so the wait is also the reconnect attempt.
        const state = channel.getConnectivityState(true);
        if (state === grpc.connectivityState.READY) {
          finish();
          return;
        }
        if (state === grpc.connectivityState.SHUTDOWN) return;
        channel.watchConnectivityState(state, deadline, (err) => {
          if (err === undefined) watch();
        });
      };
      watch();
    });
  }
}

/**
 * The problem a refused Ping reports, from this node's side: the refusal carries the peer's
 * settings in its ErrorInfo, so the difference is named as this node's own check would name it.
 * Falls back to the peer's own message when its details cannot be read.
 */
function refusalProblem(self: LocalNode, peer: NodeId, reason: string, metadata: Readonly<Record<string, string>>, message: string): string {
  if (reason === "SAME_NODE_ID") return `${peer} has this node's id (${self.id}): ${message}`;
  const partitions = Number(metadata.partitions);
  const replicationFactor = Number(metadata.replicationFactor);
  const kinds = metadata.kinds === undefined || metadata.kinds === "" ? [] : metadata.kinds.split(",");
  // A long kind list is cut short in the metadata (with an ellipsis); then only the message is reliable.
  if (Number.isSafeInteger(partitions) && Number.isSafeInteger(replicationFactor) && metadata.kinds !== undefined && !metadata.kinds.includes("…")) {
    // A release before the peer protocol was sent names none: it speaks version 0.
    const theirs: NodeSettings = { partitions, replicationFactor, kinds: kinds.sort(), peerProtocol: Number(metadata.peerProtocol ?? 0) };
    const difference = settingsDifference({ id: self.id, settings: self.settings }, { id: peer, settings: theirs });
    if (difference !== undefined) return difference;
  }
  return `${peer} refuses this node: ${message}`;
}
