import type { Histogram, Meter, ObservableResult } from "@opentelemetry/api";
import { PrometheusExporter } from "@opentelemetry/exporter-prometheus";
import { MeterProvider } from "@opentelemetry/sdk-metrics";
import type { ClusterMetricsView, ClusterNode } from "../../cluster/index.js";
import { ConfigError, type HostTimings, type Logger, type TwinRuntime } from "../../runtime/index.js";
import type { GrpcCallCounts } from "./grpc-call-counts.js";
import { MetricsEndpoint } from "./metrics-endpoint.js";

/** The default port of a node's Prometheus endpoint (the port registered for OpenTelemetry's Prometheus exporter). */
export const DEFAULT_METRICS_PORT = 9464;

/** Rejection reasons that mean "too much load, retry later": these events were shed. */
const SHED_REASONS: ReadonlySet<string> = new Set(["INGEST_QUEUE_FULL", "MAILBOX_FULL", "RATE_LIMITED"]);

/** Seconds: from a quick WAL append to a slow fsync under load. */
const COMMIT_SECONDS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** Seconds: a replica's round trip takes about a millisecond when the machine is idle; an answer gives up on its replicas after 5 s. */
const REPLICATION_SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Seconds: most turns take microseconds; an async handler may wait up to the turn timeout. */
const TURN_SECONDS_BUCKETS = [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1, 1, 10];
/** Events per commit group, up to the default `maxGroupEvents` and beyond. */
const BATCH_SIZE_BUCKETS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

/** Where a node serves its metrics. Every field is optional. */
export interface MetricsOptions {
  /** Address the endpoint listens on. @defaultValue the node's gRPC host */
  readonly host?: string;
  /** Port of `GET /metrics`; 0 picks a free one. @defaultValue {@link DEFAULT_METRICS_PORT} */
  readonly port?: number;
}

/** What {@link NodeMetrics} reads. */
export interface MetricSources {
  readonly runtime: TwinRuntime;
  readonly cluster?: ClusterNode;
  /** Finished gRPC calls, counted by the adapter. */
  readonly calls?: GrpcCallCounts;
}

/**
 * A node's OpenTelemetry metrics, served for Prometheus at `GET /metrics`. The one place that
 * knows OpenTelemetry: the host, the cluster and the gRPC adapter count in plain numbers, read
 * here by observable instruments when Prometheus scrapes, so the event path pays an increment and
 * no attribute set. Only commit durations and sizes, which need histograms, are recorded as they
 * happen (once per commit group, not per event). The names are a contract (README, "Metrics").
 *
 * @example
 * const metrics = await NodeMetrics.start({ runtime }, { host: "127.0.0.1", port: 9464 }, log);
 * // curl http://127.0.0.1:9464/metrics
 * await metrics.close();
 */
export class NodeMetrics {
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly provider: MeterProvider,
    private readonly endpoint: MetricsEndpoint,
    private readonly detach: () => void,
  ) {}

  /** `host:port` of the endpoint. */
  get address(): string {
    return this.endpoint.address;
  }

  /** Registers the instruments and starts serving. @throws ConfigError (BAD_OPTION, LISTEN_FAILED) */
  static async start(sources: MetricSources, options: Required<MetricsOptions>, log: Logger): Promise<NodeMetrics> {
    const { host, port } = options;
    if (!Number.isSafeInteger(port) || port < 0 || port > 65_535) {
      throw new ConfigError("BAD_OPTION", `the metrics port is ${port}; use a whole number from 1 to 65535, or 0 to turn metrics off`);
    }
    const reader = new PrometheusExporter({ preventServerStart: true });
    const provider = new MeterProvider({ readers: [reader] });
    const meter = provider.getMeter("twinmesh");
    const detach = register(meter, sources);
    try {
      const endpoint = await MetricsEndpoint.listen(reader, host, port, log);
      return new NodeMetrics(provider, endpoint, detach);
    } catch (err) {
      detach();
      await provider.shutdown();
      throw err;
    }
  }

  /** Stops serving and unhooks the host. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.detach();
      await this.endpoint.close();
      await this.provider.shutdown();
    })();
    return this.closing;
  }
}

/** Creates every instrument; returns what undoes the hooks into the host. */
function register(meter: Meter, sources: MetricSources): () => void {
  const { host } = sources.runtime;
  const m = host.metrics;

  // ---- events: the contract's counter, by kind and outcome (and reason for rejections)
  meter.createObservableCounter("twinmesh.events", { description: "Telemetry events answered, by twin kind and outcome" }).addCallback((r) => {
    for (const k of m.events.kinds()) {
      r.observe(k.accepted, { kind: k.kind, outcome: "accepted" });
      r.observe(k.duplicate, { kind: k.kind, outcome: "duplicate" });
      for (const [reason, n] of k.rejected) r.observe(n, { kind: k.kind, outcome: "rejected", reason });
    }
  });
  meter
    .createObservableCounter("twinmesh.events.shed", {
      description: "Telemetry events refused for load (queue full, mailbox full, rate limited), by kind and reason",
    })
    .addCallback((r) => {
      for (const k of m.events.kinds()) for (const [reason, n] of k.rejected) if (SHED_REASONS.has(reason)) r.observe(n, { kind: k.kind, reason });
    });
  meter
    .createObservableCounter("twinmesh.handler.errors", { description: "Twin handler failures (threw, timed out, left bad state), by twin kind" })
    .addCallback((r) => {
      for (const [kind, n] of m.handlerErrorsByKind) r.observe(n, { kind });
    });
  meter.createObservableCounter("twinmesh.alerts.raised", { description: "Alerts opened by twins, by severity" }).addCallback((r) => {
    for (const [severity, n] of Object.entries(m.alertsRaised)) r.observe(n, { severity });
  });
  counter(meter, "twinmesh.twins.activated", "Twins brought into memory (loaded or created)", () => m.activations);
  counter(meter, "twinmesh.twins.passivated", "Twins taken out of memory", () => m.passivations);
  counter(
    meter,
    "twinmesh.turn.timeouts",
    "Turns whose async handler did not finish within the turn timeout (also counted as handler errors)",
    () => m.timeouts,
  );
  counter(meter, "twinmesh.alerts.changes", "Alert changes logged (opened, severity or message changed, acknowledged, resolved)", () => m.alertChanges);
  counter(meter, "twinmesh.timers.fired", "Twin timers whose handler ran", () => m.timersFired);
  counter(meter, "twinmesh.dead_letters", "Messages moved to the dead letters", () => m.deadLetters);
  counter(meter, "twinmesh.commit.failures", "Commit groups whose disk write failed", () => m.commitFailures);
  counter(meter, "twinmesh.internal_errors", "Turns or acknowledgements that failed from a twinmesh bug (contained, logged)", () => m.internalErrors);

  // ---- gauges read from the host's state when scraped
  gauge(meter, "twinmesh.twins.active", "Twins in memory now", () => host.activeCount);
  gauge(meter, "twinmesh.ingest.queue_depth", "Telemetry events admitted and not yet answered", () => host.load.eventsInFlight);
  gauge(meter, "twinmesh.timers.inflight", "Due timers whose turn is queued or running", () => host.load.timersInFlight);
  meter
    .createObservableGauge("twinmesh.outbox.depth", {
      description: "Twin-to-twin messages in the outbox, by state (queued, inflight, parked, held: sent by writes not yet on a majority of copies)",
    })
    .addCallback((r) => {
      const load = host.load;
      r.observe(load.outboxQueued, { state: "queued" });
      r.observe(load.outboxInFlight, { state: "inflight" });
      r.observe(load.outboxParked, { state: "parked" });
      r.observe(load.outboxHeld, { state: "held" });
    });

  // ---- counts kept only in the store: one scan per scrape serves all three instruments
  const openAlerts = meter.createObservableGauge("twinmesh.alerts.unresolved", {
    description: "Alerts not yet resolved in the partitions this node owns, by severity and state (open, acknowledged)",
  });
  const timersPending = meter.createObservableGauge("twinmesh.timers.pending", {
    description: "Durable twin timers armed and not yet fired in the partitions this node owns (due ones whose turn is queued included)",
  });
  const deadLettersStored = meter.createObservableGauge("twinmesh.dead_letters.stored", {
    description: "Messages in the dead letters of the partitions this node owns",
  });
  meter.addBatchObservableCallback(
    async (r) => {
      const stored = await sources.runtime.storedCounts.read();
      for (const [state, counts] of [
        ["open", stored.openAlerts],
        ["acknowledged", stored.acknowledgedAlerts],
      ] as const) {
        for (const [severity, n] of Object.entries(counts)) r.observe(openAlerts, n, { severity, state });
      }
      r.observe(timersPending, stored.timersPending);
      r.observe(deadLettersStored, stored.deadLetters);
    },
    [openAlerts, timersPending, deadLettersStored],
  );

  // ---- commits: recorded once per group by the host's commit observer
  const duration = secondsHistogram(meter, "twinmesh.commit.duration", "Time to write one commit group to RocksDB", COMMIT_SECONDS_BUCKETS);
  const batchSize: Histogram = meter.createHistogram("twinmesh.commit.batch_size", {
    description: "Telemetry events in one commit group",
    advice: { explicitBucketBoundaries: BATCH_SIZE_BUCKETS },
  });
  const turns = secondsHistogram(
    meter,
    "twinmesh.turn.duration",
    "Time one turn took, from its start to its handler's end (async handlers included)",
    TURN_SECONDS_BUCKETS,
  );
  // In a cluster, also the wait for replicas after each write (a histogram of its own).
  const { cluster } = sources;
  const clusterTimings = cluster === undefined ? undefined : registerClusterTimings(meter, cluster);
  const timings: HostTimings = {
    committed(seconds, events) {
      duration.record(seconds);
      batchSize.record(events);
    },
    turned(seconds) {
      turns.record(seconds);
    },
    replicated: clusterTimings?.replicated,
  };
  m.timings = timings;

  // ---- gRPC
  const { calls } = sources;
  if (calls !== undefined) {
    meter.createObservableCounter("twinmesh.grpc.server.calls", { description: "gRPC calls served, by method and status code" }).addCallback((r) => {
      for (const { method, status, count } of calls.counts()) r.observe(count, { method, status });
    });
  }

  // ---- cluster
  if (cluster !== undefined) registerCluster(meter, cluster);

  return () => {
    m.timings = undefined;
    if (cluster !== undefined) cluster.timings = undefined;
  };
}

/**
 * The cluster's durations, pushed as they happen: a replica's answer time goes to the cluster
 * node's timings; returns where the host's wait for replicas after each write goes.
 */
function registerClusterTimings(meter: Meter, cluster: ClusterNode): { replicated: (seconds: number) => void } {
  const wait = secondsHistogram(
    meter,
    "twinmesh.replication.wait",
    "Time a commit group's answers waited after its local write: for its copies on replicas (or the shortfall), and for the groups written before it (answers leave in commit order); 0 for a group answered at once",
    REPLICATION_SECONDS_BUCKETS,
  );
  const apply = secondsHistogram(
    meter,
    "twinmesh.replication.apply.duration",
    "On a replica, time from reading a Replicate request off its owner's stream to answering it: its wait in the queue and its write",
    REPLICATION_SECONDS_BUCKETS,
  );
  cluster.timings = { replicaApplied: (seconds) => apply.record(seconds) };
  return { replicated: (seconds) => wait.record(seconds) };
}

function registerCluster(meter: Meter, cluster: ClusterNode): void {
  // Each read takes a fresh view: a few counts and one pass over the partitions, at scrape time only.
  const view = (): ClusterMetricsView => cluster.metricsView();
  gauge(meter, "twinmesh.cluster.ring.epoch", "The ring epoch this node routes by", () => Number(view().epoch));
  gauge(meter, "twinmesh.cluster.members", "Nodes in the ring", () => view().members);
  gauge(meter, "twinmesh.cluster.members.up", "Nodes up as this node sees them (itself included once it serves)", () => view().membersUp);
  gauge(meter, "twinmesh.cluster.partitions.owned", "Partitions this node serves as owner", () => view().ownedPartitions);
  gauge(meter, "twinmesh.cluster.catching_up", "1 while this node catches up after a start (and owns nothing), else 0", () => (view().catchingUp ? 1 : 0));
  counter(meter, "twinmesh.cluster.forwarded.batches", "Event batches forwarded to their owners", () => view().forwardedBatches);
  counter(meter, "twinmesh.cluster.forwarded.events", "Events forwarded to their owners", () => view().forwardedEvents);
  counter(meter, "twinmesh.replication.shipments", "Replication shipments sent to replicas", () => view().shipments);
  counter(meter, "twinmesh.replication.waits", "Answers that waited for replica acknowledgements", () => view().replicaWaits);
  counter(meter, "twinmesh.replication.shortfalls", "Waits for replica acknowledgements that fell short (answered retryable)", () => view().replicaShortfalls);
  counter(
    meter,
    "twinmesh.replication.shortfalls.met_in_part",
    "Of the shortfalls, those whose answers that asked for fewer copies (QUORUM beside ALL) were still answered as committed",
    () => view().replicaShortfallsMetInPart,
  );
  counter(
    meter,
    "twinmesh.replication.catch_ups",
    "Partition catch-ups this node fetched from another copy (shipments it missed, or the whole key range)",
    () => view().catchUps,
  );
  counter(
    meter,
    "twinmesh.replication.range_copies",
    "Of those catch-ups, whole key-range copies (the source no longer kept the shipments missed)",
    () => view().rangeCopies,
  );
  meter
    .createObservableGauge("twinmesh.replication.lag", {
      description: "Shipments of the partitions this node owns sent to a replica and not yet confirmed by it",
    })
    .addCallback((r: ObservableResult) => {
      for (const [peer, behind] of view().replicationLag) r.observe(behind, { peer });
    });
  meter
    .createObservableGauge("twinmesh.cluster.handoff.partitions", {
      description:
        "Partitions on their way to this node, by phase: taking (should own, not serving yet), waiting_for_previous_owner (of those, still held by the previous owner), stuck (of those, not served for --stuck-after-ms or more), catching_up (copies being brought up to date), rebuilding (copies rebuilt after this node lost data)",
    })
    .addCallback((r: ObservableResult) => {
      const { handoff } = view();
      r.observe(handoff.taking, { phase: "taking" });
      r.observe(handoff.waitingForPreviousOwner, { phase: "waiting_for_previous_owner" });
      r.observe(handoff.stuck, { phase: "stuck" });
      r.observe(handoff.catchingUp, { phase: "catching_up" });
      r.observe(handoff.rebuilding, { phase: "rebuilding" });
    });
}

/** A histogram of durations in seconds, with the bucket boundaries `buckets`. */
function secondsHistogram(meter: Meter, name: string, description: string, buckets: readonly number[]): Histogram {
  return meter.createHistogram(name, { description, unit: "s", advice: { explicitBucketBoundaries: [...buckets] } });
}

function counter(meter: Meter, name: string, description: string, read: () => number): void {
  meter.createObservableCounter(name, { description }).addCallback((r: ObservableResult) => r.observe(read()));
}

function gauge(meter: Meter, name: string, description: string, read: () => number): void {
  meter.createObservableGauge(name, { description }).addCallback((r: ObservableResult) => r.observe(read()));
}
