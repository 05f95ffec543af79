import { ConfigError, UnknownKindError } from "../errors.js";
import type { AnyTwin, Placement, TwinClass } from "../twin/twin.js";
import { isPlainObject, stringifyJson } from "../util/json.js";

/** A valid kind name: lowercase letter first, then lowercase letters, digits, `-` or `_`. */
export const KIND_PATTERN = /^[a-z][a-z0-9_-]{0,62}$/;

/** A registered twin kind: its class, one shared instance, and its resolved statics. */
export interface KindEntry {
  readonly kind: string;
  readonly twinClass: TwinClass;
  /** One instance serves every twin of the kind: state lives in `ctx.state`, not on `this`. */
  readonly instance: AnyTwin;
  readonly stateVersion: number;
  readonly placement: Placement;
}

/**
 * The twin kinds a node runs. Registration checks what can be checked without running a turn:
 * the kind name, `stateVersion`, a `migrate` for versions above 1, and that `initial()` returns
 * a JSON object.
 */
export class TwinRegistry {
  private readonly kinds = new Map<string, KindEntry>();

  /** Registers twin classes. @throws ConfigError naming the class and what to fix. */
  register(...classes: readonly TwinClass[]): void {
    for (const twinClass of classes) this.registerOne(twinClass);
  }

  private registerOne(twinClass: TwinClass): void {
    const name = twinClass.name || "anonymous class";
    const kind: unknown = twinClass.kind;
    if (typeof kind !== "string" || !KIND_PATTERN.test(kind)) {
      throw new ConfigError(
        "BAD_TWIN_CLASS",
        `twin class ${name} has static kind ${JSON.stringify(kind)}; declare \`static readonly kind = "my-kind"\` (lowercase letters, digits, - and _, starting with a letter, at most 63 characters)`,
      );
    }
    const existing = this.kinds.get(kind);
    if (existing !== undefined) {
      if (existing.twinClass === twinClass) return;
      throw new ConfigError("DUPLICATE_KIND", `twin kind "${kind}" is defined twice (${existing.twinClass.name} and ${name}); kinds must be unique`);
    }
    const stateVersion = twinClass.stateVersion ?? 1;
    if (!Number.isSafeInteger(stateVersion) || stateVersion < 1) {
      throw new ConfigError("BAD_TWIN_CLASS", `twin class ${name} has stateVersion ${String(stateVersion)}; use a whole number from 1 up`);
    }
    const placement = twinClass.placement ?? "any";
    if (placement !== "edge" && placement !== "cloud" && placement !== "any") {
      throw new ConfigError("BAD_TWIN_CLASS", `twin class ${name} has placement ${JSON.stringify(placement)}; use "edge", "cloud" or "any"`);
    }
    let instance: AnyTwin;
    try {
      instance = new twinClass();
    } catch (err) {
      throw new ConfigError("BAD_TWIN_CLASS", `twin class ${name} could not be constructed without arguments: ${(err as Error).message}`);
    }
    if (typeof instance.initial !== "function") {
      throw new ConfigError("BAD_TWIN_CLASS", `twin class ${name} has no initial() method; return the state a new twin starts with`);
    }
    if (stateVersion > 1 && typeof instance.migrate !== "function") {
      throw new ConfigError("BAD_TWIN_CLASS", `twin class ${name} has stateVersion ${stateVersion} but no migrate(old, fromVersion) method`);
    }
    let initial: unknown;
    try {
      initial = instance.initial();
      if (!isPlainObject(initial)) throw new TypeError(`it returned ${initial === null ? "null" : Array.isArray(initial) ? "an array" : typeof initial}`);
      stringifyJson(initial, "initial()");
    } catch (err) {
      throw new ConfigError("BAD_TWIN_CLASS", `twin class ${name}: initial() must return a plain JSON object, but ${(err as Error).message}`);
    }
    this.kinds.set(kind, { kind, twinClass, instance, stateVersion, placement });
  }

  /** The entry of `kind`, or undefined. */
  find(kind: string): KindEntry | undefined {
    return this.kinds.get(kind);
  }

  /** The entry of `kind`. @throws UnknownKindError naming the known kinds. */
  get(kind: string): KindEntry {
    const entry = this.kinds.get(kind);
    if (entry === undefined) throw new UnknownKindError(kind, this.kindNames());
    return entry;
  }

  /** The registered kind names, sorted. */
  kindNames(): string[] {
    return [...this.kinds.keys()].sort();
  }
}
