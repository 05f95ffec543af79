import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { unmet } from "./requirement.js";
import type { TestScope } from "./test-scope.js";

/**
 * Mounts a tmpfs of `size` (`"24m"`) at a new directory, unmounted and removed when the test ends
 * (register it before anything that writes there, so that stops first). A real full disk needs a
 * small filesystem of the test's own, which needs root on Linux: elsewhere the test is skipped
 * with the reason, and under CI (which runs as root) a tmpfs that cannot be mounted fails it
 * ({@link unmet}), so a full-disk test never turns into a skip there.
 */
export function mountTmpfs(t: TestScope, context: Mocha.Context, size: string): string {
  let problem: string | undefined;
  let mountPoint: string | undefined;
  if (process.platform !== "linux" || process.getuid?.() !== 0) problem = `needs root on Linux (this is ${process.platform}, uid ${process.getuid?.()})`;
  else {
    mountPoint = mkdtempSync(join(tmpdir(), "twinmesh-tmpfs-"));
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", mountPoint], { stdio: "pipe" });
    } catch (err) {
      rmSync(mountPoint, { recursive: true, force: true });
      mountPoint = undefined;
      problem = `mount -t tmpfs failed: ${(err as Error).message}`;
    }
  }
  if (mountPoint === undefined) unmet(context, `a full-disk test needs a tmpfs of its own, which cannot be mounted: ${problem}`);
  const mounted = mountPoint;
  t.defer(() => {
    execFileSync("umount", [mounted]);
    rmSync(mounted, { recursive: true, force: true });
  });
  return mounted;
}

/** Fills the filesystem at `mountPoint` with one file until `leftBytes` remain free; returns the file's path (remove it to free the space). */
export function fillLeaving(mountPoint: string, leftBytes: number): string {
  const fs = statfsSync(mountPoint);
  const filler = join(mountPoint, "filler");
  writeFileSync(filler, Buffer.alloc(Number(fs.bavail * fs.bsize) - leftBytes));
  return filler;
}
