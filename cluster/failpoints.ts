import { writeSync } from "node:fs";
import type { Logger } from "../runtime/index.js";

/**
 * Failpoints: named places in the cluster code where a test makes a node freeze at the worst
 * moment of a race it cannot time from outside (as TiKV's and etcd's failpoints do). Off unless
 * the node's environment names them, comma-separated, in `TWINMESH_FAILPOINTS`; nothing in a
 * deployment sets it. Each fires once per process.
 */
export const FAILPOINTS = {
  /**
   * A node taking partitions has read where their copies stand and is about to claim them: it
   * freezes (SIGSTOP) before it claims or begins anything, so the others take the partitions
   * meanwhile and it resumes with what it read before.
   */
  freezeBeforeClaim: "freeze-before-claim",
} as const;

export type Failpoint = (typeof FAILPOINTS)[keyof typeof FAILPOINTS];

const known = new Set<string>(Object.values(FAILPOINTS));
const named = (process.env.TWINMESH_FAILPOINTS ?? "")
  .split(",")
  .map((name) => name.trim())
  .filter((name) => name !== "");
const enabled = new Set(named.filter((name) => known.has(name)));
const fired = new Set<Failpoint>();

/** Says, once at a node's start, which failpoints its environment enables (and which names it does not know). */
export function reportFailpoints(log: Logger): void {
  const unknown = named.filter((name) => !known.has(name));
  if (unknown.length > 0) log.warn({ unknown, known: [...known] }, "TWINMESH_FAILPOINTS names failpoints this release does not have; ignored");
  if (enabled.size > 0)
    log.warn({ failpoints: [...enabled] }, "failpoints enabled: this node freezes itself at them (a test setting; never set it in a deployment)");
}

/**
 * Freezes this process (SIGSTOP, as a stalled VM does) at `failpoint` when the environment
 * enables it and it has not fired yet, after writing `failpoint <name>: frozen` to stderr (at
 * once, so the test sees it before the freeze). The process goes on at SIGCONT.
 */
export function freezeAt(failpoint: Failpoint): void {
  if (!enabled.has(failpoint) || fired.has(failpoint)) return;
  fired.add(failpoint);
  writeSync(2, `failpoint ${failpoint}: frozen until SIGCONT\n`);
  process.kill(process.pid, "SIGSTOP");
}
