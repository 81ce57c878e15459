import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import type { MessageMeta } from '../storage/records.js';
import { runCli, startTestGateway } from './helpers/gateway.js';
import { fixture } from './helpers/paths.js';
import { rawSmtp } from './helpers/smtp-client.js';
import { hashPassword } from '../gateway/config/password.js';

function transport(port: number, extra: Record<string, unknown> = {}) {
  return nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, ...extra });
}

/** A message with the bytes we expect to find stored, CRLF line ends included. */
function rawMessage(subject: string, body = 'Hello from the test.\r\n'): string {
  return [
    'From: Customer <customer@example.org>',
    'To: Support <support@example.com>',
    'Cc: other@example.net',
    `Subject: ${subject}`,
    `Message-ID: <${subject.replace(/\W/g, '')}@test.example>`,
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="b1"',
    '',
    '--b1',
    'Content-Type: text/plain; charset=utf-8',
    '',
    body.trimEnd(),
    '--b1',
    'Content-Type: application/pdf; name="invoice.pdf"',
    'Content-Disposition: attachment; filename="invoice.pdf"',
    'Content-Transfer-Encoding: base64',
    '',
    Buffer.from('%PDF-1.4 not really').toString('base64'),
    '--b1--',
    '',
  ].join('\r\n');
}

test('a message sent with nodemailer is stored and reads back through the CLI byte for byte', async (t) => {
  const gw = await startTestGateway();
  t.after(() => gw.cleanup());
  const raw = rawMessage('Order 1234: où est mon colis ?');
  const info = await transport(gw.port).sendMail({ envelope: { from: 'bounce@example.org', to: ['support@example.com', 'sales@example.com'] }, raw });
  const queued = /queued as (\S+)/.exec(info.response);
  assert.ok(queued, `250 reply names the stored id: ${info.response}`);
  const id = queued[1]!;

  // The gateway is running and holds the store: the CLI goes through its control socket.
  const list = await runCli(['messages', 'list', '--json', '--config', gw.configFile]);
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout.toString()) as MessageMeta[];
  assert.deepEqual(
    listed.map((m) => m.id),
    [id],
  );

  const show = await runCli(['--config', gw.configFile, 'messages', 'show', id, '--json']);
  assert.equal(show.code, 0, show.stderr);
  const meta = JSON.parse(show.stdout.toString()) as MessageMeta;
  assert.equal(meta.subject, 'Order 1234: où est mon colis ?');
  assert.equal(meta.from, 'Customer <customer@example.org>');
  assert.deepEqual(meta.to, ['support@example.com']);
  assert.deepEqual(meta.cc, ['other@example.net']);
  assert.equal(meta.messageId, 'Order1234oestmoncolis@test.example');
  assert.deepEqual(meta.envelope, { mailFrom: 'bounce@example.org', rcptTo: ['support@example.com', 'sales@example.com'] });
  assert.equal(meta.source.kind, 'smtp');
  assert.equal(meta.source.remoteAddress, '127.0.0.1');
  assert.deepEqual(meta._AttachmentFileNames, ['invoice.pdf']);
  assert.equal(meta.size, Buffer.byteLength(raw));
  assert.ok(Math.abs(Date.parse(meta.receivedAt) - Date.now()) < 60_000);

  const bytes = await runCli(['messages', 'raw', id, '--config', gw.configFile]);
  assert.equal(bytes.code, 0, bytes.stderr);
  assert.ok(bytes.stdout.equals(Buffer.from(raw)), 'stored bytes equal the bytes sent');

  const human = await runCli(['messages', 'list', '--config', gw.configFile]);
  assert.match(human.stdout.toString(), new RegExp(`${id} .* 516 +smtp +Customer <customer@.*Order 1234: où est mon colis \\?`));

  // With the gateway stopped, the CLI opens the store directly and sees the same.
  await gw.stop();
  const direct = await runCli(['messages', 'raw', id, '--config', gw.configFile]);
  assert.equal(direct.code, 0, direct.stderr);
  assert.ok(direct.stdout.equals(Buffer.from(raw)));
  const missing = await runCli(['messages', 'show', '01ZZZZZZZZZZZZZZZZZZZZZZZZ', '--config', gw.configFile]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /No such message: 01ZZZZZZZZZZZZZZZZZZZZZZZZ/);
});

test('a message over the size limit is refused with 552 and nothing is stored', async (t) => {
  const gw = await startTestGateway('[smtp]\nmax_message_size = 10000\n');
  t.after(() => gw.cleanup());
  const big = rawMessage('too big', 'x'.repeat(76) + '\r\n'.repeat(1) + ('y'.repeat(76) + '\r\n').repeat(300));
  await assert.rejects(
    transport(gw.port).sendMail({ envelope: { from: 'a@example.org', to: ['b@example.com'] }, raw: big }),
    (err: { responseCode?: number }) => {
      assert.equal(err.responseCode, 552);
      return true;
    },
  );
  // The session stays usable, and a small message still goes through.
  const ok = await transport(gw.port).sendMail({ envelope: { from: 'a@example.org', to: ['b@example.com'] }, raw: rawMessage('small') });
  assert.match(ok.response, /^250/);
  const list = await gw.store.listMessages({});
  assert.deepEqual(
    list.map((m) => m.subject),
    ['small'],
  );
});

test('mail for a domain that is not ours is refused with 550 5.7.1 and nothing is relayed or stored', async (t) => {
  const gw = await startTestGateway(`
[smtp]
accept_all = false
domains = ["example.com"]

[[department]]
name = "service"

[[alias]]
name = "billing"
address = "billing@billing.example.net"
department = "service"
redirection_addresses = ["invoices@old.example.net"]
`);
  t.after(() => gw.cleanup());
  const s = await rawSmtp(gw.port);
  t.after(() => s.close());
  assert.match(await s.command('EHLO client.test'), /^250/);
  assert.match(await s.command('MAIL FROM:<spammer@bad.example>'), /^250/);
  assert.match(await s.command('RCPT TO:<victim@elsewhere.example>'), /^550 5\.7\.1 /);
  assert.match(await s.command('RCPT TO:<someone@example.com>'), /^250/, 'a configured domain');
  assert.match(await s.command('RCPT TO:<billing@billing.example.net>'), /^250/, 'an alias address');
  assert.match(await s.command('RCPT TO:<INVOICES@old.example.net>'), /^250/, 'a redirection address, any case');
  assert.match(await s.command('RCPT TO:<other@billing.example.net>'), /^550 5\.7\.1 /, "the alias's domain is not ours as a whole");
  s.close();
  assert.equal((await gw.store.listMessages({})).length, 0);
});

test('AUTH is refused before STARTTLS and works after it', async (t) => {
  const gw = await startTestGateway(`
[smtp.tls]
cert = ${JSON.stringify(fixture('tls', 'cert.pem'))}
key = ${JSON.stringify(fixture('tls', 'key.pem'))}

[[smtp.user]]
name = "helpdesk"
password_hash = "${hashPassword('s3cret pass')}"
`);
  t.after(() => gw.cleanup());
  const s = await rawSmtp(gw.port);
  t.after(() => s.close());
  const ehlo = await s.command('EHLO client.test');
  assert.match(ehlo, /STARTTLS/);
  assert.doesNotMatch(ehlo, /AUTH/, 'AUTH is not offered in clear text');
  const plain = Buffer.from('\0helpdesk\0s3cret pass').toString('base64');
  assert.match(await s.command(`AUTH PLAIN ${plain}`), /^5\d\d /);
  s.close();

  const tls = transport(gw.port, {
    ignoreTLS: false,
    requireTLS: true,
    tls: { ca: readFileSync(fixture('tls', 'cert.pem')) },
    auth: { user: 'helpdesk', pass: 's3cret pass' },
  });
  assert.equal(await tls.verify(), true);
  const wrong = transport(gw.port, {
    ignoreTLS: false,
    requireTLS: true,
    tls: { ca: readFileSync(fixture('tls', 'cert.pem')) },
    auth: { user: 'helpdesk', pass: 'guess' },
  });
  await assert.rejects(wrong.verify(), (err: { responseCode?: number }) => err.responseCode === 535);
});

test('AUTH in clear text is refused even where STARTTLS is not offered, unless allowed for loopback', async (t) => {
  const users = `[[smtp.user]]\nname = "app"\npassword_hash = "${hashPassword('pw')}"\n`;
  const strict = await startTestGateway(users);
  t.after(() => strict.cleanup());
  const plain = Buffer.from('\0app\0pw').toString('base64');
  const s = await rawSmtp(strict.port);
  t.after(() => s.close());
  assert.doesNotMatch(await s.command('EHLO client.test'), /AUTH/);
  assert.match(await s.command(`AUTH PLAIN ${plain}`), /^5\d\d /);
  s.close();

  const loose = await startTestGateway(`[smtp.auth]\nallow_insecure_on_loopback = true\n\n${users}`);
  t.after(() => loose.cleanup());
  const l = await rawSmtp(loose.port);
  t.after(() => l.close());
  assert.match(await l.command('EHLO client.test'), /AUTH PLAIN LOGIN/);
  assert.match(await l.command(`AUTH PLAIN ${Buffer.from('\0app\0wrong').toString('base64')}`), /^535 5\.7\.8 /);
  assert.match(await l.command(`AUTH PLAIN ${plain}`), /^235 /);
  l.close();
});
