/**
 * One process per node name on PostgreSQL. Leases, queue claims and unfinished writes are
 * recorded under a node's name, so two `serve` processes with one name (two VMs cloned with one
 * host name, a copied mailgate.toml) would each believe they hold the same mailboxes and queued
 * messages, and send or fetch them twice. `serve` holds a session-level advisory lock keyed by
 * its name, on a connection of its own (a pooled one would be given back, the lock with it),
 * for as long as it runs; a second `serve` with the name is refused. PostgreSQL drops the lock
 * when the session ends: a node killed (the kernel closes its socket) frees its name at once,
 * so it can start again without waiting for a lease time. CLI commands open the store without
 * taking it, and so keep working while the node runs.
 *
 * Lost (a PostgreSQL restart, a failover, the session terminated), the lock is taken again once
 * the database answers, after a pause that grows to a few seconds as notices.ts does. If another
 * process took the name in between, this one is told (`onTaken`) and must stop: the other has
 * already freed "its previous run's" queue claims, which were ours, so both would send them.
 */
import os from 'node:os';
import pg from 'pg';
import { storeErrors, type MailgateError } from '../../lib/errors.js';
import type { StoreLogger } from '../store.js';

/** The advisory lock's first key, a number of our own ("node"); the second is hashtext(name). */
export const NODE_NAME_LOCK = 0x6e6f6465;
const FIRST_RETRY_MS = 250;
const LAST_RETRY_MS = 5000;
// A server that does not answer: the start fails (or the retry waits) rather than hanging.
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * SQL that is true when a session of this database holds the name in parameter NAME_PARAM
 * (e.g. `$1`): pg_locks is read live, so a statement that checks it in its WHERE clause sees
 * only rows committed before a node that took the name afterwards could write any.
 */
export function nodeNameHeld(nameParam: string): string {
  return `EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid = ${NODE_NAME_LOCK}::oid AND objid = hashtext(${nameParam})::oid AND objsubid = 2)`;
}

/** Who runs under a name, as its `nodes` row tells the next process that wants the name. */
interface NodeProcess {
  host?: string;
  pid?: number;
}

export class PgNodeName {
  readonly #url: string;
  readonly #node: string;
  readonly #where: string;
  readonly #logger: StoreLogger;
  #client: pg.Client | undefined;
  #onTaken: ((err: MailgateError) => void) | undefined;
  #retryMs = FIRST_RETRY_MS;
  #retryTimer: NodeJS.Timeout | undefined;
  #taking: Promise<void> | undefined;
  #closed = false;

  constructor(url: string, node: string, where: string, logger: StoreLogger) {
    this.#url = url;
    this.#node = node;
    this.#where = where;
    this.#logger = logger;
  }

  /** Takes the name for this process; rejects with NODE_NAME_IN_USE when another holds it. */
  async hold(onTaken: (err: MailgateError) => void): Promise<void> {
    if (this.#onTaken) throw new Error(`node name ${this.#node} is already held by this store`);
    this.#onTaken = onTaken;
    await this.#take();
  }

  /** Gives the name up (the session ends). Safe to call twice. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    await this.#taking?.catch(() => {});
    const client = this.#client;
    this.#client = undefined;
    await client?.end().catch(() => {});
  }

  async #take(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#url, keepAlive: true, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
    let lost = false;
    const onLost = (err?: Error) => {
      if (lost) return;
      lost = true;
      client.end().catch(() => {});
      if (this.#client !== client) return; // still taking it: #take's caller reports the failure
      this.#client = undefined;
      if (this.#closed) return;
      this.#logger.warn({ err, node: this.#node }, "the database connection holding this node's name was lost; taking the name again");
      this.#again();
    };
    client.on('error', onLost);
    client.on('end', () => onLost());
    try {
      await client.connect();
      const { rows } = await client.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS got', [NODE_NAME_LOCK, this.#node]);
      if (!rows[0]?.got) {
        const holder = await client.query<{ process: NodeProcess | null }>("SELECT info->'process' AS process FROM nodes WHERE name = $1", [this.#node]);
        // This process's own (the taker has yet to write its own): naming it would mislead.
        const other = holder.rows[0]?.process;
        const ours = other?.pid === process.pid && other.host === os.hostname();
        throw storeErrors.nodeNameInUse(this.#node, this.#where, other && !ours ? other : {});
      }
      // For the next process that wants the name: which host and process hold it.
      const me = JSON.stringify({ host: os.hostname(), pid: process.pid });
      await client.query(
        `INSERT INTO nodes (name, started_at, seen_at, info) VALUES ($1, now(), now(), jsonb_build_object('process', $2::jsonb))
         ON CONFLICT (name) DO UPDATE SET info = nodes.info || jsonb_build_object('process', $2::jsonb)`,
        [this.#node, me],
      );
      if (lost) throw new Error(`the database connection was lost while taking node name ${this.#node}`);
      if (this.#closed) {
        await client.end().catch(() => {});
        return;
      }
      this.#client = client;
    } catch (err) {
      lost = true;
      await client.end().catch(() => {});
      throw err;
    }
  }

  /** Takes the name again after its connection was lost, until it is held, taken by another, or closed. */
  #again(): void {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => {
      if (this.#closed || this.#client || this.#taking) return;
      this.#taking = this.#take()
        .then(() => {
          this.#retryMs = FIRST_RETRY_MS;
          if (this.#client) this.#logger.info({ node: this.#node }, "holding this node's name again");
        })
        .catch((err: unknown) => {
          if (this.#closed) return;
          if ((err as { code?: string }).code === 'NODE_NAME_IN_USE') {
            this.#onTaken?.(err as MailgateError);
            return;
          }
          this.#logger.warn({ err, node: this.#node }, "cannot take this node's name again yet; trying again");
          this.#again();
        })
        .finally(() => {
          this.#taking = undefined;
        });
    }, this.#retryMs);
    this.#retryMs = Math.min(LAST_RETRY_MS, this.#retryMs * 2);
  }
}
