import type { JsonObject } from "../util/json.js";

/**
 * One reading from a data source, as a twin's `onTelemetry` receives it.
 * Telemetry objects are read-only: a handler keeps what it needs in its state.
 */
export interface Telemetry {
  /** The data source; in v1 it is also the twin's id. */
  readonly sourceId: string;
  /** The source's sequence number; 0 for unsequenced events. */
  readonly seq: number;
  /** When the reading was taken (the node's receive time when the source sent none). */
  readonly time: Date;
  /** Numeric readings by channel name; always finite numbers. */
  readonly channels: Readonly<Record<string, number>>;
  /** Free-form attributes sent with the event; `{}` when none. */
  readonly attributes: Readonly<JsonObject>;
}
