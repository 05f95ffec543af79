import { type Command, Option } from "commander";
import { type TwinmeshClient, TwinmeshClientError } from "../../client/index.js";
import { CliError, clientErrorMessage, formatSeconds, ProgressLine, printJson, printLine, printNotice, UsageError } from "../output.js";
import { runSimulator, SIMULATED_KINDS, type SimulatedKind, type SimulatorProgress } from "../simulator/index.js";
import { positiveNumber, wholeNumber } from "./arg-parsers.js";
import { type ClientCommandOptions, clientCommand, withClient } from "./client-command.js";

interface SimulateOptions extends ClientCommandOptions {
  sources: number;
  rate: number;
  kinds?: string;
  duration?: number;
  seed: string;
}

/** Exit code of a second Ctrl-C, which stops without waiting for answers (128 + SIGINT). */
const FORCED_EXIT_CODE = 130;

/** `twinmesh simulate`: runs the device simulator against a node. */
export function simulateCommand(): Command {
  const kinds = Object.keys(SIMULATED_KINDS).join(",");
  return clientCommand("simulate", "feed a node with realistic telemetry from simulated patients, vehicles and pumps")
    .addOption(new Option("--sources <n>", "devices to simulate").default(50).argParser(wholeNumber(1, 1_000_000)))
    .addOption(new Option("--rate <events/s>", "events per second over all devices").default(200).argParser(positiveNumber))
    .option("--kinds <list>", `kinds to simulate, comma-separated, some of ${kinds} (shares 60/30/10 %) (default: those the node serves)`)
    .addOption(new Option("--duration <s>", "stop after this many seconds (default: at Ctrl-C)").argParser(positiveNumber))
    .option("--seed <seed>", "same seed, same devices and readings", "1")
    .addHelpText(
      "after",
      `
Devices are patient-1…, vehicle-1…, pump-1…; patients are spread over wards ward-a…ward-d
and have tachycardia episodes and SpO2 dips; vehicles (fleet-a, fleet-b) drive, stop, brake
hard now and then and overheat; pumps cavitate and vibrate. Each run starts its seqs above
the current time in ms × 1000, so runs never collide. Ctrl-C stops after the answers are in;
a second Ctrl-C stops at once.

Example:
  twinmesh simulate --sources 100 --rate 500 --duration 60 --seed 7`,
    )
    .action(async (options: SimulateOptions, command: Command) => {
      const stop = new AbortController();
      let interrupts = 0;
      const onSignal = (): void => {
        interrupts++;
        if (interrupts > 1) process.exit(FORCED_EXIT_CODE);
        stop.abort();
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
      const timer = options.duration === undefined ? undefined : setTimeout(() => stop.abort(), options.duration * 1000);
      try {
        await withClient(command, options, async (client) => {
          const given = options.kinds === undefined ? undefined : parseKinds(options.kinds);
          // Fail fast, with one clear line, when there is no node to feed.
          await client.health();
          const chosen = given ?? (await servedKinds(client, options.address));
          const progress = new ProgressLine(250, 10_000);
          const reported = new Set<string>();
          const totals = await runSimulator({
            address: options.address,
            sources: options.sources,
            ratePerSecond: options.rate,
            kinds: chosen,
            seed: options.seed,
            signal: stop.signal,
            onStreamError: (err, reopenInMs) => {
              progress.done();
              printNotice(
                `the stream to ${options.address} failed (${err instanceof TwinmeshClientError ? clientErrorMessage(err) : err.message}); reopening in ${reopenInMs} ms`,
              );
            },
            onProgress: (p) => {
              for (const r of p.rejections) {
                if (reported.has(r.reason)) continue;
                reported.add(r.reason);
                progress.done();
                printNotice(`events are being rejected: ${r.message} (${r.reason}; first: ${r.kind}/${r.sourceId})`);
              }
              progress.update(progressText(options.sources, p));
            },
          });
          progress.done();
          printSummary(options, totals);
        });
      } finally {
        if (timer !== undefined) clearTimeout(timer);
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
      }
    });
}

/**
 * The kinds the simulator plays that the node serves (NodeService.DescribeNode), so that a node
 * running other kinds gets no events it must reject.
 * @throws CliError (NOTHING_TO_SIMULATE) when the node serves none of them
 */
async function servedKinds(client: TwinmeshClient, address: string): Promise<SimulatedKind[]> {
  const { kinds } = await client.describeNode();
  const served = new Set(kinds.map((k) => k.kind));
  const playable = (Object.keys(SIMULATED_KINDS) as SimulatedKind[]).filter((k) => served.has(k));
  if (playable.length === 0) {
    const names = kinds.map((k) => k.kind).join(", ") || "none";
    throw new CliError(
      `the node at ${address} serves kinds ${names}; the simulator plays only ${Object.keys(SIMULATED_KINDS).join(", ")}, so it has nothing to send there (send your own kinds with 'twinmesh send')`,
      "NOTHING_TO_SIMULATE",
    );
  }
  return playable;
}

function parseKinds(list: string): SimulatedKind[] {
  const kinds = list
    .split(",")
    .map((k) => k.trim())
    .filter((k) => k !== "");
  const known = Object.keys(SIMULATED_KINDS);
  const unknown = kinds.filter((k) => !known.includes(k));
  if (kinds.length === 0 || unknown.length > 0) {
    throw new UsageError(`--kinds ${JSON.stringify(list)}: the simulator plays ${known.join(", ")}${unknown.length > 0 ? `, not ${unknown.join(", ")}` : ""}`);
  }
  return kinds as SimulatedKind[];
}

function eventsPerSecond(p: SimulatorProgress): number {
  return p.elapsedMs > 0 ? Math.round((p.accepted + p.duplicate + p.rejected) / (p.elapsedMs / 1000)) : 0;
}

function progressText(sources: number, p: SimulatorProgress): string {
  return `simulating ${sources} devices for ${formatSeconds(p.elapsedMs)}: sent ${p.pushed}, accepted ${p.accepted}, duplicate ${p.duplicate}, rejected ${p.rejected} (${eventsPerSecond(p)} events/s)`;
}

function printSummary(options: SimulateOptions, p: SimulatorProgress): void {
  if (options.json) {
    printJson({
      devices: p.devices,
      seed: options.seed,
      elapsedMs: Math.round(p.elapsedMs),
      sent: p.pushed,
      accepted: p.accepted,
      duplicate: p.duplicate,
      rejected: p.rejected,
      retried: p.retried,
      skipped: p.skipped,
      rejections: p.rejections.map((r) => ({ reason: r.reason, count: r.count, firstMessage: r.message, firstSource: `${r.kind}/${r.sourceId}` })),
    });
    return;
  }
  const devices = Object.entries(p.devices)
    .map(([kind, n]) => `${n} ${kind}`)
    .join(", ");
  printLine(
    `simulated ${options.sources} devices (${devices}) for ${formatSeconds(p.elapsedMs)}: ${p.pushed} events sent, ${p.accepted} accepted, ${p.duplicate} duplicate, ${p.rejected} rejected (${eventsPerSecond(p)} events/s)`,
  );
  if (p.skipped > 0) printLine(`  ${p.skipped} scheduled events were skipped: the node or this process could not keep up with --rate ${options.rate}`);
  for (const r of p.rejections) printLine(`  ${r.count} × ${r.reason}, first ${r.kind}/${r.sourceId}: ${r.message}`);
}
