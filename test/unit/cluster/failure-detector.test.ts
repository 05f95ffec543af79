import assert from "node:assert/strict";
import { FailureDetector, type PeerLiveness, parseNodeId } from "../../../cluster/index.js";

const n2 = parseNodeId("n2");
const n3 = parseNodeId("n3");

/** A detector on a hand-driven clock, with every liveness change recorded. */
function detector(downAfterMs = 1_000, checkIntervalMs = 100) {
  let now = 0;
  const fd = new FailureDetector([n2, n3], { downAfterMs, checkIntervalMs }, () => now);
  const changes: [string, PeerLiveness][] = [];
  fd.onChange((peer, liveness) => changes.push([peer, liveness]));
  /** Advances the clock in check-interval steps, as a healthy event loop would run the checks. */
  const run = (ms: number, beat: readonly string[] = []) => {
    for (let t = 0; t < ms; t += checkIntervalMs) {
      now += checkIntervalMs;
      for (const p of beat) fd.heartbeat(parseNodeId(p));
      fd.check();
    }
  };
  return { fd, changes, run, jump: (ms: number) => (now += ms) };
}

describe("FailureDetector", () => {
  it("keeps a peer up while it sends heartbeats and marks a silent one down after downAfterMs", () => {
    const { fd, changes, run } = detector();
    run(900, ["n2"]);
    assert.deepEqual(changes, []);
    run(100, ["n2"]);
    assert.deepEqual(changes, [["n3", "down"]]);
    assert.equal(fd.isUp(n2), true);
    assert.equal(fd.isUp(n3), false);
  });

  it("marks a down peer up again at its next heartbeat", () => {
    const { fd, changes, run } = detector();
    run(1_000, ["n2"]);
    fd.heartbeat(n3);
    assert.deepEqual(changes, [
      ["n3", "down"],
      ["n3", "up"],
    ]);
    assert.equal(fd.isUp(n3), true);
  });

  it("does not blame peers for a stall of this node's own event loop", () => {
    const { fd, changes, run, jump } = detector();
    run(500, ["n2", "n3"]);
    // The loop is blocked for 3 s: the next check runs 3 s late, before the heartbeats that
    // arrived meanwhile are read.
    jump(3_000);
    fd.check();
    assert.deepEqual(changes, []);
    run(300, ["n2", "n3"]);
    assert.deepEqual(changes, []);
    // Real silence after the stall still counts.
    run(1_000, ["n2"]);
    assert.deepEqual(changes, [["n3", "down"]]);
  });

  it("treats unknown peers as down and ignores their heartbeats", () => {
    const { fd, changes } = detector();
    fd.heartbeat(parseNodeId("n9"));
    assert.equal(fd.isUp(parseNodeId("n9")), false);
    assert.deepEqual(changes, []);
  });

  it("refuses a check interval that is not shorter than the down-after time", () => {
    assert.throws(
      () => new FailureDetector([n2], { downAfterMs: 100, checkIntervalMs: 100 }),
      /checkIntervalMs \(100\) must be shorter than downAfterMs \(100\)/,
    );
    assert.throws(() => new FailureDetector([n2], { downAfterMs: 0 }), /downAfterMs is 0/);
  });
});
