import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AliasRow } from '../gateway/commands/aliases.js';
import type { MessageMeta } from '../storage/records.js';
import { ensureDovecot, startDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { runCli, spawnServe, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';

const mail = (to: string, subject: string) =>
  `From: customer@example.net\r\nTo: ${to}\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\s+/g, '-')}@example.net>\r\n\r\nHello.\r\n`;

test('aliases sharing a mailbox each have their own status: the mailbox is fetched while one is active, mail for an inactive one stays in it untouched until it is activated', async (t) => {
  await ensureDovecot();
  const dovecot = await startDovecot({ users: [{ name: 'shared', password: 'pw' }] });
  t.after(() => dovecot.stop());
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const incoming = [...dovecotIncoming(dovecot, 'shared'), 'poll_interval = 1', 'idle = false'];
  const configFile = path.join(dir, 'mailgate.toml');
  // sales is configured first: it leads the mailbox.
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[alias]]',
        'name = "sales"',
        'address = "sales@example.com"',
        ...incoming,
        '[[alias]]',
        'name = "billing"',
        'address = "billing@example.com"',
        ...incoming,
      ].join('\n'),
    ),
  );
  const { child, exited } = await spawnServe(configFile);
  t.after(async () => {
    child.kill('SIGTERM');
    await exited;
  });

  const cli = async (...args: string[]) => {
    const r = await runCli([...args, '--config', configFile]);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout.toString();
  };
  const subjects = async (alias?: string) =>
    (JSON.parse(await cli('messages', 'list', '--json', ...(alias ? ['--alias', alias] : []))) as MessageMeta[]).map((m) => m.subject).sort();
  const waitUntilStored = async (alias: string, ...wanted: string[]) => {
    const deadline = Date.now() + 30_000;
    for (let have = await subjects(alias); !wanted.every((w) => have.includes(w)); have = await subjects(alias)) {
      assert.ok(Date.now() < deadline, `${wanted.join(', ')} stored for ${alias} (have: ${have.join(', ')})`);
      await sleep(200);
    }
  };
  const statuses = async () =>
    Object.fromEntries((JSON.parse(await cli('aliases', 'list', '--json')) as AliasRow[]).map((r) => [r.name, [r.status, r.changedBy ?? '-']]));
  const folders = async () => ({ inbox: (await dovecot.listMessages('shared')).length, processed: (await dovecot.listMessages('shared', 'Processed')).length });
  // A poll moves what it stored at its end (a MOVE copies, then expunges): wait for it to be done.
  const waitForFolders = async (want: { inbox: number; processed: number }) => {
    const deadline = Date.now() + 30_000;
    for (let have = await folders(); have.inbox !== want.inbox || have.processed !== want.processed; have = await folders()) {
      assert.ok(Date.now() < deadline, `INBOX and Processed: want ${JSON.stringify(want)}, have ${JSON.stringify(have)}`);
      await sleep(100);
    }
  };

  // The leading alias is deactivated: its sibling is still fetched.
  assert.match(await cli('aliases', 'deactivate', 'sales'), /alias sales is inactive/);
  // Delivered first, so every listing that shows the later ones shows it too.
  await dovecot.deliver('shared', mail('sales@example.com', 'For sales while inactive'));
  await dovecot.deliver('shared', mail('nobody@elsewhere.example', 'For no alias'));
  await dovecot.deliver('shared', mail('billing@example.com', 'For billing'));
  // Mail for no alias goes to the first active alias of the mailbox.
  await waitUntilStored('billing', 'For billing', 'For no alias');
  assert.deepEqual(await statuses(), { sales: ['inactive', 'admin'], billing: ['active', '-'] });
  // The message for the inactive alias is still in INBOX.
  await waitForFolders({ inbox: 1, processed: 2 });
  assert.deepEqual(await subjects(), ['For billing', 'For no alias'], 'nothing stored for the inactive alias');

  // Activated again: what waited for it is stored for it.
  assert.match(await cli('aliases', 'activate', 'sales'), /alias sales is active/);
  await waitUntilStored('sales', 'For sales while inactive');
  assert.deepEqual(await statuses(), { sales: ['active', 'admin'], billing: ['active', '-'] });

  // A sibling is deactivated: its mail stays in the mailbox, not moved, not stored.
  assert.match(await cli('aliases', 'deactivate', 'billing'), /alias billing is inactive/);
  await dovecot.deliver('shared', mail('billing@example.com', 'For billing while inactive'));
  await dovecot.deliver('shared', mail('sales@example.com, billing@example.com', 'For both'));
  await dovecot.deliver('shared', mail('sales@example.com', 'For sales'));
  await waitUntilStored('sales', 'For sales', 'For both');
  assert.deepEqual(await statuses(), { sales: ['active', 'admin'], billing: ['inactive', 'admin'] });
  // The message for the inactive sibling is still in INBOX.
  await waitForFolders({ inbox: 1, processed: 5 });
  assert.deepEqual(await subjects('billing'), ['For billing', 'For no alias'], 'nothing more stored for the inactive sibling');
  assert.ok(!(await subjects()).includes('For billing while inactive'));

  assert.match(await cli('aliases', 'activate', 'billing'), /alias billing is active/);
  await waitUntilStored('billing', 'For billing while inactive');
  await waitForFolders({ inbox: 0, processed: 6 });
  assert.deepEqual(await subjects('billing'), ['For billing', 'For billing while inactive', 'For no alias']);
  assert.deepEqual(await subjects('sales'), ['For both', 'For sales', 'For sales while inactive']);
  assert.match(await cli('aliases', 'list'), /sales\s+sales@example\.com\s+-\s+active\s+active[\s\S]*billing\s+billing@example\.com\s+-\s+active\s+active/);
});
