import assert from "node:assert/strict";
import { alertId } from "../../../../runtime/alerts/alert.js";
import { type PartitionId, Partitioning } from "../../../../runtime/index.js";
import { Keys, PartitionMark } from "../../../../runtime/store/keys.js";

const partitioning = new Partitioning(256);

/** Twin ids that a naive parser would split wrongly: unicode, `/`, `%` (alert ids URI-encode them). */
const IDS = ["bed-4", "Zimmer/Bett ä", "100%/50%", "séance 🛏 7", "a%2Fb", "x/y/z"];

describe("Keys", () => {
  for (const namespace of ["", "tenant-1"]) {
    const keys = new Keys(namespace);
    describe(`partitionOfKey (namespace ${JSON.stringify(namespace)})`, () => {
      for (const id of IDS) {
        const p = partitioning.partitionOf("patient", id);

        it(`reads twin ${JSON.stringify(id)}'s partition from its record, timer, alert and resolved-index keys`, () => {
          const alert = alertId("patient", id, "low-spo2", 7);
          assert.equal(Keys.partitionOfKey(keys.twin("patient", id), partitioning), p);
          assert.equal(Keys.partitionOfKey(keys.timer(1_700_000_000_000, "patient", id, "check/1"), partitioning), p);
          assert.equal(Keys.partitionOfKey(keys.alert(alert), partitioning), p);
          assert.equal(Keys.partitionOfKey(keys.alert(`${alert}.1`), partitioning), p);
          assert.equal(Keys.partitionOfKey(keys.resolvedAlert(1_700_000_000_000, alert), partitioning), p);
        });
      }

      it("reads the partition field of alert log, outbox, dead letter and mark keys", () => {
        for (const p of [0, 1, 17, 255] as PartitionId[]) {
          assert.equal(Keys.partitionOfKey(keys.alertLog(p, 42), partitioning), p);
          assert.equal(Keys.partitionOfKey(keys.outbox(p, 2 ** 40), partitioning), p);
          assert.equal(Keys.partitionOfKey(keys.deadLetter(p, 1), partitioning), p);
          assert.equal(Keys.partitionOfKey(keys.mark(p, PartitionMark.OUTBOX_SEQ), partitioning), p);
          assert.equal(Keys.partitionOfKey(keys.mark(p, PartitionMark.DEAD_LETTER_SEQ), partitioning), p);
        }
      });

      it("round-trips the partition and seq of sequence keys", () => {
        const p = 200 as PartitionId;
        assert.deepEqual(keys.outboxKeyOf(keys.outbox(p, 123_456)), { partition: p, seq: 123_456 });
        assert.deepEqual(keys.deadLetterKeyOf(keys.deadLetter(p, 9)), { partition: p, seq: 9 });
        assert.deepEqual(keys.alertLogKeyOf(keys.alertLog(p, 77)), { partition: p, seq: 77 });
        assert.deepEqual(keys.markOf(keys.mark(p, PartitionMark.OUTBOX_SEQ)), { partition: p, name: "outbox-seq" });
      });
    });
  }

  it("says node-local keys and keys of no keyspace belong to no partition", () => {
    for (const key of ["\u0000meta\u0000format", "\u0000meta\u0000partitions", "\u0000meta\u0000outbox-seq", "", "t", "zz\u0000x"]) {
      assert.equal(Keys.partitionOfKey(key, partitioning), undefined, JSON.stringify(key));
    }
  });

  it("refuses a partition field beyond the partition count", () => {
    const keys = new Keys();
    assert.equal(Keys.partitionOfKey(keys.outbox(300 as PartitionId, 1), partitioning), undefined);
  });

  it("keeps one partition's sequence keys in one range, ordered by seq", () => {
    const keys = new Keys();
    const p = 3 as PartitionId;
    const range = keys.outboxFrom(p);
    for (const k of [keys.outbox(p, 1), keys.outbox(p, 2 ** 52)]) assert.ok(k >= range.gte && k < range.lt);
    for (const k of [keys.outbox(2 as PartitionId, 2 ** 52), keys.outbox(4 as PartitionId, 0)]) assert.ok(!(k >= range.gte && k < range.lt));
    assert.ok(keys.outbox(p, 9) < keys.outbox(p, 10));
  });
});
