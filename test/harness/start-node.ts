import { pino } from "pino";
import { TwinmeshClient } from "../../client/index.js";
import { type NodeOptions, TwinmeshNode } from "../../server/index.js";
import { fixtureTwins } from "../fixtures/index.js";
import type { TestScope } from "./test-scope.js";

/** An in-process node on 127.0.0.1:0 with a client connected to it. */
export interface StartedNode {
  readonly node: TwinmeshNode;
  readonly client: TwinmeshClient;
  /** `127.0.0.1:<port>` */
  readonly address: string;
  readonly dataDir: string;
  /** The options the node was started with. */
  readonly options: NodeOptions;
  /** The node's log entries at level warn and above, parsed (pino levels: 40 warn, 50 error). */
  readonly logs: Record<string, unknown>[];
  /** Closes the client and the node (gracefully); idempotent. */
  stop(): Promise<void>;
  /** Stops this node and starts a new one on the same data directory, with `overrides`. */
  restart(overrides?: Partial<NodeOptions>): Promise<StartedNode>;
}

/**
 * Starts a node in this process with the fixture twins, a temp data directory and port 0,
 * and a {@link TwinmeshClient}; both are stopped after the test.
 */
export async function startNode(t: TestScope, options: Partial<NodeOptions> = {}): Promise<StartedNode> {
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: "warn" }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const resolved: NodeOptions = { twins: fixtureTwins, host: "127.0.0.1", port: 0, log, ...options, dataDir: options.dataDir ?? t.tempDir("node") };
  const node = await TwinmeshNode.start(resolved);
  const client = new TwinmeshClient(node.address, { deadlineMs: 20_000 });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      client.close();
      await node.close(2_000);
    })();
    return stopping;
  };
  t.defer(stop);
  return {
    node,
    client,
    address: node.address,
    dataDir: resolved.dataDir as string,
    options: resolved,
    logs,
    stop,
    async restart(overrides = {}) {
      await stop();
      const { log: _log, ...rest } = resolved;
      return startNode(t, { ...rest, ...overrides, dataDir: resolved.dataDir });
    },
  };
}

/** The committed state of a twin, read with GetTwin. */
export async function twinState(client: TwinmeshClient, kind: string, id: string): Promise<Record<string, unknown>> {
  const { twin } = await client.getTwin({ kind, id });
  if (twin?.state === undefined) throw new Error(`GetTwin ${kind}/${id} returned no state`);
  return twin.state;
}
