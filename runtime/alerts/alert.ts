import type { PartitionId } from "../partition/partitioning.js";
import type { AlertSeverity } from "../twin/twin.js";

/** The lifecycle of an alert. */
export const AlertState = { OPEN: "OPEN", ACKNOWLEDGED: "ACKNOWLEDGED", RESOLVED: "RESOLVED" } as const;
/** One of `"OPEN"`, `"ACKNOWLEDGED"`, `"RESOLVED"`. */
export type AlertState = (typeof AlertState)[keyof typeof AlertState];

/**
 * One occurrence of a condition a twin raised. Raising it again while it is open or
 * acknowledged bumps `count`; once resolved, the next raise opens a new alert with a new id.
 */
export interface Alert {
  /** `kind/twinId/code@version`: unique, stable, and names the twin it belongs to. */
  readonly id: string;
  readonly kind: string;
  readonly twinId: string;
  readonly code: string;
  readonly severity: AlertSeverity;
  readonly message: string;
  readonly state: AlertState;
  /** Epoch ms. */
  readonly raisedAt: number;
  /** Epoch ms of the last change (including count bumps). */
  readonly updatedAt: number;
  /** How many times it was raised while open. */
  readonly count: number;
}

/** An entry of the alert change log: the alert as it was after the change, and its position. */
export interface AlertChange {
  /** The partition of the alert's twin, whose change log holds the change. */
  readonly partition: PartitionId;
  /**
   * Position in its partition's change log (1, 2, 3, …; never reused there), the basis of watch
   * cursors. A change delivered again (after a failover) carries the same alert id and seq.
   */
  readonly seq: number;
  readonly alert: Alert;
}

/** Makes an alert id. The twin id is escaped so the id stays unambiguous. */
export function alertId(kind: string, twinId: string, code: string, version: number): string {
  return `${kind}/${encodeURIComponent(twinId)}/${code}@${version}`;
}
