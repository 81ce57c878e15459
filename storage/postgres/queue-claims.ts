/**
 * Queue claims in PostgreSQL (storage/store.ts, QueueClaims): several nodes deliver from one
 * `queue` table, each entry by one node at a time. A claim is the row's `claimed_by` (the
 * node's name) and `claimed_until` (the database's `now()` plus the lease: the nodes' own
 * clocks never decide). Due entries are claimed with `FOR UPDATE SKIP LOCKED`, as ZoneMTA and
 * Postal lock their queue rows, so nodes claiming at once skip each other's rows instead of
 * waiting on them. Every write of an attempt's outcome is an UPDATE ... WHERE claimed_by =
 * this node under the row's lock: a node whose claim expired and was taken over cannot record
 * over the new holder.
 */
import type pg from 'pg';
import type { DeliveryRecord, QueueEntry } from '../records.js';
import type { QueueClaims } from '../store.js';
import { finishClaimedQueued } from './records.js';

// A lease in milliseconds, as an interval the database adds to its own now().
const lease = (param: string) => `(${param}::double precision * interval '1 millisecond')`;
// Nobody holds it, or the one who did let the lease run out.
const FREE = `(claimed_by IS NULL OR claimed_until <= now())`;

export class PgQueueClaims implements QueueClaims {
  readonly shared = true;
  readonly #db: pg.Pool;
  /** This node's name (`[node] name`), written into the claims it takes. */
  readonly node: string;

  constructor(db: pg.Pool, node: string) {
    this.#db = db;
    this.node = node;
  }

  async claimDue(limit: number, leaseMs: number): Promise<{ entry: QueueEntry; tookOverFrom?: string }[]> {
    if (limit <= 0) return [];
    // Held entries wait for an admin (or a node's start), not for the clock.
    const { rows } = await this.#db.query<{ entry: QueueEntry; was: string | null }>(
      `UPDATE queue q SET claimed_by = $1, claimed_until = now() + ${lease('$2')}
         FROM (SELECT id, claimed_by AS was FROM queue
                WHERE next_attempt_at <= now() AND ${FREE} AND entry->'held' IS NULL
                ORDER BY next_attempt_at LIMIT $3
                FOR UPDATE SKIP LOCKED) due
        WHERE q.id = due.id
        RETURNING q.entry, due.was`,
      [this.node, leaseMs, limit],
    );
    return rows.map((r) => ({ entry: r.entry, ...(r.was !== null ? { tookOverFrom: r.was } : {}) }));
  }

  async claim(id: string, leaseMs: number, opts: { onlyIfDue?: boolean } = {}): Promise<QueueEntry | undefined> {
    const { rows } = await this.#db.query<{ entry: QueueEntry }>(
      `UPDATE queue SET claimed_by = $1, claimed_until = now() + ${lease('$2')}
        WHERE id = $3 AND ${FREE} ${opts.onlyIfDue ? 'AND next_attempt_at <= now()' : ''}
        RETURNING entry`,
      [this.node, leaseMs, id],
    );
    return rows[0]?.entry;
  }

  async claims(): Promise<{ id: string; node: string }[]> {
    const { rows } = await this.#db.query<{ id: string; node: string }>(
      `SELECT id, claimed_by AS node FROM queue WHERE claimed_by IS NOT NULL AND claimed_until > now() ORDER BY id`,
    );
    return rows;
  }

  async renew(ids: readonly string[], leaseMs: number): Promise<string[]> {
    if (ids.length === 0) return [];
    // An expired claim nobody took yet is still this node's: claimed_by moves only when another node claims.
    const { rows } = await this.#db.query<{ id: string }>(
      `UPDATE queue SET claimed_until = now() + ${lease('$2')} WHERE id = ANY($3) AND claimed_by = $1 RETURNING id`,
      [this.node, leaseMs, ids],
    );
    return rows.map((r) => r.id);
  }

  async release(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.#db.query(`UPDATE queue SET claimed_by = NULL, claimed_until = NULL WHERE id = ANY($2) AND claimed_by = $1`, [this.node, ids]);
  }

  async saveClaimed(entry: QueueEntry, opts: { release?: boolean } = {}): Promise<boolean> {
    const release = opts.release ? ', claimed_by = NULL, claimed_until = NULL' : '';
    const { rowCount } = await this.#db.query(`UPDATE queue SET entry = $3::json, next_attempt_at = $4${release} WHERE id = $2 AND claimed_by = $1`, [
      this.node,
      entry.id,
      JSON.stringify(entry),
      entry.nextAttemptAt,
    ]);
    return rowCount === 1;
  }

  finishClaimed(id: string, delivery: DeliveryRecord): Promise<boolean> {
    return finishClaimedQueued(this.#db, id, delivery, this.node);
  }
}
