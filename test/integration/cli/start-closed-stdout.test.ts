import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { TwinmeshClient } from "../../../client/index.js";
import { HealthCheckResponse_ServingStatus as Serving } from "../../../proto/gen/grpc/health/v1/health_pb.js";
import { freePorts } from "../../harness/cluster-harness.js";
import { useTestScope } from "../../harness/test-scope.js";
import { waitFor } from "../../harness/wait-for.js";

const MAIN = fileURLToPath(new URL("../../../cli/main.js", import.meta.url));
const TWINS = fileURLToPath(new URL("../../fixtures/index.js", import.meta.url));

describe("twinmesh start whose stdout reader has gone (start-closed-stdout)", function () {
  this.timeout(30_000);
  const t = useTestScope();

  it("keeps serving when its banner meets a closed pipe (`twinmesh start … | head -c 10`), and drains on SIGTERM", async () => {
    const [port] = await freePorts(1);
    const child = spawn(process.execPath, [MAIN, "start", "--twins", TWINS, "--data", join(t.tempDir(), "d"), "--port", String(port), "--metrics-port", "0"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    t.defer(() => void child.kill("SIGKILL"));
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    let exit: number | null | undefined;
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve((exit = code))));
    child.stdout.destroy(); // the reader goes away before the node prints its banner
    const client = new TwinmeshClient(`127.0.0.1:${port}`, { deadlineMs: 2_000 });
    t.defer(() => client.close());
    await waitFor(
      async () => {
        if (exit !== undefined) throw new Error(`the node exited ${exit} (stderr ${JSON.stringify(stderr)})`);
        return (await client.health().catch(() => undefined))?.status === Serving.SERVING || undefined;
      },
      { timeoutMs: 20_000, what: "the node to serve with its stdout closed" },
    );
    child.kill("SIGTERM");
    assert.equal(await exited, 0, `the drained node's exit code (stderr ${JSON.stringify(stderr)})`);
  });
});
