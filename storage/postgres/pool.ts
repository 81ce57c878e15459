/**
 * The connections of a PostgreSQL store: how the database is named (databaseName), two pools
 * on one database, transactions over them, and which errors mean "the database, not the message" (isPostgresFailure).
 *
 * Two pools: `commits` keeps the server's synchronous_commit (on: the open refuses a database
 * where it is off), so a commit returns only once its WAL is flushed; `bytes` says
 * `synchronous_commit = off` for the chunks and marks written while a message streams in. Those
 * need no flush of their own: WAL is one ordered log, so the message's commit flush covers
 * every record written before it, and a crash before that commit loses only what no one was
 * told was stored (the sweep at open removes what is left).
 */
import pg from 'pg';
import { isDiskFull } from '../../lib/errors.js';
import type { StoreLogger } from '../store.js';
import { databaseName } from './database-name.js';

export { databaseName };

/** Default size of the commits pool; the bytes pool gets half as many. */
export const DEFAULT_MAX_CONNECTIONS = 10;
// A server that does not answer a connection attempt: the caller's message gets a 4xx rather than waiting forever.
const CONNECT_TIMEOUT_MS = 10_000;
// An idle connection is given back after this long: the fleet shares the server's max_connections.
const IDLE_TIMEOUT_MS = 30_000;
// A server cut off without a reset (a partition) would hold a commit, and the sender, until TCP
// keepalive gives up (hours): a query that has no answer after this fails as a store failure
// (the sender retries; a commit that did land meanwhile makes a duplicate, never a loss).
const QUERY_TIMEOUT_MS = 60_000;

/** The two pools of a store (see the module comment). */
export interface Pools {
  /** Commits and everything an admin reads: synchronous_commit as the server says (on). */
  commits: pg.Pool;
  /** Chunks and marks of bytes still being written: synchronous_commit off. */
  bytes: pg.Pool;
}

/** Opens the pools on URL; a lost idle connection is logged, never thrown (it would crash the gateway). */
export function openPools(url: string, maxConnections: number, logger: StoreLogger): Pools {
  const where = databaseName(url);
  const make = (max: number, options?: string): pg.Pool => {
    const pool = new pg.Pool({
      connectionString: url,
      max,
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      idleTimeoutMillis: IDLE_TIMEOUT_MS,
      keepAlive: true,
      query_timeout: QUERY_TIMEOUT_MS,
      ...(options ? { options } : {}),
    });
    // An idle client whose server went away (restart, failover): the pool drops it and the
    // next query connects afresh; without a listener node-postgres would throw it at the process.
    pool.on('error', (err) => logger.warn({ err, where }, 'an idle connection to the database was lost; the next query reconnects'));
    return pool;
  };
  return {
    commits: make(maxConnections),
    bytes: make(Math.max(2, Math.ceil(maxConnections / 2)), '-c synchronous_commit=off'),
  };
}

/**
 * Runs FN in a transaction on a client of POOL: BEGIN, FN, COMMIT; ROLLBACK on any failure,
 * and the client dropped when even that fails (a connection lost mid-transaction).
 */
export async function inTransaction<T>(pool: pg.Pool, fn: (tx: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A checked-out client has no error listener of the pool's: between two statements a lost
  // connection would otherwise be thrown at the process. The statement in progress rejects anyway.
  const lost = (): void => {};
  client.on('error', lost);
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    // A connection that cannot even roll back is not given back to the pool; one that can is healthy.
    await client.query('ROLLBACK').catch((rollback: unknown) => {
      broken = rollback instanceof Error ? rollback : new Error(String(rollback));
    });
    throw err;
  } finally {
    client.off('error', lost);
    client.release(broken);
  }
}

// Errors of node-postgres and Node's sockets that mean the server could not be reached or went away.
const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
const CONNECTION_MESSAGES =
  /Connection terminated|connection timeout|timeout exceeded when trying to connect|Query read timeout|Client has encountered a connection error|Connection ended/i;
// SQLSTATE classes: 08 connection, 53 insufficient resources (disk full, too many connections),
// 57 operator intervention (admin shutdown, cannot connect now), 58 system error (I/O).
const FAILURE_CLASSES = new Set(['08', '53', '57', '58']);
// 25006 read-only transaction (a standby, or default_transaction_read_only); 40001/40P01: a
// serialization failure or deadlock, worth the sender's retry.
const FAILURE_STATES = new Set(['25006', '40001', '40P01']);

/**
 * Whether ERR (or one of its causes) is a failure of the store rather than of a message: our
 * STORE_* errors, a full disk, a connection node-postgres could not make or lost, and the
 * SQLSTATEs above. Ingest answers 451 4.3.0 for these.
 */
export function isPostgresFailure(err: unknown): boolean {
  if (isDiskFull(err)) return true;
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (typeof code === 'string') {
      if (code.startsWith('STORE_') || CONNECTION_CODES.has(code)) return true;
      // A SQLSTATE is five characters of digits and capitals; only node-postgres's DatabaseError carries one.
      if (e instanceof pg.DatabaseError && (FAILURE_CLASSES.has(code.slice(0, 2)) || FAILURE_STATES.has(code))) return true;
    }
    if (typeof message === 'string' && CONNECTION_MESSAGES.test(message)) return true;
    // Node's connect to a name of several addresses fails with every attempt's error.
    const { errors } = e as { errors?: unknown };
    if (Array.isArray(errors) && errors.some((inner) => isPostgresFailure(inner))) return true;
  }
  return false;
}
