import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { openStore } from '../storage/open.js';
import { ensureDovecot, startDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { spawnServe, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';

const COUNT = 300;

function message(n: number): string {
  return `From: customer${n}@example.net\r\nTo: support@example.com\r\nSubject: crash ${n}\r\nMessage-ID: <crash-${n}@example.net>\r\n\r\n${`body of ${n} `.repeat(1 + (n % 50))}\r\n`;
}

test('SIGKILL while fetching a mailbox of hundreds: after restart each message is stored exactly once and the mailbox is empty', async (t) => {
  await ensureDovecot();
  const dovecot = await startDovecot({ users: [{ name: 'support', password: 'pw' }] });
  t.after(() => dovecot.stop());
  for (let n = 0; n < COUNT; n++) await dovecot.deliver('support', message(n));
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[alias]]',
        'name = "support"',
        'address = "support@example.com"',
        ...dovecotIncoming(dovecot, 'support'),
        'poll_interval = 1',
        'reconnect_interval = 1',
        'max_items = 100',
      ].join('\n'),
    ),
  );
  const storeDir = path.join(dir, 'data');
  // Kill at moments spread over the fetch, each run getting a little further.
  const left: number[] = [];
  for (const after of [300, 700, 450, 900]) {
    const { child, exited } = await spawnServe(configFile);
    await new Promise((r) => setTimeout(r, after + Math.floor(Math.random() * 200)));
    child.kill('SIGKILL');
    await exited;
    left.push((await dovecot.listMessages('support')).length);
    if (left.at(-1) === 0) break;
  }
  t.diagnostic(`messages left in INBOX after each kill: ${left.join(', ')}`);
  assert.ok(
    left.some((n) => n > 0 && n < COUNT),
    `at least one kill landed mid-fetch (${left.join(', ')})`,
  );

  // A last run to the end.
  const { child, exited } = await spawnServe(configFile);
  const deadline = Date.now() + 60_000;
  while ((await dovecot.listMessages('support')).length > 0) {
    assert.ok(Date.now() < deadline, 'the mailbox is emptied');
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill('SIGTERM');
  assert.equal(await exited, 0);

  const store = await openStore(storeDir);
  t.after(() => store.close());
  const stored = await store.listMessages({ limit: 100_000 });
  const subjects = stored.map((m) => m.subject);
  assert.equal(new Set(subjects).size, subjects.length, 'no message stored twice');
  assert.equal(stored.length, COUNT, 'every message stored');
  for (const m of stored) {
    const n = Number(/crash (\d+)/.exec(m.subject ?? '')?.[1]);
    assert.equal((await buffer(store.openRaw(m.id))).toString(), message(n), `message ${n} intact`);
  }
  assert.equal((await dovecot.listMessages('support', 'Processed')).length, COUNT, 'all moved to Processed');
});
