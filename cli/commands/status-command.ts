import { setTimeout as delay } from "node:timers/promises";
import { type Command, Option } from "commander";
import { TwinmeshClient } from "../../client/index.js";
import { type GetNodeStatusResponse, GetNodeStatusResponseSchema, MemberState } from "../../proto/gen/twinmesh/v1/node_pb.js";
import { CliError, describeError, formatTable, messageJson, printJson, printLine } from "../output.js";
import { wholeNumber } from "./arg-parsers.js";
import { type ClientCommandOptions, clientCommand, withClient } from "./client-command.js";

/** Exit code of `twinmesh status` when every node answered but the cluster is not healthy. */
export const EXIT_DEGRADED = 3;
/** Default time between the two samples rates are computed from. */
const DEFAULT_INTERVAL_MS = 1_000;
/** Longest `--interval`. */
const MAX_INTERVAL_MS = 60_000;
/** How long each member has to answer. */
const MEMBER_DEADLINE_MS = 5_000;

interface StatusOptions extends ClientCommandOptions {
  /** True: ask every member; false: only the addressed node; undefined: every member when there are peers. */
  readonly cluster?: boolean;
  readonly interval: number;
}

/** Events per second between two samples of one node. */
interface Rates {
  readonly accepted: number;
  readonly duplicate: number;
  readonly rejected: number;
}

/** One node as the command reports it. */
interface NodeRow {
  readonly nodeId: string;
  readonly address: string;
  /** How the addressed node sees it: up, down, incompatible, catching-up (`self` for the addressed node). */
  readonly seenAs: string;
  readonly status: GetNodeStatusResponse | undefined;
  /** Why it did not answer. */
  readonly error: string | undefined;
  readonly rates: Rates | undefined;
}

/**
 * `twinmesh status`: a node's health, its cluster as it sees it, where its partitions stand, and
 * its counts and rates, from NodeService.GetNodeStatus (the same sources as the metrics
 * endpoint). In a cluster it asks every member and prints one row per node; the exit code says
 * whether the whole is healthy.
 */
export function statusCommand(): Command {
  return clientCommand("status", "show a node's (and its cluster's) health, ring, partitions, counts and rates")
    .option("--cluster", "ask every member of the node's cluster (the default when it has peers)")
    .option("--no-cluster", "ask only the node at --address")
    .addOption(
      new Option("--interval <ms>", `time between the two samples rates come from; 0: one sample, no rates (at most ${MAX_INTERVAL_MS})`)
        .default(DEFAULT_INTERVAL_MS)
        .argParser(wholeNumber(0, MAX_INTERVAL_MS)),
    )
    .addHelpText(
      "after",
      `
Shows, for each node: its health (grpc.health.v1 of each service: NOT_SERVING while it catches
up after a start, while its disk refuses writes, and while it drains), version and uptime, the
ring epoch and the members' states as the node sees them, its partitions (owned, taking,
catching up, waiting for the previous owner, rebuilding), and its counts: events accepted,
duplicate and rejected (and per second), twins in memory, unresolved alerts by severity,
pending timers, outbox depth, dead letters, and replication lag per replica.

Rates: the CLI samples each node twice, --interval apart (default ${DEFAULT_INTERVAL_MS} ms), and divides
the difference of the counters by the time between the samples as the node measured it. The
node keeps no moving window: its counters only grow, so two samples give an exact rate over the
window you choose, at no cost to a node nobody asks, and Prometheus (rate() over
twinmesh_events_total) covers longer windows. --interval 0 prints counts only, at once.

Alerts, timers and dead letters are counted in the node's store over the partitions it owns:
the call reads every key of those three kinds, so it is for people and checks, not a tight loop.

In a cluster (the node has peers) every member is asked, at the address the node knows it by;
--no-cluster asks only the node at --address. A member that does not answer within
${MEMBER_DEADLINE_MS / 1000} s is shown as NO ANSWER, with the state the asked node sees it in.

Exit codes:
  0  healthy: every node asked answered, says SERVING, and is up as the asked node sees it
  ${EXIT_DEGRADED}  degraded: a node asked did not answer, is NOT_SERVING, or is not up (down,
     catching up, incompatible), or has partitions it should own and has not served for
     its --stuck-after-ms (stuck); the output and the stderr line say which and why
     (with --no-cluster only the node at --address is asked, so only its own health counts)
  1  the node at --address could not be asked (or answered with an error)
  2  usage error

Examples:
  twinmesh status
  twinmesh status --address 127.0.0.1:7421 --json --interval 0`,
    )
    .action(async (options: StatusOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const first = await client.getNodeStatus();
        const askAll = options.cluster ?? first.members.length > 1;
        const members = askAll ? first.members : first.members.filter((m) => m.self);
        const targets = members.map((m) => ({
          nodeId: m.nodeId,
          address: m.self ? options.address : m.address,
          self: m.self,
        }));
        const clients = new Map(
          targets.map((target) => [target.nodeId, target.self ? client : new TwinmeshClient(target.address, { deadlineMs: MEMBER_DEADLINE_MS })]),
        );
        try {
          const sample = (): Promise<(GetNodeStatusResponse | Error)[]> =>
            Promise.all(targets.map((target) => (clients.get(target.nodeId) as TwinmeshClient).getNodeStatus().catch((err: unknown) => err as Error)));
          const before = await sample();
          let after = before;
          if (options.interval > 0) {
            await delay(options.interval);
            after = await sample();
          }
          // How the addressed node sees each member now: its last answer, else its first.
          const selfAfter = after[targets.findIndex((target) => target.self)];
          const seenNow = new Map((selfAfter instanceof Error || selfAfter === undefined ? first : selfAfter).members.map((m) => [m.nodeId, m.state]));
          const rows: NodeRow[] = targets.map((target, i) => {
            const a = before[i];
            const b = after[i];
            // The last sample says whether the node answers now.
            const status = b instanceof Error ? undefined : b;
            return {
              nodeId: target.nodeId,
              address: target.address,
              seenAs: target.self ? "self" : stateName(seenNow.get(target.nodeId) ?? MemberState.UNSPECIFIED),
              status,
              error: b instanceof Error ? describeError(b, target.address).line : undefined,
              rates: options.interval > 0 && a !== undefined && b !== undefined && !(a instanceof Error) && !(b instanceof Error) ? rates(a, b) : undefined,
            };
          });
          const problems = problemsOf(rows);
          if (options.json) printJson(jsonOf(rows, problems, first));
          else printText(rows, problems, first, askAll);
          if (problems.length > 0) throw new CliError(`degraded: ${problems.join("; ")}`, "DEGRADED", EXIT_DEGRADED);
        } finally {
          for (const c of clients.values()) if (c !== client) c.close();
        }
      });
    });
}

function stateName(state: MemberState): string {
  return (MemberState[state] ?? String(state)).toLowerCase().replace(/_/g, "-");
}

/** Per-second rates of the event counters between two answers of one node, by the node's own clock. */
function rates(a: GetNodeStatusResponse, b: GetNodeStatusResponse): Rates | undefined {
  const seconds = Number(b.uptimeMs - a.uptimeMs) / 1000;
  // The node restarted between the samples (its uptime went back): its counters did too.
  if (seconds <= 0) return undefined;
  const per = (x: bigint | undefined, y: bigint | undefined): number => Math.round((Number((y ?? 0n) - (x ?? 0n)) / seconds) * 10) / 10;
  return {
    accepted: per(a.events?.accepted, b.events?.accepted),
    duplicate: per(a.events?.duplicate, b.events?.duplicate),
    rejected: per(a.events?.rejected, b.events?.rejected),
  };
}

/** Why the cluster is not healthy, one phrase per node; empty when it is. */
function problemsOf(rows: readonly NodeRow[]): string[] {
  const problems: string[] = [];
  for (const row of rows) {
    if (row.status === undefined) problems.push(`${row.nodeId} did not answer (${row.seenAs} as the asked node sees it)`);
    else if (!row.status.serving) problems.push(`${row.nodeId} is NOT_SERVING${row.status.problem === "" ? "" : ` (${row.status.problem})`}`);
    else if (row.seenAs !== "self" && row.seenAs !== "up") problems.push(`${row.nodeId} is ${row.seenAs} as the asked node sees it`);
    else if ((row.status.partitionProgress?.stuck ?? 0) > 0) {
      problems.push(
        `${row.nodeId} has not served ${row.status.partitionProgress?.stuck} partitions it should own for its --stuck-after-ms or more (its log says why)`,
      );
    }
  }
  return problems;
}

function jsonOf(rows: readonly NodeRow[], problems: readonly string[], asked: GetNodeStatusResponse): unknown {
  return {
    healthy: problems.length === 0,
    problems,
    askedNodeId: asked.nodeId,
    nodes: rows.map((row) => ({
      nodeId: row.nodeId,
      address: row.address,
      seenAs: row.seenAs,
      answered: row.status !== undefined,
      ...(row.error === undefined ? {} : { error: row.error }),
      ...(row.rates === undefined ? {} : { ratesPerSecond: row.rates }),
      ...(row.status === undefined ? {} : { status: messageJson(GetNodeStatusResponseSchema, row.status) }),
    })),
  };
}

function printText(rows: readonly NodeRow[], problems: readonly string[], asked: GetNodeStatusResponse, askAll: boolean): void {
  if (askAll && rows.length > 1) {
    const table = rows.map((row) => {
      const s = row.status;
      if (s === undefined) return [row.nodeId, row.address, row.seenAs, "NO ANSWER", "", "", "", "", "", "", "", "", row.error ?? ""];
      return [
        row.nodeId,
        row.address,
        row.seenAs,
        s.serving ? "SERVING" : "NOT_SERVING",
        String(s.epoch),
        String(s.partitionProgress?.owned ?? 0),
        String(s.partitionProgress?.taking ?? 0),
        duration(s.uptimeMs),
        row.rates === undefined ? String(s.events?.accepted ?? 0) : `${s.events?.accepted ?? 0} (${row.rates.accepted}/s)`,
        String(s.twinsActive),
        alertSummary(s),
        String(s.timersPending),
        String(s.deadLetters),
        s.problem,
      ];
    });
    for (const line of formatTable(
      ["node", "address", "seen as", "health", "epoch", "owns", "taking", "uptime", "accepted", "twins", "alerts c/w/i", "timers", "dead letters", "problem"],
      table,
    ))
      printLine(line);
    printLine();
  }
  for (const row of rows) {
    if (row.status === undefined) continue;
    if (askAll && rows.length > 1 && row.status.nodeId !== asked.nodeId) continue;
    for (const line of describeNode(row.status, row.rates)) printLine(line);
  }
  printLine(
    problems.length === 0
      ? `healthy: ${rows.length === 1 ? "the node serves" : `all ${rows.length} nodes answered, serve and are up`}`
      : `degraded: ${problems.join("; ")}`,
  );
}

/** The addressed node, in full. */
function describeNode(s: GetNodeStatusResponse, r: Rates | undefined): string[] {
  const p = s.partitionProgress;
  const e = s.events;
  const rate = (n: number | undefined): string => (n === undefined ? "" : ` (${n}/s)`);
  const notServing = s.services.filter((x) => !x.serving).map((x) => x.service || "(node)");
  const reasons = Object.entries(e?.rejectedByReason ?? {})
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([reason, n]) => `${reason} ${n}`);
  const lines = [
    `node ${s.nodeId} (twinmesh ${s.version || "?"}), up ${duration(s.uptimeMs)}, ${s.serving ? "SERVING" : "NOT_SERVING"}`,
    `  health        ${notServing.length === 0 ? `all ${s.services.length} services SERVING` : `NOT_SERVING: ${notServing.join(", ")}`}${s.problem === "" ? "" : `; ${s.problem}`}`,
    `  ring          epoch ${s.epoch}, ${s.partitions} partitions, replication factor ${s.replicationFactor}; ${s.members.map((m) => `${m.nodeId} ${m.self ? "self" : stateName(m.state)}`).join(", ")}`,
    `  partitions    owned ${p?.owned ?? 0}, taking ${p?.taking ?? 0}, catching up ${p?.catchingUp ?? 0}, waiting for previous owner ${p?.waitingForPreviousOwner ?? 0}, stuck ${p?.stuck ?? 0}, rebuilding ${p?.rebuilding ?? 0}`,
    `  events        accepted ${e?.accepted ?? 0}${rate(r?.accepted)}, duplicate ${e?.duplicate ?? 0}${rate(r?.duplicate)}, rejected ${e?.rejected ?? 0}${rate(r?.rejected)}${reasons.length === 0 ? "" : ` [${reasons.join(", ")}]`}`,
    `  twins         ${s.twinsActive} active`,
    `  alerts        open: critical ${s.openAlerts?.critical ?? 0}, warning ${s.openAlerts?.warning ?? 0}, info ${s.openAlerts?.info ?? 0}; acknowledged: critical ${s.acknowledgedAlerts?.critical ?? 0}, warning ${s.acknowledgedAlerts?.warning ?? 0}, info ${s.acknowledgedAlerts?.info ?? 0}`,
    `  timers        ${s.timersPending} pending`,
    `  outbox        ${s.outbox?.queued ?? 0} queued, ${s.outbox?.inflight ?? 0} in flight, ${s.outbox?.parked ?? 0} parked, ${s.outbox?.held ?? 0} held`,
    `  dead letters  ${s.deadLetters}`,
  ];
  if (s.replicationLag.length > 0) lines.push(`  replica lag   ${s.replicationLag.map((l) => `${l.nodeId} ${l.shipmentsBehind} shipments`).join(", ")}`);
  return lines;
}

/** Unresolved alerts as critical/warning/info. */
function alertSummary(s: GetNodeStatusResponse): string {
  const sum = (k: "critical" | "warning" | "info"): bigint => (s.openAlerts?.[k] ?? 0n) + (s.acknowledgedAlerts?.[k] ?? 0n);
  return `${sum("critical")}/${sum("warning")}/${sum("info")}`;
}

/** 3d 4h, 5h 06m, 7m 08s, 9s. */
function duration(ms: bigint): string {
  const total = Number(ms / 1000n);
  const d = Math.floor(total / 86_400);
  const h = Math.floor((total % 86_400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = total % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m > 0) return `${m}m ${String(sec).padStart(2, "0")}s`;
  return `${sec}s`;
}
