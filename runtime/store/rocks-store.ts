import { mkdirSync, readdirSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { ConfigError, DataDirectoryError, isTwinmeshError } from "../errors.js";

/**
 * The one module that knows which RocksDB binding twinmesh uses (the `rocksdb` package).
 * Everything else sees this small promise-based API: string keys and values, one write batch
 * per call, chunked range scans.
 */

const require = createRequire(import.meta.url);

type Callback<T = void> = (err: Error | null | undefined, value?: T) => void;
interface IteratorOptions {
  gte?: string;
  gt?: string;
  lt?: string;
  lte?: string;
  limit?: number;
  reverse?: boolean;
  keys?: boolean;
  values?: boolean;
  keyAsBuffer: false;
  valueAsBuffer: false;
  fillCache?: boolean;
  highWaterMark?: number;
}
interface LevelDown {
  readonly context: unknown;
  open(options: object, cb: Callback): void;
  close(cb: Callback): void;
  get(key: string, options: { asBuffer: false; fillCache?: boolean }, cb: Callback<string>): void;
  getMany(keys: string[], options: { asBuffer: false }, cb: Callback<(string | undefined)[]>): void;
}
interface Binding {
  batch_init(db: unknown): unknown;
  batch_put(batch: unknown, key: string, value: string | Uint8Array): void;
  batch_del(batch: unknown, key: string): void;
  batch_write(batch: unknown, options: { sync: boolean }, cb: Callback): void;
  iterator_init(db: unknown, options: IteratorOptions): unknown;
  iterator_next(it: unknown, cb: (err: Error | null, entries: string[], finished: boolean) => void): void;
  iterator_end(it: unknown, cb: Callback): void;
}
/** What one `iterator_next` call returns. */
interface IteratorChunk {
  readonly entries: string[];
  readonly finished: boolean;
}
const leveldown = require("rocksdb") as (location: string) => LevelDown;
const binding = require("rocksdb/binding") as Binding;

/** One operation of a write batch. */
/**
 * One write of a batch. A value is a string (stored as its UTF-8 bytes) or those bytes already
 * encoded (a replica writes the bytes it received as they are).
 */
export type BatchOp = { readonly type: "put"; readonly key: string; readonly value: string | Uint8Array } | { readonly type: "del"; readonly key: string };

/** How a write batch reaches the disk. */
export const Durability = {
  /** Written to the WAL before the ack: survives the process being killed. */
  WAL: "wal",
  /** The WAL is synced before the ack: survives power loss. */
  FSYNC: "fsync",
} as const;
/** `"wal"` or `"fsync"`. */
export type Durability = (typeof Durability)[keyof typeof Durability];

/** A key range: `[gte, lt)`. */
export interface KeyRange {
  readonly gte: string;
  readonly lt: string;
  /** Scan at most this many entries. */
  readonly limit?: number;
  readonly reverse?: boolean;
}

/** Options for {@link RocksStore.open}. */
export interface RocksStoreOptions {
  /** @defaultValue `"wal"` */
  readonly durability?: Durability;
  /**
   * Block cache size. Small by default: active twins are cached as objects by the host, the
   * block cache only serves the loads of inactive ones, and the OS page cache sits behind it.
   * @defaultValue {@link DEFAULT_CACHE_BYTES}
   */
  readonly cacheBytes?: number;
  /** Memtable size (RocksDB keeps up to two). @defaultValue {@link DEFAULT_WRITE_BUFFER_BYTES} */
  readonly writeBufferBytes?: number;
}

/** The block cache of a store opened without `cacheBytes`. */
export const DEFAULT_CACHE_BYTES = 16 * 1024 * 1024;
/** The memtable size of a store opened without `writeBufferBytes`. */
export const DEFAULT_WRITE_BUFFER_BYTES = 16 * 1024 * 1024;

const FORMAT_KEY = "\u0000meta\u0000format";
const FORMAT_NAME = "twinmesh-data";
/**
 * The data format this build writes. It reads every older one: a new directory is stamped at
 * open; an older one is upgraded by the runtime (`upgradeDataFormat`), which stamps the number
 * when it is done, so that an older build refuses the directory instead of misreading it.
 * 3: the alert log, outbox and dead letters are numbered per partition, with per-partition marks
 * (`m`); 2: a twin record is `<meta>\n<state>` (1: one JSON object).
 */
export const DATA_FORMAT_VERSION = 3;

function openDb(db: LevelDown, createIfMissing: boolean, options: RocksStoreOptions, readOnly = false): Promise<void> {
  return promisify<void>((cb) =>
    db.open(
      {
        createIfMissing,
        errorIfExists: false,
        compression: true,
        cacheSize: options.cacheBytes ?? DEFAULT_CACHE_BYTES,
        writeBufferSize: options.writeBufferBytes ?? DEFAULT_WRITE_BUFFER_BYTES,
        maxOpenFiles: 1000,
        // No infoLogLevel: the binding then gives RocksDB a null logger. With one, every open,
        // even a failed one, renames LOG to LOG.old.* and writes a new LOG: it would touch a
        // directory it refuses (corrupt, locked by another node).
        readOnly,
      },
      cb,
    ),
  );
}

/** The binding reads sizes as 32-bit unsigned integers. */
const MAX_SIZE_BYTES = 2 ** 32 - 1;

function checkSize(name: string, value: number | undefined, min: number): void {
  if (value !== undefined && (!Number.isSafeInteger(value) || value < min || value > MAX_SIZE_BYTES)) {
    throw new ConfigError("BAD_OPTION", `${name} is ${value}; use a whole number of bytes from ${min} to ${MAX_SIZE_BYTES}, or omit it for the default`);
  }
}

function promisify<T>(fn: (cb: Callback<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    fn((err, value) => (err ? reject(err) : resolve(value as T)));
  });
}

/**
 * A RocksDB database in one data directory, carrying a format marker.
 *
 * Guarantees: a {@link write} is one atomic RocksDB write batch, in the WAL when it resolves
 * (synced first in `fsync` mode). Opening refuses, without writing anything, a directory that
 * is not a twinmesh data directory, one of a newer format, a corrupt one, or one locked by
 * another process.
 */
export class RocksStore {
  private closed = false;
  private reopening = false;
  /** Native calls under way (reads, writes, iterator steps): close waits for them to call back. */
  private native = 0;
  private nativeDone: (() => void) | undefined;
  /** The reopen in progress. */
  private reopened: Promise<void> | undefined;
  /** The close in progress or done. */
  private closing: Promise<void> | undefined;
  /**
   * False between a reopen's close and its open, after a reopen that failed to open (until one
   * succeeds), and after close: no native call may then reach the closed handle.
   */
  private dbOpen = true;
  /**
   * The data format the directory holds: {@link DATA_FORMAT_VERSION}, or an older one (also
   * while an upgrade from it is unfinished) until `upgradeDataFormat` stamps the new one.
   */
  formatVersion = DATA_FORMAT_VERSION;

  private constructor(
    private db: LevelDown,
    /** The data directory. */
    readonly path: string,
    /** The durability mode of every write. */
    readonly durability: Durability,
    private readonly options: RocksStoreOptions,
  ) {}

  /**
   * Opens (creating when absent or empty) the data directory `path`.
   * @throws ConfigError (BAD_OPTION) for a bad size; DataDirectoryError with reason DATA_DIR_FOREIGN, DATA_DIR_FORMAT, DATA_DIR_CORRUPT,
   * DATA_DIR_LOCKED or DATA_DIR_UNREADABLE, and a message that says what to do.
   */
  static async open(path: string, options: RocksStoreOptions = {}): Promise<RocksStore> {
    checkSize("cacheBytes", options.cacheBytes, 0);
    checkSize("writeBufferBytes", options.writeBufferBytes, 64 * 1024);
    const fresh = RocksStore.checkDirectory(path);
    // A read-write open rewrites the MANIFEST and OPTIONS and flushes the WAL: check the format
    // marker read-only first, so a directory of another program or a newer format is left as is.
    if (!fresh) await RocksStore.checkReadOnly(path, options);
    const db = leveldown(path);
    try {
      await openDb(db, fresh, options);
    } catch (err) {
      throw RocksStore.openError(path, err);
    }
    const store = new RocksStore(db, path, options.durability ?? Durability.WAL, options);
    try {
      const version = await store.checkFormat(fresh);
      // A new directory is stamped now; an older one keeps its number until it is upgraded.
      if (version === 0) await store.stampFormat(DATA_FORMAT_VERSION);
      else store.formatVersion = version;
    } catch (err) {
      await store.close();
      throw isTwinmeshError(err) ? err : RocksStore.openError(path, err);
    }
    return store;
  }

  /** Checks the format marker of an existing directory without writing to it. */
  private static async checkReadOnly(path: string, options: RocksStoreOptions): Promise<void> {
    const db = leveldown(path);
    try {
      await openDb(db, false, options, true);
    } catch {
      return; // the read-write open says what is wrong (corrupt, unreadable); it writes nothing either when it fails
    }
    const store = new RocksStore(db, path, options.durability ?? Durability.WAL, options);
    try {
      await store.checkFormat(false);
    } catch (err) {
      // Reading the marker is the first read of a table file: a damaged one fails here.
      throw isTwinmeshError(err) ? err : RocksStore.openError(path, err);
    } finally {
      await store.close();
    }
  }

  /** Returns true when the directory is absent or empty (a new data directory). */
  private static checkDirectory(path: string): boolean {
    let entries: string[];
    try {
      if (!statSync(path).isDirectory()) {
        throw new DataDirectoryError("DATA_DIR_FOREIGN", path, `data directory ${path} is a file, not a directory; pass --data a directory path`);
      }
      entries = readdirSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        mkdirSync(path, { recursive: true });
        return true;
      }
      if (err instanceof DataDirectoryError) throw err;
      throw new DataDirectoryError("DATA_DIR_UNREADABLE", path, `cannot read data directory ${path}: ${(err as Error).message}`, { cause: err });
    }
    if (entries.length === 0) return true;
    if (!entries.includes("CURRENT")) {
      throw new DataDirectoryError(
        "DATA_DIR_FOREIGN",
        path,
        `${path} is not empty and holds no twinmesh data (no RocksDB CURRENT file); refusing to touch it. Pass --data an empty or twinmesh data directory`,
      );
    }
    return false;
  }

  private static openError(path: string, err: unknown): DataDirectoryError {
    const text = (err as Error).message ?? String(err);
    // A word of its own: "block checksum mismatch" is a corruption, not a lock.
    if (/\block\b/i.test(text)) {
      return new DataDirectoryError(
        "DATA_DIR_LOCKED",
        path,
        `data directory ${path} is in use by another process (${text}); stop that node or pass a different --data`,
        { cause: err },
      );
    }
    // RocksDB says "Corruption: …" for a damaged file; a table file that is missing or cut
    // short is as damaged, though it says "IO error" or "truncated".
    if (/corrupt|checksum|magic number|truncated|\.sst/i.test(text)) {
      return new DataDirectoryError(
        "DATA_DIR_CORRUPT",
        path,
        `data directory ${path} is corrupt (${text}); restore it from a replica or backup, or move it aside and start empty`,
        { cause: err },
      );
    }
    return new DataDirectoryError(
      "DATA_DIR_UNREADABLE",
      path,
      `cannot open data directory ${path} (${text}); check that this user may read and write it and that its disk is mounted, or restore it from a backup`,
      { cause: err },
    );
  }

  /**
   * Stamps the format marker. With `upgradingFrom`, the marker says {@link DATA_FORMAT_VERSION}
   * (so an older build refuses the half-upgraded directory) while this build reads it as
   * `upgradingFrom` and finishes the upgrade.
   */
  async stampFormat(version: number, upgradingFrom?: number): Promise<void> {
    await this.write([{ type: "put", key: FORMAT_KEY, value: JSON.stringify({ format: FORMAT_NAME, version, upgradingFrom }) }]);
    this.formatVersion = upgradingFrom ?? version;
  }

  /**
   * Checks the format marker and returns its version (the version an unfinished upgrade started
   * from): 0 when there is none yet and the database is empty, so it may be stamped.
   */
  private async checkFormat(fresh: boolean): Promise<number> {
    const raw = await this.get(FORMAT_KEY);
    if (raw === undefined) {
      const first = await this.firstKey();
      if (!fresh && first !== undefined) {
        throw new DataDirectoryError(
          "DATA_DIR_FOREIGN",
          this.path,
          `${this.path} is a RocksDB database but not a twinmesh one (no format marker); refusing to use it. Pass --data an empty or twinmesh data directory`,
        );
      }
      return 0;
    }
    let marker: { format?: unknown; version?: unknown; upgradingFrom?: unknown };
    try {
      marker = JSON.parse(raw) as typeof marker;
    } catch {
      marker = {};
    }
    if (marker.format !== FORMAT_NAME || typeof marker.version !== "number") {
      throw new DataDirectoryError(
        "DATA_DIR_CORRUPT",
        this.path,
        `${this.path} has an unreadable format marker; restore it from a backup or start with an empty directory`,
      );
    }
    if (marker.version > DATA_FORMAT_VERSION) {
      throw new DataDirectoryError(
        "DATA_DIR_FORMAT",
        this.path,
        `${this.path} holds data format ${marker.version}, newer than this twinmesh reads (${DATA_FORMAT_VERSION}); run a newer twinmesh`,
      );
    }
    return typeof marker.upgradingFrom === "number" ? marker.upgradingFrom : marker.version;
  }

  private async firstKey(): Promise<string | undefined> {
    for await (const chunk of this.scan({ gte: "", lt: "\uffff", limit: 1 })) {
      return chunk[0]?.[0];
    }
    return undefined;
  }

  /**
   * Closes and reopens the database. RocksDB stops taking writes after a failed WAL write (a
   * full disk, say) until it is reopened; reopening replays the WAL, so every write that
   * succeeded is kept. Reads fail while this runs.
   */
  async reopen(): Promise<void> {
    if (this.closed) throw new Error("store is closed");
    // The native calls made directly below must never reach a closed handle (it would crash
    // the process, not fail): they are refused until the new handle is open.
    this.reopening = true;
    this.reopened ??= (async () => {
      try {
        // After a reopen that could not open (the disk still full), the old handle is closed already.
        // Native calls still under way on the old handle finish first (new ones are refused).
        await this.nativeCallsDone();
        if (this.dbOpen) await promisify<void>((cb) => this.db.close(cb));
        this.dbOpen = false;
        const db = leveldown(this.path);
        await openDb(db, false, this.options);
        this.db = db;
        this.dbOpen = true;
      } finally {
        this.reopening = false;
        this.reopened = undefined;
      }
    })();
    return this.reopened;
  }

  /** Reads one key; `undefined` when absent. */
  get(key: string): Promise<string | undefined> {
    const refused = this.refusal();
    if (refused !== undefined) return Promise.reject(refused);
    return new Promise((resolve, reject) => {
      this.tracked<string | undefined>((cb) => this.db.get(key, { asBuffer: false }, cb))((err, value) => {
        if (err) {
          if ((err as { notFound?: boolean }).notFound || /NotFound/.test(err.message)) resolve(undefined);
          else reject(err);
        } else resolve(value);
      });
    });
  }

  /** Reads many keys in one call; `undefined` for the absent ones. */
  getMany(keys: string[]): Promise<(string | undefined)[]> {
    const refused = this.refusal();
    if (refused !== undefined) return Promise.reject(refused);
    return promisify<(string | undefined)[]>(this.tracked((cb) => this.db.getMany(keys, { asBuffer: false }, cb)));
  }

  /**
   * Applies `ops` as one atomic write batch (synced in `fsync` mode). Calls the native binding
   * directly: abstract-leveldown's `batch()` copies and re-validates every op, which cost more
   * than the native call itself on the group-commit path; our ops are already well formed. The
   * batch is built one native call per op (`batch_put`): half the cost of handing over the op
   * array (`batch_do`), which reads three properties of every op through N-API.
   */
  write(ops: readonly BatchOp[]): Promise<void> {
    const refused = this.refusal();
    if (refused !== undefined) return Promise.reject(refused);
    if (ops.length === 0) return Promise.resolve();
    const batch = binding.batch_init(this.db.context);
    for (const op of ops) {
      if (op.type === "put") binding.batch_put(batch, op.key, op.value);
      else binding.batch_del(batch, op.key);
    }
    return promisify<void>(this.tracked((cb) => binding.batch_write(batch, { sync: this.durability === Durability.FSYNC }, cb)));
  }

  /** Why the store takes no call now (closed, or reopening after a full disk); undefined when it does. */
  private refusal(): Error | undefined {
    return this.closed || this.reopening || !this.dbOpen ? new Error(`store is ${this.closed ? "closed" : "reopening"}`) : undefined;
  }

  /**
   * Wraps a native call so it is counted while under way (close and reopen wait for the count to
   * drop to 0): `call(cb)` starts it at once, with a callback that uncounts it, then calls `cb`.
   */
  private tracked<T>(call: (cb: Callback<T>) => void): (cb: Callback<T>) => void {
    this.native++;
    return (cb) =>
      call((err, value) => {
        if (--this.native === 0) this.nativeDone?.();
        cb(err, value);
      });
  }

  /** Waits until no native call is under way. */
  private async nativeCallsDone(): Promise<void> {
    if (this.native > 0) await new Promise<void>((resolve) => (this.nativeDone = resolve));
  }

  /**
   * Scans `range` in chunks of up to 1,000 entries read by one native call each, so a long scan
   * yields the event loop between chunks; unless `range.limit` bounds it, the next chunk is read
   * while the caller handles one. The scan sees a consistent snapshot taken when it starts.
   * Breaking out of the loop releases the iterator.
   */
  async *scan(range: KeyRange, options: { keys?: boolean; values?: boolean } = {}): AsyncGenerator<[string, string][]> {
    const refused = this.refusal();
    if (refused !== undefined) throw refused;
    const it = binding.iterator_init(this.db.context, {
      gte: range.gte,
      lt: range.lt,
      limit: range.limit ?? -1,
      reverse: range.reverse ?? false,
      keys: options.keys ?? true,
      values: options.values ?? true,
      keyAsBuffer: false,
      valueAsBuffer: false,
      fillCache: false,
      highWaterMark: 256 * 1024,
    });
    const db = this.db;
    const next = (): Promise<IteratorChunk> => {
      const read = new Promise<IteratorChunk>((resolve, reject) => {
        // Closing or reopening the database (a full disk's probe) ended this iterator: reading it
        // again would reach a freed handle and crash the process, so the scan fails instead.
        if (this.closed || this.reopening || !this.dbOpen || this.db !== db)
          reject(new Error(`store is ${this.closed ? "closed" : "reopening"}; the scan was ended`));
        else {
          this.tracked<IteratorChunk>((cb) => binding.iterator_next(it, (err, entries, finished) => cb(err, { entries, finished })))((err, chunk) =>
            err ? reject(err) : resolve(chunk as IteratorChunk),
          );
        }
      });
      // A read ahead fails while the caller is away, before anyone awaits it: that must not count
      // as an unhandled rejection (which would end the process). The await below still throws.
      read.catch(() => undefined);
      return read;
    };
    // A bounded scan (a lookup, a page) reads no further than asked: no read-ahead.
    const readAhead = range.limit === undefined;
    let reading: Promise<IteratorChunk> | undefined = next();
    try {
      while (reading !== undefined) {
        const { entries, finished }: IteratorChunk = await reading;
        const done: boolean = finished || entries.length === 0;
        // Read the next chunk on the thread pool while the caller handles this one.
        reading = readAhead && !done ? next() : undefined;
        if (entries.length > 0) {
          // The binding returns [vN, kN, ..., v1, k1] so that JS can pop(); undo that.
          const chunk: [string, string][] = new Array(entries.length / 2);
          for (let i = entries.length - 1, j = 0; i > 0; i -= 2, j++) chunk[j] = [entries[i] as string, entries[i - 1] as string];
          yield chunk;
        }
        if (!done) reading ??= next();
      }
    } finally {
      // A caller that stops early leaves a read ahead in flight: let it land (its error, if any,
      // is of no interest now) before the iterator is released.
      await reading?.catch(() => undefined);
      // Closing or reopening the database ended its iterators, and ending one again would never call back.
      if (!this.closed && !this.reopening && this.dbOpen && this.db === db) {
        await promisify<void>(this.tracked((cb) => binding.iterator_end(it, cb)));
      }
    }
  }

  /** Closes the database; idempotent. Callers end their scans first. */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.closing = (async () => {
        // A reopen in progress finishes first, so its new handle is the one closed.
        await this.reopened?.catch(() => undefined);
        // A native call still under way on the thread pool would read or write a freed handle and
        // crash the process: new ones are refused (closed), and those under way are waited for.
        await this.nativeCallsDone();
        if (this.dbOpen) await promisify<void>((cb) => this.db.close(cb));
        this.dbOpen = false;
      })();
    }
    await this.closing;
  }
}
