import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { Readable } from 'node:stream';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import { loadConfigFile } from '../gateway/config/load.js';
import { verifyPassword } from '../gateway/config/password.js';
import { startGateway, type Gateway } from '../gateway/gateway.js';
import { adminClient, controlSocketPath } from '../gateway/admin/http-client.js';
import { silentLogger } from '../lib/logger.js';
import { openTestStore } from './helpers/test-store.js';
import type { Store } from '../storage/store.js';
import type { MessageMeta } from '../storage/records.js';
import { runCli, spawnServe, startTestGateway, writeTestConfig, type CliResult } from './helpers/gateway.js';
import { waitDelivered } from './helpers/outbound.js';
import { tempDir } from './helpers/paths.js';
import { startUpstream } from './helpers/upstream.js';

/** Aliases `support` (sending through `port`) and `billing`, and a queue that retries after a second. */
const aliasesToml = (port: number) => `
[queue]
retry_intervals = [1]
retry_jitter = 0.0

[[alias]]
name = "support"
address = "support@example.com"
[alias.outgoing]
host = "127.0.0.1"
port = ${port}

[[alias]]
name = "billing"
address = "billing@example.com"
`;

/** A config file in a fresh directory; the store is made by whoever opens it first. */
async function configIn(toml: string): Promise<{ dir: string; configFile: string; cleanup: () => Promise<void> }> {
  const { dir, cleanup } = await tempDir();
  return { dir, configFile: await writeTestConfig(dir, toml), cleanup };
}

/** The id from `queued as ID for ...`, checking the recipients it names. */
function queuedId(r: CliResult, recipients: string[]): string {
  assert.equal(r.code, 0, r.stderr);
  const m = /^queued as (\S+) for (.*)\n$/.exec(r.stdout.toString());
  assert.ok(m, `unexpected output: ${r.stdout.toString()}`);
  assert.equal(m[2], recipients.join(', '));
  return m[1]!;
}

const eml = (from: string, subject: string) =>
  `From: ${from}\r\nTo: customer@example.org\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nAs written by the helpdesk.\r\n`;

test('send through the running gateway: text, an attachment streamed from a file, To, Cc and Bcc; the body can come from stdin', async (t) => {
  const upstream = await startUpstream();
  const { dir, configFile, cleanup } = await configIn(aliasesToml(upstream.port));
  let serve: Awaited<ReturnType<typeof spawnServe>> | undefined;
  t.after(async () => {
    serve?.child.kill('SIGTERM');
    await serve?.exited;
    await upstream.close();
    await cleanup();
  });
  const attachment = randomBytes(300_000); // several socket chunks, so several frames
  const file = path.join(dir, 'report.bin');
  await writeFile(file, attachment);
  serve = await spawnServe(configFile);

  const r = await runCli([
    'send',
    '--config',
    configFile,
    '--from',
    'support',
    '--to',
    'a@example.org',
    '--cc',
    'b@example.org',
    '--bcc',
    'c@example.org',
    '--subject',
    'Quarterly report',
    '--text',
    'See attached.',
    '--attach',
    file,
  ]);
  const id = queuedId(r, ['a@example.org', 'b@example.org', 'c@example.org']);
  assert.equal(r.stderr, '', 'the gateway took it: no "not running" note');
  const [got] = await upstream.waitFor(1);
  assert.equal(got!.mailFrom, 'support@example.com');
  assert.deepEqual(got!.rcptTo, ['a@example.org', 'b@example.org', 'c@example.org']);
  const parsed = await simpleParser(got!.raw);
  assert.equal(parsed.from?.text, 'support@example.com');
  assert.match(parsed.subject ?? '', /^Quarterly report \[ref:[2-9A-Z]{6}\]$/, 'with the conversation reference');
  assert.equal(parsed.text?.trim(), 'See attached.');
  assert.deepEqual(
    [parsed.cc].flat().map((a) => a?.text),
    ['b@example.org'],
  );
  assert.doesNotMatch(got!.raw.toString(), /c@example\.org/, 'Bcc is in the envelope only');
  assert.equal(parsed.attachments.length, 1);
  assert.equal(parsed.attachments[0]!.filename, 'report.bin');
  assert.ok(parsed.attachments[0]!.content.equals(attachment), 'the attachment arrives byte for byte');
  const show = await runCli(['messages', 'show', id, '--json', '--config', configFile]);
  const meta = JSON.parse(show.stdout.toString()) as MessageMeta;
  assert.deepEqual(meta.source, { kind: 'cli', alias: 'support' });
  assert.equal(meta.direction, 'outbound');

  // By address instead of name, and the body typed on stdin.
  const typed = await runCli(['send', '--config', configFile, '--from', 'support@example.com', '--to', 'd@example.org', '--subject', 'Typed', '--text', '-'], {
    input: 'First line\nsecond line\n',
  });
  queuedId(typed, ['d@example.org']);
  const [, second] = await upstream.waitFor(2);
  assert.deepEqual(second!.rcptTo, ['d@example.org']);
  assert.equal((await simpleParser(second!.raw)).text, 'First line\nsecond line\n');
  assert.doesNotMatch(second!.raw.toString(), /[^\r]\n/, 'every line ends in CRLF');
});

test('send --eml: the file goes out as it is (but for the conversation reference added to its subject); an eml whose From is another alias is refused (exit 1) and nothing is stored', async (t) => {
  const upstream = await startUpstream();
  const gw = await startTestGateway(aliasesToml(upstream.port));
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const good = path.join(gw.dir, 'reply.eml');
  await writeFile(good, eml('Support Desk <support@example.com>', 'Re: your order'));
  const id = queuedId(await runCli(['send', '--config', gw.configFile, '--from', 'support', '--to', 'customer@example.org', '--eml', good]), [
    'customer@example.org',
  ]);
  const [got] = await upstream.waitFor(1);
  assert.equal(got!.mailFrom, 'support@example.com');
  assert.deepEqual(got!.rcptTo, ['customer@example.org']);
  // Our Received line in front (RFC 5321 section 4.4), then the file byte for byte.
  const [, received, rest] =
    /^(Received: by \S+ \(mailgate, from mailgate send\) id (?:\S+)\r\n\tfor <customer@example\.org>;\r\n\t[^\r\n]+\+0000\r\n)([\s\S]*)$/.exec(
      got!.raw.toString(),
    ) ?? [];
  assert.ok(received, got!.raw.toString().slice(0, 300));
  const delivered = await waitDelivered(gw.store, id);
  // Reply threading: the reference goes into the subject of mail going out; nothing else changes.
  assert.equal(
    rest,
    eml('Support Desk <support@example.com>', 'Re: your order').replace('Subject: Re: your order', `Subject: Re: your order [ref:${delivered.conversation}]`),
    'byte for byte, but for the reference',
  );
  assert.equal(delivered.delivery.status, 'delivered');

  const other = path.join(gw.dir, 'other.eml');
  await writeFile(other, eml('billing@example.com', 'Your invoice'));
  const refused = await runCli(['send', '--config', gw.configFile, '--from', 'support', '--to', 'customer@example.org', '--eml', other]);
  assert.equal(refused.code, 1);
  assert.equal(refused.stdout.length, 0);
  assert.match(refused.stderr, /^mailgate: 5\.7\.1 The From header <billing@example\.com> is not an address of alias "support"/);
  assert.deepEqual(
    (await gw.store.listMessages()).map((m) => m.id),
    [id],
    'nothing refused was stored',
  );
  assert.deepEqual(await gw.store.listQueue(), [], 'nor queued');
});

test('send with the gateway stopped goes into the store, and out when the gateway starts; a refusal stores nothing there either', async (t) => {
  const upstream = await startUpstream();
  const { dir, configFile, cleanup } = await configIn(aliasesToml(upstream.port));
  let running: { gateway: Gateway; store: Store } | undefined;
  t.after(async () => {
    await running?.gateway.stop();
    await running?.store.close();
    await upstream.close();
    await cleanup();
  });
  const r = await runCli([
    'send',
    '--config',
    configFile,
    '--from',
    'support',
    '--to',
    'later@example.org',
    '--subject',
    'Sent while stopped',
    '--text',
    'Hello.',
  ]);
  const id = queuedId(r, ['later@example.org']);
  assert.equal(r.stderr, 'the gateway is not running: the message is sent when it starts\n');
  const other = path.join(dir, 'other.eml');
  await writeFile(other, eml('billing@example.com', 'Not yours'));
  const refused = await runCli(['send', '--config', configFile, '--from', 'support', '--to', 'x@example.org', '--eml', other]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /5\.7\.1 The From header <billing@example\.com>/);

  const config = loadConfigFile(configFile);
  const store = await openTestStore(config.data_dir);
  running = { store, gateway: await startGateway({ config, store, logger: silentLogger(), retriever: false }) };
  const meta = await waitDelivered(store, id);
  assert.equal(meta.delivery.status, 'delivered');
  assert.deepEqual(meta.source, { kind: 'cli', alias: 'support' });
  assert.deepEqual(
    (await store.listMessages()).map((m) => m.id),
    [id],
    'the refused message was not stored',
  );
  const [got] = await upstream.waitFor(1);
  assert.match((await simpleParser(got!.raw)).subject ?? '', /^Sent while stopped \[ref:[2-9A-Z]{6}\]$/);
});

test('send: bad usage exits 2 with a clear message and touches no store', async (t) => {
  const { dir, configFile, cleanup } = await configIn(aliasesToml(1));
  t.after(cleanup);
  const textFile = path.join(dir, 'body.txt');
  await writeFile(textFile, 'body');
  const cases: [string[], RegExp][] = [
    [['--from', 'support'], /give at least one --to/],
    [['--to', 'a@example.org'], /give --from ALIAS, or --department NAME to send as its default alias/],
    [['--from', 'support', '--to', 'a@example.org', '--text', 'x', '--eml', textFile], /--eml sends the file as it is/],
    [['--from', 'support', '--to', 'a@example.org', '--attach', textFile, '--eml', textFile], /--eml sends the file as it is/],
    [['--from', 'support', '--to', 'a@example.org', '--text', 'x', '--text-file', textFile], /--text or --text-file, not both/],
    [['--from', 'suport', '--to', 'a@example.org'], /--from suport is neither the name nor an address of an alias; known aliases: support, billing/],
    [['--from', 'nobody@example.com', '--to', 'a@example.org'], /neither the name nor an address of an alias/],
    [['--from', 'support', '--to', 'Ann <a@example.org>'], /"Ann <a@example\.org>" is not an email address/],
    [['--from', 'support', '--to', 'a@example.org', '--attach', path.join(dir, 'missing.pdf')], /--attach .*missing\.pdf: no such file/],
  ];
  const results = await Promise.all(cases.map(([args]) => runCli(['send', '--config', configFile, ...args])));
  results.forEach((r, i) => {
    const [args, message] = cases[i]!;
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  });
  assert.equal(existsSync(path.join(dir, 'data')), false, 'no store was made');
});

test("send --department without --from sends as the department's default alias; an unknown department, or one without a default, is refused", async (t) => {
  const upstream = await startUpstream();
  const { configFile, cleanup } = await configIn(`
[[department]]
name = "sales"
[[department]]
name = "billing"

[[alias]]
name = "sales-ops"
address = "ops@example.com"
department = "sales"

[[alias]]
name = "sales-desk"
address = "desk@example.com"
department = "sales"
default = true
[alias.outgoing]
host = "127.0.0.1"
port = ${upstream.port}

[[alias]]
name = "invoices"
address = "invoices@example.com"
department = "billing"
`);
  let serve: Awaited<ReturnType<typeof spawnServe>> | undefined;
  t.after(async () => {
    serve?.child.kill('SIGTERM');
    await serve?.exited;
    await upstream.close();
    await cleanup();
  });
  serve = await spawnServe(configFile);
  const r = await runCli([
    'send',
    '--config',
    configFile,
    '--department',
    'sales',
    '--to',
    'buyer@example.org',
    '--subject',
    'Your quote',
    '--text',
    'Attached soon.',
  ]);
  const id = queuedId(r, ['buyer@example.org']);
  const [got] = await upstream.waitFor(1);
  assert.equal(got!.mailFrom, 'desk@example.com');
  assert.equal((await simpleParser(got!.raw)).from?.text, 'desk@example.com');
  const meta = JSON.parse((await runCli(['messages', 'show', id, '--json', '--config', configFile])).stdout.toString()) as MessageMeta;
  assert.deepEqual(meta.source, { kind: 'cli', alias: 'sales-desk' });

  const refusals: [string[], RegExp][] = [
    [['--department', 'billing'], /send: department billing has no default alias \(set default = true on one of its \[\[alias\]\] tables\), so give --from/],
    [['--department', 'marketing'], /send: --department marketing is not a configured department; known departments: sales, billing/],
    [['--department', 'sales', '--from', 'sales-ops'], /give --from or --department, not both/],
  ];
  for (const [args, message] of refusals) {
    const refused = await runCli(['send', '--config', configFile, ...args, '--to', 'buyer@example.org', '--text', 'x']);
    assert.equal(refused.code, 2, `${args.join(' ')}: ${refused.stderr}`);
    assert.match(refused.stderr, message);
  }
  assert.equal(upstream.received.length, 1, 'nothing else was sent');
});

test('config hash-password prints a hash that verifies, keeps spaces, and refuses an empty password', async () => {
  const r = await runCli(['config', 'hash-password'], { input: ' correct horse battery staple \nsecond line ignored\n' });
  assert.equal(r.code, 0, r.stderr);
  const hash = r.stdout.toString();
  assert.match(hash, /^scrypt\$16384\$8\$1\$\S+\$\S+\n$/);
  assert.equal(verifyPassword(' correct horse battery staple ', hash.trim()), true);
  assert.equal(verifyPassword('correct horse battery staple', hash.trim()), false);
  const crlf = await runCli(['config', 'hash-password'], { input: 'pw\r\n' });
  assert.equal(verifyPassword('pw', crlf.stdout.toString().trim()), true, 'a CRLF line ending is not part of the password');
  for (const empty of await Promise.all(['', '\n'].map((input) => runCli(['config', 'hash-password'], { input })))) {
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /the password is empty/);
    assert.equal(empty.stdout.length, 0);
  }
});

test('a message cut short (the sender failed, or the connection closed before the end frame) is not stored', async (t) => {
  const upstream = await startUpstream();
  const gw = await startTestGateway(aliasesToml(upstream.port));
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const socketPath = controlSocketPath(gw.config.data_dir);
  const request = { alias: 'support', mailFrom: 'support@example.com', rcptTo: ['customer@example.org'] };
  const head = 'From: support@example.com\r\nTo: customer@example.org\r\nSubject: half\r\n\r\nThe first half';
  const failing = new Readable({
    read() {
      this.push(head);
      this.destroy(new Error('the disk went away'));
    },
  });
  await assert.rejects(adminClient(socketPath).sendMessage(request, failing), /the disk went away/);

  // A client killed after some bytes: the connection ends with no last chunk.
  const socket = createConnection(socketPath);
  const query = `alias=support&from=${encodeURIComponent(request.mailFrom)}&to=${encodeURIComponent(request.rcptTo[0]!)}`;
  const start = `POST /send?${query} HTTP/1.1\r\nHost: mailgate\r\nContent-Type: message/rfc822\r\nTransfer-Encoding: chunked\r\n\r\n`;
  socket.end(`${start}${Buffer.byteLength(head).toString(16)}\r\n${head}\r\n`);
  const chunks: Buffer[] = [];
  for await (const chunk of socket) chunks.push(chunk as Buffer);
  assert.match(Buffer.concat(chunks).toString(), /"code":"CLIENT_GONE"/);

  assert.deepEqual(await gw.store.listMessages(), []);
  assert.deepEqual(await gw.store.listQueue(), []);
});
