import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { MessageMeta } from '../storage/records.js';
import { ensureDovecot, startDovecot } from './helpers/dovecot.js';
import { runCli, spawnServe, testConfigText } from './helpers/gateway.js';
import { fixture, tempDir } from './helpers/paths.js';

test('mailgate serve fetches an alias mailbox: the message lands in the store once, the mailbox is emptied', async (t) => {
  await ensureDovecot();
  const dovecot = await startDovecot({ users: [{ name: 'sales', password: 'pw-sales' }] });
  t.after(() => dovecot.stop());
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const raw =
    'From: customer@example.net\r\nTo: sales@example.com\r\nSubject: Quote for 40 chairs\r\nMessage-ID: <chairs@example.net>\r\n\r\nPlease quote.\r\n';
  await dovecot.deliver('sales', raw);

  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[department]]',
        'name = "sales"',
        '[[alias]]',
        'name = "sales"',
        'address = "sales@example.com"',
        'department = "sales"',
        '[alias.incoming]',
        'type = "pop3"',
        'host = "127.0.0.1"',
        `port = ${dovecot.pop3Port}`,
        'security = "starttls"',
        `ca_file = ${JSON.stringify(fixture('tls', 'cert.pem'))}`,
        'user = "sales"',
        'password = "${SALES_PASSWORD}"',
        'poll_interval = 1',
      ].join('\n'),
    ),
  );
  process.env.SALES_PASSWORD = 'pw-sales';
  const { child, exited } = await spawnServe(configFile);
  t.after(async () => {
    child.kill('SIGTERM');
    await exited;
  });

  let listed: MessageMeta[] = [];
  const deadline = Date.now() + 20_000;
  while (listed.length === 0) {
    assert.ok(Date.now() < deadline, 'the fetched message appears in `messages list --alias sales`');
    await new Promise((r) => setTimeout(r, 200));
    const r = await runCli(['messages', 'list', '--alias', 'sales', '--json', '--config', configFile]);
    assert.equal(r.code, 0, r.stderr);
    listed = JSON.parse(r.stdout.toString()) as MessageMeta[];
  }
  assert.equal(listed.length, 1);
  assert.equal(listed[0]!.subject, 'Quote for 40 chairs');
  assert.deepEqual(listed[0]!.source, { kind: 'pop3', alias: 'sales' });
  const bytes = await runCli(['messages', 'raw', listed[0]!.id, '--config', configFile]);
  assert.equal(bytes.stdout.toString(), raw);
  // POP3 default: deleted from the mailbox once stored; later polls find nothing to store again.
  const emptied = Date.now() + 10_000;
  while ((await dovecot.listMessages('sales')).length > 0) {
    assert.ok(Date.now() < emptied, 'the mailbox is emptied');
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 2500));
  const again = await runCli(['messages', 'list', '--json', '--config', configFile]);
  assert.equal((JSON.parse(again.stdout.toString()) as MessageMeta[]).length, 1, 'stored once');
});
