import { type ChildProcess, spawn } from "node:child_process";
import { CLI_MAIN, cleanEnv } from "./node-process.js";
import type { TestScope } from "./test-scope.js";

const READY_LINE = /^twinmesh node (\S+) serving on (\S+) /m;

/**
 * One `twinmesh start` node run the way a service manager (systemd, a container runtime) runs it:
 * a plain child process with stdout and stderr piped and no IPC channel, stopped by a signal.
 * Registered with the test scope, which SIGKILLs it if the test left it running.
 */
export class SupervisedNode {
  /** The exit code, or the signal that ended the process. Never rejects. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private text = "";
  private done = false;
  /** `host:port` from the ready line. */
  address = "";

  private constructor(private readonly child: ChildProcess) {
    const append = (chunk: Buffer): void => {
      this.text += chunk.toString("utf8");
    };
    child.stdout?.on("data", append);
    child.stderr?.on("data", append);
    this.exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => {
        this.done = true;
        resolve({ code, signal });
      });
    });
  }

  /** Starts `twinmesh start --twins <twins> --data <dataDir> --port 0` and waits for its ready line. */
  static async start(t: TestScope, twins: string, dataDir: string, args: readonly string[] = []): Promise<SupervisedNode> {
    const child = spawn(
      process.execPath,
      ["--enable-source-maps", CLI_MAIN, "start", "--twins", twins, "--data", dataDir, "--port", "0", "--log-level", "warn", ...args],
      { stdio: ["ignore", "pipe", "pipe"], env: cleanEnv() },
    );
    const node = new SupervisedNode(child);
    t.defer(async () => {
      if (!node.done) child.kill("SIGKILL");
      await node.exited;
    });
    node.address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ready line within 20 s; output:\n${node.text}`)), 20_000);
      const onData = (): void => {
        const match = READY_LINE.exec(node.text);
        if (match?.[2] === undefined) return;
        clearTimeout(timer);
        child.stdout?.off("data", onData);
        resolve(match[2]);
      };
      child.stdout?.on("data", onData);
      void node.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`the node exited (code ${code}, signal ${signal}) before it was ready; output:\n${node.text}`));
      });
    });
    return node;
  }

  /** Sends `signal`. */
  signal(signal: NodeJS.Signals): void {
    if (!this.done) this.child.kill(signal);
  }

  /** Everything the node printed. */
  output(): string {
    return this.text;
  }
}
