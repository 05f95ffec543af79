import assert from "node:assert/strict";
import { Activation } from "../../../../runtime/host/activation.js";
import { ActivationLru } from "../../../../runtime/host/activation-lru.js";
import type { KindEntry } from "../../../../runtime/host/twin-registry.js";

const entry = { kind: "k" } as KindEntry;
function order(lru: ActivationLru): string[] {
  const ids: string[] = [];
  for (let act = lru.first; act !== undefined; act = act.lruNext) ids.push(act.id);
  return ids;
}

describe("ActivationLru", () => {
  it("keeps activations in least-recently-used order as they are appended, touched and removed", () => {
    const lru = new ActivationLru();
    const [a, b, c] = ["a", "b", "c"].map((id) => new Activation(entry, id, id)) as [Activation, Activation, Activation];
    lru.append(a);
    lru.append(b);
    lru.append(c);
    assert.deepEqual(order(lru), ["a", "b", "c"]);
    lru.touch(a);
    assert.deepEqual(order(lru), ["b", "c", "a"]);
    lru.touch(a);
    assert.deepEqual(order(lru), ["b", "c", "a"]);
    lru.remove(c);
    assert.deepEqual(order(lru), ["b", "a"]);
    lru.remove(b);
    lru.remove(a);
    assert.deepEqual(order(lru), []);
    lru.append(c);
    assert.deepEqual(order(lru), ["c"]);
  });
});
