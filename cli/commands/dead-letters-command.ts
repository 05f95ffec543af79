import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Command, InvalidArgumentError, Option } from "commander";
import {
  type DeadLetter,
  type DeadLetterFilter,
  DeadLetterSchema,
  DeleteDeadLettersResponseSchema,
  ListDeadLettersResponseSchema,
  RetryDeadLettersResponseSchema,
} from "../../client/index.js";
import { compactJson, formatTable, formatTime, messageJson, printJson, printLine, UsageError } from "../output.js";
import { wholeNumber } from "./arg-parsers.js";
import { type ClientCommandOptions, clientCommand, withCliConventions, withClient } from "./client-command.js";

/** Largest page the node serves. */
const MAX_PAGE_SIZE = 1_000;

/** `twinmesh dead-letters list|show|retry|delete`. */
export function deadLettersCommand(): Command {
  return withCliConventions(new Command("dead-letters"))
    .description("list, show, retry and delete dead letters: messages between twins that could not be delivered")
    .addCommand(listCommand())
    .addCommand(showCommand())
    .addCommand(retryCommand())
    .addCommand(deleteCommand())
    .addHelpText(
      "after",
      `
A message a twin sends with ctx.send becomes a dead letter when the receiving turn fails
(its onMessage threw or timed out, or its kind has no onMessage). Fix the cause, then retry:
the message goes back into the outbox and is delivered again (the receiver's dedupe keeps it
effectively once). The node trims old dead letters (twinmesh start --dead-letter-retention).

Examples:
  twinmesh dead-letters list --to site
  twinmesh dead-letters show 3-17
  twinmesh dead-letters retry --all --to site/site-a
  twinmesh dead-letters delete 3-17 3-18`,
    );
}

interface FilterOptions extends ClientCommandOptions {
  to?: TwinSelector;
  from?: TwinSelector;
  reason?: string;
}

/** `kind` or `kind/id`. */
interface TwinSelector {
  readonly kind: string;
  readonly id: string;
}

function twinSelector(value: string): TwinSelector {
  const at = value.indexOf("/");
  const kind = at < 0 ? value : value.slice(0, at);
  const id = at < 0 ? "" : value.slice(at + 1);
  if (kind === "" || (at >= 0 && id === "")) throw new InvalidArgumentError('expected a kind or kind/id, e.g. "site" or "site/site-a"');
  return { kind, id };
}

/** Adds --to, --from and --reason. */
function withFilter(command: Command): Command {
  return command
    .addOption(new Option("--to <kind[/id]>", "only messages for this twin kind, or this twin").argParser(twinSelector))
    .addOption(new Option("--from <kind[/id]>", "only messages sent by this twin kind, or this twin").argParser(twinSelector))
    .option("--reason <CODE>", "only this failure reason, e.g. HANDLER_FAILED");
}

function toFilter(options: FilterOptions): DeadLetterFilter | undefined {
  const { to, from, reason } = options;
  if (to === undefined && from === undefined && reason === undefined) return undefined;
  return {
    $typeName: "twinmesh.v1.DeadLetterFilter",
    toKind: to?.kind ?? "",
    toId: to?.id ?? "",
    fromKind: from?.kind ?? "",
    fromId: from?.id ?? "",
    reason: reason ?? "",
  };
}

function deadAt(d: DeadLetter): string {
  return formatTime(d.deadAt === undefined ? undefined : timestampMs(d.deadAt));
}

interface ListOptions extends FilterOptions {
  pageSize?: number;
  pageToken?: string;
  all?: boolean;
}

function listCommand(): Command {
  return withFilter(clientCommand("list", "list dead letters, oldest first"))
    .addOption(
      new Option("--page-size <n>", `dead letters per page, 1 to ${MAX_PAGE_SIZE} (default: the node's, 100)`).argParser(wholeNumber(1, MAX_PAGE_SIZE)),
    )
    .option("--page-token <token>", "continue after a previous page")
    .option("--all", "follow the page tokens to the last page")
    .addHelpText(
      "after",
      `
A page may be short while a next page token is printed: each page reads a bounded number of
dead letters, so use --all to see every match. With --json, one document:
{"deadLetters": […], "nextPageToken"}.

Example:
  twinmesh dead-letters list --to site --reason HANDLER_FAILED --all`,
    )
    .action(async (options: ListOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const deadLetters: DeadLetter[] = [];
        let pageToken = options.pageToken ?? "";
        do {
          const page = await client.listDeadLetters({ filter: toFilter(options), pageSize: options.pageSize, pageToken });
          deadLetters.push(...page.deadLetters);
          pageToken = page.nextPageToken;
        } while (options.all && pageToken !== "");
        if (options.json) {
          printJson(messageJson(ListDeadLettersResponseSchema, { $typeName: "twinmesh.v1.ListDeadLettersResponse", deadLetters, nextPageToken: pageToken }));
          return;
        }
        const rows = deadLetters.map((d) => [d.id, deadAt(d), d.reason, `${d.fromKind}/${d.fromId}`, `${d.toKind}/${d.toId}`, compactJson(d.message)]);
        for (const line of formatTable(["id", "died", "reason", "from", "to", "message"], rows)) printLine(line);
        let footer = `${deadLetters.length} dead letter${deadLetters.length === 1 ? "" : "s"}`;
        if (pageToken !== "") footer += `; next page: --page-token ${pageToken}`;
        printLine(footer);
      });
    });
}

function showCommand(): Command {
  return clientCommand("show", "show one dead letter: why it died, when, from and to whom, and the message")
    .argument("<id>", "the dead letter id, as 'dead-letters list' prints it, e.g. 3-17")
    .addHelpText("after", "\nExample:\n  twinmesh dead-letters show 3-17")
    .action(async (id: string, options: ClientCommandOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const { deadLetter: d } = await client.getDeadLetter(id);
        if (d === undefined) throw new Error(`the node answered without the dead letter ${id}`);
        if (options.json) {
          printJson(messageJson(DeadLetterSchema, d));
          return;
        }
        printLine(`id:      ${d.id}`);
        printLine(`died:    ${deadAt(d)}`);
        printLine(`reason:  ${d.reason}`);
        printLine(`error:   ${d.errorMessage}`);
        printLine(`from:    ${d.fromKind}/${d.fromId}`);
        printLine(`to:      ${d.toKind}/${d.toId}`);
        printLine(`message: ${compactJson(d.message)}`);
      });
    });
}

interface SelectOptions extends FilterOptions {
  all?: boolean;
}

/** The request's selection: ids, or --all with the filter. @throws UsageError */
function selection(ids: string[], options: SelectOptions, verb: string): { ids: string[]; all: boolean; filter?: DeadLetterFilter } {
  const filter = toFilter(options);
  if (ids.length > 0 && (options.all || filter !== undefined))
    throw new UsageError(`name dead letters to ${verb}, or select them with --all and filters, not both`);
  if (ids.length === 0 && !options.all)
    throw new UsageError(`name the dead letters to ${verb} (e.g. 3-17 3-18), or pass --all (with --to, --from or --reason to narrow it)`);
  return { ids, all: ids.length === 0, filter };
}

function retryCommand(): Command {
  return withFilter(clientCommand("retry", "put dead letters back into the outbox to be delivered again"))
    .argument("[ids...]", "dead letter ids, as 'dead-letters list' prints them")
    .option("--all", "retry every dead letter that matches --to, --from and --reason (every one without them)")
    .addHelpText(
      "after",
      `
Fix the cause first (deploy the fixed twin, or make the target accept): a retry that fails
again becomes a new dead letter. Named ids must all exist, or nothing is retried. With --all,
dead letters for a kind the node does not run are left in place and counted.

Examples:
  twinmesh dead-letters retry 3-17 3-18
  twinmesh dead-letters retry --all --to site`,
    )
    .action(async (ids: string[], options: SelectOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const res = await client.retryDeadLetters(selection(ids, options, "retry"));
        if (options.json) {
          printJson(messageJson(RetryDeadLettersResponseSchema, res));
          return;
        }
        const skipped = res.skippedCount > 0n ? `; ${res.skippedCount} left in place (their target kind is not loaded on this node)` : "";
        printLine(`requeued ${res.retriedCount} dead letter${res.retriedCount === 1n ? "" : "s"} for delivery${skipped}`);
      });
    });
}

function deleteCommand(): Command {
  return withFilter(clientCommand("delete", "delete dead letters for good"))
    .argument("[ids...]", "dead letter ids, as 'dead-letters list' prints them")
    .option("--all", "delete every dead letter that matches --to, --from and --reason (every one without them)")
    .addHelpText(
      "after",
      "\nIds that do not exist are ignored.\n\nExamples:\n  twinmesh dead-letters delete 3-17\n  twinmesh dead-letters delete --all --reason NO_MESSAGE_HANDLER",
    )
    .action(async (ids: string[], options: SelectOptions, command: Command) => {
      await withClient(command, options, async (client) => {
        const res = await client.deleteDeadLetters(selection(ids, options, "delete"));
        if (options.json) {
          printJson(messageJson(DeleteDeadLettersResponseSchema, res));
          return;
        }
        printLine(`deleted ${res.deletedCount} dead letter${res.deletedCount === 1n ? "" : "s"}`);
      });
    });
}
