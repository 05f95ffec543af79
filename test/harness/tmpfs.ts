import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestScope } from "./test-scope.js";

/**
 * Mounts a tmpfs of `size` (`"24m"`) at a new directory, unmounted and removed when the test ends
 * (register it before anything that writes there, so that stops first). A real full disk needs a
 * small filesystem of the test's own, which needs root on Linux: elsewhere the test is skipped,
 * but under `CI=true` (CI runs as root) a tmpfs that cannot be mounted fails it, so a full-disk
 * test never turns into a silent skip there.
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
  if (mountPoint === undefined) {
    if (process.env.CI === "true") assert.fail(`CI=true but a tmpfs cannot be mounted for a full-disk test: ${problem}`);
    context.skip();
  }
  const mounted = mountPoint;
  t.defer(() => {
    execFileSync("umount", [mounted]);
    rmSync(mounted, { recursive: true, force: true });
  });
  return mounted;
}
