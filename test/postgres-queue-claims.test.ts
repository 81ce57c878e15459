/**
 * The shared queue's claims in a real PostgreSQL (storage/postgres/queue-claims.ts): nodes
 * claiming at once never get the same entry, an expired claim is taken over, renewal keeps a
 * claim, release frees it at once, and a node whose claim was taken cannot record its attempt.
 * Each "node" is a PgQueueClaims with a pool of its own, on a database made by the schema's
 * migrations; queue rows are written with plain SQL as the store writes them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { PgQueueClaims } from '../storage/postgres/queue-claims.js';
import { newMessageId } from '../storage/ids.js';
import type { QueueEntry } from '../storage/records.js';

let postgres: TestPostgres;

before(async () => {
  postgres = await startPostgres({ fsync: false });
});
after(() => postgres?.stop());

/** A fresh database with mailgate's tables, and a pool on it (as the test's own admin view). */
async function database(): Promise<{ url: string; db: pg.Pool }> {
  const { url, pool } = await postgres.createMailgateDatabase();
  return { url, db: pool };
}

/** Node NAME on the database at URL, with a pool of its own (its own connections, as another process). */
function node(url: string, name: string): PgQueueClaims {
  return new PgQueueClaims(postgres.pool(url), name);
}

function entry(id: string, nextAttemptAt: Date, extra: Partial<QueueEntry> = {}): QueueEntry {
  return {
    id,
    kind: 'outbound',
    mailFrom: 'support@example.com',
    requestedRecipients: ['customer@example.org'],
    recipients: [{ address: 'customer@example.org', status: 'pending', attempts: 0 }],
    queuedAt: new Date().toISOString(),
    attempts: 0,
    nextAttemptAt: nextAttemptAt.toISOString(),
    ...extra,
  };
}

/**
 * Queues COUNT entries already due by the database's clock, as the store writes them, the
 * first the longest overdue (a poll takes them in this order); resolves to their ids.
 */
async function queueDue(db: pg.Pool, count: number, extra: Partial<QueueEntry> = {}): Promise<string[]> {
  const ids = Array.from({ length: count }, () => newMessageId());
  const { rows } = await db.query<{ now: Date }>(`SELECT now()`);
  for (const [i, id] of ids.entries()) {
    const due = new Date(rows[0]!.now.getTime() - 60_000 - (count - i) * 1000);
    await db.query(`INSERT INTO queue (id, next_attempt_at, entry) VALUES ($1, $2, $3::jsonb)`, [id, due, JSON.stringify(entry(id, due, extra))]);
  }
  return ids;
}

async function row(db: pg.Pool, id: string): Promise<{ claimed_by: string | null; entry: QueueEntry; next_attempt_at: Date } | undefined> {
  const { rows } = await db.query(`SELECT claimed_by, entry, next_attempt_at FROM queue WHERE id = $1`, [id]);
  return rows[0];
}

/** Waits until the database's clock has passed the claim on ID (the lease is the database's, not ours). */
/** Runs the claim on ID out, as if its holder had been paused past its lease (a short lease would run out by itself under load before the test looked). */
async function expireClaim(db: pg.Pool, id: string): Promise<void> {
  await db.query(`UPDATE queue SET claimed_until = now() - interval '1 second' WHERE id = $1`, [id]);
}

/** Queues COUNT due entries and has NODES claim them in small batches, all at once, until none is left: never one entry twice. */
async function drainTogether(db: pg.Pool, nodes: PgQueueClaims[], count: number): Promise<void> {
  const ids = await queueDue(db, count);
  const holder = new Map<string, string>();
  for (let round = 0; holder.size < ids.length; round++) {
    assert.ok(round < 1000, 'the queue drains');
    // Small batches, all nodes at once, many rounds: their statements overlap on the same rows.
    const got = await Promise.all(nodes.map((n) => n.claimDue(7, 60_000)));
    got.forEach((entries, i) => {
      for (const { entry: e, tookOverFrom } of entries) {
        assert.equal(tookOverFrom, undefined, 'nobody held it before');
        assert.equal(holder.get(e.id), undefined, `${e.id} claimed by ${holder.get(e.id)} and again by node-${i + 1}`);
        holder.set(e.id, `node-${i + 1}`);
      }
    });
  }
  assert.deepEqual([...holder.keys()].sort(), [...ids].sort());
  const { rows } = await db.query<{ claimed_by: string; n: string }>(`SELECT claimed_by, count(*) AS n FROM queue GROUP BY claimed_by ORDER BY claimed_by`);
  const perNode = Object.fromEntries(rows.map((r) => [r.claimed_by, Number(r.n)]));
  for (const [id, name] of holder) assert.equal((await row(db, id))?.claimed_by, name, 'the row names the node that got it');
  assert.equal(Object.keys(perNode).length, nodes.length, `every node got some: ${JSON.stringify(perNode)}`);
  assert.deepEqual(
    await Promise.all(nodes.map((n) => n.claimDue(10, 60_000))),
    nodes.map(() => []),
    'nothing left to claim',
  );
}

for (const count of [2, 3]) {
  test(`${count} nodes claiming due entries at once never get the same one, and between them get all`, async () => {
    const { url, db } = await database();
    const nodes = Array.from({ length: count }, (_, i) => node(url, `node-${i + 1}`));
    // Repeated: a double claim shows only when statements happen to overlap on a row.
    for (let repeat = 0; repeat < 3; repeat++) await drainTogether(db, nodes, 300);
  });

  test(`${count} nodes racing for one new entry, by poll and by claim: exactly one gets it, every time`, async () => {
    const { url, db } = await database();
    const nodes = Array.from({ length: count }, (_, i) => node(url, `node-${i + 1}`));
    for (let round = 0; round < 150; round++) {
      // The only unclaimed due entry: one node polls for it while the others claim it as the fresh entry they just queued.
      const [id] = await queueDue(db, 1);
      const poller = round % count;
      const got = await Promise.all(
        nodes.map(async (n, i) =>
          i === poller ? (await n.claimDue(5, 60_000)).map((p) => p.entry.id) : [(await n.claim(id!, 60_000, { onlyIfDue: true }))?.id],
        ),
      );
      const winners = got.map((ids, i) => (ids.includes(id) ? `node-${i + 1}` : undefined)).filter((w) => w !== undefined);
      assert.equal(winners.length, 1, `${id}: one holder, got ${JSON.stringify(got)}`);
      assert.equal((await row(db, id!))?.claimed_by, winners[0], 'the row names it');
      // A later claim by anyone, the holder included, is refused while the claim lives.
      for (const n of nodes) assert.equal(await n.claim(id!, 60_000), undefined);
    }
  });
}

test('an expired claim is taken over by another node, and the node that lost it can record nothing', async () => {
  const { url, db } = await database();
  const a = node(url, 'node-a');
  const b = node(url, 'node-b');
  const [id] = await queueDue(db, 1);
  const claimedByA = await a.claim(id!, 60_000);
  assert.equal(claimedByA?.id, id);
  assert.deepEqual(await b.claimDue(10, 60_000), [], 'not while the claim lives');
  await expireClaim(db, id!);
  const taken = await b.claimDue(10, 60_000);
  assert.deepEqual(
    taken.map((t) => [t.entry.id, t.tookOverFrom]),
    [[id, 'node-a']],
    'node-b takes it and is told from whom',
  );
  // node-a was paused through all this; it wakes with the server's 250 in hand.
  const delivered: QueueEntry = {
    ...claimedByA!,
    attempts: 1,
    recipients: [{ address: 'customer@example.org', status: 'delivered', attempts: 1, deliveredAt: new Date().toISOString() }],
  };
  assert.equal(await a.saveClaimed(delivered), false, "the loser's progress is refused");
  assert.equal(await a.saveClaimed(delivered, { release: true }), false, 'and its outcome');
  assert.equal(
    await a.finishClaimed(id!, { kind: 'outbound', status: 'delivered', finishedAt: new Date().toISOString(), attempts: 1, recipients: delivered.recipients }),
    false,
    'and its finish',
  );
  assert.deepEqual(await a.renew([id!], 60_000), [], 'renewing tells it the claim is gone');
  await a.release([id!]);
  const now = await row(db, id!);
  assert.equal(now?.claimed_by, 'node-b', "node-a's release does not free node-b's claim");
  assert.equal(now?.entry.recipients[0]?.status, 'pending', 'the entry is as node-b claimed it');
  // The holder records its own attempt.
  const later = new Date(Date.now() + 600_000);
  assert.equal(await b.saveClaimed({ ...taken[0]!.entry, attempts: 1, nextAttemptAt: later.toISOString() }, { release: true }), true);
  const saved = await row(db, id!);
  assert.equal(saved?.claimed_by, null, 'released with its save');
  assert.equal(saved?.entry.attempts, 1);
  assert.equal(saved?.next_attempt_at.getTime(), later.getTime(), 'next attempt kept as a column for polling');
  assert.deepEqual(await a.claimDue(10, 60_000), [], 'not due before its next attempt');
  assert.equal(await a.claim(id!, 60_000, { onlyIfDue: true }), undefined, 'nor claimed as a due one');
});

test('renewing keeps a claim past its first lease; releasing frees it at once', async () => {
  const { url, db } = await database();
  const a = node(url, 'node-a');
  const b = node(url, 'node-b');
  const [kept, freed] = await queueDue(db, 2);
  // Long enough for the renewal to come first on a loaded machine.
  assert.equal((await a.claimDue(2, 2000)).length, 2);
  const { rows } = await db.query<{ until: Date }>(`SELECT claimed_until AS until FROM queue WHERE id = $1`, [kept]);
  assert.deepEqual((await a.renew([kept!], 60_000)).sort(), [kept]);
  // Past the first lease by the database's clock: the renewed claim still holds.
  for (;;) {
    const { rows: now } = await db.query<{ past: boolean }>(`SELECT now() > $1 AS past`, [rows[0]!.until]);
    if (now[0]!.past) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const taken = await b.claimDue(10, 60_000);
  assert.deepEqual(
    taken.map((t) => t.entry.id),
    [freed],
    'node-b takes only the one that was not renewed',
  );
  assert.equal(await b.claim(kept!, 60_000), undefined);
  assert.equal(await a.saveClaimed({ ...(await row(db, kept!))!.entry, attempts: 1 }), true, 'node-a still records its attempt');

  await a.release([kept!]);
  assert.equal((await row(db, kept!))?.claimed_by, null);
  assert.deepEqual(
    (await b.claimDue(10, 60_000)).map((t) => t.entry.id),
    [kept],
    'free at once, without waiting for the lease',
  );
});

test('held entries are not claimed by polling: they wait for an admin', async () => {
  const { url, db } = await database();
  const a = node(url, 'node-a');
  const [held] = await queueDue(db, 1, { held: 'no route to send it' });
  const [due] = await queueDue(db, 1);
  assert.deepEqual(
    (await a.claimDue(10, 60_000)).map((t) => t.entry.id),
    [due],
  );
  assert.equal((await a.claim(held!, 60_000))?.id, held, 'an admin (or a starting node) may claim it by id');
});
