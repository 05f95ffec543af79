import assert from "node:assert/strict";
import { LogLimiter } from "../../../cluster/log-limiter.js";

describe("LogLimiter", () => {
  it("lets the first occurrence through, then one per interval with the count held back since", () => {
    let now = 0;
    const limiter = new LogLimiter(1_000, () => now);
    assert.equal(limiter.admit(), 0);
    for (let i = 0; i < 5; i++) {
      now += 100;
      assert.equal(limiter.admit(), undefined);
    }
    now = 1_000;
    assert.equal(limiter.admit(), 5, "five held back since the first");
    now = 1_999;
    assert.equal(limiter.admit(), undefined);
    now = 5_000;
    assert.equal(limiter.admit(), 1);
  });
});
