import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { AlertState, Consistency, MemberState, type TwinmeshClient, type WatchAlertsResponse } from "../../client/index.js";
import { runCli } from "../harness/cli-process.js";
import { ClusterHarness, freePorts } from "../harness/cluster-harness.js";
import { type CounterView, counterVia, range, sumTo } from "../harness/counters.js";
import { describeOutcome, type EventInit, ev, type Outcome, outcomes } from "../harness/events.js";
import { Scrape } from "../harness/prometheus-text.js";
import { SeqWriter } from "../harness/seq-writer.js";
import { useTestScope } from "../harness/test-scope.js";
import { waitFor } from "../harness/wait-for.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/index.js", import.meta.url));
const MEMBERS = ["n1", "n2", "n3"] as const;

/** 1 + 2 + … + n: a counter's `total` after seqs 1..n, each sent with `v = seq`, each applied once. */
/**
 * Reads every counter in `want` through every node in `via` and fails listing the reads that
 * differ (at most 10 of them), so one message shows the shape of a loss or a double apply.
 */
async function assertCounters(
  clients: ReadonlyMap<string, TwinmeshClient>,
  via: readonly string[],
  want: ReadonlyMap<string, CounterView>,
  what: string,
): Promise<void> {
  const wrong: string[] = [];
  await Promise.all(
    via.map(async (node) => {
      const client = clients.get(node) as TwinmeshClient;
      for (const [id, expected] of want) {
        const got = await counterVia(client, id);
        if (JSON.stringify(got) !== JSON.stringify(expected)) wrong.push(`${id} through ${node}: got ${JSON.stringify(got)}, want ${JSON.stringify(expected)}`);
      }
    }),
  );
  assert.equal(wrong.length, 0, `${what}: ${wrong.length} of ${via.length * want.size} reads differ, e.g.\n  ${wrong.slice(0, 10).join("\n  ")}`);
}

/** Waits (10 s at most) until `client` reads every twin of `ids` owned by `node`: each partition is served as soon as it is taken. */
async function ownedBy(client: TwinmeshClient, ids: readonly string[], node: string): Promise<void> {
  await waitFor(
    async () => {
      for (const id of ids) if (((await counterVia(client, id)) as CounterView).owner !== node) return undefined;
      return true;
    },
    { timeoutMs: 10_000, what: `${node} to own ${ids.join(", ")}` },
  );
}

/** Every twin of a writer with the state each acknowledged seq applied exactly once gives, owned by `ownerOf(id)`. */
async function expectedOf(writer: SeqWriter, ownerOf: (id: string) => Promise<string | undefined>): Promise<Map<string, CounterView>> {
  const want = new Map<string, CounterView>();
  for (const [id, n] of writer.acked) want.set(id, { owner: await ownerOf(id), count: n, lastSeq: n, total: sumTo(n) });
  return want;
}

/**
 * Publishes `events`, retrying the retryable rejections and failed calls with the same seqs
 * (bounded) as a client would, and returns each event's final outcome. A DUPLICATE answering
 * the retry of a call that got no answer means the first attempt was applied: it counts as
 * ACCEPTED. After a definite rejection nothing was applied, so a DUPLICATE stays one.
 */
async function publishRetrying(client: TwinmeshClient, events: readonly EventInit[], consistency?: Consistency, timeoutMs = 10_000): Promise<Outcome[]> {
  const final = new Array<Outcome>(events.length);
  const unanswered = new Set<number>();
  let open = range(events.length);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const answered = await client
      .publish(
        open.map((i) => events[i] as EventInit),
        consistency,
      )
      .then(
        (res) => outcomes(res.results),
        (err: Error) => open.map((): Outcome => ({ status: "REJECTED", reason: "CALL_FAILED", message: err.message, retryable: true })),
      );
    const again: number[] = [];
    answered.forEach((o, k) => {
      const i = open[k] as number;
      final[i] = o.status === "DUPLICATE" && unanswered.has(i) ? { ...o, status: "ACCEPTED" } : o;
      if (o.reason === "CALL_FAILED") unanswered.add(i);
      if (o.status === "REJECTED" && o.retryable) again.push(i);
    });
    open = again;
    if (open.length === 0 || Date.now() > deadline) return final;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Three counters owned by n1 (ids `<prefix>-<i>`), with seq 1 acknowledged at QUORUM through n1,
 * and a client of n1 that waits long enough for a frozen replica's answer.
 */
async function seqOneOnN1(c: ClusterHarness, prefix: string): Promise<{ ids: string[]; owner: TwinmeshClient }> {
  const ids = (await c.ownedBy("n1", "counter", named(prefix, 60))).slice(0, 3);
  const owner = c.client("n1", 20_000);
  const first = ids.map((id) => ev("counter", id, 1, { v: 1 }));
  assert.deepEqual(
    outcomes((await owner.publish(first, Consistency.QUORUM)).results).map(describeOutcome),
    first.map(() => "ACCEPTED"),
    "seq 1 with every node up",
  );
  return { ids, owner };
}

/** `<prefix>-0` … `<prefix>-<count - 1>`: candidate twin ids, of which a test picks those a node owns. */
function named(prefix: string, count: number): string[] {
  return range(count).map((i) => `${prefix}-${i}`);
}

/** Each event's outcome of one publish, or the call's failure. */
function answersOf(client: TwinmeshClient, events: EventInit[], consistency: Consistency): Promise<string[]> {
  return client.publish(events, consistency).then(
    (res) => outcomes(res.results).map(describeOutcome),
    (err: Error) => [`call failed: ${err.message}`],
  );
}

/** One WatchAlerts call read a change at a time. */
function watch(client: TwinmeshClient, cursor: string, filter: string, signal: AbortSignal): (timeoutMs: number, what: string) => Promise<WatchAlertsResponse> {
  const it = client.watchAlerts({ cursor, filter }, signal)[Symbol.asyncIterator]();
  return async (timeoutMs, what) => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the watch through ${client.address} delivered no change within ${timeoutMs} ms; it was waiting for ${what}`)),
        timeoutMs,
      );
    });
    try {
      const r = await Promise.race([it.next(), timeout]);
      if (r.done === true) throw new Error(`the watch through ${client.address} ended while waiting for ${what}`);
      return r.value;
    } finally {
      clearTimeout(timer);
    }
  };
}

describe("replication and failover in a cluster of three nodes at replication factor 3 (replication)", function () {
  this.timeout(60_000);
  const t = useTestScope();

  async function start(): Promise<{ c: ClusterHarness; clients: Map<string, TwinmeshClient>; live: () => TwinmeshClient[] }> {
    const c = await ClusterHarness.start(t, { size: 3, twins: [FIXTURES], args: ["--replication-factor", "3"] });
    const clients = new Map(MEMBERS.map((id) => [id as string, c.client(id, 5_000)]));
    return { c, clients, live: () => c.runningIds().map((id) => clients.get(id) as TwinmeshClient) };
  }

  it("loses nothing acknowledged at QUORUM when the owner of many twins is killed with kill -9 mid-stream, applies each retried seq once, and reads the same through every node, the restarted one too", async () => {
    const { c, clients, live } = await start();
    const ids = named("q", 60);
    const victim = "n2";
    const victims = await c.ownedBy(victim, "counter", ids);
    assert.ok(victims.length >= 10, `${victim} owns only ${victims.length} of the 60 twins`);
    const writer = new SeqWriter({ kind: "counter", ids, clients: live, consistency: Consistency.QUORUM });
    const running = writer.run({ untilSeq: 30 });
    await waitFor(() => writer.failure !== undefined || victims.every((id) => (writer.acked.get(id) ?? 0) >= 10), {
      timeoutMs: 20_000,
      what: `seq 10 of ${victim}'s twins to be acknowledged at QUORUM`,
    });
    assert.equal(writer.failure?.message, undefined, "the stream failed before the kill");
    const ackedAtKill = victims.map((id) => writer.acked.get(id) ?? 0);
    await c.kill(victim);
    await running;
    assert.equal(writer.failure?.message, undefined, "the stream failed across the kill");
    assert.ok(
      ackedAtKill.some((n) => n < 30),
      "the owner was killed after the stream had ended",
    );
    // Every twin got seqs 1..30, each acknowledged (some only after retries): each applied once.
    const liveOwners = await expectedOf(writer, (id) => c.liveOwnerOf("counter", id));
    assert.deepEqual(new Set([...liveOwners.values()].map((v) => v.count)), new Set([30]));
    await assertCounters(clients, ["n1", "n3"], liveOwners, `after kill -9 of ${victim}`);
    // The dedupe marks came over with the state: the new owners answer a resent seq DUPLICATE.
    const resent = victims.flatMap((id) => [ev("counter", id, 30, { v: 30 }), ev("counter", id, 15, { v: 15 })]);
    const again = outcomes((await (clients.get("n3") as TwinmeshClient).publish(resent, Consistency.QUORUM)).results).map(describeOutcome);
    assert.deepEqual(
      again,
      resent.map(() => "DUPLICATE"),
      `seqs 30 and 15 of ${victim}'s twins resent after the failover`,
    );

    await c.startMember(victim);
    await c.caughtUp(victim);
    // Once it has caught up it takes its partitions back.
    const [first] = victims as [string];
    await waitFor(async () => ((await counterVia(clients.get("n1") as TwinmeshClient, first)) as CounterView).owner === victim, {
      timeoutMs: 10_000,
      what: `${victim} to own ${first} again`,
    });
    await assertCounters(clients, MEMBERS, await expectedOf(writer, (id) => c.ownerOf("counter", id)), `after ${victim} restarted and caught up`);
  });

  it("fires the timers of a killed owner's twins on the new owner, once, and delivers its twins' messages, each once", async () => {
    const { c, clients } = await start();
    const victim = "n3";
    const n1 = clients.get("n1") as TwinmeshClient;
    const alarms = (await c.ownedBy(victim, "alarm", named("tm", 60))).slice(0, 4);
    const relays = (await c.ownedBy(victim, "relay", named("rl", 80))).slice(0, 10);
    const [sinkOfVictim] = await c.ownedBy(victim, "sink", named("sk", 30));
    const [sinkOfSurvivor] = await c.ownedBy("n1", "sink", named("sk", 30));
    assert.ok(alarms.length === 4 && relays.length === 10 && sinkOfVictim !== undefined && sinkOfSurvivor !== undefined, "not enough twins owned by each node");
    const sinks = [sinkOfVictim, sinkOfSurvivor] as const;

    // A timer due in 3 s on each alarm: its owner is killed well before it is due.
    const timers = await n1.publish(alarms.map((id) => ev("alarm", id, 1, { timerMs: 3_000 })));
    assert.deepEqual(
      outcomes(timers.results).map(describeOutcome),
      alarms.map(() => "ACCEPTED"),
    );
    // 100 messages from the relays, half to a sink on the victim, half to one on a survivor; the
    // owner is killed as soon as they are acknowledged, with some of them still in its outbox.
    const sends = relays.flatMap((id, r) => range(10, 1).map((seq) => ev("relay", id, seq, {}, { attributes: { to: sinks[r % 2] as string } })));
    const sent = await n1.publish(sends);
    assert.deepEqual(
      outcomes(sent.results).map(describeOutcome),
      sends.map(() => "ACCEPTED"),
    );
    await c.kill(victim);

    const n2 = clients.get("n2") as TwinmeshClient;
    const fired = await waitFor(
      async () => {
        const states = await Promise.all(
          alarms.map(async (id) => (await n2.getTwin({ kind: "alarm", id })).twin?.state as { fired: number; firedNames: string[] }),
        );
        return states.every((s) => s.fired > 0) ? states : undefined;
      },
      { timeoutMs: 15_000, what: `the timers of ${victim}'s alarm twins to fire on their new owner` },
    );
    assert.ok(fired);
    assert.deepEqual(
      fired.map((s) => s.firedNames),
      alarms.map(() => ["ping"]),
    );
    const received = await waitFor(
      async () => {
        const states = await Promise.all(sinks.map(async (id) => (await n2.getTwin({ kind: "sink", id })).twin?.state as { received: number; seen: string[] }));
        return states.reduce((n, s) => n + s.received, 0) >= 100 ? states : undefined;
      },
      // Messages to one target go one at a time, each at QUORUM: on a loaded machine 100 of them take a while.
      { timeoutMs: 40_000, what: `the 100 messages of ${victim}'s relays to reach the sinks` },
    );
    assert.ok(received);
    received.forEach((state, k) => {
      const want = relays.filter((_, r) => r % 2 === k).flatMap((id) => range(10, 1).map((seq) => `${id}#${seq}`));
      assert.deepEqual([...state.seen].sort(), want.sort(), `messages on sink ${sinks[k]}`);
    });
    // And a timer fires once: read again through the other survivor.
    for (const id of alarms) {
      const { twin } = await n1.getTwin({ kind: "alarm", id });
      assert.deepEqual((twin?.state as { firedNames?: string[] } | undefined)?.firedNames, ["ping"], `timers fired on ${id}`);
    }
  });

  it("delivers each message of a killed sender's twin to another node's twin once, beyond the receiver's memory of message ids: the sender's replicas drop what was delivered", async () => {
    const { c, clients } = await start();
    const [relay] = await c.ownedBy("n1", "relay", named("rd", 40));
    const [sink] = await c.ownedBy("n2", "sink", named("sd", 40));
    assert.ok(relay !== undefined && sink !== undefined, "no relay on n1 or no sink on n2");
    const n1 = clients.get("n1") as TwinmeshClient;
    const n2 = clients.get("n2") as TwinmeshClient;
    const send = (seq: number) => ev("relay", relay, seq, {}, { attributes: { to: sink } });
    // More messages than a twin remembers ids of (128): a redelivery of the oldest would be applied again.
    for (let from = 1; from <= 200; from += 50) {
      const batch = range(50, from).map(send);
      assert.deepEqual(
        outcomes((await n1.publish(batch, Consistency.QUORUM)).results).map(describeOutcome),
        batch.map(() => "ACCEPTED"),
      );
    }
    const sinkState = async () => (await n2.getTwin({ kind: "sink", id: sink })).twin?.state as { received: number; seen: string[] } | undefined;
    await waitFor(async () => ((await sinkState())?.received ?? 0) >= 200, { timeoutMs: 40_000, what: "the 200 messages to reach the sink on n2" });
    await c.kill("n1");
    // The relay's new owner sends its outbox in order: once message 201 is there, any message it
    // sent again is there too.
    assert.deepEqual((await publishRetrying(n2, [send(201)], Consistency.QUORUM, 20_000)).map(describeOutcome), ["ACCEPTED"]);
    const state = await waitFor(
      async () => {
        const now = await sinkState();
        return now?.seen.includes(`${relay}#201`) === true ? now : undefined;
      },
      { timeoutMs: 30_000, what: "message 201, sent by the relay's new owner, to reach the sink" },
    );
    assert.ok(state);
    const repeated = state.seen.filter((m, i) => state.seen.indexOf(m) !== i);
    assert.deepEqual(repeated, [], `messages applied twice (${state.received} received for 201 sent)`);
    assert.equal(state.received, 201);
  });

  it("lets an alert watch through a surviving node miss no change of a killed owner's twin, before and after the kill", async () => {
    const { c, clients } = await start();
    const victim = "n2";
    const n1 = clients.get("n1") as TwinmeshClient;
    const [twin] = (await c.ownedBy(victim, "alarm", named("al", 60))) as [string];
    const { cursor } = await n1.listAlerts({});
    const controller = new AbortController();
    t.defer(() => controller.abort());
    const next = watch(n1, cursor, `twin_id == "${twin}"`, controller.signal);
    const seen: WatchAlertsResponse[] = [];
    /**
     * The next change that is not a repeat: a change delivered again after a failover carries the
     * same partition and change number, and must be the same change.
     */
    const nextChange = async (what: string): Promise<WatchAlertsResponse> => {
      for (;;) {
        const change = await next(10_000, what);
        assert.ok(change.change > 0n, `a change without its number: ${JSON.stringify(change.alert?.id)}`);
        const repeat = seen.find((s) => s.partition === change.partition && s.change === change.change);
        if (repeat !== undefined) {
          const same = (r: WatchAlertsResponse): unknown[] => [r.alert?.id, r.alert?.count, r.alert?.state, r.alert?.message];
          assert.deepEqual(same(change), same(repeat), `change ${change.partition}/${change.change} delivered again as another change`);
          continue;
        }
        seen.push(change);
        return change;
      }
    };

    assert.deepEqual(outcomes((await n1.publish([ev("alarm", twin, 1, { level: 120 })])).results).map(describeOutcome), ["ACCEPTED"]);
    await nextChange(`the raise of ${twin}, owned by ${victim}`);
    assert.deepEqual(outcomes((await n1.publish([ev("alarm", twin, 2, { level: 130 })])).results).map(describeOutcome), ["ACCEPTED"]);
    // Killed right after the acknowledgement: the change may not have reached the watch yet.
    await c.kill(victim);
    assert.deepEqual((await publishRetrying(n1, [ev("alarm", twin, 3, { level: 10 })])).map(describeOutcome), ["ACCEPTED"]);
    await nextChange("the raise again, made just before the kill");
    await nextChange("the resolution, made on the new owner");
    // One partition's log: its changes numbered one after another, on the old owner and the new.
    assert.deepEqual(
      seen.map((s) => Number(s.change - (seen[0]?.change ?? 0n))),
      [0, 1, 2],
      "change numbers",
    );
    assert.deepEqual(
      seen.map((s) => [s.alert?.id, AlertState[s.alert?.state ?? 0], Number(s.alert?.count), s.alert?.message]),
      [
        [`alarm/${twin}/high@1`, "OPEN", 1, "level 120"],
        [`alarm/${twin}/high@1`, "OPEN", 2, "level 130"],
        [`alarm/${twin}/high@1`, "RESOLVED", 2, "level 130"],
      ],
    );
  });

  it("keeps everything acknowledged at LOCAL, QUORUM and ALL when all three nodes are killed with kill -9 mid-stream and started again", async () => {
    const { c, clients } = await start();
    const levels = [
      ["LOCAL", Consistency.LOCAL, "n1"],
      ["QUORUM", Consistency.QUORUM, "n2"],
      ["ALL", Consistency.ALL, "n3"],
    ] as const;
    const writers = levels.map(
      ([name, consistency, via]) =>
        new SeqWriter({
          kind: "counter",
          ids: range(20).map((i) => `${name.toLowerCase()}-${i}`),
          clients: () => [clients.get(via) as TwinmeshClient],
          consistency,
          stopOnFailedCall: true,
        }),
    );
    const runs = writers.map((w) => w.run());
    await waitFor(() => writers.some((w) => w.failure !== undefined) || writers.every((w) => w.ackedCount >= 100), {
      timeoutMs: 20_000,
      what: "100 events acknowledged at each level",
    });
    writers.forEach((w, k) => {
      assert.equal(w.failure?.message, undefined, `the ${levels[k]?.[0]} writer failed before the kill`);
    });
    await Promise.all(MEMBERS.map((id) => c.kill(id)));
    for (const w of writers) w.stop();
    await Promise.all(runs);

    await Promise.all(MEMBERS.map((id) => c.startMember(id)));
    await c.formed();
    for (const id of MEMBERS) await c.caughtUp(id);
    const wrong: string[] = [];
    for (const [k, w] of writers.entries()) {
      for (const node of MEMBERS) {
        for (const [id, acked] of w.acked) {
          const got = await counterVia(clients.get(node) as TwinmeshClient, id);
          const view = typeof got === "string" ? (/TWIN_NOT_FOUND/.test(got) ? { count: 0, lastSeq: 0, total: 0 } : undefined) : got;
          // Applied exactly once, in order (1..lastSeq), and at least every acknowledged seq; an
          // event in flight at the kill may be there too.
          if (view === undefined || view.count !== view.lastSeq || view.total !== sumTo(view.lastSeq) || view.lastSeq < acked) {
            wrong.push(`${levels[k]?.[0]} ${id} through ${node}: acknowledged 1..${acked}, got ${JSON.stringify(got)}`);
          }
        }
      }
    }
    assert.equal(wrong.length, 0, `${wrong.length} reads differ after the restart, e.g.\n  ${wrong.slice(0, 10).join("\n  ")}`);
  });

  it("with a replica down answers QUORUM with 2 of 3 copies, refuses ALL retryably without applying any of it, and takes the same ALL events once the replica is back", async () => {
    const { c, clients } = await start();
    await c.kill("n3");
    await c.waitForState("n3", MemberState.DOWN);
    const candidates = named("r", 80);
    const owned = [...(await c.ownedBy("n1", "counter", candidates)).slice(0, 4), ...(await c.ownedBy("n2", "counter", candidates)).slice(0, 4)];
    for (const id of owned) assert.ok((await c.preferenceList("counter", id)).includes("n3"), `n3 does not replicate ${id}`);
    const [written, fresh] = [owned.slice(0, 5), owned.slice(5)];
    const n1 = clients.get("n1") as TwinmeshClient;
    const n2 = clients.get("n2") as TwinmeshClient;

    const quorum = await n1.publish(
      written.map((id) => ev("counter", id, 1, { v: 1 })),
      Consistency.QUORUM,
    );
    assert.deepEqual(
      outcomes(quorum.results).map(describeOutcome),
      written.map(() => "ACCEPTED"),
      "QUORUM with n3 down",
    );

    const all = [...written.map((id) => ev("counter", id, 2, { v: 2 })), ...fresh.map((id) => ev("counter", id, 1, { v: 1 }))];
    const refused = outcomes((await n2.publish(all, Consistency.ALL)).results);
    for (const [k, o] of refused.entries()) {
      assert.deepEqual([o.status, o.retryable], ["REJECTED", true], `ALL with n3 down, event ${k}: ${JSON.stringify(o)}`);
      assert.notEqual(o.reason, "OWNER_UNAVAILABLE", "the owner is up; a replica is not");
      assert.match(o.message, /cop(y|ies)|replica/i, `the rejection does not say that copies are missing: ${o.message}`);
    }
    // Nothing half-applied: the refused events are absent on the owner, and their twins unchanged or absent.
    const unchanged = new Map<string, CounterView>();
    for (const id of written) unchanged.set(id, { owner: await c.ownerOf("counter", id), count: 1, lastSeq: 1, total: 1 });
    await assertCounters(clients, ["n1", "n2"], unchanged, "after the refused ALL");
    for (const id of fresh) {
      for (const via of [n1, n2]) assert.match(String(await counterVia(via, id)), /TWIN_NOT_FOUND/, `${id} through ${via.address} after the refused ALL`);
    }

    // Back: the same events (same seqs) are applied now, not answered DUPLICATE (no dedupe mark was left behind).
    await c.startMember("n3");
    await c.caughtUp("n3");
    assert.deepEqual(
      (await publishRetrying(n1, all, Consistency.ALL)).map(describeOutcome),
      all.map(() => "ACCEPTED"),
      "the same ALL events once n3 is back",
    );
    const want = new Map<string, CounterView>();
    for (const id of written) want.set(id, { owner: await c.ownerOf("counter", id), count: 2, lastSeq: 2, total: 3 });
    for (const id of fresh) want.set(id, { owner: await c.ownerOf("counter", id), count: 1, lastSeq: 1, total: 1 });
    await assertCounters(clients, MEMBERS, want, "after ALL with every replica up");
  });

  it("answers QUORUM events with the two copies they asked for when a replica freezes, though ALL events of other clients share their commit groups", async () => {
    const ports = await freePorts(MEMBERS.length);
    const c = await ClusterHarness.start(t, {
      size: 3,
      twins: [FIXTURES],
      args: ["--replication-factor", "3"],
      argsOf: Object.fromEntries(MEMBERS.map((id, i) => [id, ["--metrics-port", String(ports[i])]])),
    });
    const clients = new Map(MEMBERS.map((id) => [id as string, c.client(id, 5_000)]));
    const ids = (await c.ownedBy("n1", "counter", named("m", 120))).slice(0, 24);
    const owner = c.client("n1", 20_000);
    // Concurrent calls to one owner share its commit groups; each its own twins, so no call waits for another's.
    const pairs = range(ids.length / 2).map((i) => [ids[2 * i] as string, ids[2 * i + 1] as string] as const);
    c.pause("n3");
    try {
      const answers = await Promise.all(
        pairs.map(([quorum, all]) =>
          Promise.all([
            answersOf(owner, [ev("counter", quorum, 1, { v: 1 })], Consistency.QUORUM),
            answersOf(owner, [ev("counter", all, 1, { v: 1 })], Consistency.ALL),
          ]),
        ),
      );
      for (const [k, [quorum, all]] of answers.entries()) {
        assert.deepEqual(quorum, ["ACCEPTED"], `QUORUM call ${k} with n3 frozen`);
        // Refused once n3 is seen down (or before it is applied, once it is), not at the 5 s timeout.
        assert.match(String(all), /^REJECTED NOT_ENOUGH_REPLICAS \(retryable: true\)/, `ALL call ${k} with n3 frozen`);
      }
    } finally {
      c.resume("n3");
    }
    // Some groups held both kinds (else this test would not test that).
    const metInPart = (await Scrape.of(c.node("n1").metricsAddress)).count("twinmesh_replication_shortfalls_met_in_part_total");
    assert.ok(metInPart > 0, `no commit group on n1 held both a QUORUM and an ALL answer (met in part: ${metInPart})`);
    const want = new Map(pairs.map(([quorum]) => [quorum, { owner: "n1", count: 1, lastSeq: 1, total: 1 }]));
    await assertCounters(clients, ["n1", "n2"], want, "the QUORUM events");
  });

  it("publishes at QUORUM by default in a cluster: with two of three nodes down a default publish is refused retryably and applies nothing, and LOCAL is accepted", async () => {
    const { c, clients } = await start();
    await Promise.all([c.kill("n2"), c.kill("n3")]);
    await c.waitForState("n2", MemberState.DOWN);
    await c.waitForState("n3", MemberState.DOWN);
    const ids = (await c.ownedBy("n1", "counter", named("d", 40))).slice(0, 3);
    const n1 = clients.get("n1") as TwinmeshClient;
    const events = ids.map((id) => ev("counter", id, 1, { v: 1 }));
    const byDefault = outcomes((await n1.publish(events)).results);
    assert.deepEqual(
      byDefault.map((o) => [o.status, o.retryable]),
      ids.map(() => ["REJECTED", true]),
      `a default publish with one copy of three reachable: ${JSON.stringify(byDefault[0])}`,
    );
    for (const id of ids) assert.match(String(await counterVia(n1, id)), /TWIN_NOT_FOUND/, `${id} after the refused default publish`);
    assert.deepEqual(
      outcomes((await n1.publish(events, Consistency.LOCAL)).results).map(describeOutcome),
      ids.map(() => "ACCEPTED"),
      "LOCAL with the owner up",
    );
  });

  it("brings a node restarted after 10 s of load without it up to date before it owns its twins again: every twin then reads the same through it", async () => {
    const { c, clients, live } = await start();
    const back = "n3";
    const ids = named("c", 60);
    const itsOwn = await c.ownedBy(back, "counter", ids);
    await c.kill(back);
    await c.waitForState(back, MemberState.DOWN);
    const writer = new SeqWriter({ kind: "counter", ids, clients: live });
    await writer.run({ forMs: 10_000 });
    assert.equal(writer.failure?.message, undefined, `the load without ${back} failed`);
    const behind = ids.filter((id) => (writer.acked.get(id) ?? 0) < 5);
    assert.deepEqual(behind, [], `twins with fewer than 5 events acknowledged in 10 s without ${back} (its own twins are ${itsOwn.join(",")})`);

    await c.startMember(back);
    await c.caughtUp(back, 30_000);
    const [first] = itsOwn as [string];
    await waitFor(async () => ((await counterVia(clients.get("n1") as TwinmeshClient, first)) as CounterView).owner === back, {
      timeoutMs: 10_000,
      what: `${back} to own ${first} again`,
    });
    await assertCounters(clients, MEMBERS, await expectedOf(writer, (id) => c.ownerOf("counter", id)), `after ${back} caught up`);
    const ring = JSON.parse((await runCli(["ring", "--json", "--address", c.members[2]?.address ?? ""])).stdout) as {
      nodes: { nodeId: string; state: string }[];
    };
    assert.deepEqual(
      ring.nodes.map((n) => `${n.nodeId}:${n.state}`),
      ["n1:up", "n2:up", "n3:self"],
    );
  });

  it("gives a failed-over partition to the node with the most advanced copy: a QUORUM write its successor missed while down is there once the successor owns it", async () => {
    const { c, clients } = await start();
    // Twins listed n2, n3, n1: with n3 down, their QUORUM copies are on n2 and n1 only.
    const ids: string[] = [];
    for (let i = 0; ids.length < 4 && i < 400; i++) if ((await c.preferenceList("counter", `m-${i}`)).join() === "n2,n3,n1") ids.push(`m-${i}`);
    assert.equal(ids.length, 4, "fewer than 4 of 400 twins have the preference list n2, n3, n1");
    await c.kill("n3");
    await c.waitForState("n3", MemberState.DOWN);
    const events = ids.flatMap((id) => range(5, 1).map((seq) => ev("counter", id, seq, { v: seq })));
    const written = await (clients.get("n1") as TwinmeshClient).publish(events, Consistency.QUORUM);
    assert.deepEqual(
      outcomes(written.results).map(describeOutcome),
      events.map(() => "ACCEPTED"),
      "QUORUM with n3 down",
    );
    // n2 dies and n3 comes back: n3 heads the lists now, with nothing of these writes on its disk.
    await c.kill("n2");
    await c.startMember("n3");
    await c.caughtUp("n3");
    await ownedBy(clients.get("n1") as TwinmeshClient, ids, "n3");
    await assertCounters(
      clients,
      ["n1", "n3"],
      new Map(ids.map((id) => [id, { owner: "n3", count: 5, lastSeq: 5, total: 15 }])),
      "with n3 owning after n2 died",
    );
    const next = ids.flatMap((id) => [ev("counter", id, 5, { v: 5 }), ev("counter", id, 6, { v: 6 })]);
    assert.deepEqual(
      (await publishRetrying(clients.get("n3") as TwinmeshClient, next, Consistency.QUORUM)).map(describeOutcome),
      ids.flatMap(() => ["DUPLICATE", "ACCEPTED"]),
      "seq 5 again and seq 6 on the new owner",
    );
  });

  it("makes a returning node give up the writes its partition's new owner never saw (acknowledged only LOCAL) and take the new owner's history", async () => {
    const { c, clients } = await start();
    const ids = (await c.ownedBy("n2", "counter", named("h", 60))).slice(0, 3);
    // n2 alone: its LOCAL writes are on its disk only.
    await Promise.all([c.kill("n1"), c.kill("n3")]);
    await c.waitForState("n1", MemberState.DOWN);
    await c.waitForState("n3", MemberState.DOWN);
    const alone = ids.flatMap((id) => range(5, 1).map((seq) => ev("counter", id, seq, { v: seq })));
    assert.deepEqual(
      outcomes((await (clients.get("n2") as TwinmeshClient).publish(alone, Consistency.LOCAL)).results).map(describeOutcome),
      alone.map(() => "ACCEPTED"),
      "LOCAL on n2 alone",
    );
    // n2 dies; n1 and n3 go on without those writes and take seqs 1..3 anew.
    await c.kill("n2");
    await Promise.all([c.startMember("n1"), c.startMember("n3")]);
    await c.formed();
    const anew = ids.flatMap((id) => range(3, 1).map((seq) => ev("counter", id, seq, { v: 100 })));
    assert.deepEqual(
      (await publishRetrying(clients.get("n1") as TwinmeshClient, anew, Consistency.QUORUM)).map(describeOutcome),
      anew.map(() => "ACCEPTED"),
      "seqs 1..3 on the new owner, which never saw n2's LOCAL writes",
    );
    // n2 returns: the new owner's history wins.
    await c.startMember("n2");
    await c.caughtUp("n2");
    await ownedBy(clients.get("n1") as TwinmeshClient, ids, "n2");
    await assertCounters(clients, MEMBERS, new Map(ids.map((id) => [id, { owner: "n2", count: 3, lastSeq: 3, total: 300 }])), "after n2 returned");
    // Its dedupe marks of seqs 4 and 5 went with its writes: seq 4 is new.
    assert.deepEqual(
      (
        await publishRetrying(
          clients.get("n3") as TwinmeshClient,
          ids.map((id) => ev("counter", id, 4, { v: 100 })),
        )
      ).map(describeOutcome),
      ids.map(() => "ACCEPTED"),
      "seq 4 after n2 returned",
    );
  });

  it("acknowledges QUORUM only once a replica has the write: with both replicas frozen the owner does not accept it, and a retry once they resume applies it once", async () => {
    const { c, clients } = await start();
    const { ids, owner } = await seqOneOnN1(c, "q");
    // Frozen, not dead: the owner still counts them for a moment and ships to them, but neither
    // can write, so no second copy of seq 2 is durable anywhere.
    c.pause("n2");
    c.pause("n3");
    const second = ids.map((id) => ev("counter", id, 2, { v: 2 }));
    const frozen = await answersOf(owner, second, Consistency.QUORUM);
    c.resume("n2");
    c.resume("n3");
    assert.ok(!frozen.includes("ACCEPTED"), `QUORUM was acknowledged while both replicas were frozen: ${frozen.join("; ")}`);
    await c.waitForState("n2", MemberState.UP);
    await c.waitForState("n3", MemberState.UP);
    const retried = (await publishRetrying(owner, second, Consistency.QUORUM)).map(describeOutcome);
    assert.ok(
      retried.every((o) => o === "ACCEPTED" || o === "DUPLICATE"),
      `the retry of seq 2 once the replicas resumed: ${retried.join("; ")}`,
    );
    await assertCounters(clients, MEMBERS, new Map(ids.map((id) => [id, { owner: "n1", count: 2, lastSeq: 2, total: 3 }])), "after the retry");
  });

  it("answers a retry DUPLICATE only once its first attempt is on the copies asked for: with both replicas frozen neither a write nor its retry is acknowledged at QUORUM, and after a kill -9 of the owner the next one applies it once", async () => {
    const { c, clients } = await start();
    const { ids, owner } = await seqOneOnN1(c, "d");
    // Both replicas freeze: the owner writes seq 2 and ships it, but no replica writes it. A
    // retry sent while they still count as up finds seq 2 in the owner's record, but only there:
    // DUPLICATE would tell the client it is kept at QUORUM.
    c.pause("n2");
    c.pause("n3");
    const second = ids.map((id) => ev("counter", id, 2, { v: 2 }));
    const firstAttempt = answersOf(owner, second, Consistency.QUORUM);
    await new Promise((resolve) => setTimeout(resolve, 150));
    const [alone, retried] = await Promise.all([firstAttempt, answersOf(owner, second, Consistency.QUORUM)]);
    for (const [what, answers] of [
      ["the first attempt", alone],
      ["its retry", retried],
    ] as const) {
      assert.ok(
        answers.every((a) => a.startsWith("REJECTED") || a.startsWith("call failed")),
        `${what} of seq 2 at QUORUM while both replicas were frozen: ${answers.join("; ")}`,
      );
    }
    await c.kill("n1");
    c.resume("n2");
    c.resume("n3");
    // The frozen replicas may still find seq 2 in their sockets when they go on (DUPLICATE then:
    // the refusals said it was written on n1); either way it is applied once.
    const next = (await publishRetrying(clients.get("n2") as TwinmeshClient, second, Consistency.QUORUM, 20_000)).map(describeOutcome);
    assert.ok(
      next.every((o) => o === "ACCEPTED" || o === "DUPLICATE"),
      `the retry of seq 2 through n2 once n1 is dead: ${next.join("; ")}`,
    );
    const want = new Map<string, CounterView>();
    for (const id of ids) want.set(id, { owner: await c.liveOwnerOf("counter", id), count: 2, lastSeq: 2, total: 3 });
    await assertCounters(clients, ["n2", "n3"], want, "after the retry on the next owner");
  });

  it("makes a running node that missed writes while frozen catch up from the most advanced copy before it takes a partition over", async () => {
    const { c, clients } = await start();
    // Twins listed n2, n3, n1: with n3 frozen, their QUORUM copies are on n2 and n1 only.
    const ids: string[] = [];
    for (let i = 0; ids.length < 4 && i < 400; i++) if ((await c.preferenceList("counter", `f-${i}`)).join() === "n2,n3,n1") ids.push(`f-${i}`);
    assert.equal(ids.length, 4, "fewer than 4 of 400 twins have the preference list n2, n3, n1");
    c.pause("n3");
    await c.waitForState("n3", MemberState.DOWN);
    const events = ids.flatMap((id) => range(5, 1).map((seq) => ev("counter", id, seq, { v: seq })));
    assert.deepEqual(
      outcomes((await (clients.get("n1") as TwinmeshClient).publish(events, Consistency.QUORUM)).results).map(describeOutcome),
      events.map(() => "ACCEPTED"),
      "QUORUM with n3 frozen",
    );
    // n2 dies and n3 goes on where it stopped: no restart, so only taking the partition can bring
    // it n1's copy of these writes.
    await c.kill("n2");
    c.resume("n3");
    // Until n3 has taken the partition, reads are refused retryably; a twin it cannot find means
    // it serves without the writes (the assertion below says so).
    // Each partition is served as soon as it is taken: wait for every twin's.
    await waitFor(
      async () => {
        for (const id of ids) {
          const got = await counterVia(clients.get("n1") as TwinmeshClient, id);
          if (typeof got === "string" ? !got.includes("TWIN_NOT_FOUND") : got.owner !== "n3") return undefined;
        }
        return true;
      },
      { timeoutMs: 15_000, what: `n3 to own ${ids.join(", ")} once n2 died` },
    );
    await assertCounters(
      clients,
      ["n1", "n3"],
      new Map(ids.map((id) => [id, { owner: "n3", count: 5, lastSeq: 5, total: 15 }])),
      "with n3 owning after n2 died",
    );
  });
});
