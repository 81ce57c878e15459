/**
 * Notices between nodes on PostgreSQL (storage/store.ts, Notice): NOTIFY on one channel, sent
 * through the commits pool, and LISTEN on one connection of its own (a pooled connection would
 * be given back and lose the LISTEN). That connection is made when the first handler is added,
 * so a CLI command that only sends opens none. Lost (a PostgreSQL restart, a failover), it is
 * made again and LISTENs again, after a pause that grows to a few seconds while the database
 * is away; notices sent in between are missed, which is why what a notice asks is recorded in
 * the store before it is sent, and why each LISTEN that succeeds is told to the `onResumed`
 * handlers: they read the store again for what they may have missed.
 */
import pg from 'pg';
import type { Notice, StoreLogger } from '../store.js';
import { NoticeHandlers, noticeText, parseNotice } from '../notices.js';

/** The channel every mailgate node of the database LISTENs on. */
const NOTICE_CHANNEL = 'mailgate_notices';
// Between attempts to LISTEN again: short at first, so a restart's gap is small.
const FIRST_RETRY_MS = 250;
const LAST_RETRY_MS = 5000;

export class PgNotices {
  readonly #url: string;
  readonly #node: string;
  readonly #pool: pg.Pool;
  readonly #logger: StoreLogger;
  readonly #handlers: NoticeHandlers;
  readonly #resumed = new Set<() => void>();
  #client: pg.Client | undefined;
  #connecting: Promise<void> | undefined;
  #retryMs = FIRST_RETRY_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(url: string, node: string, pool: pg.Pool, logger: StoreLogger) {
    this.#url = url;
    this.#node = node;
    this.#pool = pool;
    this.#logger = logger;
    this.#handlers = new NoticeHandlers((err, n) => logger.error({ err, topic: n.topic, from: n.from }, 'a notice handler failed'));
  }

  async notify(topic: string, payload: Record<string, unknown>): Promise<void> {
    const text = noticeText({ topic, from: this.#node, payload });
    await this.#pool.query('SELECT pg_notify($1, $2)', [NOTICE_CHANNEL, text]);
  }

  onNotice(handler: (notice: Notice) => void): () => void {
    const remove = this.#handlers.add(handler);
    if (!this.#client && !this.#connecting && !this.#closed) this.#connecting = this.#listen();
    return remove;
  }

  /** Calls HANDLER after each LISTEN that succeeds (the first, and each after a loss), until the returned function is called. */
  onResumed(handler: () => void): () => void {
    const own = () => handler();
    this.#resumed.add(own);
    return () => this.#resumed.delete(own);
  }

  /** Resolves once the LISTEN connection is up (tests; a node need not wait for it). */
  async listening(): Promise<void> {
    while (!this.#closed && !this.#client) await (this.#connecting ?? new Promise((r) => setTimeout(r, this.#retryMs)));
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    await this.#connecting;
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }

  async #listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#url, keepAlive: true });
    let lost = false;
    const onLost = (err?: Error) => {
      if (lost) return;
      lost = true;
      if (this.#client === client) this.#client = undefined;
      client.end().catch(() => {});
      if (this.#closed) return;
      this.#logger.warn({ err, channel: NOTICE_CHANNEL }, "the connection listening for other nodes' notices was lost; listening again");
      this.#again();
    };
    client.on('error', onLost);
    client.on('end', () => onLost());
    client.on('notification', (msg) => {
      if (msg.channel !== NOTICE_CHANNEL || msg.payload === undefined) return;
      const notice = parseNotice(msg.payload);
      if (notice) this.#handlers.deliver(notice);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${NOTICE_CHANNEL}`);
      if (this.#closed || lost) {
        await client.end().catch(() => {});
        return;
      }
      this.#client = client;
      if (this.#retryMs > FIRST_RETRY_MS) this.#logger.info({ channel: NOTICE_CHANNEL }, "listening for other nodes' notices again");
      this.#retryMs = FIRST_RETRY_MS;
      // Up from here, a notice reaches the handlers; what was sent before may have been missed.
      for (const handler of [...this.#resumed]) {
        try {
          handler();
        } catch (err) {
          this.#logger.error({ err, channel: NOTICE_CHANNEL }, 'a handler of notices resumed failed');
        }
      }
    } catch (err) {
      if (!lost) {
        lost = true;
        client.end().catch(() => {});
        if (!this.#closed) {
          this.#logger.warn({ err, channel: NOTICE_CHANNEL }, "cannot listen for other nodes' notices; trying again");
          this.#again();
        }
      }
    } finally {
      this.#connecting = undefined;
    }
  }

  #again(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (!this.#closed && !this.#client && !this.#connecting) this.#connecting = this.#listen();
    }, this.#retryMs);
    this.#retryMs = Math.min(LAST_RETRY_MS, this.#retryMs * 2);
  }
}
