import { create } from "@bufbuild/protobuf";
import { type NodeSettings as NodeSettingsMessage, NodeSettingsSchema } from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import { ConfigError, KIND_PATTERN, MAX_PARTITIONS } from "../runtime/index.js";

/**
 * What every node of a cluster must agree on. Two nodes whose settings differ would place
 * partitions differently or run different twins, so they refuse each other's Ping.
 */
export interface NodeSettings {
  /** The partition count, fixed when a data directory is created. */
  readonly partitions: number;
  /** Copies kept of each partition, before capping at the cluster size. */
  readonly replicationFactor: number;
  /** The twin kinds the node runs, sorted and without repeats. */
  readonly kinds: readonly string[];
  /** The node-to-node protocol version the node speaks ({@link PEER_PROTOCOL} for this release; 0 before it was sent). */
  readonly peerProtocol: number;
}

/**
 * The node-to-node protocol this release speaks. 2: a shipment's writes travel packed in
 * `Shipment.changes` (field 5); a release before it sent one message per key (field 4), which
 * this release would read as a shipment of no writes, and the other way round. 3: an epoch's
 * announcement says where its owner began it (`Shipment.begun_from`, field 6), which a release
 * before it refuses as a field it does not read. 4: a node takes a partition only with the
 * promises of a majority of its copies (`ClaimPartitions`), which a release before it neither
 * asks for nor honours: mixed, the two could both begin epochs and lose writes.
 */
export const PEER_PROTOCOL = 4;

/**
 * Checks settings and puts the kinds in their canonical order (sorted, without repeats), so two
 * nodes loading the same modules compare equal.
 * @throws ConfigError (`BAD_OPTION`) naming the field that is out of range.
 */
export function resolveNodeSettings(settings: Omit<NodeSettings, "peerProtocol"> & { readonly peerProtocol?: number }): NodeSettings {
  const { partitions, replicationFactor } = settings;
  if (!Number.isSafeInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS) {
    throw new ConfigError("BAD_OPTION", `partitions is ${partitions}; use a whole number from 1 to ${MAX_PARTITIONS}`);
  }
  if (!Number.isSafeInteger(replicationFactor) || replicationFactor < 1 || replicationFactor > 0xffff_ffff) {
    throw new ConfigError("BAD_OPTION", `replication factor is ${replicationFactor}; use a whole number of at least 1`);
  }
  const kinds = [...new Set(settings.kinds)].sort();
  const bad = kinds.find((k) => !KIND_PATTERN.test(k));
  if (bad !== undefined) throw new ConfigError("BAD_OPTION", `twin kind ${JSON.stringify(bad.slice(0, 80))} is not a valid kind name`);
  return Object.freeze({ partitions, replicationFactor, kinds: Object.freeze(kinds), peerProtocol: settings.peerProtocol ?? PEER_PROTOCOL });
}

/** A node and its settings, as the two sides of a comparison name them. */
export interface NodeWithSettings {
  readonly id: string;
  readonly settings: NodeSettings;
}

/**
 * Names every way `peer`'s settings differ from `self`'s, from `self`'s point of view, e.g.
 * `n2 has 128 partitions, this node (n1) 256`; undefined when they agree. Both sides of a refused
 * Ping build their message with this function, so the two logs read alike.
 */
export function settingsDifference(self: NodeWithSettings, peer: NodeWithSettings): string | undefined {
  const differences: string[] = [];
  const a = self.settings;
  const b = peer.settings;
  const me = `this node (${self.id})`;
  if (a.partitions !== b.partitions) differences.push(`${peer.id} has ${b.partitions} partitions, ${me} ${a.partitions}`);
  if (a.replicationFactor !== b.replicationFactor) {
    differences.push(`${peer.id} has replication factor ${b.replicationFactor}, ${me} ${a.replicationFactor}`);
  }
  const mine = new Set(a.kinds);
  const theirs = new Set(b.kinds);
  const onlyTheirs = b.kinds.filter((k) => !mine.has(k));
  const onlyMine = a.kinds.filter((k) => !theirs.has(k));
  if (onlyTheirs.length > 0 || onlyMine.length > 0) {
    const parts: string[] = [];
    if (onlyTheirs.length > 0) parts.push(`${peer.id} runs twin kinds ${onlyTheirs.join(", ")} that ${me} does not`);
    if (onlyMine.length > 0) parts.push(`${me} runs twin kinds ${onlyMine.join(", ")} that ${peer.id} does not`);
    differences.push(parts.join(" and "));
  }
  const settingsDiffer = differences.length > 0;
  if (a.peerProtocol !== b.peerProtocol) {
    differences.push(`${peer.id} speaks peer protocol ${b.peerProtocol}, ${me} ${a.peerProtocol} (they run different twinmesh releases)`);
  }
  if (differences.length === 0) return undefined;
  const advice = settingsDiffer ? "start every node with the same --partitions, --replication-factor and --twins" : "run one twinmesh release on every node";
  return `${differences.join("; ")}; ${advice}`;
}

/** The wire form of settings. */
export function nodeSettingsToMessage(settings: NodeSettings): NodeSettingsMessage {
  return create(NodeSettingsSchema, {
    partitions: settings.partitions,
    replicationFactor: settings.replicationFactor,
    kinds: [...settings.kinds],
    peerProtocol: settings.peerProtocol,
  });
}

/** Settings from the wire, as the peer sent them (kinds sorted here, so order never counts as a difference). */
export function nodeSettingsFromMessage(message: NodeSettingsMessage): NodeSettings {
  return {
    partitions: message.partitions,
    replicationFactor: message.replicationFactor,
    kinds: [...new Set(message.kinds)].sort(),
    peerProtocol: message.peerProtocol,
  };
}
