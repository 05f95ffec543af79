import type { Logger } from "pino";
import type { Clock } from "../clock.js";
import type { AnyTwin, MessageOf, RaiseOptions, TwinClass, TwinContext, TwinLogger } from "../twin/twin.js";
import type { JsonObject } from "../util/json.js";
import { hasControlCharacter, MAX_TWIN_ID_BYTES } from "../util/text.js";
import type { Activation } from "./activation.js";

/** An alert change a turn asked for. */
export type AlertEffect = { readonly op: "raise"; readonly code: string; readonly options: RaiseOptions } | { readonly op: "resolve"; readonly code: string };
/** A message a turn sent. */
export interface SendEffect {
  readonly kind: string;
  readonly id: string;
  readonly message: JsonObject;
}

/** The host services a turn context needs, kept narrow so the context stays cheap to build. */
export interface TurnServices {
  readonly clock: Clock;
  readonly log: Logger;
  /** Throws UnknownKindError when no registered twin kind has this name. */
  checkKind(kind: string): void;
}

const CODE_PATTERN = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
const TIMER_PATTERN = /^[A-Za-z0-9_.:-]{1,64}$/;
const MAX_ALERT_MESSAGE = 1024;
const SEVERITIES = new Set(["info", "warning", "critical"]);

/**
 * The `ctx` of one turn. Effects are buffered here and applied by the host only if the handler
 * finishes in time; after the turn every method throws, so a handler that kept `ctx` (or timed
 * out and woke up later) cannot change anything.
 */
export class TurnContext implements TwinContext<JsonObject> {
  state: JsonObject;
  alerts: AlertEffect[] | undefined;
  sends: SendEffect[] | undefined;
  /** Timer name → due epoch ms, or null to cancel. */
  timers: Map<string, number | null> | undefined;
  private over = false;

  constructor(
    private readonly activation: Activation,
    private readonly services: TurnServices,
    state: JsonObject,
  ) {
    this.state = state;
  }

  get id(): string {
    return this.activation.id;
  }
  get kind(): string {
    return this.activation.entry.kind;
  }
  get log(): TwinLogger {
    return this.activation.log(this.services.log);
  }

  /** Ends the turn: later calls throw. */
  end(): void {
    this.over = true;
  }

  private live(method: string): void {
    if (this.over)
      throw new Error(`ctx.${method}() called after the turn ended (a handler kept ctx, or timed out); effects of a turn must happen before it returns`);
  }

  now(): Date {
    return new Date(this.services.clock.nowMs());
  }

  raise(code: string, options: RaiseOptions): void {
    this.live("raise");
    if (typeof code !== "string" || !CODE_PATTERN.test(code))
      throw new TypeError(`ctx.raise: alert code ${JSON.stringify(code)} must be 1-64 letters, digits, _ . or -, starting with a letter`);
    if (options === null || typeof options !== "object" || !SEVERITIES.has(options.severity)) {
      throw new TypeError(`ctx.raise("${code}"): severity must be "info", "warning" or "critical"`);
    }
    if (typeof options.message !== "string") throw new TypeError(`ctx.raise("${code}"): message must be a string`);
    const message = options.message.length > MAX_ALERT_MESSAGE ? `${options.message.slice(0, MAX_ALERT_MESSAGE - 1)}…` : options.message;
    (this.alerts ??= []).push({ op: "raise", code, options: { severity: options.severity, message } });
  }

  resolve(code: string): void {
    this.live("resolve");
    if (typeof code !== "string" || !CODE_PATTERN.test(code)) throw new TypeError(`ctx.resolve: alert code ${JSON.stringify(code)} is not a valid code`);
    (this.alerts ??= []).push({ op: "resolve", code });
  }

  isAlertOpen(code: string): boolean {
    this.live("isAlertOpen");
    const effects = this.alerts;
    if (effects !== undefined) {
      for (let i = effects.length - 1; i >= 0; i--) {
        const effect = effects[i] as AlertEffect;
        if (effect.code === code) return effect.op === "raise";
      }
    }
    return this.activation.record?.alerts?.[code] !== undefined;
  }

  send<T extends AnyTwin>(target: TwinClass<T>, id: string, message: MessageOf<T>): void;
  send(kind: string, id: string, message: JsonObject): void;
  send(target: string | TwinClass, id: string, message: unknown): void {
    this.live("send");
    const kind = typeof target === "string" ? target : target.kind;
    this.services.checkKind(kind);
    if (typeof id !== "string" || id.length === 0) throw new TypeError(`ctx.send: target id must be a non-empty string`);
    // The rules of an event's source_id: the id becomes part of RocksDB keys (timers split on NUL).
    if (Buffer.byteLength(id) > MAX_TWIN_ID_BYTES || hasControlCharacter(id)) {
      throw new TypeError(`ctx.send: target id ${JSON.stringify(id.slice(0, 64))} must be at most ${MAX_TWIN_ID_BYTES} bytes of printable characters`);
    }
    if (message === null || typeof message !== "object" || Array.isArray(message))
      throw new TypeError(`ctx.send to ${kind}/${id}: message must be a JSON object`);
    (this.sends ??= []).push({ kind, id, message: message as JsonObject });
  }

  setTimer(name: string, at: number | Date): void {
    this.live("setTimer");
    if (typeof name !== "string" || !TIMER_PATTERN.test(name))
      throw new TypeError(`ctx.setTimer: timer name ${JSON.stringify(name)} must be 1-64 letters, digits, _ . : or -`);
    const now = this.services.clock.nowMs();
    const due = at instanceof Date ? at.getTime() : now + at;
    if (!Number.isFinite(due) || (typeof at === "number" && at < 0)) throw new TypeError(`ctx.setTimer("${name}"): give a delay in ms (>= 0) or a valid Date`);
    (this.timers ??= new Map()).set(name, Math.max(Math.round(due), 0));
  }

  cancelTimer(name: string): void {
    this.live("cancelTimer");
    (this.timers ??= new Map()).set(name, null);
  }
}
