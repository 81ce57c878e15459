/**
 * One IMAP mailbox fetched by two `mailgate serve` nodes on one PostgreSQL (issue 16, "Tests:
 * Several nodes"): both configured with the alias, one holds the mailbox's lease and fetches;
 * SIGKILLed mid-fetch, it loses the lease after `[retriever] lease_ttl` and the other node takes
 * the mailbox over. Each message is stored exactly once, byte for byte, and the mailbox ends
 * empty, every message moved to Processed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buffer } from 'node:stream/consumers';
import { ensureDovecot, startDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { startFleet, waitUntil, type FleetNode, type LogEntry } from './helpers/fleet.js';

const COUNT = 300;
/** The holder is killed after it has stored this many (give or take what it has on the wire then). */
const KILL_AFTER = 60;
const LEASE_TTL_MS = 3000;

function message(n: number): string {
  return `From: customer${n}@example.net\r\nTo: support@example.com\r\nSubject: fleet ${n}\r\nMessage-ID: <fleet-${n}@example.net>\r\n\r\n${`body of ${n} `.repeat(1 + (n % 50))}\r\n`;
}

const leaseTaken = (e: LogEntry) => e.msg === 'mailbox lease taken: this node fetches it';
const fetched = (e: LogEntry) => e.msg === 'message fetched';

test('one mailbox of hundreds, two nodes: the holder SIGKILLed mid-fetch, the other takes over after the lease; each message stored once, the mailbox emptied', async (t) => {
  await ensureDovecot();
  const dovecot = await startDovecot({ users: [{ name: 'support', password: 'pw' }] });
  t.after(() => dovecot.stop());
  const fleet = await startFleet({
    nodes: 2,
    toml: [
      '[retriever]',
      `lease_ttl = "${LEASE_TTL_MS / 1000}s"`,
      '',
      '[[alias]]',
      'name = "support"',
      'address = "support@example.com"',
      ...dovecotIncoming(dovecot, 'support'),
      'poll_interval = 1',
      'reconnect_interval = 1',
      'max_items = 100',
    ].join('\n'),
  });
  t.after(() => fleet.stop());
  const nodes = fleet.nodes as [FleetNode, FleetNode];

  // Whichever node took the lease is the holder; the other must not fetch while it lives.
  const holder = await Promise.any(nodes.map((n) => n.waitForLog(leaseTaken, 'mailbox lease taken').then(() => n)));
  const other = nodes.find((n) => n !== holder)!;
  const store = await fleet.openStore();
  const lease = async () =>
    (await fleet.postgres.query(`SELECT holder, epoch FROM mailbox_leases`, new URL(fleet.url).pathname.slice(1))).rows as { holder: string; epoch: string }[];
  assert.deepEqual(
    (await lease()).map((l) => l.holder),
    [holder.name],
    'mailbox_leases names the node that logged the lease',
  );

  for (let n = 0; n < COUNT; n++) await dovecot.deliver('support', message(n));
  await holder.waitForLog(() => holder.count(fetched) >= KILL_AFTER, `${KILL_AFTER} messages fetched`);
  assert.equal(other.count(fetched), 0, `${other.name} fetched nothing while ${holder.name} held the lease`);
  const killedAt = Date.now();
  await holder.kill();
  const storedByHolder = (await store.listMessages({ limit: Infinity })).length;
  const leftAtKill = (await dovecot.listMessages('support')).length;
  t.diagnostic(`${holder.name} killed after ${holder.count(fetched)} fetched, ${storedByHolder} stored, ${leftAtKill} left in INBOX`);
  // Moves come after a poll's batch is stored: INBOX may still hold all of them.
  assert.ok(storedByHolder > 0 && storedByHolder < COUNT, `the kill landed mid-fetch (${storedByHolder} of ${COUNT} stored)`);

  // The other node takes the lapsed lease (a higher epoch) and fetches the rest.
  const taken = await other.waitForLog(leaseTaken, 'mailbox lease taken after the kill');
  t.diagnostic(`${other.name} took the mailbox over ${Date.now() - killedAt} ms after the kill (lease_ttl ${LEASE_TTL_MS} ms), epoch ${String(taken.epoch)}`);
  assert.deepEqual(
    (await lease()).map((l) => l.holder),
    [other.name],
    'mailbox_leases names the new holder',
  );
  await waitUntil('the mailbox emptied', async () => (await dovecot.listMessages('support')).length === 0);

  const stored = await store.listMessages({ limit: Infinity });
  const ids = stored.map((m) => m.messageId);
  assert.deepEqual(
    ids.filter((id, i) => ids.indexOf(id) !== i),
    [],
    'no message stored twice (by Message-ID)',
  );
  assert.equal(stored.length, COUNT, 'every message stored');
  for (const m of stored) {
    const n = Number(/^fleet-(\d+)@example\.net$/.exec(m.messageId ?? '')?.[1]);
    assert.equal((await buffer(store.openRaw(m.id))).toString(), message(n), `message ${n} stored byte for byte`);
  }
  assert.ok(other.count(fetched) > 0, `${other.name} fetched the rest`);
  assert.equal((await dovecot.listMessages('support', 'Processed')).length, COUNT, 'every message moved to Processed');
});
