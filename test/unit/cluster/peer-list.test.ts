import assert from "node:assert/strict";
import { parseNodeId, parsePeers } from "../../../cluster/index.js";

const n1 = parseNodeId("n1");

describe("parsePeers", () => {
  it("parses id@host:port entries, IPv6 hosts in brackets, and ignores spaces around entries", () => {
    assert.deepEqual(parsePeers("n2@127.0.0.1:7422, n3@[::1]:7423,n4@Node-4.local:80", n1), [
      { id: "n2", address: "127.0.0.1:7422" },
      { id: "n3", address: "[::1]:7423" },
      { id: "n4", address: "node-4.local:80" },
    ]);
  });

  it("reads an empty list as a one-node cluster", () => {
    assert.deepEqual(parsePeers("", n1), []);
    assert.deepEqual(parsePeers("  ", n1), []);
  });

  for (const [spec, message] of [
    ["n2@127.0.0.1", /--peers entry 1 \("n2@127.0.0.1"\) is not id@host:port/],
    ["n2@127.0.0.1:7422,", /--peers entry 2 \(""\) is not id@host:port/],
    ["n2@127.0.0.1:0", /has port 0; use a port from 1 to 65535/],
    ["n2@127.0.0.1:70000", /has port 70000/],
    ["-x@127.0.0.1:7422", /the id "-x" is not a valid node id/],
    ["n1@127.0.0.1:7422", /names this node \(n1\); list only the other nodes/],
    ["n2@127.0.0.1:7422,n2@127.0.0.1:7423", /entry 2 .* repeats node id n2/],
    ["n2@127.0.0.1:7422,n3@127.0.0.1:7422", /entry 2 .* repeats address 127.0.0.1:7422/],
  ] as const) {
    it(`refuses ${JSON.stringify(spec)} with a message naming the entry`, () => {
      assert.throws(
        () => parsePeers(spec, n1),
        (err: Error & { reason?: string }) => err.reason === "BAD_OPTION" && message.test(err.message),
      );
    });
  }
});
