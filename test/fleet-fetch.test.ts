/**
 * One IMAP mailbox fetched by two `mailgate serve` nodes on one PostgreSQL (issue 16, "Tests:
 * Several nodes"): both configured with the alias, one holds the mailbox's lease and fetches;
 * SIGKILLed mid-fetch, it loses the lease after `[retriever] lease_ttl` and the other node takes
 * the mailbox over. Each message is stored exactly once, byte for byte, and the mailbox ends
 * empty, every message moved to Processed.
 *
 * @store-pinned: its nodes name their own PostgreSQL (test/helpers/fleet.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buffer } from 'node:stream/consumers';
import { ensureDovecot, startDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { startFleet, type FleetNode, type LogEntry } from './helpers/fleet.js';
import { waitUntil } from './helpers/wait.js';

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

  // Fetching starts once a node holds the lease.
  await Promise.any(nodes.map((n) => n.waitForLog(leaseTaken, 'mailbox lease taken')));
  const store = await fleet.openStore();
  const database = new URL(fleet.url).pathname.slice(1);
  const leaseHolder = async () =>
    ((await fleet.postgres.query('SELECT holder FROM mailbox_leases', database)).rows as { holder: string }[]).map((r) => r.holder);

  for (let n = 0; n < COUNT; n++) await dovecot.deliver('support', message(n));
  await waitUntil(`${KILL_AFTER} messages fetched`, () => nodes[0].count(fetched) + nodes[1].count(fetched) >= KILL_AFTER);
  // The holder now, as mailbox_leases names it. (On a loaded machine a renewal can come late
  // and the lease move before the kill: that is the fencing's business, and the final checks
  // below see whether it held.)
  const [holderName] = await leaseHolder();
  const holder = nodes.find((n) => n.name === holderName);
  assert.ok(holder, `mailbox_leases names a node of the fleet (${holderName})`);
  const other = nodes.find((n) => n !== holder)!;
  const killedAt = Date.now();
  const mark = other.log.length;
  await holder.kill();
  const storedAtKill = (await store.listMessages({ limit: Infinity })).length;
  t.diagnostic(
    `${holder.name} killed holding the lease, after ${holder.count(fetched)} fetched (${other.name}: ${other.count(fetched)}), ${storedAtKill} stored`,
  );
  // Moves come after a poll's batch is stored: INBOX may still hold all of them.
  assert.ok(storedAtKill > 0 && storedAtKill < COUNT, `the kill landed mid-fetch (${storedAtKill} of ${COUNT} stored)`);

  // The other node takes the lapsed lease (a higher epoch) and fetches the rest.
  const taken = await other.waitForLog((e) => leaseTaken(e) && other.log.indexOf(e) >= mark, 'mailbox lease taken after the kill');
  t.diagnostic(
    `${other.name} took the mailbox over ${Number(taken.time) - killedAt} ms after the kill (lease_ttl ${LEASE_TTL_MS} ms), epoch ${String(taken.epoch)}`,
  );
  assert.deepEqual(await leaseHolder(), [other.name], 'mailbox_leases names the new holder');
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
  assert.equal((await dovecot.listMessages('support', 'Processed')).length, COUNT, 'every message moved to Processed');
});
