import { createRequire } from "node:module";
import type { BatchOp } from "../../runtime/store/rocks-store.js";
import type { TestScope } from "./test-scope.js";

type Callback = (err: Error | null | undefined) => void;
type BatchDo = (db: unknown, ops: readonly BatchOp[], options: { sync: boolean }, cb: Callback) => void;

/** One write batch as `RocksStore` handed it to the native binding. */
export interface SpiedWrite {
  readonly ops: readonly BatchOp[];
  /** The `sync` write option: true means RocksDB syncs the WAL before it answers. */
  readonly sync: boolean;
}

/**
 * Watches (and can hold) every write batch this process hands to the `rocksdb` native binding,
 * the one call through which `RocksStore.write` reaches the disk. It wraps the binding's
 * `batch_do` in the module cache, so the store under test is unchanged; the scope restores it.
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

  /** Wraps the binding's `batch_do` until the end of the test. */
  static install(t: TestScope): WriteSpy {
    const binding = createRequire(import.meta.url)("rocksdb/binding") as { batch_do: BatchDo };
    const original = binding.batch_do;
    const spy = new WriteSpy();
    binding.batch_do = (db, ops, options, cb) => {
      spy.writes.push({ ops: [...ops], sync: options.sync });
      const issue = (): void => original.call(binding, db, ops, options, cb);
      if (spy.holding) spy.held.push(issue);
      else issue();
    };
    t.defer(() => {
      binding.batch_do = original;
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
