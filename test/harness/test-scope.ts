import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * What one test owns: temp directories and things to stop. Everything registered is released
 * after the test, last registered first, whether the test passed or not.
 */
export interface TestScope {
  /** A fresh, empty temp directory, removed after the test. */
  tempDir(label?: string): string;
  /** Runs `cleanup` after the test (in reverse order of registration), told whether the test failed. */
  defer(cleanup: (failed: boolean) => unknown): void;
}

/**
 * Registers an `afterEach` in the calling `describe` that releases what each test registered,
 * and returns the scope the tests register with.
 *
 * @example
 * describe("publish", () => {
 *   const t = useTestScope();
 *   it("…", async () => { const node = await startNode(t); … });
 * });
 */
export function useTestScope(): TestScope {
  let cleanups: ((failed: boolean) => unknown)[] = [];
  afterEach(async function (this: Mocha.Context) {
    const failed = this.currentTest?.state === "failed";
    const pending = cleanups.reverse();
    cleanups = [];
    const failures: unknown[] = [];
    for (const cleanup of pending) {
      try {
        await cleanup(failed);
      } catch (err) {
        failures.push(err);
      }
    }
    if (failures.length > 0) throw failures[0];
  });
  return {
    tempDir(label = "test") {
      const dir = mkdtempSync(join(tmpdir(), `twinmesh-${label}-`));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      return dir;
    },
    defer(cleanup) {
      cleanups.push(cleanup);
    },
  };
}
