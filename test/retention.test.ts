/**
 * Retention (`[retention]`, issue 14) on a running gateway with a real store: the sweep deletes
 * messages older than their age with their bytes and quarantined attachments and gives the
 * space back, never a queued message; old audit entries go; `messages delete` and `quarantine
 * purge` from the CLI and DELETE /api/v1/messages/{id}. The sweep is run with a time ahead of
 * the clock rather than waited for a day.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { setTimeout as sleep } from 'node:timers/promises';
import nodemailer from 'nodemailer';
import { attachmentsSectionSchema, attachmentsStage } from '../policy/attachments/stage.js';
import { hashPassword } from '../gateway/config/password.js';
import { loadConfigText } from '../gateway/config/load.js';
import { ConfigError } from '../lib/config-file/toml.js';
import type { MessageMeta, QueueEntry } from '../storage/records.js';
import { capturingLogger, runCli, startTestGateway } from './helpers/gateway.js';
import { testStoreKind } from './helpers/test-store.js';
import { fixture } from './helpers/paths.js';

const DAY = 86_400_000;
const TOKEN = 'retention-test-operator-token';
const OLD_MESSAGES = 200;
const MESSAGE_SIZE = 50 * 1024;

/** A message of about MESSAGE_SIZE bytes whose body does not compress (LevelDB compresses its tables). */
function bigMessage(i: number): Buffer {
  const body = randomBytes((MESSAGE_SIZE * 3) / 4)
    .toString('base64')
    .replace(/.{76}/g, '$&\r\n');
  return Buffer.from(`From: customer${i}@example.org\r\nTo: support@example.com\r\nSubject: order ${i}\r\n\r\n${body}\r\n`);
}

/** Bytes in the files under DIR, as `du` would count them. */
async function bytesUnder(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(path.join(entry.parentPath, entry.name))).size;
  }
  return total;
}

test('[retention]: ages are checked at load, naming the file, line and key; quarantine defaults to messages, audit to 365d', () => {
  const c = loadConfigText('[retention]\nmessages = "2w"\n', '/etc/mailgate/mailgate.toml', {});
  assert.deepEqual(c.retention, { messages: 14 * DAY, quarantine: 14 * DAY, audit: 365 * DAY });
  assert.deepEqual(loadConfigText('', '/x/mailgate.toml', {}).retention, { audit: 365 * DAY, quarantine: undefined }, 'messages kept forever by default');
  assert.equal(loadConfigText('[retention]\nmessages = "90d"\nquarantine = "12h"\n', '/x/mailgate.toml', {}).retention.quarantine, 12 * 3_600_000);
  for (const [line, key] of [
    ['messages = "90 days"', 'messages'],
    ['quarantine = "0d"', 'quarantine'],
    ['audit = 365', 'audit'],
  ]) {
    assert.throws(
      () => loadConfigText(`[retention]\n${line}\n`, '/x/mailgate.toml', {}),
      (err: unknown) => err instanceof ConfigError && new RegExp(`mailgate\\.toml:2: retention\\.${key}: expected an age such as "90d"`).test(err.message),
      line,
    );
  }
});

test('retention sweep: old messages go with their bytes and quarantined attachments, the space comes back, queued mail stays; old audit entries go; messages delete and quarantine purge', async (t) => {
  const department = attachmentsSectionSchema.parse({ blocked_extensions: ['.exe'] });
  const log = capturingLogger();
  const toml =
    `[retention]\nmessages = "30d"\n\n[metrics]\nlisten = "127.0.0.1:0"\n\n` +
    // No outgoing server and no [partition.default_smtp]: mail sent as sales is held in the queue.
    `[[alias]]\nname = "sales"\naddress = "sales@example.com"\n\n` +
    `[admin]\n\n[[admin.token]]\nname = "ops"\ntoken_hash = "${hashPassword(TOKEN)}"\nrole = "operator"\n`;
  const gw = await startTestGateway(toml, { stages: () => [attachmentsStage(undefined, department)], logger: log.logger });
  t.after(() => gw.cleanup());
  const { store } = gw;
  const api = `${gw.gateway.web!.url}/api/v1`;
  const auth = { authorization: `Bearer ${TOKEN}` };
  const cli = (...args: string[]) => runCli([...args, '--config', gw.configFile]);

  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.port, secure: false, ignoreTLS: true, pool: true, maxConnections: 4 });
  const send = async (raw: Buffer): Promise<string> => {
    const info = await transport.sendMail({ envelope: { from: 'customer@example.org', to: ['support@example.com'] }, raw });
    const id = /queued as (\S+)/.exec(info.response)?.[1];
    assert.ok(id, info.response);
    return id;
  };

  // 200 messages of 50 KB, one with a quarantined attachment, and one held in the outbound queue.
  const old: string[] = [];
  for (let i = 0; i < OLD_MESSAGES; i += 10) old.push(...(await Promise.all(Array.from({ length: 10 }, (_, j) => send(bigMessage(i + j))))));
  const withExe = await send(readFileSync(fixture('attachments', 'double-extension.eml')));
  const [quarantined] = await store.listQuarantine({ messageId: withExe });
  assert.ok(quarantined, 'the .exe was quarantined');
  const sent = await cli('send', '--from', 'sales', '--to', 'customer@example.org', '--subject', 'your order', '--text', 'On its way.');
  assert.equal(sent.code, 0, sent.stderr);
  const queued = /^queued as (\S+)/.exec(sent.stdout.toString())![1]!;
  assert.ok((await store.getQueueEntry(queued))?.held, 'held: sales has no route');

  // Everything so far is "old" for a sweep 30 days after this instant; what arrives after it is not.
  const cut = Date.now();
  await sleep(5);
  const recent = await send(bigMessage(-1));

  // By hand, through the REST API: one old message deleted (and audited), the queued one refused.
  const byHand = await fetch(`${api}/messages/${old[0]}`, { method: 'DELETE', headers: auth });
  assert.equal(byHand.status, 200, await byHand.clone().text());
  assert.equal(((await byHand.json()) as MessageMeta).id, old[0]);
  const refused = await fetch(`${api}/messages/${queued}`, { method: 'DELETE', headers: auth });
  assert.equal(refused.status, 409);
  assert.equal(((await refused.json()) as { code: string }).code, 'MESSAGE_QUEUED');
  const audit = await store.listAudit();
  assert.deepEqual(
    audit.map((e) => [e.action, e.target, e.outcome]),
    [
      ['delete-message', queued, 'MESSAGE_QUEUED'],
      ['delete-message', old[0], 'ok'],
    ],
  );

  // The space given back to the file system is LevelDB's (compaction of the deleted ranges, in
  // data_dir); PostgreSQL's autovacuum makes it reusable inside the database instead, and
  // compact() does nothing there. Everything else below holds on either store.
  const onLevelDb = testStoreKind === 'leveldb';
  const before = await bytesUnder(gw.config.data_dir);
  if (onLevelDb) assert.ok(before > OLD_MESSAGES * MESSAGE_SIZE, `the store holds the messages: ${before} bytes`);

  const swept = await gw.gateway.retention.sweep(new Date(cut + 30 * DAY));
  assert.deepEqual(
    { messages: swept.messages, quarantine: swept.quarantine, audit: swept.audit, keptQueued: swept.keptQueued },
    // 199 of the 200 (one was deleted by hand), the one with the .exe and its quarantined attachment.
    { messages: OLD_MESSAGES, quarantine: 1, audit: 0, keptQueued: 1 },
  );

  // Gone for the admin: metadata, bytes, the list, the quarantine.
  for (const id of [old[1]!, old[OLD_MESSAGES - 1]!, withExe]) {
    assert.equal(await store.getMessage(id), undefined);
    await assert.rejects(buffer(store.openRaw(id)), { code: 'MESSAGE_NOT_FOUND' });
  }
  const shown = await cli('messages', 'show', old[1]!);
  assert.equal(shown.code, 1);
  assert.match(shown.stderr, /No such message/);
  const listed = await cli('messages', 'list', '--limit', '1000', '--json');
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual(
    (JSON.parse(listed.stdout.toString()) as MessageMeta[]).map((m) => m.id),
    [recent, queued],
    'only the message that arrived after the cut, and the queued one',
  );
  assert.deepEqual(await store.listQuarantine(), []);
  await assert.rejects(buffer(store.openQuarantined(quarantined.id)), { code: 'QUARANTINE_NOT_FOUND' });

  // The queued message is whole, and still queued.
  const queueList = await cli('queue', 'list', '--json');
  assert.deepEqual(
    (JSON.parse(queueList.stdout.toString()) as QueueEntry[]).map((e) => e.id),
    [queued],
  );
  assert.match((await buffer(store.openRaw(queued))).toString(), /On its way\./);

  // The space came back: the store shrank by most of the 10 MB deleted.
  const after = await bytesUnder(gw.config.data_dir);
  if (onLevelDb) assert.ok(after < before / 3, `data_dir: ${before} bytes before the sweep, ${after} after`);

  // One log line with the counts, and the metric.
  const line = await log.waitFor((e) => typeof e.msg === 'string' && e.msg.startsWith('retention sweep:'));
  assert.match(
    String(line.msg),
    /^retention sweep: deleted 200 message\(s\) \(\d+ bytes\), 1 quarantined attachment\(s\), 0 audit entries; kept 1 still queued$/,
  );
  assert.deepEqual(line.retention, { messages: 200, quarantine: 1, audit: 0, bytes: swept.bytes, kept_queued: 1 });
  const metrics = await (await fetch(`http://127.0.0.1:${gw.gateway.metricsPort}/metrics`)).text();
  assert.match(metrics, /^mailgate_retention_deleted_total\{kind="message"\} 200$/m);
  assert.match(metrics, /^mailgate_retention_deleted_total\{kind="quarantine"\} 1$/m);

  // A year on: the audit entries (older than the default 365d) go too; the queued message still stays.
  const yearOn = await gw.gateway.retention.sweep(new Date(Date.now() + 366 * DAY));
  assert.equal(yearOn.audit, 2);
  assert.equal(yearOn.messages, 1, 'the recent message is old by then');
  assert.equal(yearOn.keptQueued, 1);
  assert.deepEqual(await store.listAudit(), []);
  assert.ok(await store.getMessage(queued));

  // From the CLI: messages delete (refused for the queued one with a clear sentence), quarantine purge.
  const queuedDelete = await cli('messages', 'delete', queued);
  assert.equal(queuedDelete.code, 1);
  assert.match(
    queuedDelete.stderr,
    new RegExp(`Message ${queued} is still in the outbound queue and is not deleted: drop it first \\(\`mailgate queue drop ${queued}\`\\)`),
  );
  const another = await send(readFileSync(fixture('attachments', 'double-extension.eml')));
  const notYet = await cli('quarantine', 'purge', '--before', '30d');
  assert.equal(notYet.code, 0, notYet.stderr);
  assert.match(notYet.stdout.toString(), /^purged 0 quarantined attachment\(s\) quarantined before /);
  const purged = await cli('quarantine', 'purge', '--before', new Date(Date.now() + 60_000).toISOString());
  assert.equal(purged.code, 0, purged.stderr);
  assert.match(purged.stdout.toString(), /^purged 1 quarantined attachment\(s\) quarantined before /);
  assert.deepEqual(await store.listQuarantine(), []);
  const deleted = await cli('messages', 'delete', another);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.match(deleted.stdout.toString(), new RegExp(`^deleted message ${another} \\(\\d+ bytes`));
  assert.equal(await store.getMessage(another), undefined);
  assert.equal((await cli('messages', 'delete', another)).code, 1, 'a second time: no such message');
  transport.close();
});
