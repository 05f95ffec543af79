import { create } from "@bufbuild/protobuf";
import type * as grpc from "@grpc/grpc-js";
import {
  type ClaimPartitionsRequest,
  type ClaimPartitionsResponse,
  type FetchPartitionRequest,
  type FetchPartitionResponse,
  type GetPartitionStatesRequest,
  type GetPartitionStatesResponse,
  PeerService,
  type PingRequest,
  type PingResponse,
  PingResponseSchema,
  type ReplicateRequest,
  type ReplicateResponse,
} from "../proto/gen/twinmesh/cluster/v1/peer_pb.js";
import {
  type BatchOp,
  type FieldViolation,
  InvalidArgumentError,
  Keys,
  KIND_PATTERN,
  type Logger,
  Partitioning,
  quoteInput,
  silentLogger,
  type Tracing,
} from "../runtime/index.js";
import { type AdapterOptions, addService, type CallContext, type StreamSink } from "../server/grpc/index.js";
import { DEFAULT_MAX_FORWARD_BATCH_EVENTS, type ForwardHandler, serveForward } from "./forward-server.js";
import { NODE_ID_PATTERN, type NodeId } from "./node-id.js";
import { type NodeSettings, nodeSettingsFromMessage, nodeSettingsToMessage, PEER_PROTOCOL, settingsDifference } from "./node-settings.js";
import { epochBeginner, plausiblePoint } from "./partition-copies.js";
import { IncompatiblePeerError, NotServedError } from "./peer-errors.js";
import { MalformedChanges, shipmentOps } from "./shipment-changes.js";

/** This node as its peers see it: what a Ping answers and sends. */
export interface LocalNode {
  readonly id: NodeId;
  /** Checked with `resolveNodeSettings`. */
  readonly settings: NodeSettings;
  /** The ring epoch this node routes by now. */
  epoch(): bigint;
  /** True while this node catches up partitions and does not count toward quorums. */
  catchingUp(): boolean;
  /** Why this node's disk refuses writes, or undefined while it takes them. */
  diskProblem(): string | undefined;
  /**
   * The cluster's members in ring order, this node among them: only the others may replicate to
   * or fetch from this node, and an epoch's low byte is its beginner's index here. Undefined (or
   * absent) takes any caller, as a node serving peers before it has a ring does.
   */
  members?(): readonly string[] | undefined;
}

/** Stores an owner's shipments on this replica and acknowledges each once it is durable. Requests arrive checked. */
export interface ReplicateHandler {
  replicate(requests: AsyncIterable<ReplicateRequest>, out: StreamSink<ReplicateResponse>, call: CallContext): Promise<void>;
}

/** Streams a partition's shipments after a position, or its whole key range. The request arrives checked. */
export interface FetchPartitionHandler {
  fetchPartition(req: FetchPartitionRequest, out: StreamSink<FetchPartitionResponse>, call: CallContext): Promise<void>;
}

/** Reports the partitions this node holds. The request arrives checked. */
export interface PartitionStatesHandler {
  getPartitionStates(req: GetPartitionStatesRequest, call: CallContext): Promise<GetPartitionStatesResponse>;
}

/** Promises the claimed partitions to a node about to take them, and reports where they stand. The request arrives checked. */
export interface ClaimPartitionsHandler {
  claimPartitions(req: ClaimPartitionsRequest, call: CallContext): Promise<ClaimPartitionsResponse>;
}

/** The work a node does for its peers. A method without a handler is answered FAILED_PRECONDITION (`NOT_SERVED`). */
export interface PeerHandlers {
  readonly forward?: ForwardHandler;
  readonly replicate?: ReplicateHandler;
  readonly fetchPartition?: FetchPartitionHandler;
  readonly partitionStates?: PartitionStatesHandler;
  readonly claimPartitions?: ClaimPartitionsHandler;
}

/** How PeerService is served. Every field is optional. */
export interface PeerServiceOptions {
  /** Forwarded batches of one stream applied at once. @defaultValue 64 */
  readonly maxInflightForwardBatches?: number;
  /** Events in one forwarded batch. @defaultValue 10_000 (the public Publish limit) */
  readonly maxForwardBatchEvents?: number;
  /** Message size limit and error log of the gRPC adapter. */
  readonly adapter?: AdapterOptions;
  /** @defaultValue a silent logger */
  readonly log?: Logger;
  /** Continues the traces of traced forwarded batches. @defaultValue none (tracing off) */
  readonly tracing?: Tracing;
  /**
   * Aborted when this node stops serving its peers (at shutdown, once its host drained): open
   * Forward and Replicate streams stop reading, answer what they took, and end, so the server's
   * shutdown does not wait out its grace for streams only the peers would end. The peers open
   * new ones where they are needed. @defaultValue never
   */
  readonly stopping?: AbortSignal;
}

const DEFAULT_MAX_INFLIGHT_FORWARD_BATCHES = 64;

/**
 * Serves `twinmesh.cluster.v1.PeerService` on `server` through the gRPC adapter. Ping is answered
 * here, from `self`; the other methods go to `handlers`, each request checked first (a bad one is
 * INVALID_ARGUMENT with the field and what to send, never INTERNAL).
 *
 * A Ping from a node whose settings differ from `self`'s is refused FAILED_PRECONDITION
 * (`INCOMPATIBLE_SETTINGS`), with a message naming each difference, e.g.
 * `n2 has 128 partitions, this node (n1) 256`; the refusal carries this node's settings, so the
 * caller names the difference from its side too.
 *
 * @throws RangeError when a limit is not a positive whole number.
 * @example
 * ```ts
 * const server = new grpc.Server();
 * addPeerService(server, { id: parseNodeId("n1"), settings, epoch: () => ring.epoch, catchingUp: () => false, diskProblem: () => undefined },
 *   { forward: { forward: (batch, signal) => router.applyForwarded(batch, signal) } });
 * ```
 */
export function addPeerService(server: grpc.Server, self: LocalNode, handlers: PeerHandlers = {}, options: PeerServiceOptions = {}): void {
  const maxInflightBatches = options.maxInflightForwardBatches ?? DEFAULT_MAX_INFLIGHT_FORWARD_BATCHES;
  const maxBatchEvents = options.maxForwardBatchEvents ?? DEFAULT_MAX_FORWARD_BATCH_EVENTS;
  for (const [name, value] of Object.entries({ maxInflightBatches, maxBatchEvents })) {
    if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`${name} is ${value}; use a whole number above 0`);
  }
  const log = (options.log ?? silentLogger()).child({ component: "cluster.peer-service" });
  const { forward, replicate, fetchPartition, partitionStates, claimPartitions } = handlers;
  const partitions = self.settings.partitions;
  const stopping = options.stopping;
  const forwardStream = forward === undefined ? undefined : serveForward(self.id, forward, { maxInflightBatches, maxBatchEvents }, log, options.tracing);
  addService(
    server,
    PeerService,
    {
      ping: async (req) => ping(self, req),
      forward:
        forwardStream === undefined
          ? () => Promise.reject(new NotServedError(self.id, "Forward"))
          : (input, out, call) => forwardStream(untilStopped(input, stopping), out, call),
      replicate: async (input, out, call) => {
        if (replicate === undefined) throw new NotServedError(self.id, "Replicate");
        await replicate.replicate(checkedReplicateRequests(self, untilStopped(input, stopping), partitions), out, call);
      },
      fetchPartition: async (req, out, call) => {
        if (fetchPartition === undefined) throw new NotServedError(self.id, "FetchPartition");
        checkFetchPartition(req, partitions);
        checkMember(self, "FetchPartition", req.nodeId);
        await fetchPartition.fetchPartition(req, out, call);
      },
      getPartitionStates: async (req, call) => {
        if (partitionStates === undefined) throw new NotServedError(self.id, "GetPartitionStates");
        checkPartitionList(req.partitions, partitions, (i) => `partitions[${i}]`);
        return partitionStates.getPartitionStates(req, call);
      },
      claimPartitions: async (req, call) => {
        if (claimPartitions === undefined) throw new NotServedError(self.id, "ClaimPartitions");
        checkClaims(self, req, partitions);
        return claimPartitions.claimPartitions(req, call);
      },
    },
    { log, ...options.adapter },
  );
}

/** The requests of `input` until `stopping` aborts; then no more are read. */
async function* untilStopped<T>(input: AsyncIterable<T>, stopping: AbortSignal | undefined): AsyncGenerator<T> {
  if (stopping === undefined) {
    yield* input;
    return;
  }
  const requests = input[Symbol.asyncIterator]();
  const ended: IteratorResult<T> = { done: true, value: undefined };
  for (;;) {
    if (stopping.aborted) return;
    // A read still pending when the stream stops may take one more request, which is dropped
    // unanswered: the peer takes the stream's end as a break and sends it again (it was not
    // applied). The listener is per read: a race against one long-lived promise would keep a
    // reaction per request for the stream's whole life.
    let stop = (): void => undefined;
    const stopped = new Promise<IteratorResult<T>>((resolve) => {
      stop = () => resolve(ended);
    });
    stopping.addEventListener("abort", stop, { once: true });
    let next: IteratorResult<T>;
    try {
      next = await Promise.race([requests.next(), stopped]);
    } finally {
      stopping.removeEventListener("abort", stop);
    }
    if (next.done === true) return;
    yield next.value;
  }
}

function ping(self: LocalNode, req: PingRequest): PingResponse {
  const violations: FieldViolation[] = [];
  if (!NODE_ID_PATTERN.test(req.nodeId)) {
    violations.push({ field: "node_id", description: `${quoteInput(req.nodeId)} is not a node id: 1-63 letters, digits, '.', '_' or '-'` });
  }
  if (req.epoch === 0n) violations.push({ field: "epoch", description: "the caller's ring epoch, at least 1" });
  const s = req.settings;
  if (s === undefined) violations.push({ field: "settings", description: "required: partitions, replication_factor and kinds" });
  else {
    if (s.partitions === 0) violations.push({ field: "settings.partitions", description: "the caller's partition count, at least 1" });
    if (s.replicationFactor === 0) violations.push({ field: "settings.replication_factor", description: "at least 1" });
    const badKind = s.kinds.findIndex((k) => !KIND_PATTERN.test(k));
    if (badKind >= 0) violations.push({ field: `settings.kinds[${badKind}]`, description: `${quoteInput(s.kinds[badKind] ?? "")} is not a twin kind name` });
  }
  if (violations.length > 0 || s === undefined) {
    throw new InvalidArgumentError(
      "BAD_FIELD",
      `Ping from ${quoteInput(req.nodeId)} is malformed (${violations.map((v) => v.field).join(", ")}); send the caller's node id, epoch and settings`,
      violations,
    );
  }
  if (req.nodeId === self.id) {
    throw new IncompatiblePeerError(
      "SAME_NODE_ID",
      self.id,
      self.settings,
      `a Ping came from a node with this node's own id (${self.id}); give every node its own --node-id`,
    );
  }
  const difference = settingsDifference({ id: self.id, settings: self.settings }, { id: req.nodeId, settings: nodeSettingsFromMessage(s) });
  if (difference !== undefined) {
    throw new IncompatiblePeerError("INCOMPATIBLE_SETTINGS", self.id, self.settings, `node ${self.id} refuses ${req.nodeId}: ${difference}`);
  }
  return create(PingResponseSchema, {
    nodeId: self.id,
    epoch: self.epoch(),
    settings: nodeSettingsToMessage(self.settings),
    catchingUp: self.catchingUp(),
    diskProblem: self.diskProblem() ?? "",
  });
}

const POINT_RANGE = "epochs are below 2^48 and positions below 2^53";

async function* checkedReplicateRequests(self: LocalNode, input: AsyncIterable<ReplicateRequest>, partitions: number): AsyncGenerator<ReplicateRequest> {
  const partitioning = new Partitioning(partitions);
  for await (const req of input) {
    if (!NODE_ID_PATTERN.test(req.nodeId)) {
      throw new InvalidArgumentError("BAD_FIELD", `Replicate request names node ${quoteInput(req.nodeId)}, which is not a node id; send the owner's node id`, [
        { field: "node_id", description: "the owner's node id" },
      ]);
    }
    const senderIndex = checkMember(self, "Replicate", req.nodeId);
    for (const [i, shipment] of req.shipments.entries()) {
      const where = `Replicate shipment ${i} (partition ${shipment.partition})`;
      if (shipment.partition >= partitions) {
        throw new InvalidArgumentError("BAD_FIELD", `${where} names a partition outside this cluster's ${partitions}; send partitions 0-${partitions - 1}`, [
          { field: `shipments[${i}].partition`, description: `below ${partitions}` },
        ]);
      }
      if (!plausiblePoint(shipment.epoch, shipment.position)) {
        throw new InvalidArgumentError(
          "BAD_FIELD",
          `${where} has epoch ${shipment.epoch} and position ${shipment.position}; ${POINT_RANGE}: the sender runs another release or has a bug`,
          [{ field: `shipments[${i}]`, description: POINT_RANGE }],
        );
      }
      if (shipment.begunFrom !== undefined && !plausiblePoint(shipment.begunFrom.epoch, shipment.begunFrom.position)) {
        throw new InvalidArgumentError(
          "BAD_FIELD",
          `${where} says its epoch began from epoch ${shipment.begunFrom.epoch} and position ${shipment.begunFrom.position}; ${POINT_RANGE}: the sender runs another release or has a bug`,
          [{ field: `shipments[${i}].begun_from`, description: POINT_RANGE }],
        );
      }
      const from = shipment.begunFrom;
      if (
        from !== undefined &&
        (from.partition !== shipment.partition || from.epoch >= shipment.epoch || from.position + 1n !== shipment.position || shipment.changes.length > 0)
      ) {
        throw new InvalidArgumentError(
          "BAD_FIELD",
          `${where} at epoch ${shipment.epoch} and position ${shipment.position} says its epoch began from partition ${from.partition} at epoch ${from.epoch} and position ${from.position}; begun_from goes only on an epoch's empty first shipment and names its partition, an older epoch and the position just before it: the owner runs another twinmesh release or has a bug`,
          [{ field: `shipments[${i}].begun_from`, description: "on an empty shipment: its partition, an older epoch, its position - 1" }],
        );
      }
      // A release before peer protocol 2 sent one message per key in field 4: read as no writes
      // at all, its shipments would move the copy forward without their data.
      const unknown = shipment.$unknown ?? [];
      if (unknown.length > 0) {
        throw new InvalidArgumentError(
          "BAD_FIELD",
          `${where} carries field ${[...new Set(unknown.map((f) => f.no))].join(", ")}, which this release does not read; the owner runs another twinmesh release: run one release on every node`,
          [{ field: `shipments[${i}]`, description: `only partition, epoch, position, changes and begun_from (peer protocol ${PEER_PROTOCOL})` }],
        );
      }
      let ops: readonly BatchOp[];
      try {
        ops = shipmentOps(shipment);
      } catch (err) {
        if (!(err instanceof MalformedChanges)) throw err;
        throw new InvalidArgumentError(
          "BAD_FIELD",
          `${where} has unreadable changes (${err.message}); the owner runs another twinmesh release or has a bug: run one release on every node`,
          [{ field: `shipments[${i}].changes`, description: "packed changes: key length, key, value length + 1 (0: a delete), value" }],
        );
      }
      const stray = ops.findIndex((op) => Keys.partitionOfKey(op.key, partitioning) !== shipment.partition);
      if (stray >= 0) {
        throw new InvalidArgumentError(
          "BAD_FIELD",
          `${where} carries a key of another partition (change ${stray}); a shipment holds only its own partition's keys`,
          [{ field: `shipments[${i}].changes`, description: `keys of partition ${shipment.partition} only (change ${stray} is not)` }],
        );
      }
      if (shipment.epoch === 0n || shipment.position === 0n) {
        throw new InvalidArgumentError("BAD_FIELD", `${where} has epoch ${shipment.epoch} and position ${shipment.position}; both start at 1`, [
          { field: `shipments[${i}]`, description: "epoch and position at least 1" },
        ]);
      }
      if (senderIndex !== undefined && epochBeginner(shipment.epoch) !== senderIndex) {
        const beginner = self.members?.()?.[epochBeginner(shipment.epoch)] ?? "no member";
        throw new InvalidArgumentError(
          "BAD_FIELD",
          `${where} is under epoch ${shipment.epoch}, which ${beginner} began, not ${req.nodeId}; an owner ships only under its own epochs: the sender runs another release or has a bug`,
          [{ field: `shipments[${i}].epoch`, description: `an epoch ${req.nodeId} began (its low byte ${senderIndex})` }],
        );
      }
    }
    yield req;
  }
}

/**
 * Refuses a `method` call from `nodeId` unless it is another member of this cluster (a node
 * started with another --peers list, or a stranger that found the port); returns the caller's
 * index among the members, or undefined when this node takes any caller.
 */
function checkMember(self: LocalNode, method: string, nodeId: string): number | undefined {
  const members = self.members?.();
  if (members === undefined) return undefined;
  const index = members.indexOf(nodeId);
  if (index >= 0 && nodeId !== self.id) return index;
  const others = members.filter((m) => m !== self.id);
  throw new InvalidArgumentError(
    "BAD_FIELD",
    `${method} from ${quoteInput(nodeId)}, which is not another member of this cluster (${others.join(", ")}); only its members call each other: check the caller's --node-id and --peers`,
    [{ field: "node_id", description: `one of ${others.join(", ")}` }],
  );
}

function checkFetchPartition(req: FetchPartitionRequest, partitions: number): void {
  if (!NODE_ID_PATTERN.test(req.nodeId)) {
    throw new InvalidArgumentError("BAD_FIELD", `FetchPartition from ${quoteInput(req.nodeId)}, which is not a node id; send the caller's node id`, [
      { field: "node_id", description: "the caller's node id" },
    ]);
  }
  checkPartitionList([req.partition], partitions, () => "partition");
  if (req.after !== undefined && req.after.partition !== req.partition) {
    throw new InvalidArgumentError(
      "BAD_FIELD",
      `FetchPartition asks for partition ${req.partition} after a position of partition ${req.after.partition}; send a position of the same partition, or none for the whole range`,
      [{ field: "after.partition", description: "equal to partition" }],
    );
  }
  if (req.after !== undefined && !plausiblePoint(req.after.epoch, req.after.position)) {
    throw new InvalidArgumentError(
      "BAD_FIELD",
      `FetchPartition asks for partition ${req.partition} after epoch ${req.after.epoch} and position ${req.after.position}; ${POINT_RANGE}: the caller runs another release or has a bug`,
      [{ field: "after", description: POINT_RANGE }],
    );
  }
}

function checkClaims(self: LocalNode, req: ClaimPartitionsRequest, partitions: number): void {
  if (!NODE_ID_PATTERN.test(req.nodeId)) {
    throw new InvalidArgumentError("BAD_FIELD", `ClaimPartitions from ${quoteInput(req.nodeId)}, which is not a node id; send the claimant's node id`, [
      { field: "node_id", description: "the claimant's node id" },
    ]);
  }
  checkMember(self, "ClaimPartitions", req.nodeId);
  const claimed = req.claims.map((c) => c.partition);
  checkPartitionList(claimed, partitions, (i) => `claims[${i}].partition`);
  const first = new Map<number, number>();
  for (const [i, p] of claimed.entries()) {
    const before = first.get(p);
    if (before === undefined) {
      first.set(p, i);
      continue;
    }
    throw new InvalidArgumentError(
      "BAD_FIELD",
      `ClaimPartitions from ${req.nodeId} claims partition ${p} twice (claims[${before}] and claims[${i}]); claim each partition once: the claimant runs another release or has a bug`,
      [{ field: `claims[${i}].partition`, description: "a partition not claimed before in the request" }],
    );
  }
  // A claim's epoch is checked claim by claim where the copies are (PartitionReplica.claim): one
  // the claimant may not make is refused there, and its neighbours are answered as usual.
}

function checkPartitionList(list: readonly number[], partitions: number, field: (index: number) => string): void {
  const bad = list.findIndex((p) => p >= partitions);
  if (bad < 0) return;
  throw new InvalidArgumentError(
    "BAD_FIELD",
    `partition ${list[bad]} is outside this cluster's ${partitions} partitions; send partitions 0-${partitions - 1}`,
    [{ field: field(bad), description: `below ${partitions}` }],
  );
}
