import { ConfigError } from "../runtime/index.js";

/** A node's id in the cluster: made only by {@link parseNodeId}. */
export type NodeId = string & { readonly __nodeId: unique symbol };

/** What a node id may look like: a letter or digit, then letters, digits, `.`, `_` or `-`; at most 63. */
export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/**
 * Checks a node id at the edge (flags, config, the wire) and brands it.
 * @throws ConfigError (`BAD_OPTION`) naming `what` when `text` is not a valid node id.
 */
export function parseNodeId(text: string, what = "node id"): NodeId {
  if (!NODE_ID_PATTERN.test(text)) {
    throw new ConfigError(
      "BAD_OPTION",
      `${what} ${JSON.stringify(text.slice(0, 80))} is not a valid node id; use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit (e.g. n1, edge-plant-3)`,
    );
  }
  return text as NodeId;
}
