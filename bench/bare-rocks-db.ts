import { createRequire } from "node:module";
import { DEFAULT_CACHE_BYTES, DEFAULT_WRITE_BUFFER_BYTES } from "../runtime/store/rocks-store.js";

/**
 * The `rocksdb` package used directly, for the ceilings, opened with the same options as the
 * node's store (runtime/store/rocks-store.ts): compression, its default block cache and memtable sizes.
 */

type Callback = (err: Error | null | undefined) => void;
interface LevelDown {
  open(options: object, cb: Callback): void;
  close(cb: Callback): void;
  batch(ops: readonly BareOp[], options: { sync: boolean }, cb: Callback): void;
}

/** One put of a write batch. */
export interface BareOp {
  readonly type: "put";
  readonly key: string;
  readonly value: string;
}

const require = createRequire(import.meta.url);
const leveldown = require("rocksdb") as (location: string) => LevelDown;

/** A RocksDB database for a ceiling measurement. */
export class BareRocks {
  private constructor(private readonly db: LevelDown) {}

  static async open(path: string): Promise<BareRocks> {
    const db = leveldown(path);
    await new Promise<void>((resolve, reject) =>
      db.open(
        {
          createIfMissing: true,
          errorIfExists: false,
          compression: true,
          cacheSize: DEFAULT_CACHE_BYTES,
          writeBufferSize: DEFAULT_WRITE_BUFFER_BYTES,
          maxOpenFiles: 1000,
          infoLogLevel: "error",
        },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
    return new BareRocks(db);
  }

  /** One atomic write batch; `sync` fsyncs the WAL before resolving. */
  write(ops: readonly BareOp[], sync: boolean): Promise<void> {
    return new Promise((resolve, reject) => this.db.batch(ops, { sync }, (err) => (err ? reject(err) : resolve())));
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
  }
}

/** The key of a twin record, laid out as the node lays it out (runtime/store/keys.ts). */
export function twinKey(kind: string, id: string): string {
  return `t\u0000\u0000${kind}\u0000${id}`;
}

/** A JSON twin record of exactly `bytes` characters, with random numbers (as compressible as real ones). */
export function recordOfSize(bytes: number, random: () => number): string {
  const head = `{"sv":1,"ver":${Math.floor(random() * 1000)},"hw":${Math.floor(random() * 1e15)},"let":${Date.now()},"state":{"value":${(random() * 100).toFixed(3)},"ewma":${random() * 100},"pad":"`;
  const tail = `"}}`;
  let pad = "";
  while (head.length + pad.length + tail.length < bytes) pad += Math.floor(random() * 1e9).toString(36);
  return head + pad.slice(0, Math.max(0, bytes - head.length - tail.length)) + tail;
}
