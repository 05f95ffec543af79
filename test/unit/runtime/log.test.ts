import assert from "node:assert/strict";
import { closeSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { context, trace } from "@opentelemetry/api";
import { InMemorySpanExporter, SimpleSpanProcessor, StackContextManager, TracerProvider } from "@opentelemetry/sdk-trace";
import { createLogger, type Logger } from "../../../runtime/index.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

/** A file for a logger, opened here (a descriptor is ready at once; a path opens asynchronously). */
function logFile(t: ReturnType<typeof useTestScope>, name: string): { path: string; fd: number } {
  const path = join(t.tempDir("log"), name);
  const fd = openSync(path, "w");
  t.defer(() => closeSync(fd));
  return { path, fd };
}

/** Flushes `log` and reads its file's lines, once it has `count` of them (writes are asynchronous). */
async function linesOf(log: Logger, file: string, count: number): Promise<string[]> {
  log.flush();
  const read = (): string[] =>
    readFileSync(file, "utf8")
      .split("\n")
      .filter((l) => l.length > 0);
  await waitFor(() => read().length >= count, { timeoutMs: 5_000, what: `${count} lines in ${file}` });
  return read();
}

function parsed(lines: readonly string[]): Record<string, unknown>[] {
  return lines.map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("createLogger", () => {
  const t = useTestScope();
  let savedLevel: string | undefined;
  beforeEach(() => {
    savedLevel = process.env.TWINMESH_LOG_LEVEL;
    delete process.env.TWINMESH_LOG_LEVEL;
  });
  afterEach(() => {
    if (savedLevel === undefined) delete process.env.TWINMESH_LOG_LEVEL;
    else process.env.TWINMESH_LOG_LEVEL = savedLevel;
  });

  it("writes lines at and above the level asked for, and TWINMESH_LOG_LEVEL only when no level is given", async () => {
    const warnFile = logFile(t, "warn.log");
    const warn = createLogger({ destination: warnFile.fd, format: "json", level: "warn" });
    warn.info("not written");
    warn.warn("written");
    assert.deepEqual(
      parsed(await linesOf(warn, warnFile.path, 1)).map((l) => [l.level, l.msg]),
      [[40, "written"]],
    );

    process.env.TWINMESH_LOG_LEVEL = "error";
    const envFile = logFile(t, "env.log");
    const fromEnv = createLogger({ destination: envFile.fd, format: "json" });
    fromEnv.warn("not written");
    fromEnv.error("written");
    assert.deepEqual(
      parsed(await linesOf(fromEnv, envFile.path, 1)).map((l) => l.msg),
      ["written"],
    );
    const flagFile = logFile(t, "flag.log");
    const flag = createLogger({ destination: flagFile.fd, format: "json", level: "debug" });
    flag.debug("written");
    assert.deepEqual(
      parsed(await linesOf(flag, flagFile.path, 1)).map((l) => l.msg),
      ["written"],
    );
  });

  it("adds trace_id and span_id to a line logged under an active span, and nothing outside one", async () => {
    // The manager twinmesh's tracing sets (a no-op when a node of this process set it already).
    context.setGlobalContextManager(new StackContextManager().enable());
    const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter: new InMemorySpanExporter() })] });
    t.defer(() => provider.shutdown());
    const file = logFile(t, "trace.log");
    const log = createLogger({ destination: file.fd, format: "json", level: "info" }).child({ component: "host" });
    const span = provider.getTracer("test").startSpan("outer");
    context.with(trace.setSpan(context.active(), span), () => log.info({ twins: 1 }, "inside"));
    span.end();
    log.info("outside");
    const [inside, outside] = parsed(await linesOf(log, file.path, 2));
    assert.deepEqual(
      [inside?.msg, inside?.component, inside?.trace_id, inside?.span_id],
      ["inside", "host", span.spanContext().traceId, span.spanContext().spanId],
    );
    assert.deepEqual([outside?.msg, "trace_id" in (outside ?? {}), "span_id" in (outside ?? {})], ["outside", false, false]);
  });

  it("writes pretty text, not JSON, when asked", async () => {
    const file = logFile(t, "pretty.log");
    const log = createLogger({ destination: file.fd, format: "pretty", level: "info" });
    log.child({ component: "server" }).info({ port: 7420 }, "node serving");
    const lines = await linesOf(log, file.path, 1);
    assert.ok(lines.length > 0, "nothing written");
    assert.throws(() => JSON.parse(lines[0] as string));
    assert.match(lines.join("\n"), /INFO.*node serving/);
    assert.match(lines.join("\n"), /component: "server"/);
  });
});
