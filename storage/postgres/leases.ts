/**
 * Mailbox leases in PostgreSQL (issue 16, "Several nodes: Fetching"): the `mailbox_leases`
 * and `nodes` tables of schema.ts. Every expiry is reckoned by the database's clock (now()),
 * never a node's, so nodes whose clocks disagree still agree on who holds what. Taking a lease
 * locks its row with FOR UPDATE SKIP LOCKED and re-checks that it is free, so two nodes
 * balancing at once never both get one; a `fetched` side record checks the row FOR SHARE
 * (records.ts), so a release or a takeover waits for a commit in flight, and a commit after
 * them is refused.
 */
import type pg from 'pg';
import type { FleetNode, LeaseState, Leases, MailboxLease } from '../store.js';

/** Until the first round says otherwise (`[retriever] lease_ttl`'s default). */
const DEFAULT_TTL_MS = 30_000;

/** `$N` milliseconds as an interval. */
const ms = (n: number) => `make_interval(secs => $${n}::double precision / 1000)`;

interface LeaseRow {
  mailbox: string;
  holder: string;
  epoch: string;
  expires_at: Date;
}

function lease(row: LeaseRow): MailboxLease {
  return { mailbox: row.mailbox, holder: row.holder, epoch: Number(row.epoch), expiresAt: row.expires_at };
}

export class PgLeases implements Leases {
  readonly node: string;
  readonly shared = true;
  readonly #pool: pg.Pool;
  #ttlMs = DEFAULT_TTL_MS;
  /** Whether this run has recorded itself in `nodes` (its started_at is set once per run). */
  #joined = false;

  constructor(pool: pg.Pool, node: string) {
    this.#pool = pool;
    this.node = node;
  }

  async balance(mailboxes: readonly string[], ttlMs: number): Promise<MailboxLease[]> {
    this.#ttlMs = ttlMs;
    const wanted = [...new Set(mailboxes)].sort();
    // A row for every mailbox, outside the round's transaction and in one order, so two nodes
    // adding the same new mailboxes wait for each other at most once and never deadlock.
    if (wanted.length) await this.#pool.query('INSERT INTO mailbox_leases (mailbox) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT DO NOTHING', [wanted]);
    const tx = await this.#pool.connect();
    try {
      await tx.query('BEGIN');
      // What this node fetches is recorded with it, so the others know which mailboxes only it can take.
      await tx.query(
        `INSERT INTO nodes (name, started_at, seen_at, info) VALUES ($1, now(), now(), $2)
         ON CONFLICT (name) DO UPDATE SET seen_at = now(), stopped_at = NULL, info = nodes.info || $2${this.#joined ? '' : ', started_at = now()'}`,
        [this.node, { mailboxes: wanted }],
      );
      // Mailboxes this node's configuration no longer fetches go back at once.
      await tx.query('UPDATE mailbox_leases SET holder = NULL, expires_at = NULL WHERE holder = $1 AND NOT (mailbox = ANY($2))', [this.node, wanted]);
      // Renewed only while unexpired: a lapsed lease may already be another's, and is taken anew below.
      const renewed = await tx.query(
        `UPDATE mailbox_leases SET expires_at = now() + ${ms(2)} WHERE holder = $1 AND expires_at > now() AND mailbox = ANY($3) RETURNING mailbox`,
        [this.node, ttlMs, wanted],
      );
      let held = renewed.rowCount ?? 0;
      const live = await tx.query<{ name: string; holds: string; info: { mailboxes?: string[] } }>(
        `SELECT n.name, n.info, (SELECT count(*) FROM mailbox_leases l WHERE l.holder = n.name AND l.expires_at > now()) AS holds
         FROM nodes n WHERE n.stopped_at IS NULL AND n.seen_at > now() - ${ms(1)}`,
        [ttlMs],
      );
      // Peers: live nodes fetching any of these mailboxes (a node fetching none of them takes no share of them).
      const ours = new Set(wanted);
      const peers = live.rows.filter((n) => n.name !== this.node && (n.info.mailboxes ?? []).some((m) => ours.has(m)));
      const share = Math.ceil(wanted.length / (peers.length + 1));
      // A mailbox no peer fetches is taken whatever the share: else no one would.
      const elsewhere = new Set(peers.flatMap((n) => n.info.mailboxes ?? []));
      const only = wanted.filter((m) => !elsewhere.has(m));
      if (only.length) held += await this.#take(tx, only, ttlMs, only.length);
      const hungry = new Set(peers.filter((n) => Number(n.holds) < share).flatMap((n) => n.info.mailboxes ?? []));
      if (held < share) {
        held += await this.#take(
          tx,
          wanted.filter((m) => elsewhere.has(m)),
          ttlMs,
          share - held,
        );
      }
      // Beyond the share, free ones no peer short of its share fetches (their configurations
      // differ): else they would lie unfetched.
      const spare = wanted.filter((m) => elsewhere.has(m) && !hungry.has(m));
      if (held >= share && spare.length) held += await this.#take(tx, spare, ttlMs, spare.length);
      if (held > share) {
        // Given back only as far as peers that fetch them are short of their share, so
        // nothing lies free when no one would take it.
        const short = peers.filter((n) => Number(n.holds) < share);
        const deficit = short.reduce((sum, n) => sum + share - Number(n.holds), 0);
        const wantedByShort = [...new Set(short.flatMap((n) => n.info.mailboxes ?? []))];
        const surplus = Math.min(held - share, deficit);
        if (surplus > 0) {
          await tx.query(
            `UPDATE mailbox_leases SET holder = NULL, expires_at = NULL
             WHERE mailbox IN (SELECT mailbox FROM mailbox_leases WHERE holder = $1 AND expires_at > now() AND mailbox = ANY($3)
                               ORDER BY mailbox DESC LIMIT $2)`,
            [this.node, surplus, wantedByShort],
          );
        }
      }
      const mine = await tx.query<LeaseRow>(
        'SELECT mailbox, holder, epoch, expires_at FROM mailbox_leases WHERE holder = $1 AND expires_at > now() ORDER BY mailbox',
        [this.node],
      );
      await tx.query('COMMIT');
      this.#joined = true;
      return mine.rows.map(lease);
    } catch (err) {
      await tx.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      tx.release();
    }
  }

  /**
   * Takes up to LIMIT of MAILBOXES that are free, released or lapsed, in transaction TX;
   * resolves to how many. SKIP LOCKED passes over a row another node is taking, and a row
   * taken meanwhile fails the re-check of the WHERE clause on its newest version.
   */
  async #take(tx: pg.PoolClient, mailboxes: readonly string[], ttlMs: number, limit: number): Promise<number> {
    if (!mailboxes.length || limit <= 0) return 0;
    const taken = await tx.query(
      `UPDATE mailbox_leases l SET holder = $1, epoch = l.epoch + 1, expires_at = now() + ${ms(2)}
       FROM (SELECT mailbox FROM mailbox_leases
             WHERE mailbox = ANY($3) AND (holder IS NULL OR expires_at IS NULL OR expires_at <= now())
             ORDER BY mailbox LIMIT $4 FOR UPDATE SKIP LOCKED) free
       WHERE l.mailbox = free.mailbox`,
      [this.node, ttlMs, mailboxes, limit],
    );
    return taken.rowCount ?? 0;
  }

  async confirm(held: { mailbox: string; epoch: number }): Promise<boolean> {
    const result = await this.#pool.query(
      `UPDATE mailbox_leases SET expires_at = now() + ${ms(4)} WHERE mailbox = $1 AND holder = $2 AND epoch = $3 AND expires_at > now()`,
      [held.mailbox, this.node, held.epoch, this.#ttlMs],
    );
    return result.rowCount === 1;
  }

  async release(mailboxes?: readonly string[]): Promise<MailboxLease[]> {
    // The rows as they were, so the caller can log what it held (a lapsed one was not held).
    const result = await this.#pool.query<LeaseRow>(
      `UPDATE mailbox_leases l SET holder = NULL, expires_at = NULL
       FROM (SELECT mailbox, holder, expires_at FROM mailbox_leases WHERE holder = $1 AND ($2::text[] IS NULL OR mailbox = ANY($2)) FOR UPDATE) old
       WHERE l.mailbox = old.mailbox
       RETURNING l.mailbox, old.holder, l.epoch, old.expires_at, old.expires_at > now() AS held`,
      [this.node, mailboxes ? [...mailboxes] : null],
    );
    // Leaving the fleet: the others share its mailboxes out at their next round, without waiting for the lease time.
    if (!mailboxes) await this.#pool.query('UPDATE nodes SET stopped_at = now() WHERE name = $1', [this.node]);
    return result.rows
      .filter((r) => (r as LeaseRow & { held: boolean }).held)
      .map(lease)
      .sort((a, b) => (a.mailbox < b.mailbox ? -1 : 1));
  }

  async list(): Promise<LeaseState[]> {
    const result = await this.#pool.query<{ mailbox: string; holder: string | null; epoch: string; expires_at: Date | null; held: boolean }>(
      `SELECT mailbox, holder, epoch, expires_at, (holder IS NOT NULL AND expires_at > now()) AS held FROM mailbox_leases ORDER BY mailbox`,
    );
    return result.rows.map((r) => ({
      mailbox: r.mailbox,
      ...(r.holder !== null ? { holder: r.holder } : {}),
      epoch: Number(r.epoch),
      ...(r.expires_at !== null ? { expiresAt: r.expires_at } : {}),
      held: r.held,
    }));
  }

  async nodes(): Promise<FleetNode[]> {
    const result = await this.#pool.query<{ name: string; started_at: Date; seen_at: Date; live: boolean; config: Record<string, unknown> | null }>(
      `SELECT name, started_at, seen_at, (stopped_at IS NULL AND seen_at > now() - ${ms(1)}) AS live, info->'config' AS config FROM nodes ORDER BY name`,
      [this.#ttlMs],
    );
    return result.rows.map((r) => ({
      name: r.name,
      startedAt: r.started_at,
      seenAt: r.seen_at,
      live: r.live,
      ...(r.config !== null ? { config: r.config } : {}),
    }));
  }

  async announce(config: Record<string, unknown>): Promise<void> {
    // Kept beside what balance records (`info || ...` there): a new row is seen now but fetches
    // nothing yet, so no node gives it a share before its first round.
    await this.#pool.query(
      `INSERT INTO nodes (name, started_at, seen_at, info) VALUES ($1, now(), now(), jsonb_build_object('config', $2::jsonb))
       ON CONFLICT (name) DO UPDATE SET info = nodes.info || jsonb_build_object('config', $2::jsonb)`,
      [this.node, JSON.stringify(config)],
    );
  }
}
