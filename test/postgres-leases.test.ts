/**
 * Mailbox leases between nodes (issue 16, "Several nodes: Fetching") against a real
 * PostgreSQL: several PgLeases "nodes" on one database, as several `mailgate serve` share one.
 * Waits are for the event (a lease lapsed by the database's clock), never for a set time.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { PgLeases } from '../storage/postgres/leases.js';
import type { MailboxLease } from '../storage/store.js';

// Short, so a lapse comes quickly; long enough that a round on this busy machine stays well inside it.
const TTL = 1500;
const MAILBOXES = ['imap|a', 'imap|b', 'imap|c', 'imap|d', 'imap|e', 'imap|f', 'imap|g'].map((m) => `${m}.example.com|143|agent||INBOX`);

let postgres: TestPostgres;

before(async () => {
  postgres = await startPostgres({ fsync: false });
});
after(() => postgres?.stop());

/** A fresh database with the schema, and a factory of nodes on it. */
async function fleet(): Promise<(name: string) => PgLeases> {
  const { pool } = await postgres.createMailgateDatabase(8);
  return (name) => new PgLeases(pool, name);
}

const names = (leases: readonly MailboxLease[]) => leases.map((l) => l.mailbox);

/** Asserts no mailbox is in two nodes' hands. */
function disjoint(held: readonly (readonly MailboxLease[])[]): void {
  const all = held.flatMap(names);
  assert.equal(new Set(all).size, all.length, `a mailbox held by two nodes: ${JSON.stringify(held.map(names))}`);
}

/** Balancing rounds of NODES in turn until WANT holds of what they hold. */
async function roundsUntil(nodes: readonly PgLeases[], want: (held: MailboxLease[][]) => boolean, mailboxes = MAILBOXES): Promise<MailboxLease[][]> {
  // A bound, so a regression fails with the state it got stuck in rather than hanging the run.
  for (let round = 1; ; round++) {
    const held: MailboxLease[][] = [];
    for (const node of nodes) held.push(await node.balance(mailboxes, TTL));
    disjoint(held);
    if (want(held)) return held;
    if (round === 300) assert.fail(`not settled after ${round} rounds: ${JSON.stringify(held.map(names))}`);
    await sleep(100);
  }
}

test('a node alone takes every mailbox; one that joins gets its share after the next rounds (7 over 2: 4 and 3)', async () => {
  const node = await fleet();
  const a = node('node-a');
  const first = await a.balance(MAILBOXES, TTL);
  assert.deepEqual(names(first), MAILBOXES);
  assert.ok(first.every((l) => l.holder === 'node-a' && l.epoch === 1));

  const b = node('node-b');
  // B's first round finds nothing free: A gives back only at its own next round.
  assert.deepEqual(await b.balance(MAILBOXES, TTL), []);
  const [heldA, heldB] = await roundsUntil([a, b], ([x, y]) => x!.length + y!.length === 7 && y!.length > 0);
  assert.deepEqual([heldA!.length, heldB!.length], [4, 3]);
  // Taken by a new holder: the epoch moved on.
  assert.ok(heldB!.every((l) => l.holder === 'node-b' && l.epoch === 2));
  // Stays settled.
  const again = [await a.balance(MAILBOXES, TTL), await b.balance(MAILBOXES, TTL)];
  assert.deepEqual(again.map(names), [names(heldA!), names(heldB!)]);
  const nodes = await a.nodes();
  assert.deepEqual(
    nodes.map((n) => [n.name, n.live]),
    [
      ['node-a', true],
      ['node-b', true],
    ],
  );
  const rows = await b.list();
  assert.equal(rows.length, 7);
  assert.ok(rows.every((r) => r.held && r.holder !== undefined && r.expiresAt instanceof Date));
});

test('three nodes share seven mailboxes at most three each, every one held once', async () => {
  const node = await fleet();
  const nodes = [node('n1'), node('n2'), node('n3')];
  const held = await roundsUntil(nodes, (h) => h.flat().length === 7 && h.every((x) => x.length >= 1));
  assert.ok(
    held.every((h) => h.length <= 3),
    `shares ${held.map((h) => h.length).join(', ')}`,
  );
});

test('a node that stops renewing loses its mailboxes after the lease time: the others take them with a higher epoch and its confirm fails', async () => {
  const node = await fleet();
  const a = node('paused');
  const b = node('steady');
  const [heldA] = await roundsUntil([a, b], ([x, y]) => x!.length === 4 && y!.length === 3);
  const before = heldA![0]!;
  assert.equal(await a.confirm(before), true, 'held: confirmed (and extended)');
  // A is paused: no more rounds. B takes A's mailboxes once they lapse by the database's clock.
  const [all] = await roundsUntil([b], ([x]) => x!.length === 7);
  const taken = all!.find((l) => l.mailbox === before.mailbox)!;
  assert.equal(taken.holder, 'steady');
  assert.ok(taken.epoch > before.epoch, `epoch ${taken.epoch} after ${before.epoch}`);
  assert.equal(await a.confirm(before), false, 'the paused node may no longer move or delete');
  // A comes back: it is live again and gets work back at B's next round, under new epochs.
  const [backA] = await roundsUntil([a, b], ([x]) => x!.length === 3);
  assert.ok(backA!.every((l) => l.epoch > before.epoch));
  assert.equal(await a.confirm(before), false, 'an old epoch stays refused, whoever holds the mailbox now');
});

test('release frees at once: another node takes a released mailbox at its next round, and all of a node that left', async () => {
  const node = await fleet();
  const a = node('leaving');
  const b = node('staying');
  assert.equal((await a.balance(MAILBOXES, TTL)).length, 7);
  const released = await a.release([MAILBOXES[0]!]);
  assert.deepEqual(names(released), [MAILBOXES[0]]);
  assert.equal((await a.list()).find((r) => r.mailbox === MAILBOXES[0])!.held, false);
  assert.equal(await a.confirm(released[0]!), false);
  // B is new and live: its share is 4, and only the released one is free.
  const first = await b.balance(MAILBOXES, TTL);
  assert.deepEqual(names(first), [MAILBOXES[0]]);
  assert.equal(first[0]!.epoch, released[0]!.epoch + 1);
  // A shuts down: everything back, and it is no longer counted, so B takes all in one round.
  assert.equal((await a.release()).length, 6);
  assert.equal((await b.nodes()).find((n) => n.name === 'leaving')!.live, false);
  assert.equal((await b.balance(MAILBOXES, TTL)).length, 7);
});

test('a mailbox no longer in a node configuration is given back, and one not in it is never taken', async () => {
  const node = await fleet();
  const a = node('a');
  assert.equal((await a.balance(MAILBOXES, TTL)).length, 7);
  const fewer = MAILBOXES.slice(0, 5);
  assert.deepEqual(names(await a.balance(fewer, TTL)), fewer);
  const rows = await a.list();
  assert.deepEqual(
    rows.filter((r) => !r.held).map((r) => r.mailbox),
    MAILBOXES.slice(5),
  );
  const b = node('b');
  // B fetches only the last two: those are the ones it takes, whatever its share of A's.
  assert.deepEqual(names(await b.balance(MAILBOXES.slice(5), TTL)), MAILBOXES.slice(5));
});

test('a node fetching none of the mailboxes takes no share of them, and configurations that overlap in part leave none unfetched', async () => {
  const node = await fleet();
  const a = node('a');
  const b = node('b');
  const idle = node('no-mailboxes');
  // Two nodes share the seven, 4 and 3, as if the third (live all along) were not there.
  for (let round = 1; ; round++) {
    assert.ok(round < 100, 'settled');
    assert.deepEqual(await idle.balance([], TTL), []);
    const held = [await a.balance(MAILBOXES, TTL), await b.balance(MAILBOXES, TTL)];
    disjoint(held);
    if (held[1]!.length > 0 && held.flat().length === 7) {
      assert.deepEqual(
        held.map((h) => h.length),
        [4, 3],
      );
      break;
    }
  }
  // A third node fetching only two of them: every mailbox stays held by someone, each once.
  const some = node('some');
  for (let round = 0; round < 6; round++) {
    const now = [await a.balance(MAILBOXES, TTL), await b.balance(MAILBOXES, TTL), await some.balance(MAILBOXES.slice(0, 2), TTL)];
    disjoint(now);
    assert.equal(now.flat().length, 7, `round ${round}: ${JSON.stringify(now.map(names))}`);
    assert.ok(now[2]!.every((l) => MAILBOXES.slice(0, 2).includes(l.mailbox)));
  }
});

test('nodes balancing at the same moment never both get a mailbox', async () => {
  const node = await fleet();
  const nodes = ['x', 'y', 'z'].map(node);
  for (let round = 0; round < 40; round++) {
    const held = await Promise.all(nodes.map((n) => n.balance(MAILBOXES, TTL)));
    disjoint(held);
    // What the database says agrees with what the nodes were told.
    const rows = await nodes[0]!.list();
    for (const [i, h] of held.entries()) {
      for (const l of h) {
        const row = rows.find((r) => r.mailbox === l.mailbox)!;
        assert.equal(row.holder, nodes[i]!.node);
        assert.equal(row.epoch, l.epoch);
      }
    }
    // Churn: now and then one node leaves and comes back, so leases change hands under load.
    if (round % 7 === 3) await nodes[round % 3]!.release();
  }
});
