import assert from "node:assert/strict";
import { CommitCompletion, type CommitCompletionConfig } from "../../../../runtime/host/commit-completion.js";
import { CommitGroup } from "../../../../runtime/host/commit-group.js";
import { HostMetrics } from "../../../../runtime/host/host-metrics.js";
import { silentLogger } from "../../../../runtime/index.js";

describe("CommitCompletion", () => {
  it("tells every waiting write of a group whose acknowledgement threw (a bug) that it was written here, so no operator's change or trim waits forever", () => {
    const metrics = new HostMetrics();
    const config = {
      log: silentLogger(),
      metrics,
      effects: {
        committed: () => {
          throw new Error("a planted bug in a post-commit step");
        },
      },
      messages: { committed: () => undefined, forgetUnacknowledged: () => undefined },
      settled: () => undefined,
    } as unknown as CommitCompletionConfig;
    const completion = new CommitCompletion(config);
    const group = new CommitGroup();
    group.ops.push({ type: "put", key: "k", value: "v" });
    const told: unknown[][] = [];
    group.onDone = [(...args) => void told.push(args), (...args) => void told.push(args)];
    completion.written(group);
    assert.equal(metrics.internalErrors, 1, "the bug was not counted");
    assert.deepEqual(told, [
      [true, 1, "INTERNAL"],
      [true, 1, "INTERNAL"],
    ]);
  });
});
