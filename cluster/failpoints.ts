import { writeSync } from "node:fs";

/**
 * Failpoints: named places in the cluster code where a test makes a node freeze at the worst
 * moment of a race it cannot time from outside (as TiKV's and etcd's failpoints do). Off unless
 * the node's environment names them, comma-separated, in `TWINMESH_FAILPOINTS`; nothing in a
 * deployment sets it. Each fires once per process.
 */
export type Failpoint =
  /**
   * A node taking partitions has read where their copies stand and is about to claim them: it
   * freezes (SIGSTOP) before it claims or begins anything, so the others take the partitions
   * meanwhile and it resumes with what it read before.
   */
  "freeze-before-claim";

const enabled = new Set(
  (process.env.TWINMESH_FAILPOINTS ?? "")
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== ""),
);
const fired = new Set<Failpoint>();

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
