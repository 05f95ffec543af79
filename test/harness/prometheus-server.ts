import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { unmet } from "./requirement.js";
import type { TestScope } from "./test-scope.js";
import { waitFor } from "./wait-for.js";

/** Debian's `prometheus` package puts the server here (and on PATH). */
const BINARY = "prometheus";

/** True when the `prometheus` server binary can be run. */
export function prometheusInstalled(): boolean {
  try {
    execFileSync(BINARY, ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Skips the calling test when `installed` is false (fails it under CI): see {@link unmet}. */
export function requireTool(context: Mocha.Context, installed: boolean, what: string, install: string): void {
  if (!installed) unmet(context, `${what} is not installed (${install})`);
}

/** One result of an instant query: the series' labels and its value. */
export interface QuerySample {
  readonly metric: Readonly<Record<string, string>>;
  readonly value: number;
}

/**
 * A real Prometheus server as a child process, scraping `targets` every `scrapeIntervalS`, with
 * its TSDB in a temp dir of the test; stopped after the test. Talk to it through {@link query}.
 */
export class PrometheusServer {
  private output = "";

  private constructor(
    child: ChildProcess,
    /** `127.0.0.1:<port>` of its web API. */
    readonly address: string,
  ) {
    const append = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString("utf8")).slice(-200_000);
    };
    child.stdout?.on("data", append);
    child.stderr?.on("data", append);
  }

  /** Writes the config, starts the server on `port`, and waits until it answers ready. */
  static async start(t: TestScope, options: { targets: readonly string[]; port: number; scrapeIntervalS?: number }): Promise<PrometheusServer> {
    const dir = t.tempDir("prometheus");
    const interval = `${options.scrapeIntervalS ?? 1}s`;
    const config = join(dir, "prometheus.yml");
    writeFileSync(
      config,
      [
        "global:",
        `  scrape_interval: ${interval}`,
        `  scrape_timeout: ${interval}`,
        "scrape_configs:",
        "  - job_name: twinmesh",
        "    static_configs:",
        `      - targets: [${options.targets.map((target) => `"${target}"`).join(", ")}]`,
        "",
      ].join("\n"),
    );
    const address = `127.0.0.1:${options.port}`;
    const child = spawn(
      BINARY,
      [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=${address}`, "--log.level=warn"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const server = new PrometheusServer(child, address);
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    t.defer(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    });
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`prometheus exited (code ${child.exitCode}): ${server.output}`);
        return (await fetch(`http://${address}/-/ready`).catch(() => undefined))?.status === 200;
      },
      { timeoutMs: 20_000, what: "prometheus to answer /-/ready" },
    );
    return server;
  }

  /** An instant query through `/api/v1/query`. @throws Error when Prometheus answers an error */
  async query(promql: string): Promise<QuerySample[]> {
    const res = await fetch(`http://${this.address}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = (await res.json()) as { status: string; error?: string; data?: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    if (body.status !== "success") throw new Error(`query ${promql} failed: ${body.error ?? res.status}`);
    return (body.data?.result ?? []).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  }

  /** The scrape targets' health, as `/api/v1/targets` reports it (`up`, `down`, `unknown`). */
  async targetHealth(): Promise<string[]> {
    const res = await fetch(`http://${this.address}/api/v1/targets`);
    const body = (await res.json()) as { data: { activeTargets: { health: string; lastError: string }[] } };
    return body.data.activeTargets.map((target) => (target.lastError === "" ? target.health : `${target.health}: ${target.lastError}`));
  }

  /** What the server printed (for a failure report). */
  log(): string {
    return this.output;
  }
}
