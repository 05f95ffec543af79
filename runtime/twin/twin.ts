import type { JsonObject, JsonShape } from "../util/json.js";
import type { Telemetry } from "./telemetry.js";

/** How bad an alert is. */
export const AlertSeverity = { INFO: "info", WARNING: "warning", CRITICAL: "critical" } as const;
/** One of `"info"`, `"warning"`, `"critical"`. */
export type AlertSeverity = (typeof AlertSeverity)[keyof typeof AlertSeverity];

/** Where a twin kind lives in a cluster with edge and cloud tiers. */
export const Placement = { EDGE: "edge", CLOUD: "cloud", ANY: "any" } as const;
/** One of `"edge"`, `"cloud"`, `"any"`. */
export type Placement = (typeof Placement)[keyof typeof Placement];

/** What `ctx.raise` takes besides the alert code. */
export interface RaiseOptions {
  readonly severity: AlertSeverity;
  /** A sentence for the person who reads the alert. */
  readonly message: string;
}

/** The logger a handler gets as `ctx.log`: structured, one child per twin. */
export interface TwinLogger {
  debug(fields: object, message: string): void;
  debug(message: string): void;
  info(fields: object, message: string): void;
  info(message: string): void;
  warn(fields: object, message: string): void;
  warn(message: string): void;
  error(fields: object, message: string): void;
  error(message: string): void;
}

/**
 * What a handler can do during one turn. Every effect (the new state, alerts raised and
 * resolved, messages sent, timers set and cancelled) is buffered and committed together with
 * the turn, or not at all when the handler throws or times out.
 */
export interface TwinContext<S> {
  /** The twin's id (in v1, its source id). */
  readonly id: string;
  /** The twin's kind. */
  readonly kind: string;
  /** The twin's state: mutate it, or assign a new object. Committed at the end of the turn. */
  state: S;
  /** The current time, from the node's clock (virtual in `TwinTestKit`). */
  now(): Date;
  /**
   * Opens an alert, or, while one with this code is open, bumps its count and updates its
   * severity and message. Never creates a duplicate.
   */
  raise(code: string, options: RaiseOptions): void;
  /** Resolves the open alert with this code; a no-op when none is open. */
  resolve(code: string): void;
  /**
   * True when an alert with this code is open or acknowledged, counting this turn's own
   * raise/resolve calls. Operators may resolve alerts too, so ask rather than keep a copy.
   */
  isAlertOpen(code: string): boolean;
  /**
   * Sends a message to another twin's `onMessage`. Delivered after this turn commits
   * (a durable outbox), at least once and deduplicated by the receiver.
   */
  send<T extends AnyTwin>(target: TwinClass<T>, id: string, message: MessageOf<T>): void;
  send(kind: string, id: string, message: JsonObject): void;
  /**
   * Sets the one-shot durable timer `name` to fire `onTimer(name)` after `delayMs`, or at a
   * Date. Setting a timer that is already set moves it.
   */
  setTimer(name: string, at: number | Date): void;
  /** Cancels the timer `name`; a no-op when it is not set. */
  cancelTimer(name: string): void;
  /** This twin's logger. */
  readonly log: TwinLogger;
}

/**
 * A twin kind: extend it with your state type `S` (a JSON object type) and, optionally, the
 * type `M` of the messages `onMessage` accepts.
 *
 * @example
 * interface Counter { count: number }
 * export class CounterTwin extends Twin<Counter> {
 *   static readonly kind = "counter";
 *   initial(): Counter { return { count: 0 }; }
 *   onTelemetry(t: Telemetry, ctx: TwinContext<Counter>): void { ctx.state.count += 1; }
 * }
 */
export abstract class Twin<S extends JsonShape<S>, M extends JsonShape<M> = JsonObject> {
  /** The state a twin starts with the first time it receives anything. Must be a JSON object. */
  abstract initial(): S;
  /** Handles one telemetry event as one turn. */
  onTelemetry?(telemetry: Telemetry, ctx: TwinContext<S>): void | Promise<void>;
  /** Handles a message from another twin or from `SendToTwin`, as one turn. */
  onMessage?(message: M, ctx: TwinContext<S>): void | Promise<void>;
  /** Handles a timer set with `ctx.setTimer`, as one turn. */
  onTimer?(name: string, ctx: TwinContext<S>): void | Promise<void>;
  /**
   * Upgrades stored state written by an older `stateVersion` of this class; called when such a
   * twin is loaded. Required once `stateVersion` is above 1.
   */
  migrate?(old: JsonObject, fromVersion: number): S;
}

/**
 * Any twin instance, whatever its state and message types (handler parameters are compared
 * bivariantly, so every `Twin<S, M>` is assignable to it).
 */
export type AnyTwin = Twin<object, object>;

/** The state type of a twin class instance. */
export type StateOf<T> = T extends Twin<infer S, infer _M> ? S : never;
/** The message type a twin's `onMessage` accepts. */
export type MessageOf<T> = T extends Twin<infer _S, infer M> ? M : never;

/** A twin class, with the statics the runtime reads. */
export interface TwinClass<T extends AnyTwin = AnyTwin> {
  new (): T;
  /** The kind name telemetry addresses, e.g. `"patient"`: lowercase letters, digits, `-`, `_`. */
  readonly kind: string;
  /** Where the kind lives in a tiered cluster. @defaultValue `"any"` */
  readonly placement?: Placement;
  /** The version of the state shape; raise it and implement `migrate`. @defaultValue 1 */
  readonly stateVersion?: number;
}
