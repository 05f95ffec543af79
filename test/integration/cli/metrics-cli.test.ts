import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { TwinmeshClient } from "../../../client/index.js";
import { runCli } from "../../harness/cli-process.js";
import { freePorts } from "../../harness/cluster-harness.js";
import { ev, statuses } from "../../harness/events.js";
import { NodeProcess } from "../../harness/node-process.js";
import { Scrape } from "../../harness/prometheus-text.js";
import { useTestScope } from "../../harness/test-scope.js";

const FIXTURES = fileURLToPath(new URL("../../fixtures/index.js", import.meta.url));

describe("twinmesh start --metrics-port (metrics-cli)", function () {
  this.timeout(30_000);
  const t = useTestScope();

  it("serves /metrics on --metrics-port at the --host address and prints where before the ready line", async () => {
    const [port] = await freePorts(1);
    const node = await NodeProcess.start({ twins: [FIXTURES], args: ["--metrics-port", String(port)] });
    t.defer(() => node.stop());
    assert.equal(node.metricsAddress, `127.0.0.1:${port}`);
    assert.ok(node.output().indexOf(" metrics on ") < node.output().indexOf(" serving on "), node.output());
    const client = new TwinmeshClient(node.address);
    t.defer(() => client.close());
    assert.deepEqual(statuses((await client.publish([ev("counter", "m-1", 1)])).results), ["ACCEPTED"]);
    const scrape = await Scrape.of(node.metricsAddress);
    assert.equal(scrape.value("twinmesh_events_total", { kind: "counter", outcome: "accepted" }), 1);
  });

  it("serves no endpoint with --metrics-port 0, which wins over TWINMESH_METRICS_PORT", async () => {
    const [port] = await freePorts(1);
    const node = await NodeProcess.start({ twins: [FIXTURES], args: ["--metrics-port", "0"], env: { TWINMESH_METRICS_PORT: String(port) } });
    t.defer(() => node.stop());
    assert.equal(node.metricsAddress, "");
    await assert.rejects(fetch(`http://127.0.0.1:${port}/metrics`));
  });

  it("fails with one line and exit 1 when the metrics port is in use, leaving no data directory behind", async () => {
    const [port] = await freePorts(1);
    const holder: Server = createServer();
    await new Promise<void>((resolve) => holder.listen(port, "127.0.0.1", resolve));
    t.defer(() => new Promise((resolve) => holder.close(resolve)));
    const data = join(t.tempDir("metrics-cli"), "fresh");
    const result = await runCli(["start", "--twins", FIXTURES, "--port", "0", "--metrics-port", String(port), "--data", data]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      new RegExp(
        `^twinmesh: cannot serve metrics on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE.*; pick another --metrics-port \\(0 turns metrics off\\) \\(LISTEN_FAILED\\)\\n$`,
      ),
    );
    assert.equal(existsSync(data), false, "the data directory the failed start created is removed");
  });

  it("refuses a --metrics-port outside 0-65535 with a usage line and exit 2", async () => {
    const result = await runCli(["start", "--twins", FIXTURES, "--metrics-port", "70000"]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--metrics-port must be a whole number from 0 to 65535, got "70000"/);
  });
});
