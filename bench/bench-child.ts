import { type ChildProcess, spawn } from "node:child_process";

/**
 * A child process of the bench (a node, the load generator, a ceiling). Every child gets an IPC
 * channel, so it can exit when the bench dies, and is registered so that the bench kills it on
 * any exit path. Output is kept as a bounded tail for error messages.
 */

const TAIL_LINES = 40;
const live = new Set<BenchChild>();

/** Kills every child still running (SIGKILL). Safe to call from an `exit` handler. */
export function killAllChildren(): void {
  for (const child of live) child.kill("SIGKILL");
}

/** Options for {@link BenchChild.spawn}. */
export interface BenchChildOptions {
  /** Name in messages, e.g. `node-wal`. */
  readonly name: string;
  /** Arguments for node itself, before the script (e.g. `--cpu-prof`). */
  readonly nodeArgs?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
}

/** A running child process. */
export class BenchChild {
  /** `performance.now()` at spawn. */
  readonly spawnedAt: number;
  /** Wall-clock time at spawn (epoch ms, fractional). */
  readonly spawnedAtWallMs: number;
  private readonly tailLines: string[] = [];
  private readonly lineWaiters: ((line: string) => void)[] = [];
  private readonly replies = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private readonly messageWaiters: ((msg: unknown) => void)[] = [];
  private nextId = 1;
  private exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly name: string,
    private readonly proc: ChildProcess,
  ) {
    this.spawnedAt = performance.now();
    this.spawnedAtWallMs = performance.timeOrigin + this.spawnedAt;
    live.add(this);
    for (const stream of [proc.stdout, proc.stderr]) {
      let partial = "";
      stream?.setEncoding("utf8");
      stream?.on("data", (chunk: string) => {
        const lines = (partial + chunk).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) this.onLine(line);
      });
    }
    proc.on("message", (msg: unknown) => this.onMessage(msg));
    this.exit = new Promise((resolve) => {
      proc.on("exit", (code, signal) => {
        this.exited = { code, signal };
        live.delete(this);
        const err = new Error(`${this.name} exited (code ${code}, signal ${signal}) while a request was pending; its last output:\n${this.tail()}`);
        for (const waiter of this.replies.values()) waiter.reject(err);
        this.replies.clear();
        resolve({ code, signal });
      });
    });
    proc.on("error", (err) => this.onLine(`[spawn error] ${err.message}`));
  }

  /** Starts `script` under this node binary with an IPC channel. */
  static spawn(script: string, args: readonly string[], options: BenchChildOptions): BenchChild {
    const proc = spawn(process.execPath, [...(options.nodeArgs ?? []), script, ...args], {
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      // Structured clone keeps NaN and Infinity (an unanswered batch's latency), which JSON would turn into null.
      serialization: "advanced",
      env: { ...process.env, ...options.env },
    });
    return new BenchChild(options.name, proc);
  }

  /** The process id. */
  get pid(): number {
    return this.proc.pid ?? -1;
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.exited === undefined;
  }

  private onLine(line: string): void {
    this.tailLines.push(line);
    if (this.tailLines.length > TAIL_LINES) this.tailLines.shift();
    for (const waiter of this.lineWaiters.splice(0)) waiter(line);
  }

  private onMessage(msg: unknown): void {
    const reply = msg as { id?: unknown; ok?: unknown; result?: unknown; error?: unknown };
    if (typeof reply.id === "number" && typeof reply.ok === "boolean") {
      const waiter = this.replies.get(reply.id);
      if (waiter === undefined) return;
      this.replies.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new Error(`${this.name}: ${String(reply.error)}`));
      return;
    }
    for (const waiter of this.messageWaiters.splice(0)) waiter(msg);
  }

  /** The last lines the child wrote (stdout and stderr). */
  tail(): string {
    return this.tailLines.join("\n");
  }

  /**
   * Waits for an output line matching `pattern`; returns the match and when it came.
   * @throws Error after `timeoutMs` or when the child exits first, with its last output.
   */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<{ match: RegExpMatchArray; at: number }> {
    for (const line of this.tailLines) {
      const match = line.match(pattern);
      if (match) return Promise.resolve({ match, at: performance.now() });
    }
    return this.waitUntil(timeoutMs, `a line matching ${pattern}`, (done, settled) => {
      const listen = (line: string): void => {
        if (settled()) return;
        const match = line.match(pattern);
        if (match) done({ match, at: performance.now() });
        else this.lineWaiters.push(listen);
      };
      this.lineWaiters.push(listen);
    });
  }

  /** Waits for the next IPC message that is not a reply (e.g. a ready message). */
  waitForMessage<T>(timeoutMs: number, what: string): Promise<T> {
    return this.waitUntil(timeoutMs, what, (done) => this.messageWaiters.push((msg) => done(msg as T)));
  }

  private waitUntil<T>(timeoutMs: number, what: string, arm: (done: (value: T) => void, settled: () => boolean) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(
        () => finish(new Error(`${this.name} did not produce ${what} within ${timeoutMs} ms; its last output:\n${this.tail()}`)),
        timeoutMs,
      );
      const finish = (result: T | Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (result instanceof Error) reject(result);
        else resolve(result);
      };
      void this.exit.then(({ code, signal }) =>
        finish(new Error(`${this.name} exited (code ${code}, signal ${signal}) before ${what}; its last output:\n${this.tail()}`)),
      );
      arm(
        (value) => finish(value),
        () => settled,
      );
    });
  }

  /**
   * Sends a JSON request over IPC and waits for the reply of the same id.
   * @throws Error when the child answers with an error, exits, or takes longer than `timeoutMs`.
   */
  request<T>(message: object, timeoutMs: number): Promise<T> {
    if (!this.running) return Promise.reject(new Error(`${this.name} is not running`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.replies.delete(id);
        reject(new Error(`${this.name} did not answer ${JSON.stringify(message).slice(0, 120)} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.replies.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.proc.send({ ...message, id });
    });
  }

  /** Sends a signal; a no-op when the child has exited. */
  kill(signal: NodeJS.Signals): void {
    if (this.running) this.proc.kill(signal);
  }

  /** Resolves when the child has exited, or after `timeoutMs` with `undefined`. */
  async waitExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs);
    });
    try {
      return await Promise.race([this.exit, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * SIGTERM and closing the IPC channel, then SIGKILL if it has not exited after `graceMs`.
   * Resolves when it is gone. The channel is closed too because a child that listens for
   * `disconnect` keeps its event loop alive while the channel is open, and would never exit.
   */
  async stop(graceMs: number): Promise<void> {
    if (!this.running) return;
    this.kill("SIGTERM");
    if (this.proc.connected) this.proc.disconnect();
    if ((await this.waitExit(graceMs)) !== undefined) return;
    this.kill("SIGKILL");
    await this.waitExit(5_000);
  }
}
