import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { cleanEnv } from "./node-process.js";

const run = promisify(execFile);

/**
 * Module loader hooks, run in the loader thread of the traced process: every module resolved
 * (ESM or, through `import`, CommonJS) is appended to the file named by TWINMESH_TRACE_FILE.
 */
const HOOKS = `
import { appendFileSync } from "node:fs";
export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  appendFileSync(process.env.TWINMESH_TRACE_FILE, resolved.url + "\\n");
  return resolved;
}`;
const REGISTER = `import { register } from "node:module"; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(HOOKS)}`)});`;

/** What {@link traceModules} saw. */
export interface ModuleTrace {
  /** Every module URL the process resolved, in order, without repeats. */
  readonly urls: readonly string[];
  /** What the process printed. */
  readonly stdout: string;
}

/**
 * Runs `node <args>` in a child process and returns every module it resolved through the ESM
 * loader. On Node 20 the hooks do not see `require()` calls made inside CommonJS modules, so a
 * test that must rule out a CommonJS package or a native addon also asks the child for its
 * `require.cache` and `process.report` (see {@link LOADED_MODULES_SCRIPT}).
 */
export async function traceModules(args: readonly string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<ModuleTrace> {
  const dir = await mkdtemp(join(tmpdir(), "twinmesh-trace-"));
  const file = join(dir, "modules.txt");
  try {
    const { stdout } = await run(process.execPath, ["--import", `data:text/javascript,${encodeURIComponent(REGISTER)}`, ...args], {
      cwd: options.cwd,
      env: { ...cleanEnv(), TWINMESH_TRACE_FILE: file },
      timeout: options.timeoutMs ?? 20_000,
    });
    const text = await readFile(file, "utf8").catch(() => "");
    return { urls: [...new Set(text.split("\n").filter((l) => l !== ""))], stdout };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * An ESM snippet that prints, as one JSON line, the CommonJS modules in `require.cache` and the
 * native addons (`.node` shared objects) the process has loaded.
 */
export const LOADED_MODULES_SCRIPT = `
const { createRequire } = await import("node:module");
const cjs = Object.keys(createRequire(import.meta.url).cache);
const native = process.report.getReport().sharedObjects.filter((s) => s.endsWith(".node"));
console.log(JSON.stringify({ cjs, native }));`;
