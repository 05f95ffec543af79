import { ConfigError } from "../runtime/index.js";
import { type NodeId, parseNodeId } from "./node-id.js";

/** A peer named on the command line: its id and the `host:port` of its gRPC server. */
export interface PeerAddress {
  readonly id: NodeId;
  /** `host:port`, with an IPv6 host in brackets (`[::1]:7422`), as grpc-js takes it. */
  readonly address: string;
}

const ENTRY = /^([^@\s]+)@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/;

/**
 * Parses `--peers`: comma-separated `id@host:port` entries naming the *other* nodes of a static
 * cluster. Empty (or only whitespace) means a one-node cluster.
 *
 * @throws ConfigError (`BAD_OPTION`) for a malformed entry, a port outside 1-65535, a duplicated
 * id or address, or an entry that names this node (`self`) — each message names the entry.
 * @example parsePeers("n2@127.0.0.1:7422,n3@127.0.0.1:7423", parseNodeId("n1"))
 */
export function parsePeers(spec: string, self: NodeId): PeerAddress[] {
  const peers: PeerAddress[] = [];
  const ids = new Set<string>([self]);
  const addresses = new Set<string>();
  const entries = spec.trim() === "" ? [] : spec.split(",");
  for (const [i, raw] of entries.entries()) {
    const entry = raw.trim();
    const where = `--peers entry ${i + 1} (${JSON.stringify(entry.slice(0, 120))})`;
    const m = ENTRY.exec(entry);
    if (m === null) throw new ConfigError("BAD_OPTION", `${where} is not id@host:port; write e.g. n2@127.0.0.1:7422,n3@127.0.0.1:7423`);
    const [, idText = "", host = "", portText = ""] = m;
    const id = parseNodeId(idText, `${where}: the id`);
    const port = Number(portText);
    if (port < 1 || port > 65_535) throw new ConfigError("BAD_OPTION", `${where} has port ${portText}; use a port from 1 to 65535`);
    if (id === self) {
      throw new ConfigError("BAD_OPTION", `${where} names this node (${self}); list only the other nodes in --peers`);
    }
    if (ids.has(id)) throw new ConfigError("BAD_OPTION", `${where} repeats node id ${id}; every node needs its own id`);
    const address = `${host.toLowerCase()}:${port}`;
    if (addresses.has(address)) throw new ConfigError("BAD_OPTION", `${where} repeats address ${address}; every node needs its own address`);
    ids.add(id);
    addresses.add(address);
    peers.push({ id, address });
  }
  return peers;
}
