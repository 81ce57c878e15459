/**
 * The message store on LevelDB (the storage interface, storage/store.ts): metadata and bytes
 * of every accepted message and the records that go with them, in one LevelDB database. The
 * key layout, its version and its migrations are documented in layout.ts; writing one message
 * is message-writer.ts, its side records side-records.ts; shared synced writes are
 * group-commit.ts.
 */
import { statfs } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AliasState, AuditEntry, DeliveryRecord, FetchedKey, FetchedRecord, MessageMeta, QuarantineRecord, QueueEntry } from '../records.js';
import type { DeletedMessages, ListOptions, Notice, QueueClaims, Store, StoreLogger } from '../store.js';
import { filtersContent, matchesContent } from '../message-filter.js';
import { GroupCommit } from './group-commit.js';
import { OneNodeLeases } from './leases.js';
import { MessageWriter } from './message-writer.js';
import { RewriteWriter } from './message-rewrite.js';
import { QuarantineSpool } from './quarantine-spool.js';
import { deleteQuarantined, listQuarantine, openQuarantined } from './quarantine.js';
import { sideRecordOps } from './side-records.js';
import { OneNodeQueueClaims } from './queue-claims.js';
import { NoticeHandlers, noticeText } from '../notices.js';
import { defaultNodeName } from '../node-name.js';
import { DeletedRanges, compactDeleted, deleteAuditBefore, deleteMessage, deleteMessagesBefore } from './retention.js';
import { isDiskFull, storeErrors } from '../../lib/errors.js';
import { idFloor, isMessageId, newMessageId } from '../ids.js';
import {
  aliasRange,
  chunkRange,
  clearRewriteGarbage,
  clearUnfinished,
  fetchedKey,
  idOfAliasKey,
  messageIdKey,
  openDatabase,
  openSublevels,
  runMigrations,
  type RootDb,
  type StoreOp,
  type Sublevels,
} from './layout.js';
import { WriteGuard, batchApplied, isWriteUncertain } from './write-guard.js';

export { MessageWriter, CHUNK_SIZE } from './message-writer.js';
export { SCHEMA_VERSION, type StoreOp, type Sublevels } from './layout.js';
export type { StoreLogger } from '../store.js';

/** Options for {@link LevelStore.open}. */
export interface StoreOptions {
  /** Where to report the sweep and migrations; pino fits. Default: silent. */
  logger?: StoreLogger;
  /** This node's name in its leases (`[node] name`). Default: defaultNodeName(), the host name. */
  node?: string;
}

/** Counters, for tests and metrics. */
export interface StoreStats {
  /** Synced batches written by group commit. */
  syncedBatches: number;
  /** Commits those batches carried. */
  commits: number;
}

const DEFAULT_LIST_LIMIT = 100;
// Chunks (64 KiB each) read at once by openRaw.
const RAW_CHUNKS_PER_READ = 8;
// Ids read from the by-alias index before their metadata is fetched in one getMany.
const ALIAS_PAGE = 100;
// Reopening after a failed write replays LevelDB's log (at most its 4 MiB write buffer and one
// batch) into a table: with less free space than this it would fail again, and a database
// that failed to open cannot even be read, so after a full disk we wait for room first.
const REOPEN_MIN_FREE_BYTES = 8 * 1024 * 1024;
const REOPEN_FIRST_RETRY_MS = 100;
const REOPEN_MAX_RETRY_MS = 2000;
const silentLogger: StoreLogger = { info() {}, warn() {}, error() {} };

/** The message store on LevelDB. Open with {@link LevelStore.open}; one process at a time. */
export class LevelStore implements Store {
  /** The data directory: the database, and the spool and control socket beside it. */
  readonly dir: string;
  /** The layout's sublevels, for the storage modules that build their own {@link StoreOp}s (and LevelDB's own tests). */
  readonly sublevels: Sublevels;
  /** One node holds every mailbox (leases.ts). */
  readonly leases: OneNodeLeases;
  /** One node delivers this store's queue: claims are always its own. */
  readonly queueClaims: QueueClaims = new OneNodeQueueClaims(this);
  readonly #db: RootDb;
  // Messages whose pending mark a quarantine spool put: see WriterContext.
  readonly #spoolMarks = new Set<string>();
  // Message commits begun and not yet settled: close lets them finish.
  readonly #commits = new Set<Promise<void>>();
  readonly #logger: StoreLogger;
  readonly #groupCommit: GroupCommit<StoreOp>;
  readonly #guard: WriteGuard;
  /** Reopening the database after a failed write (write-guard.ts); settles when done or closing. */
  #repairing: Promise<void> | undefined;
  readonly #stop = new AbortController();
  // What deletions emptied since the last compaction (retention.ts).
  readonly #deleted = new DeletedRanges();
  #closing: Promise<void> | undefined;
  #autoReplyClaims: Promise<void> = Promise.resolve();
  // One process is the whole fleet: a notice goes to this process's handlers only.
  readonly #notices: NoticeHandlers;

  private constructor(dir: string, db: RootDb, logger: StoreLogger, node: string) {
    this.dir = dir;
    this.leases = new OneNodeLeases(node);
    this.#db = db;
    this.#logger = logger;
    this.#notices = new NoticeHandlers((err, n) => logger.error({ err, topic: n.topic }, 'a notice handler failed'));
    this.sublevels = openSublevels(db);
    this.#guard = new WriteGuard(db, (err) => this.#repair(err));
    this.#groupCommit = new GroupCommit<StoreOp>((ops) => this.#durableWrite(ops));
  }

  /**
   * Opens (creating if needed) the store in `dir`, runs pending migrations and sweeps
   * messages left unfinished by a crash. Rejects with code `STORE_LOCKED` when another
   * process holds the directory, `STORE_SCHEMA_TOO_NEW` when a newer mailgate wrote it.
   */
  static async open(dir: string, opts: StoreOptions = {}): Promise<LevelStore> {
    const logger = opts.logger ?? silentLogger;
    const db = await openDatabase(dir);
    let store: LevelStore | undefined;
    try {
      await runMigrations(db, dir, logger);
      store = new LevelStore(dir, db, logger, opts.node ?? defaultNodeName());
      await store.#sweep();
      return store;
    } catch (err) {
      await (store ? store.close() : db.close()).catch(() => {});
      throw err;
    }
  }

  /** Counters since open. */
  get stats(): StoreStats {
    return { syncedBatches: this.#groupCommit.batches, commits: this.#groupCommit.commits };
  }

  /** A writer for a new message; `id` comes from `newMessageId()`. */
  createMessageWriter(id: string): MessageWriter {
    this.#assertOpen();
    if (!isMessageId(id)) throw new TypeError(`not a message id: ${JSON.stringify(id)}`);
    return new MessageWriter(
      { db: this.#db, sublevels: this.sublevels, groupCommit: this.#groupCommit, spoolMarks: this.#spoolMarks, commits: this.#commits },
      id,
    );
  }

  /**
   * Writes `ops` atomically and durably, sharing the synced write with concurrent commits.
   * Resolves once durable; rejects with the cause (a batch fails as a whole). For the
   * storage modules; the rest of mailgate writes through the storage interface.
   */
  async commitBatch(ops: readonly StoreOp[]): Promise<void> {
    this.#assertOpen();
    await this.#groupCommit.commit(ops);
  }

  /** New bytes for a committed message, as a new generation of its chunks (message-rewrite.ts). */
  rewriteMessage(id: string): Promise<RewriteWriter> {
    this.#assertOpen();
    return RewriteWriter.start(this, id);
  }

  /** Oldest first: the index keys sort by id after the Message-ID. */
  async findByMessageId(messageId: string): Promise<MessageMeta[]> {
    if (messageIdKey(messageId, '') === undefined) return [];
    const ids: string[] = [];
    // `<message-id>\x00<id>`: the same shape as the by-alias keys, read the same way.
    for await (const key of this.sublevels.byMessageId.keys(aliasRange(messageId))) ids.push(idOfAliasKey(key));
    if (ids.length === 0) return [];
    return (await this.sublevels.messages.getMany(ids)).filter((m): m is MessageMeta => m !== undefined);
  }

  /** One claim at a time, so the check and the record cannot interleave with another claim. */
  claimAutoReply(alias: string, sender: string, at: Date, notBefore: Date): Promise<boolean> {
    if (alias.includes('\x00')) return Promise.reject(new TypeError('alias contains NUL'));
    const key = `${alias}\x00${sender.toLowerCase()}`;
    const claim = this.#autoReplyClaims.then(async () => {
      const last = await this.sublevels.autoReplies.get(key);
      if (last !== undefined && Date.parse(last) >= notBefore.getTime()) return false;
      await this.commitBatch([{ type: 'put', sublevel: this.sublevels.autoReplies, key, value: at.toISOString() }]);
      return true;
    });
    this.#autoReplyClaims = claim.then(noop, noop);
    return claim;
  }

  createQuarantineSpool(id: string): QuarantineSpool {
    this.#assertOpen();
    return new QuarantineSpool(this.sublevels, id, this.#spoolMarks);
  }

  listQuarantine(opts: { messageId?: string } = {}): Promise<QuarantineRecord[]> {
    return listQuarantine(this.sublevels, opts);
  }

  getQuarantined(id: string): Promise<QuarantineRecord | undefined> {
    return this.sublevels.quarantine.get(id);
  }

  openQuarantined(id: string): Readable {
    return openQuarantined(this.sublevels, id);
  }

  deleteQuarantined(id: string): Promise<QuarantineRecord> {
    return deleteQuarantined(this.sublevels, (ops) => this.commitBatch(ops), id);
  }

  async putQueueEntries(entries: readonly QueueEntry[]): Promise<void> {
    await this.commitBatch(
      await sideRecordOps(
        this.sublevels,
        entries.map((entry) => ({ type: 'queue-entry', entry })),
      ),
    );
  }

  getQueueEntry(id: string): Promise<QueueEntry | undefined> {
    return this.sublevels.queue.get(id);
  }

  /** Oldest first: ids sort by time. */
  listQueue(): Promise<QueueEntry[]> {
    return this.sublevels.queue.values().all();
  }

  async finishQueueEntry(id: string, delivery: DeliveryRecord): Promise<void> {
    await this.commitBatch(await sideRecordOps(this.sublevels, [{ type: 'queue-finished', id, delivery }]));
  }

  getAliasState(alias: string): Promise<AliasState | undefined> {
    return this.sublevels.aliasState.get(alias);
  }

  async listAliasStates(): Promise<Record<string, AliasState>> {
    const out: Record<string, AliasState> = {};
    for await (const [name, state] of this.sublevels.aliasState.iterator()) out[name] = state;
    return out;
  }

  /** A synced write shared with concurrent commits. */
  async putAliasState(alias: string, state: AliasState): Promise<void> {
    await this.commitBatch([{ type: 'put', sublevel: this.sublevels.aliasState, key: alias, value: state }]);
  }

  async getFetched(keys: readonly FetchedKey[]): Promise<(FetchedRecord | undefined)[]> {
    if (keys.length === 0) return [];
    return this.sublevels.fetched.getMany(keys.map(fetchedKey));
  }

  async putFetched(key: FetchedKey, record: FetchedRecord): Promise<void> {
    await this.commitBatch(await sideRecordOps(this.sublevels, [{ type: 'fetched', key, record }]));
  }

  /** A synced write shared with concurrent commits: an admin's change is on record before the answer. */
  async appendAudit(entry: Omit<AuditEntry, 'id'> & { id?: string }): Promise<AuditEntry> {
    const stored: AuditEntry = { ...entry, id: entry.id ?? newMessageId() };
    await this.commitBatch([{ type: 'put', sublevel: this.sublevels.audit, key: stored.id, value: stored }]);
    return stored;
  }

  async listAudit(opts: { limit?: number; since?: Date; before?: string } = {}): Promise<AuditEntry[]> {
    const limit = opts.limit ?? DEFAULT_LIST_LIMIT;
    if (!(limit > 0)) return [];
    return this.sublevels.audit
      .values({
        reverse: true,
        limit: Number.isFinite(limit) ? Math.floor(limit) : -1,
        ...(opts.since ? { gte: idFloor(opts.since) } : {}),
        ...(opts.before !== undefined ? { lt: opts.before } : {}),
      })
      .all();
  }

  async *listFetched(): AsyncIterable<{ key: FetchedKey; record: FetchedRecord }> {
    for await (const [stored, record] of this.sublevels.fetched.iterator()) {
      const nul = stored.indexOf('\x00');
      yield { key: { alias: stored.slice(0, nul), key: stored.slice(nul + 1) }, record };
    }
  }

  async *listTokenCaches(): AsyncIterable<{ alias: string; sealed: Buffer }> {
    for await (const [alias, sealed] of this.sublevels.oauthCache.iterator()) yield { alias, sealed };
  }

  async *listAutoReplies(): AsyncIterable<{ alias: string; sender: string; at: Date }> {
    for await (const [stored, at] of this.sublevels.autoReplies.iterator()) {
      const nul = stored.indexOf('\x00');
      yield { alias: stored.slice(0, nul), sender: stored.slice(nul + 1), at: new Date(at) };
    }
  }

  readTokenCache(alias: string): Promise<Buffer | undefined> {
    return this.sublevels.oauthCache.get(alias);
  }

  async writeTokenCache(alias: string, sealed: Buffer): Promise<void> {
    await this.commitBatch([{ type: 'put', sublevel: this.sublevels.oauthCache, key: alias, value: sealed }]);
  }

  /** The metadata of a committed message, or undefined. */
  getMessage(id: string): Promise<MessageMeta | undefined> {
    return this.sublevels.messages.get(id);
  }

  /**
   * Committed messages, newest first. The time range, the paging bound and the alias narrow the
   * key range read (the by-alias index for an alias); the other filters are checked message by
   * message, reading on until `limit` of them are found.
   */
  async listMessages(opts: ListOptions = {}): Promise<MessageMeta[]> {
    const limit = opts.limit ?? DEFAULT_LIST_LIMIT;
    if (!(limit > 0)) return [];
    if (opts.alias?.includes('\x00')) throw new TypeError('alias contains NUL');
    if (opts.thread?.includes('\x00')) return [];
    const range = idRange(opts);
    if (range === undefined) return [];
    const found: MessageMeta[] = [];
    if (opts.thread !== undefined) {
      // A conversation is a handful of messages: its index, then every other filter message by message.
      for await (const meta of this.#newestFirst(opts.thread, range, ALIAS_PAGE, 'byConversation')) {
        if (opts.alias !== undefined && meta.source.alias !== opts.alias) continue;
        if (!matchesContent(meta, opts)) continue;
        found.push(meta);
        if (found.length >= limit) break;
      }
      return found;
    }
    if (!filtersContent(opts)) {
      if (opts.alias === undefined) {
        const levelLimit = Number.isFinite(limit) ? Math.floor(limit) : -1;
        return this.sublevels.messages.values({ ...range, reverse: true, limit: levelLimit }).all();
      }
      // The alias's index read for just the ids wanted, as before the other filters came.
      for await (const meta of this.#newestFirst(opts.alias, range, Math.ceil(Math.min(limit, ALIAS_PAGE)))) {
        found.push(meta);
        if (found.length >= limit) break;
      }
      return found;
    }
    // No index by tag or content: the matching messages are read past the others until enough are found.
    for await (const meta of this.#newestFirst(opts.alias, range)) {
      if (!matchesContent(meta, opts)) continue;
      found.push(meta);
      if (found.length >= limit) break;
    }
    return found;
  }

  /**
   * Committed messages newest first within `range` of ids, of one alias (or, with INDEX
   * `byConversation`, one conversation) when KEY is given, read `pageSize` at a time.
   */
  async *#newestFirst(
    key: string | undefined,
    range: IdRange,
    pageSize = ALIAS_PAGE,
    index: 'byAlias' | 'byConversation' = 'byAlias',
  ): AsyncGenerator<MessageMeta> {
    const { messages } = this.sublevels;
    const byKey = this.sublevels[index];
    if (key === undefined) {
      yield* messages.values({ ...range, reverse: true });
      return;
    }
    let ids: string[] = [];
    const page = async function* (logger: StoreLogger): AsyncGenerator<MessageMeta> {
      const metas = await messages.getMany(ids);
      for (const [i, meta] of metas.entries()) {
        if (meta) yield meta;
        else logger.warn({ id: ids[i], index, key }, 'index entry without a message');
      }
      ids = [];
    };
    for await (const indexKey of byKey.keys({ ...aliasRange(key, range.gte, range.lt), reverse: true })) {
      ids.push(idOfAliasKey(indexKey));
      if (ids.length === pageSize) yield* page(this.#logger);
    }
    yield* page(this.#logger);
  }

  /**
   * The stored bytes of a message, read chunk by chunk. The stream errors with code
   * `MESSAGE_NOT_FOUND` if there is no such committed message, `MESSAGE_DAMAGED` if the
   * chunks do not add up to the recorded size.
   */
  openRaw(id: string): Readable {
    const { messages, chunks, generations } = this.sublevels;
    async function* bytes(): AsyncGenerator<Buffer> {
      // Two small records read on this thread: the dispatcher opens every message it sends, and
      // an async read costs a trip through the thread pool (measured: more than the lookup).
      const meta = messages.getSync(id);
      if (!meta) throw storeErrors.messageNotFound(id);
      const size = meta.size;
      // A message rewritten by a restore reads from its current generation (layout.ts).
      const generation = generations.getSync(id) ?? 0;
      let total = 0;
      // A few chunks per read (a 4 KB message is one), at most RAW_CHUNKS_PER_READ of them in memory at once.
      const iterator = chunks.iterator({ ...chunkRange(id, generation), keys: false });
      try {
        // An empty page is the end (classic-level knows it without another read).
        for (let page = await iterator.nextv(RAW_CHUNKS_PER_READ); page.length > 0; page = await iterator.nextv(RAW_CHUNKS_PER_READ)) {
          for (const [, chunk] of page) {
            total += chunk!.length;
            yield chunk!;
          }
        }
      } finally {
        await iterator.close();
      }
      if (total !== size) throw storeErrors.messageDamaged(id, size, total);
    }
    return Readable.from(bytes(), { objectMode: false });
  }

  deleteMessage(id: string): Promise<MessageMeta> {
    this.#assertOpen();
    return deleteMessage({ store: this, deleted: this.#deleted }, id);
  }

  deleteMessagesBefore(before: Date, opts: { signal?: AbortSignal } = {}): Promise<DeletedMessages> {
    this.#assertOpen();
    return deleteMessagesBefore({ store: this, deleted: this.#deleted }, before, opts.signal);
  }

  deleteAuditBefore(before: Date): Promise<number> {
    this.#assertOpen();
    return deleteAuditBefore({ store: this, deleted: this.#deleted }, before);
  }

  /** Compacts the key ranges deleted since the last call (retention.ts). */
  compact(): Promise<void> {
    this.#assertOpen();
    return compactDeleted(this.#db, this.sublevels, this.#deleted);
  }

  isStoreFailure(err: unknown): boolean {
    if (isDiskFull(err)) return true;
    for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
      const code = (e as { code?: unknown }).code;
      // classic-level's errors are LEVEL_*; ours (storeErrors) STORE_*.
      if (typeof code === 'string' && (code.startsWith('LEVEL_') || code.startsWith('STORE_'))) return true;
    }
    return false;
  }

  notify(topic: string, payload: Record<string, unknown>): Promise<void> {
    const notice: Notice = { topic, from: this.leases.node, payload };
    try {
      noticeText(notice);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    // After the caller's turn, as a notice from the database would arrive.
    queueMicrotask(() => this.#notices.deliver(notice));
    return Promise.resolve();
  }

  onNotice(handler: (notice: Notice) => void): () => void {
    return this.#notices.add(handler);
  }

  /** Nothing to take: LevelDB's LOCK already makes the data directory, and so the store, this process's alone. */
  holdNodeName(): Promise<void> {
    return Promise.resolve();
  }

  /** Notices within one process are never lost: nothing to resume. */
  onNoticesResumed(): () => void {
    return () => {};
  }

  /** Waits for commits begun before it, then closes the database. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort();
      await this.#repairing?.catch(() => {});
      // A commit may still be between its call and its batch (waiting for the stream to finish).
      await Promise.allSettled(this.#commits);
      await this.#groupCommit.idle();
      await this.#db.close();
    })();
    return this.#closing;
  }

  // A synced batch that was in flight when another write failed may or may not survive the
  // reopen (write-guard.ts): wait for the reopen and look, rather than answer either way blind.
  async #durableWrite(ops: StoreOp[]): Promise<void> {
    try {
      await this.#db.batch<string, unknown>(ops, { sync: true });
    } catch (err) {
      if (!isWriteUncertain(err)) throw err;
      await this.#repairing;
      if (!(await batchApplied(this.#db, ops))) throw err;
      this.#logger.warn({ dir: this.dir, ops: ops.length }, 'a commit in flight during a failed write survived the reopen');
    }
  }

  #repair(failure: unknown): void {
    this.#logger.error({ err: failure, dir: this.dir }, 'a write to the store failed; refusing writes until the database is reopened');
    if (this.#stop.signal.aborted) return;
    const repairing = this.#reopen(failure);
    repairing.catch(() => {});
    this.#repairing = repairing;
  }

  async #reopen(failure: unknown): Promise<void> {
    const signal = this.#stop.signal;
    for (let delay = REOPEN_FIRST_RETRY_MS; ; delay = Math.min(delay * 2, REOPEN_MAX_RETRY_MS)) {
      if (signal.aborted) throw new Error(`store ${this.dir} closed before it was reopened after a failed write`);
      if (!isDiskFull(failure) || (await freeBytes(this.dir)) >= REOPEN_MIN_FREE_BYTES) {
        try {
          await this.#db.close();
          await this.#db.open();
          await Promise.all(Object.values(this.sublevels).map((s) => s.open()));
          this.#guard.reopened();
          this.#logger.warn({ dir: this.dir }, 'store reopened after a failed write; writes resume');
          return;
        } catch (err) {
          this.#logger.error({ err, dir: this.dir, retryInMs: delay }, 'could not reopen the store after a failed write');
        }
      }
      await sleep(delay, undefined, { signal }).catch(() => {});
    }
  }

  #assertOpen(): void {
    if (this.#closing) throw new Error(`store ${this.dir} is closed`);
  }

  // A crash mid-write leaves the pending mark and some chunks; see layout.ts for why every
  // surviving chunk still has its mark.
  async #sweep(): Promise<void> {
    const { pending, messages } = this.sublevels;
    const ids = await pending.keys().all();
    for (const id of ids) {
      if (await messages.has(id)) {
        this.#logger.warn({ id }, 'pending mark on a committed message; keeping the message');
      } else {
        await clearUnfinished(this.sublevels, id);
      }
      await pending.del(id);
    }
    // Chunks a rewrite (quarantine restore) left behind: see layout.ts.
    const { rewrites, chunks, quarantineChunks, generations } = this.sublevels;
    for await (const [id, mark] of rewrites.iterator()) {
      // Never the generation in use (a mark is only ever moved off it, but be sure).
      if (((await generations.get(id)) ?? 0) !== mark.generation) await clearRewriteGarbage(chunks, quarantineChunks, id, mark);
      await rewrites.del(id);
    }
    this.#logger.info({ dir: this.dir, swept: ids.length }, `store opened; swept ${ids.length} unfinished message(s)`);
  }
}

function noop(): void {}

async function freeBytes(dir: string): Promise<number> {
  try {
    const fs = await statfs(dir);
    return fs.bavail * fs.bsize;
  } catch {
    return Number.POSITIVE_INFINITY; // unknown: try the reopen
  }
}

/** Bounds on message ids; range options are left out when absent (classic-level reads `gte: undefined` as a bound). */
interface IdRange {
  gte?: string;
  lt?: string;
}

/** The ids `since`, `until` and `before` allow, or undefined when none can be. */
function idRange(opts: ListOptions): IdRange | undefined {
  const range: IdRange = {};
  if (opts.since) range.gte = idFloor(opts.since);
  const uppers = [opts.until && idFloor(opts.until), opts.before].filter((b): b is string => b !== undefined);
  if (uppers.length > 0) range.lt = uppers.reduce((a, b) => (a < b ? a : b));
  if (range.gte !== undefined && range.lt !== undefined && range.gte >= range.lt) return undefined;
  return range;
}
