import { createRequire } from "node:module";
import type { BatchOp } from "../../runtime/store/rocks-store.js";
import type { TestScope } from "./test-scope.js";

type Callback = (err: Error | null | undefined) => void;
/** The binding's chained-batch calls, through which `RocksStore.write` builds and writes a batch. */
interface BatchBinding {
  batch_init(db: unknown): object;
  batch_put(batch: object, key: string, value: string | Uint8Array): void;
  batch_del(batch: object, key: string): void;
  batch_write(batch: object, options: { sync: boolean }, cb: Callback): void;
}

export interface SpiedWrite {
  readonly ops: readonly BatchOp[];
  /** The `sync` write option: true means RocksDB syncs the WAL before it answers. */
  readonly sync: boolean;
}

/**
 * Watches (and can hold) every write batch this process hands to the `rocksdb` native binding,
 * the one path through which `RocksStore.write` reaches the disk. It wraps the binding's
 * chained-batch calls (`batch_put`, `batch_del`, `batch_write`) in the module cache, so the store
 * under test is unchanged; the scope restores them.
 *
 * @example
 * const writes = WriteSpy.install(t);
 * await runtime.host.publish([...]);
 * assert.ok(writes.writes.every((w) => w.sync));
 */
export class WriteSpy {
  /** Every write batch seen, in the order the store issued them. */
  readonly writes: SpiedWrite[] = [];
  private holding = false;
  private held: (() => void)[] = [];

  private constructor() {}

  /** Wraps the binding's batch calls until the end of the test. */
  static install(t: TestScope): WriteSpy {
    const binding = createRequire(import.meta.url)("rocksdb/binding") as BatchBinding;
    const original = { put: binding.batch_put, del: binding.batch_del, write: binding.batch_write };
    const spy = new WriteSpy();
    const opsOf = new WeakMap<object, BatchOp[]>();
    const record = (batch: object, op: BatchOp): void => {
      const ops = opsOf.get(batch);
      if (ops === undefined) opsOf.set(batch, [op]);
      else ops.push(op);
    };
    binding.batch_put = (batch, key, value) => {
      record(batch, { type: "put", key, value });
      original.put.call(binding, batch, key, value);
    };
    binding.batch_del = (batch, key) => {
      record(batch, { type: "del", key });
      original.del.call(binding, batch, key);
    };
    binding.batch_write = (batch, options, cb) => {
      spy.writes.push({ ops: opsOf.get(batch) ?? [], sync: options.sync });
      const issue = (): void => original.write.call(binding, batch, options, cb);
      if (spy.holding) spy.held.push(issue);
      else issue();
    };
    t.defer(() => {
      binding.batch_put = original.put;
      binding.batch_del = original.del;
      binding.batch_write = original.write;
      spy.release();
    });
    return spy;
  }

  /** Writes issued from now on wait (not yet sent to RocksDB) until {@link release}. */
  hold(): void {
    this.holding = true;
  }

  /** Writes waiting because of {@link hold}. */
  get heldCount(): number {
    return this.held.length;
  }

  /** Sends the waiting writes to RocksDB in order, and stops holding. */
  release(): void {
    this.holding = false;
    const held = this.held;
    this.held = [];
    for (const issue of held) issue();
  }
}
