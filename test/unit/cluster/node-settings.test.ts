import assert from "node:assert/strict";
import { PEER_PROTOCOL, resolveNodeSettings, settingsDifference } from "../../../cluster/index.js";

const base = resolveNodeSettings({ partitions: 256, replicationFactor: 3, kinds: ["pump", "patient", "pump"] });
const n1 = (settings = base) => ({ id: "n1", settings });
const n2 = (changes: Partial<typeof base>) => ({ id: "n2", settings: resolveNodeSettings({ ...base, ...changes }) });
const ADVICE = "; start every node with the same --partitions, --replication-factor and --twins";

describe("NodeSettings", () => {
  it("sorts kinds and drops repeats, so nodes loading the same modules agree", () => {
    assert.deepEqual(base.kinds, ["patient", "pump"]);
    assert.equal(settingsDifference(n1(), n2({ kinds: ["pump", "patient"] })), undefined);
  });

  it("names every difference from this node's side", () => {
    assert.equal(
      settingsDifference(n1(), n2({ partitions: 128, replicationFactor: 2, kinds: ["patient", "valve"] })),
      "n2 has 128 partitions, this node (n1) 256; n2 has replication factor 2, this node (n1) 3; " +
        `n2 runs twin kinds valve that this node (n1) does not and this node (n1) runs twin kinds pump that n2 does not${ADVICE}`,
    );
  });

  it("names a peer of another release (another peer protocol) apart, with its own advice", () => {
    assert.equal(base.peerProtocol, PEER_PROTOCOL);
    assert.equal(
      settingsDifference(n1(), n2({ peerProtocol: 0 })),
      `n2 speaks peer protocol 0, this node (n1) ${PEER_PROTOCOL} (they run different twinmesh releases); run one twinmesh release on every node`,
    );
    assert.equal(
      settingsDifference(n1(), n2({ partitions: 128, peerProtocol: 0 })),
      `n2 has 128 partitions, this node (n1) 256; n2 speaks peer protocol 0, this node (n1) ${PEER_PROTOCOL} (they run different twinmesh releases)${ADVICE}`,
    );
  });

  it("refuses settings out of range, naming the field", () => {
    assert.throws(() => resolveNodeSettings({ ...base, partitions: 0 }), /partitions is 0; use a whole number from 1 to 65536/);
    assert.throws(() => resolveNodeSettings({ ...base, replicationFactor: 1.5 }), /replication factor is 1.5/);
    assert.throws(() => resolveNodeSettings({ ...base, kinds: ["Pump"] }), /twin kind "Pump" is not a valid kind name/);
  });
});
