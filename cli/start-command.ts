import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError as CommanderArgError, Option } from "commander";
import type { PeerAddress } from "../cluster/peer-list.js";
import type { Durability, Logger } from "../runtime/index.js";
import { withCliConventions } from "./commands/client-command.js";
import { ignoreClosedStdout, printNotice } from "./output.js";

const DEMO_TWINS = fileURLToPath(new URL("../twins/index.js", import.meta.url));

/** A commander parser of a whole-number flag in `[min, max]`, naming the flag in its error. */
export function wholeNumber(name: string, min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      throw new CommanderArgError(`${name} must be a whole number ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`}, got "${value}"`);
    }
    return n;
  };
}

const DURATION_UNITS_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/** `90s`, `12h`, `7d` (units ms, s, m, h, d) in ms. */
function duration(name: string): (value: string) => number {
  return (value) => {
    const match = /^(\d+)(ms|s|m|h|d)$/.exec(value.trim());
    const ms = match === null ? Number.NaN : Number(match[1]) * DURATION_UNITS_MS[match[2] as keyof typeof DURATION_UNITS_MS];
    if (!Number.isSafeInteger(ms) || ms < 1) throw new CommanderArgError(`${name} must be a duration such as 500ms, 90s, 30m, 12h or 7d, got "${value}"`);
    return ms;
  };
}

interface StartOptions {
  twins: string[];
  data: string;
  host: string;
  port: number;
  metricsPort: number;
  metricsHost?: string;
  durability: Durability;
  maxActive?: number;
  deadLetterRetention?: number;
  maxDeadLetters?: number;
  resolvedAlertRetention?: number;
  alertLogRetention?: number;
  maxFilterCost?: number;
  cacheMb: number;
  heapBudgetMb: number;
  nodeId: string;
  peers: string;
  replicationFactor?: number;
  startupGraceMs: number;
  stuckAfterMs: number;
  partitions?: number;
  logLevel: string;
  logFormat?: "json" | "pretty";
  demo: boolean;
  simulate?: number;
  rate: number;
}

/** `twinmesh start`: runs one node until SIGINT/SIGTERM, then drains and exits. */
export function startCommand(): Command {
  return withCliConventions(new Command("start"))
    .description("start a node: load twin classes, open the data directory, serve gRPC")
    .addOption(new Option("--twins <module...>", "twin module(s) to load (.ts or .js); repeatable").env("TWINMESH_TWINS").default([]))
    .addOption(new Option("--data <dir>", "data directory (RocksDB)").env("TWINMESH_DATA").default("./data"))
    .addOption(new Option("--host <address>", "address to listen on").env("TWINMESH_HOST").default("127.0.0.1"))
    .addOption(
      new Option("--port <port>", "gRPC port (0 = any free port)")
        .env("TWINMESH_PORT")
        .default(7420)
        .argParser(wholeNumber("--port", 0, 65_535)),
    )
    .addOption(
      new Option("--metrics-port <port>", "port of the Prometheus endpoint GET /metrics (0 = no metrics endpoint)")
        .env("TWINMESH_METRICS_PORT")
        .default(9464)
        .argParser(wholeNumber("--metrics-port", 0, 65_535)),
    )
    .addOption(new Option("--metrics-host <address>", "address the metrics endpoint listens on (default: the --host address)").env("TWINMESH_METRICS_HOST"))
    .addOption(
      new Option("--durability <mode>", "wal: survives kill -9; fsync: survives power loss")
        .choices(["wal", "fsync"])
        .env("TWINMESH_DURABILITY")
        .default("wal"),
    )
    .addOption(
      new Option("--max-active <n>", "most twins kept in memory (default 100000)").env("TWINMESH_MAX_ACTIVE").argParser(wholeNumber("--max-active", 1)),
    )
    .addOption(
      new Option("--dead-letter-retention <duration>", "dead letters older than this are trimmed, e.g. 12h or 30d (default 7d)")
        .env("TWINMESH_DEAD_LETTER_RETENTION")
        .argParser(duration("--dead-letter-retention")),
    )
    .addOption(
      new Option("--max-dead-letters <n>", "most dead letters kept; the oldest beyond it are trimmed (default 100000)")
        .env("TWINMESH_MAX_DEAD_LETTERS")
        .argParser(wholeNumber("--max-dead-letters", 1)),
    )
    .addOption(
      new Option("--resolved-alert-retention <duration>", "resolved alerts are removed this long after they resolved (default 7d)")
        .env("TWINMESH_RESOLVED_ALERT_RETENTION")
        .argParser(duration("--resolved-alert-retention")),
    )
    .addOption(
      new Option(
        "--alert-log-retention <changes>",
        "alert changes kept for watchers (at least), over all the partitions this node owns; the busiest partition's oldest go first (default 100000)",
      )
        .env("TWINMESH_ALERT_LOG_RETENTION")
        .argParser(wholeNumber("--alert-log-retention", 1)),
    )
    .addOption(
      new Option(
        "--max-filter-cost <units>",
        "most a query filter may spend on one twin or alert: a unit per comprehension element, per 10 characters matches() reads (default 100000)",
      )
        .env("TWINMESH_MAX_FILTER_COST")
        .argParser(wholeNumber("--max-filter-cost", 1)),
    )
    .addOption(
      new Option("--cache-mb <MiB>", "RocksDB block cache (0: none); active twins are cached as objects, this serves the loads of the others")
        .env("TWINMESH_CACHE_MB")
        .default(16)
        .argParser(wholeNumber("--cache-mb", 0, 4095)),
    )
    .addOption(
      new Option(
        "--heap-budget-mb <MiB>",
        "JavaScript heap size to steer toward: past it, full collections come sooner (a target, not a limit; 0 leaves V8's policy)",
      )
        .env("TWINMESH_HEAP_BUDGET_MB")
        .default(192)
        .argParser(wholeNumber("--heap-budget-mb", 0, 1024 * 1024)),
    )
    .addOption(new Option("--node-id <id>", "this node's id").env("TWINMESH_NODE_ID").default("local"))
    .addOption(
      new Option(
        "--peers <list>",
        "the other nodes of a static cluster, as id@host:port,… (e.g. n2@127.0.0.1:7422,n3@127.0.0.1:7423); none: a one-node cluster",
      )
        .env("TWINMESH_PEERS")
        .default(""),
    )
    .addOption(
      new Option(
        "--startup-grace-ms <ms>",
        "after its start, how long a node taking a partition waits for every copy of it to answer, not just a majority, so a cluster restarted at once keeps writes acknowledged at LOCAL",
      )
        .env("TWINMESH_STARTUP_GRACE_MS")
        .default(10_000)
        .argParser(wholeNumber("--startup-grace-ms", 0, 3_600_000)),
    )
    .addOption(
      new Option(
        "--stuck-after-ms <ms>",
        "a partition this node should own and has not served for this long is stuck: the node logs it at error level with why, and `twinmesh status` reports the cluster degraded",
      )
        .env("TWINMESH_STUCK_AFTER_MS")
        .default(30_000)
        .argParser(wholeNumber("--stuck-after-ms", 1, 86_400_000)),
    )
    .addOption(
      new Option("--replication-factor <n>", "copies kept of each partition, capped at the cluster size (default 3)")
        .env("TWINMESH_REPLICATION_FACTOR")
        .argParser(wholeNumber("--replication-factor", 1, 64)),
    )
    .addOption(
      new Option("--partitions <n>", "partitions of a new data directory; fixed once it is created (default 256)")
        .env("TWINMESH_PARTITIONS")
        .argParser(wholeNumber("--partitions", 1, 65_536)),
    )
    .addOption(
      new Option("--log-level <level>", "pino log level")
        .choices(["trace", "debug", "info", "warn", "error", "fatal", "silent"])
        .env("TWINMESH_LOG_LEVEL")
        .default("info"),
    )
    .addOption(
      new Option("--log-format <format>", "log lines as JSON (for log shippers) or pretty text (default: pretty on a terminal, else json)")
        .choices(["json", "pretty"])
        .env("TWINMESH_LOG_FORMAT"),
    )
    .option("--demo", "load the example twins and run the device simulator against this node", false)
    .addOption(new Option("--simulate <sources>", "also run the device simulator with this many sources").argParser(wholeNumber("--simulate", 1)))
    .addOption(new Option("--rate <events/s>", "simulator events per second in total").default(200).argParser(wholeNumber("--rate", 1)))
    .action(async (opts: StartOptions, command: Command) => {
      const modules = typeof opts.twins === "string" ? [opts.twins] : [...opts.twins];
      if (opts.demo) modules.push(DEMO_TWINS);
      if (modules.length === 0) command.error("no twin classes to run: pass --twins <module> (or --demo for the example twins)");
      // Loaded here, not at the top: the client commands load no server code.
      const { parseNodeId, parsePeers } = await import("../cluster/index.js");
      let peers: PeerAddress[];
      try {
        peers = parsePeers(opts.peers, parseNodeId(opts.nodeId, "--node-id"));
      } catch (err) {
        command.error((err as Error).message);
      }
      await start(opts, modules, peers);
    });
}

async function start(opts: StartOptions, modules: readonly string[], peers: readonly PeerAddress[]): Promise<void> {
  // Loaded here, not at the top: the client commands load no server code (RocksDB, tsx, pino).
  const { createLogger } = await import("../runtime/index.js");
  const log = createLogger({ level: opts.logLevel, format: opts.logFormat });
  // Handlers go in before anything starts, so a signal at any point drains instead of killing.
  const stopRequested = stopSignal(log);
  ignoreClosedStdout();
  // The node's own modules load before the twin modules: loading those installs module hooks
  // (tsx, and "twinmesh" resolving to this copy), and every import after that goes through the
  // hooks' thread, which more than doubled the node's start time.
  const [{ HeapBudget, TwinmeshNode }, grpc, { runSimulator, SIMULATED_KINDS }, { loadTwinModules }] = await Promise.all([
    import("../server/index.js"),
    import("@grpc/grpc-js"),
    import("./simulator/index.js"),
    import("./twin-modules.js"),
  ]);
  const twins = await loadTwinModules(modules);
  // grpc-js writes its own errors to stderr (a failed bind adds "E No address added…" before our
  // one line): this process's log gets them instead, as debug entries.
  const grpcLog = log.child({ component: "grpc-js" });
  grpc.setLogger({ error: (...args: unknown[]) => grpcLog.debug({ text: args.map(String).join(" ") }, "grpc-js message") });
  const heapBudget = opts.heapBudgetMb > 0 ? HeapBudget.start(opts.heapBudgetMb * 1024 * 1024, log.child({ component: "heap" })) : undefined;
  const node = await TwinmeshNode.start({
    twins,
    dataDir: opts.data,
    host: opts.host,
    port: opts.port,
    durability: opts.durability,
    nodeId: opts.nodeId,
    hostOptions: {
      maxActive: opts.maxActive,
      deadLetterRetentionMs: opts.deadLetterRetention,
      maxDeadLetters: opts.maxDeadLetters,
      resolvedAlertRetentionMs: opts.resolvedAlertRetention,
      alertLogRetention: opts.alertLogRetention,
    },
    queryOptions: opts.maxFilterCost === undefined ? undefined : { maxFilterCost: opts.maxFilterCost },
    storeOptions: { cacheBytes: opts.cacheMb * 1024 * 1024 },
    partitions: opts.partitions,
    cluster: { peers, replicationFactor: opts.replicationFactor, startupGraceMs: opts.startupGraceMs, stuckAfterMs: opts.stuckAfterMs },
    // --metrics-port 0 turns the endpoint off (in the library API, port 0 picks a free port).
    metrics: opts.metricsPort === 0 ? undefined : { host: opts.metricsHost ?? opts.host, port: opts.metricsPort },
    log,
  });
  const kinds = twins.map((t) => t.kind).sort();
  log.info({ address: node.address, data: opts.data, durability: opts.durability, kinds }, "node serving");
  const unloaded = node.runtime.unloadedKinds;
  if (unloaded.length > 0) {
    printNotice(
      `warning: ${opts.data} holds twins of kinds this node does not load (${unloaded.join(", ")}): their events are rejected UNKNOWN_KIND and their timers wait; load their modules with --twins, or give these twins their own --data directory`,
    );
  }
  if (node.metricsAddress !== undefined) process.stdout.write(`twinmesh node ${opts.nodeId} metrics on http://${node.metricsAddress}/metrics\n`);
  // The one line a supervisor (or a test harness) waits for.
  process.stdout.write(`twinmesh node ${opts.nodeId} serving on ${node.address} (data ${opts.data}, ${opts.durability}, kinds ${kinds.join(", ")})\n`);

  const stopSimulator = new AbortController();
  const sources = opts.simulate ?? (opts.demo ? 50 : undefined);
  let simulation: Promise<unknown> | undefined;
  // Only the kinds this node runs: a user's own patient twin gets patients, and no vehicles it would reject.
  const simulated = kinds.filter((k): k is keyof typeof SIMULATED_KINDS => Object.hasOwn(SIMULATED_KINDS, k));
  if (sources !== undefined && simulated.length === 0) {
    printNotice(`not simulating: the simulator plays ${Object.keys(SIMULATED_KINDS).join(", ")}, and this node runs none of them`);
  } else if (sources !== undefined) {
    simulation = runSimulator({
      address: node.address,
      sources,
      kinds: simulated,
      ratePerSecond: opts.rate,
      signal: stopSimulator.signal,
      log: log.child({ component: "simulator" }),
    }).catch((err: unknown) => log.warn({ err }, "simulator stopped"));
    process.stdout.write(
      [
        `simulating ${sources} devices at ${opts.rate} events/s. Try, in another terminal:`,
        `  npx twinmesh get patient patient-1`,
        `  npx twinmesh query patient --filter 'state.ewma > 100.0' --order-by 'state.ewma desc'`,
        `  npx twinmesh alerts list --filter 'state == "OPEN"'`,
        `  npx twinmesh alerts watch`,
        "",
      ].join("\n"),
    );
  }

  await stopRequested;
  stopSimulator.abort();
  await simulation;
  await node.close();
  heapBudget?.close();
  log.flush();
}

/**
 * Resolves on SIGINT, SIGTERM, or, for a node started by a parent with an IPC channel (a test
 * harness), when that parent goes away. The listeners are removed afterwards: a "disconnect"
 * listener keeps the IPC channel, and so the process, alive.
 */
function stopSignal(log: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
      process.off("disconnect", onDisconnect);
      if (process.connected) process.disconnect();
      log.info({ signal }, "stopping");
      resolve();
    };
    const onInt = (): void => stop("SIGINT");
    const onTerm = (): void => stop("SIGTERM");
    const onDisconnect = (): void => stop("parent exited");
    process.once("SIGINT", onInt);
    process.once("SIGTERM", onTerm);
    if (process.connected) process.once("disconnect", onDisconnect);
  });
}
