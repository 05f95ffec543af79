import { type ChildProcess, spawn } from "node:child_process";
import { CLI_MAIN, cleanEnv } from "./node-process.js";

/** How a `twinmesh` command ended. */
export interface CliResult {
  /** The exit code, or null when a signal ended it. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options of {@link CliProcess.spawn} and {@link runCli}. */
export interface CliOptions {
  /** Environment added to this process's (TWINMESH_* variables are not inherited). */
  readonly env?: Readonly<Record<string, string>>;
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  /** Killed (SIGKILL) after this long; the result then says so. @defaultValue 20_000 */
  readonly timeoutMs?: number;
  /** The `twinmesh` entry point to run (an installed copy's, say). @defaultValue this build's `dist/cli/main.js` */
  readonly cliMain?: string;
  /** Working directory. @defaultValue this process's */
  readonly cwd?: string;
}

/**
 * One `twinmesh …` command as a child process (`node dist/cli/main.js …`), with its output
 * collected. Use {@link runCli} for commands that end by themselves.
 */
export class CliProcess {
  /** Resolves when the process has exited. Never rejects. */
  readonly exited: Promise<CliResult>;
  private out = "";
  private err = "";

  private constructor(
    private readonly child: ChildProcess,
    readonly args: readonly string[],
    timeoutMs: number,
  ) {
    child.stdout?.on("data", (chunk: Buffer) => {
      this.out += chunk.toString("utf8");
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      this.err += chunk.toString("utf8");
    });
    const timer = setTimeout(() => {
      this.err += `\n[harness] killed after ${timeoutMs} ms\n`;
      child.kill("SIGKILL");
    }, timeoutMs);
    this.exited = new Promise((resolve) => {
      // "close" comes after the output streams ended, so stdout and stderr are complete.
      child.once("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal, stdout: this.out, stderr: this.err });
      });
      child.once("error", (e) => {
        clearTimeout(timer);
        resolve({ code: null, signal: null, stdout: this.out, stderr: `${this.err}\n[harness] could not run: ${e.message}\n` });
      });
    });
  }

  /** Starts `twinmesh <args>`. */
  static spawn(args: readonly string[], options: CliOptions = {}): CliProcess {
    const child = spawn(process.execPath, [options.cliMain ?? CLI_MAIN, ...args], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...cleanEnv(), ...options.env },
      cwd: options.cwd,
    });
    child.stdin?.end(options.input ?? "");
    return new CliProcess(child, args, options.timeoutMs ?? 20_000);
  }

  /** What it printed on stdout so far. */
  stdout(): string {
    return this.out;
  }

  /** What it printed on stderr so far. */
  stderr(): string {
    return this.err;
  }

  /** Sends a signal (e.g. SIGINT, as Ctrl-C does) and waits for the exit. */
  async signal(signal: NodeJS.Signals): Promise<CliResult> {
    this.child.kill(signal);
    return this.exited;
  }

  /** Kills it if it still runs; for `afterEach`. */
  async dispose(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }
}

/** Runs `twinmesh <args>` to its end. */
export function runCli(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  return CliProcess.spawn(args, options).exited;
}
