import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** The compiled tree this file runs from (`dist/`). */
const DIST = fileURLToPath(new URL("../..", import.meta.url));
/** `dist/cli/main.js`, the `twinmesh` command. */
export const CLI_MAIN = join(DIST, "cli", "main.js");
/** `dist/twins/index.js`, the example twin kinds. */
export const EXAMPLE_TWINS = join(DIST, "twins", "index.js");

/** Output kept per process; older output is dropped (the end of a log says the most). */
const MAX_OUTPUT_CHARS = 1_000_000;
const READY_LINE = /^twinmesh node (\S+) serving on (\S+) /m;
const METRICS_LINE = /^twinmesh node \S+ metrics on http:\/\/(\S+)\/metrics$/m;

/** Options of {@link NodeProcess.start}; every field is optional. */
export interface NodeProcessOptions {
  /** Twin modules (`--twins`). @defaultValue the example twins */
  readonly twins?: readonly string[];
  /** Data directory. @defaultValue a new temp dir, removed once the process has exited */
  readonly dataDir?: string;
  /** @defaultValue `"local"` */
  readonly nodeId?: string;
  /** @defaultValue 0 (any free port) */
  readonly port?: number;
  /** @defaultValue `"warn"` */
  readonly logLevel?: string;
  /** More `twinmesh start` arguments. */
  readonly args?: readonly string[];
  /** Environment added to this process's (TWINMESH_* variables are not inherited). */
  readonly env?: Readonly<Record<string, string>>;
  /** @defaultValue 20_000 */
  readonly readyTimeoutMs?: number;
  /** The `twinmesh` entry point to run (an installed copy's, say). @defaultValue this build's `dist/cli/main.js` */
  readonly cliMain?: string;
  /** Working directory, against which relative `twins` and `dataDir` resolve. @defaultValue this process's */
  readonly cwd?: string;
}

/**
 * One `twinmesh start` node as a child process on port 0: `start` resolves once the node printed
 * its ready line, with the address from it. The child has an IPC channel, and the node stops when
 * the channel closes, so a test process that dies does not leave nodes behind.
 *
 * @example
 * const node = await NodeProcess.start();
 * // … talk to node.address
 * await node.stop(); // SIGTERM: drains and exits 0
 */
export class NodeProcess {
  /** The exit code, or null when a signal killed the process. Never rejects. */
  readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;
  private text = "";

  private constructor(
    private readonly child: ChildProcess,
    /** The node's data directory. */
    readonly dataDir: string,
    private readonly ownsDataDir: boolean,
    readonly nodeId: string,
  ) {
    const append = (chunk: Buffer): void => {
      this.text += chunk.toString("utf8");
      if (this.text.length > MAX_OUTPUT_CHARS) this.text = this.text.slice(-MAX_OUTPUT_CHARS);
    };
    child.stdout?.on("data", append);
    child.stderr?.on("data", append);
    this.exited = new Promise<number | null>((resolve) => {
      // "close" comes after the output streams ended, so the output read after it is complete.
      child.once("close", (code, signal) => {
        this.exitCode = code;
        this.text += `\n[harness] the node exited (code ${code}, signal ${signal})\n`;
        resolve(code);
      });
      child.once("error", (err) => {
        this.text += `\n[harness] could not run the node: ${err.message}\n`;
        this.exitCode = null;
        resolve(null);
      });
    }).then(async (code) => {
      if (this.ownsDataDir) await rm(this.dataDir, { recursive: true, force: true });
      return code;
    });
  }

  /** `host:port` from the ready line. */
  address = "";

  /** `host:port` of the node's metrics endpoint, from its "metrics on" line; empty when metrics are off. */
  get metricsAddress(): string {
    return METRICS_LINE.exec(this.text)?.[1] ?? "";
  }

  /**
   * Starts a node and waits for its ready line.
   * @throws Error with the node's output when it exits or stays silent for `readyTimeoutMs`
   */
  static async start(options: NodeProcessOptions = {}): Promise<NodeProcess> {
    const ownsDataDir = options.dataDir === undefined;
    const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), "twinmesh-node-")));
    const nodeId = options.nodeId ?? "local";
    const args = [
      options.cliMain ?? CLI_MAIN,
      "start",
      ...(options.twins ?? [EXAMPLE_TWINS]).flatMap((t) => ["--twins", t]),
      "--data",
      dataDir,
      "--port",
      String(options.port ?? 0),
      "--node-id",
      nodeId,
      "--log-level",
      options.logLevel ?? process.env.TWINMESH_TEST_LOG_LEVEL ?? "warn",
      ...(options.args ?? []),
    ];
    const child = spawn(process.execPath, ["--enable-source-maps", ...args], {
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      env: { ...cleanEnv(), ...options.env },
      cwd: options.cwd,
    });
    const node = new NodeProcess(child, dataDir, ownsDataDir, nodeId);
    const timeoutMs = options.readyTimeoutMs ?? 20_000;
    try {
      node.address = await node.waitForReady(timeoutMs);
    } catch (err) {
      await node.kill();
      throw err;
    }
    return node;
  }

  private waitForReady(timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`the node printed no ready line within ${timeoutMs} ms; its output:\n${this.text}`)), timeoutMs);
      const onData = (): void => {
        const match = READY_LINE.exec(this.text);
        if (match?.[2] !== undefined) done(undefined, match[2]);
      };
      const onExit = (code: number | null): void => done(new Error(`the node exited (code ${code}) before it was ready; its output:\n${this.text}`));
      const done = (err: Error | undefined, address?: string): void => {
        clearTimeout(timer);
        this.child.stdout?.off("data", onData);
        this.child.off("exit", onExit);
        if (err !== undefined) reject(err);
        else resolve(address as string);
      };
      this.child.stdout?.on("data", onData);
      this.child.once("exit", onExit);
      onData();
    });
  }

  /** Everything the node printed (stdout and stderr, interleaved as received). */
  output(): string {
    return this.text;
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.exitCode === undefined;
  }

  /**
   * Sends `signal` (SIGTERM: a graceful stop that drains and closes the store) and waits for the
   * exit. Idempotent once the process has exited. @returns the exit code
   */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    // The node closes its end of the IPC channel when it stops; closing it from here as well
    // would read as "the parent went away".
    if (this.running) this.child.kill(signal);
    return this.exited;
  }

  /** SIGSTOP: the process freezes (no heartbeats, no answers) without losing its connections. */
  pause(): void {
    if (this.running) this.child.kill("SIGSTOP");
  }

  /**
   * True while the process is stopped (by {@link pause}, or by a failpoint that stopped itself),
   * as Linux's `/proc/<pid>/stat` says; false once it exited or where `/proc` cannot be read.
   */
  get stopped(): boolean {
    if (!this.running || this.child.pid === undefined) return false;
    try {
      const stat = readFileSync(`/proc/${this.child.pid}/stat`, "utf8");
      // "pid (command) state …": the command may hold spaces and parentheses; the state follows the last ") ".
      return /^[tT]/.test(stat.slice(stat.lastIndexOf(") ") + 2));
    } catch {
      return false;
    }
  }

  /** SIGCONT: a paused process goes on where it stopped. */
  resume(): void {
    if (this.running) this.child.kill("SIGCONT");
  }

  /** SIGKILL: a crash, not a shutdown. @returns null (killed by a signal) or the code it had exited with */
  kill(): Promise<number | null> {
    return this.stop("SIGKILL");
  }

  /** Prints the node's output to stderr when the current mocha test failed; call it in `afterEach`. */
  reportIfFailed(context: Mocha.Context, label?: string): void {
    if (context.currentTest?.state === "failed") this.report(label);
  }

  /** Prints everything the node wrote. */
  report(label = `node ${this.nodeId} (${this.address || "not ready"})`): void {
    process.stderr.write(`\n----- output of ${label} -----\n${this.text}\n----- end of ${label} -----\n`);
  }
}

/**
 * This process's environment without TWINMESH_* and OTEL_* settings, which would change the node or the CLI
 * under test, and with the metrics endpoint off (`TWINMESH_METRICS_PORT=0`): nodes of tests running
 * side by side would all ask for port 9464. A test that scrapes passes `--metrics-port <free port>`.
 */
export function cleanEnv(): NodeJS.ProcessEnv {
  return {
    ...Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("TWINMESH_") && !key.startsWith("OTEL_"))),
    TWINMESH_METRICS_PORT: "0",
  };
}
