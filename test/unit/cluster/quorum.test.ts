import assert from "node:assert/strict";
import { intersectingEveryMajority, majorityOf } from "../../../cluster/quorum.js";

/** Every subset of `n` copies, as bit masks. */
function subsets(n: number): number[] {
  return Array.from({ length: 1 << n }, (_, mask) => mask);
}

function size(mask: number): number {
  let count = 0;
  for (let m = mask; m !== 0; m &= m - 1) count++;
  return count;
}

describe("quorum (cluster/quorum.ts)", () => {
  it("a majority is the fewest copies of which any two sets share one", () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(majorityOf), [1, 2, 2, 3, 3, 4, 4]);
    for (let n = 1; n <= 7; n++) {
      const majorities = subsets(n).filter((s) => size(s) === majorityOf(n));
      for (const a of majorities) for (const b of majorities) assert.notEqual(a & b, 0, `two majorities of ${n} copies share none`);
      // One fewer is not enough: two sets of that size share no copy.
      const fewer = subsets(n).filter((s) => size(s) === majorityOf(n) - 1);
      assert.ok(
        fewer.some((a) => fewer.some((b) => (a & b) === 0)),
        `${majorityOf(n) - 1} of ${n} copies already intersect: the majority is not the fewest`,
      );
    }
  });

  it("answers from intersectingEveryMajority copies include one of every majority, and one fewer may miss one", () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(intersectingEveryMajority), [1, 1, 2, 2, 3, 3, 4]);
    for (let n = 1; n <= 7; n++) {
      const majorities = subsets(n).filter((s) => size(s) >= majorityOf(n));
      for (const answered of subsets(n).filter((s) => size(s) === intersectingEveryMajority(n))) {
        for (const majority of majorities)
          assert.notEqual(answered & majority, 0, `answers ${answered.toString(2)} of ${n} miss majority ${majority.toString(2)}`);
      }
      const fewer = subsets(n).filter((s) => size(s) === intersectingEveryMajority(n) - 1);
      assert.ok(
        fewer.some((answered) => majorities.some((majority) => (answered & majority) === 0)),
        `${intersectingEveryMajority(n) - 1} answers of ${n} already meet every majority`,
      );
    }
  });
});
