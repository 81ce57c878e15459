/**
 * The message store on PostgreSQL (the storage interface, storage/store.ts), one database
 * shared by the nodes of a fleet. The tables are schema.ts's; the connections and which errors
 * are the database's, pool.ts; a message's bytes and commit, message-writer.ts; quarantine,
 * quarantine.ts; rewrites, rewrite.ts; deletions, retention.ts; the crash sweep at open,
 * sweep.ts. The records beside the messages (queue, alias states, fetched keys, token caches,
 * auto-replies, audit, and the side records of a message's commit) are records.ts's: the
 * methods for them here only hand over.
 */
import { Readable } from 'node:stream';
import type { AliasState, AuditEntry, DeliveryRecord, FetchedKey, FetchedRecord, MessageMeta, QuarantineRecord, QueueEntry } from '../records.js';
import type { DeletedMessages, ListOptions, Notice, Store } from '../store.js';
import type { StoreLogger } from '../store.js';
import { storeErrors, type MailgateError } from '../../lib/errors.js';
import { idFloor, isMessageId } from '../ids.js';
import { filtersContent, matchesContent } from '../message-filter.js';
import { CHUNKS_PER_READ } from './chunks.js';
import { indexedMessageId, storable } from './message-row.js';
import { PgMessageWriter, type WriterContext } from './message-writer.js';
import { checkDatabase } from './migrate.js';
import { PgLeases } from './leases.js';
import { PgQueueClaims } from './queue-claims.js';
import { PgNotices } from './notices.js';
import { PgNodeName } from './node-name.js';
import { DEFAULT_MAX_CONNECTIONS, databaseName, isPostgresFailure, openPools, type Pools } from './pool.js';
import { PgQuarantineSpool, deleteQuarantined, getQuarantined, listQuarantine, openQuarantined } from './quarantine.js';
import * as records from './records.js';
import { deleteMessage, deleteMessagesBefore } from './retention.js';
import { MessageLocks, PgRewrite } from './rewrite.js';
import { sweepUnfinished } from './sweep.js';

/** Options for {@link PgStore.open}. */
export interface PgStoreOptions {
  /** `postgres://USER[:PASSWORD]@HOST:PORT/DB[?sslmode=...]`. */
  url: string;
  /** This node's data directory: the spool of messages being received and the control socket. */
  dir: string;
  /** This node's name: its unfinished writes, leases and claims are recorded under it. */
  node: string;
  /** Where to report the sweep and lost connections; pino fits. Default: silent. */
  logger?: StoreLogger;
  /** Connections of the commits pool (default 10); the pool for bytes in flight gets half as many. */
  maxConnections?: number;
  /** Create the schema in a database without mailgate's tables (tests, a first start); otherwise such a database is refused. */
  createIfEmpty?: boolean;
}

const DEFAULT_LIST_LIMIT = 100;
// Rows read per query when a content filter (text, attachments, wrapped) is checked message by message.
const LIST_PAGE = 200;
const silentLogger: StoreLogger = { info() {}, warn() {}, error() {} };

/** The message store on PostgreSQL. Open with {@link PgStore.open}; several nodes may share one database. */
export class PgStore implements Store {
  readonly dir: string;
  /** This node's name. */
  readonly node: string;
  /** The database, as errors and logs name it (its URL without the password). */
  readonly where: string;
  /** Which node fetches which mailbox, in the shared `mailbox_leases` table. */
  readonly leases: PgLeases;
  /** Which node delivers which queued message, in the `queue` table's claim columns. */
  readonly queueClaims: PgQueueClaims;
  readonly #pools: Pools;
  readonly #ctx: WriterContext;
  readonly #rewriteLocks = new MessageLocks();
  /** Notices to and from the other nodes (LISTEN/NOTIFY). */
  readonly #notices: PgNotices;
  /** This process's hold on the node's name, once `serve` takes it. */
  readonly #nodeName: PgNodeName;
  #closing: Promise<void> | undefined;

  private constructor(opts: PgStoreOptions, where: string, pools: Pools, logger: StoreLogger) {
    this.dir = opts.dir;
    this.node = opts.node;
    this.where = where;
    this.#pools = pools;
    this.leases = new PgLeases(pools.commits, opts.node);
    this.queueClaims = new PgQueueClaims(pools.commits, opts.node);
    this.#notices = new PgNotices(opts.url, opts.node, pools.commits, logger);
    this.#nodeName = new PgNodeName(opts.url, opts.node, where, logger);
    this.#ctx = { pools, node: opts.node, spoolMarks: new Set(), commits: new Set(), background: new Set(), leftovers: new Set() };
  }

  /**
   * Connects, checks the schema (creating it with `createIfEmpty` in an empty database) and that
   * commits are flushed before they return, then sweeps what a crash of this node (or any node,
   * a day ago) left unfinished. Rejects with `STORE_SCHEMA_TOO_NEW`, `STORE_SCHEMA_TOO_OLD` or
   * `STORE_UNSAFE_COMMIT`, naming the database without its password.
   */
  static async open(opts: PgStoreOptions): Promise<PgStore> {
    const logger = opts.logger ?? silentLogger;
    const where = databaseName(opts.url);
    const pools = openPools(opts.url, opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS, logger);
    try {
      await checkDatabase(pools.commits, { where, node: opts.node, createIfEmpty: opts.createIfEmpty, logger });
      const store = new PgStore(opts, where, pools, logger);
      const swept = await sweepUnfinished(pools.commits, opts.node, logger);
      logger.info({ where, swept }, `store opened; swept ${swept} unfinished write(s)`);
      return store;
    } catch (err) {
      await Promise.allSettled([pools.commits.end(), pools.bytes.end()]);
      throw err;
    }
  }

  // Messages.

  createMessageWriter(id: string): PgMessageWriter {
    this.#assertOpen();
    if (!isMessageId(id)) throw new TypeError(`not a message id: ${JSON.stringify(id)}`);
    return new PgMessageWriter(this.#ctx, id);
  }

  async getMessage(id: string): Promise<MessageMeta | undefined> {
    if (!storable(id)) return undefined;
    const { rows } = await this.#pools.commits.query<{ meta: MessageMeta }>('SELECT meta FROM messages WHERE id = $1', [id]);
    return rows[0]?.meta;
  }

  /**
   * Committed messages, newest first. The time range, the paging bound, the alias, the tag and
   * the conversation are the WHERE clause (indexes answer them); text, attachments and wrapped
   * are checked message by message (storage/message-filter.ts, as every store does), reading
   * page after page until `limit` of them are found.
   */
  async listMessages(opts: ListOptions = {}): Promise<MessageMeta[]> {
    const limit = opts.limit ?? DEFAULT_LIST_LIMIT;
    if (!(limit > 0)) return [];
    if (opts.alias?.includes('\x00')) throw new TypeError('alias contains NUL');
    if ((opts.thread !== undefined && !storable(opts.thread)) || (opts.tag !== undefined && !storable(opts.tag))) return [];
    const where: string[] = [];
    const params: unknown[] = [];
    const bind = (value: unknown) => `$${params.push(value)}`;
    const lower = opts.since ? idFloor(opts.since) : undefined;
    const uppers = [opts.until && idFloor(opts.until), opts.before].filter((b): b is string => b !== undefined);
    const upper = uppers.length > 0 ? uppers.reduce((a, b) => (a < b ? a : b)) : undefined;
    if (lower !== undefined && upper !== undefined && lower >= upper) return [];
    if (lower !== undefined) where.push(`id >= ${bind(lower)}`);
    if (opts.alias !== undefined) where.push(`alias = ${bind(opts.alias)}`);
    if (opts.thread !== undefined) where.push(`conversation = ${bind(opts.thread)}`);
    if (opts.tag !== undefined) where.push(`tags @> ARRAY[${bind(opts.tag)}]::text[]`);
    if (upper !== undefined && !storable(upper)) return [];
    const page = async (below: string | undefined, count: number): Promise<MessageMeta[]> => {
      const args = [...params];
      const clauses = below === undefined ? where : [...where, `id < $${args.push(below)}`];
      const sql = `SELECT meta FROM messages${clauses.length > 0 ? ` WHERE ${clauses.join(' AND ')}` : ''} ORDER BY id DESC${
        Number.isFinite(count) ? ` LIMIT $${args.push(Math.floor(count))}` : ''
      }`;
      return (await this.#pools.commits.query<{ meta: MessageMeta }>(sql, args)).rows.map((r) => r.meta);
    };
    if (!filtersContent({ text: opts.text, hasAttachment: opts.hasAttachment, wrapped: opts.wrapped })) return page(upper, limit);
    const found: MessageMeta[] = [];
    for (let below = upper; ;) {
      const metas = await page(below, LIST_PAGE);
      for (const meta of metas) {
        if (!matchesContent(meta, opts)) continue;
        found.push(meta);
        if (found.length >= limit) return found;
      }
      if (metas.length < LIST_PAGE) return found;
      below = metas[metas.length - 1]!.id;
    }
  }

  /**
   * The stored bytes, CHUNKS_PER_READ chunks per query: the first query reads the size and
   * generation with the first chunks (one snapshot, one round trip: a small message is one).
   */
  openRaw(id: string): Readable {
    const pool = this.#pools.commits;
    async function* bytes(): AsyncGenerator<Buffer> {
      if (!storable(id)) throw storeErrors.messageNotFound(id);
      const first = await pool.query<{ size: string; generation: number; seq: number | null; data: Buffer | null }>(
        `SELECT m.size, m.generation, c.seq, c.data FROM messages m
         LEFT JOIN LATERAL (SELECT seq, data FROM message_chunks WHERE message = m.id AND generation = m.generation ORDER BY seq LIMIT $2) c ON true
         WHERE m.id = $1 ORDER BY c.seq`,
        [id, CHUNKS_PER_READ],
      );
      const head = first.rows[0];
      if (!head) throw storeErrors.messageNotFound(id);
      const size = Number(head.size);
      let rows: { seq: number | null; data: Buffer | null }[] = first.rows;
      let seq = 0;
      let total = 0;
      for (;;) {
        for (const row of rows) {
          if (row.seq === null || row.data === null) continue; // an empty message: no chunk
          // A gap (a rewrite swapped in meanwhile, or lost rows) is damage, never a silent skip.
          if (row.seq !== seq) throw storeErrors.messageDamaged(id, size, total);
          seq++;
          total += row.data.length;
          yield row.data;
        }
        if (rows.length < CHUNKS_PER_READ) break;
        ({ rows } = await pool.query<{ seq: number; data: Buffer }>(
          'SELECT seq, data FROM message_chunks WHERE message = $1 AND generation = $2 AND seq >= $3 ORDER BY seq LIMIT $4',
          [id, head.generation, seq, CHUNKS_PER_READ],
        ));
      }
      if (total !== size) throw storeErrors.messageDamaged(id, size, total);
    }
    return Readable.from(bytes(), { objectMode: false });
  }

  rewriteMessage(id: string): Promise<PgRewrite> {
    this.#assertOpen();
    return PgRewrite.start(this.#ctx, this.#rewriteLocks, id);
  }

  /** Oldest first. Message-IDs the index leaves out (over 500 characters, with NUL) find nothing, as in LevelDB. */
  async findByMessageId(messageId: string): Promise<MessageMeta[]> {
    const indexed = indexedMessageId(messageId);
    if (indexed === undefined) return [];
    const { rows } = await this.#pools.commits.query<{ meta: MessageMeta }>('SELECT meta FROM messages WHERE message_id = $1 ORDER BY id', [indexed]);
    return rows.map((r) => r.meta);
  }

  // Quarantine.

  createQuarantineSpool(id: string): PgQuarantineSpool {
    this.#assertOpen();
    const dot = id.lastIndexOf('.');
    if (dot < 0 || !isMessageId(id.slice(0, dot))) throw new TypeError(`not a quarantine id: ${JSON.stringify(id)}`);
    return new PgQuarantineSpool(this.#ctx, id);
  }

  listQuarantine(opts: { messageId?: string } = {}): Promise<QuarantineRecord[]> {
    return listQuarantine(this.#pools.commits, opts);
  }

  getQuarantined(id: string): Promise<QuarantineRecord | undefined> {
    return getQuarantined(this.#pools.commits, id);
  }

  openQuarantined(id: string): Readable {
    return openQuarantined(this.#pools, id);
  }

  deleteQuarantined(id: string): Promise<QuarantineRecord> {
    return deleteQuarantined(this.#pools, id);
  }

  // The records beside the messages: records.ts.

  putQueueEntries(entries: readonly QueueEntry[]): Promise<void> {
    return records.putQueueEntries(this.#pools.commits, entries);
  }

  getQueueEntry(id: string): Promise<QueueEntry | undefined> {
    return records.getQueueEntry(this.#pools.commits, id);
  }

  listQueue(): Promise<QueueEntry[]> {
    return records.listQueue(this.#pools.commits);
  }

  finishQueueEntry(id: string, delivery: DeliveryRecord): Promise<void> {
    return records.finishQueueEntry(this.#pools.commits, id, delivery, this.node);
  }

  getAliasState(alias: string): Promise<AliasState | undefined> {
    return records.getAliasState(this.#pools.commits, alias);
  }

  listAliasStates(): Promise<Record<string, AliasState>> {
    return records.listAliasStates(this.#pools.commits);
  }

  putAliasState(alias: string, state: AliasState): Promise<void> {
    return records.putAliasState(this.#pools.commits, alias, state);
  }

  getFetched(keys: readonly FetchedKey[]): Promise<(FetchedRecord | undefined)[]> {
    return records.getFetched(this.#pools.commits, keys);
  }

  putFetched(key: FetchedKey, record: FetchedRecord): Promise<void> {
    return records.putFetched(this.#pools.commits, key, record, this.node);
  }

  readTokenCache(alias: string): Promise<Buffer | undefined> {
    return records.readTokenCache(this.#pools.commits, alias);
  }

  writeTokenCache(alias: string, sealed: Buffer): Promise<void> {
    return records.writeTokenCache(this.#pools.commits, alias, sealed);
  }

  claimAutoReply(alias: string, sender: string, at: Date, notBefore: Date): Promise<boolean> {
    return records.claimAutoReply(this.#pools.commits, alias, sender, at, notBefore);
  }

  appendAudit(entry: Omit<AuditEntry, 'id'> & { id?: string }): Promise<AuditEntry> {
    return records.appendAudit(this.#pools.commits, entry);
  }

  listAudit(opts: { limit?: number; since?: Date; before?: string } = {}): Promise<AuditEntry[]> {
    return records.listAudit(this.#pools.commits, opts);
  }

  listFetched(): AsyncIterable<{ key: FetchedKey; record: FetchedRecord }> {
    return records.listFetched(this.#pools.commits);
  }

  listTokenCaches(): AsyncIterable<{ alias: string; sealed: Buffer }> {
    return records.listTokenCaches(this.#pools.commits);
  }

  listAutoReplies(): AsyncIterable<{ alias: string; sender: string; at: Date }> {
    return records.listAutoReplies(this.#pools.commits);
  }

  // Retention.

  deleteMessage(id: string): Promise<MessageMeta> {
    this.#assertOpen();
    return deleteMessage(this.#pools.commits, id);
  }

  deleteMessagesBefore(before: Date, opts: { signal?: AbortSignal } = {}): Promise<DeletedMessages> {
    this.#assertOpen();
    return deleteMessagesBefore(this.#pools.commits, before, opts.signal);
  }

  deleteAuditBefore(before: Date): Promise<number> {
    this.#assertOpen();
    return records.deleteAuditBefore(this.#pools.commits, before);
  }

  /**
   * Nothing to do: PostgreSQL's autovacuum makes deleted rows' space reusable on its own, and
   * a VACUUM FULL here would lock the tables every node writes to. Deleted chunks' TOAST space
   * is reused by the next messages rather than given back to the file system.
   */
  async compact(): Promise<void> {
    this.#assertOpen();
  }

  isStoreFailure(err: unknown): boolean {
    return isPostgresFailure(err);
  }

  // Notices between nodes (notices.ts).

  notify(topic: string, payload: Record<string, unknown>): Promise<void> {
    this.#assertOpen();
    return this.#notices.notify(topic, payload);
  }

  onNotice(handler: (notice: Notice) => void): () => void {
    return this.#notices.onNotice(handler);
  }

  onNoticesResumed(handler: () => void): () => void {
    return this.#notices.onResumed(handler);
  }

  /** Resolves once this node listens for notices (after a first onNotice). */
  noticesListening(): Promise<void> {
    return this.#notices.listening();
  }

  // One process per node name (node-name.ts).

  holdNodeName(onTaken: (err: MailgateError) => void): Promise<void> {
    this.#assertOpen();
    return this.#nodeName.hold(onTaken);
  }

  /** Waits for commits in progress and bytes in flight, then closes the connections. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.allSettled(this.#ctx.commits);
      await Promise.allSettled(this.#ctx.background);
      await this.#notices.close();
      await Promise.allSettled([this.#pools.commits.end(), this.#pools.bytes.end()]);
      // Last: the name is given up once nothing more is written under it.
      await this.#nodeName.close();
    })();
    return this.#closing;
  }

  #assertOpen(): void {
    if (this.#closing) throw new Error(`store ${this.where} is closed`);
  }
}
