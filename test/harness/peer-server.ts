import * as grpc from "@grpc/grpc-js";
import { pino } from "pino";
import {
  addPeerService,
  type LocalNode,
  type NodeSettings,
  type PeerHandlers,
  type PeerServiceOptions,
  parseNodeId,
  resolveNodeSettings,
} from "../../cluster/index.js";
import type { Logger } from "../../runtime/index.js";
import type { TestScope } from "./test-scope.js";

/** Settings every test node shares unless a test changes one. */
export const TEST_SETTINGS: NodeSettings = resolveNodeSettings({ partitions: 256, replicationFactor: 3, kinds: ["pump", "patient"] });

/** A node identity whose epoch counts the Pings it answered (so a test can wait for the next answer). */
export interface TestNode extends LocalNode {
  /** Pings answered so far; also the epoch the next answer carries. */
  pings: number;
  catching: boolean;
  /** While true, Pings fail (INTERNAL): the node is silent to heartbeats but keeps its streams. */
  silent: boolean;
}

/** A {@link TestNode} named `id`, with `settings` over {@link TEST_SETTINGS}. */
export function testNode(id: string, settings: Partial<NodeSettings> = {}): TestNode {
  const node: TestNode = {
    id: parseNodeId(id),
    settings: resolveNodeSettings({ ...TEST_SETTINGS, ...settings }),
    pings: 0,
    catching: false,
    silent: false,
    epoch: () => {
      if (node.silent) throw new Error("silent test node");
      return BigInt(++node.pings);
    },
    catchingUp: () => node.catching,
    diskProblem: () => undefined,
  };
  return node;
}

/** A PeerService server on 127.0.0.1. */
export interface PeerServer {
  readonly server: grpc.Server;
  readonly port: number;
  /** `127.0.0.1:port`. */
  readonly address: string;
}

/** Serves PeerService for `self` on 127.0.0.1:`port` (0: any free port); forced down after the test. */
export async function startPeerServer(
  t: TestScope,
  self: LocalNode,
  handlers: PeerHandlers = {},
  port = 0,
  options: PeerServiceOptions = {},
): Promise<PeerServer> {
  const server = new grpc.Server();
  addPeerService(server, self, handlers, { log: pino({ level: "silent" }), adapter: { log: { error: () => undefined } }, ...options });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  t.defer(() => server.forceShutdown());
  return { server, port: bound, address: `127.0.0.1:${bound}` };
}

/** A port that was free a moment ago: bound on 127.0.0.1 and released. */
export async function freePort(): Promise<number> {
  const server = new grpc.Server();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  server.forceShutdown();
  return port;
}

/** A logger that keeps every entry, for tests that check what was logged. */
export function capturingLogger(): { log: Logger; entries: Record<string, unknown>[] } {
  const entries: Record<string, unknown>[] = [];
  const log = pino({ level: "debug" }, { write: (line: string) => entries.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, entries };
}
