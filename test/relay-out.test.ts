/**
 * Every path that answers 250 leaves each accepted recipient stored for us, queued for
 * delivery, or both, on purpose; and what leaves carries our Received line (RFC 5321
 * section 4.4). The loopback default (`accept_all` on) must not turn relaying off: that
 * fault answered 250 to a trusted client's mail for another domain, stored it, and sent
 * nothing. (`mailgate send`: send-cli.test.ts; fetched mail, always stored for an alias of
 * its mailbox: recipients.test.ts; through a real Postfix: postfix-relay.test.ts.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { hashPassword } from '../gateway/config/password.js';
import { startTestGateway, runCli } from './helpers/gateway.js';
import { startUpstream } from './helpers/upstream.js';
import { rawSmtp } from './helpers/smtp-client.js';
import { fixture } from './helpers/paths.js';
import { submissionToml, submit, waitDelivered } from './helpers/outbound.js';

const smartHost = (port: number) => `
[partition.default_smtp]
server = "127.0.0.1"
port = ${port}

[queue]
retry_intervals = [1]
retry_jitter = 0.0
`;

const alias = `
[[alias]]
name = "support"
address = "support@example.com"
`;

/** Sends one message over a raw SMTP session; returns the id from the 250. */
async function send(port: number, rcpt: string[], body = 'From: app@example.com\r\nTo: x@outside.example\r\nSubject: out\r\n\r\nhello\r\n'): Promise<string> {
  const smtp = await rawSmtp(port);
  try {
    assert.match(await smtp.command('EHLO app.client.test'), /^250/);
    assert.match(await smtp.command('MAIL FROM:<app@example.com>'), /^250/);
    for (const r of rcpt) assert.match(await smtp.command(`RCPT TO:<${r}>`), /^250/, r);
    assert.match(await smtp.command('DATA'), /^354/);
    const reply = await smtp.write(`${body}.\r\n`);
    const id = /^250 .*queued as (\S+)/.exec(reply)?.[1];
    assert.ok(id, reply);
    return id;
  } finally {
    smtp.close();
  }
}

test("on the loopback default (accept_all), a trusted client's mail for another domain is queued and reaches the default SMTP with our Received line; an alias recipient is only stored", async (t) => {
  const upstream = await startUpstream();
  // No accept_all setting: on loopback it defaults to true, as after `npm start`.
  const gw = await startTestGateway(`[smtp]\ntrusted_networks = ["127.0.0.0/8"]\n${alias}${smartHost(upstream.port)}`);
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  assert.equal(gw.config.smtp.accept_all, true);

  const id = await send(gw.port, ['x@outside.example', 'support@example.com']);
  const meta = await waitDelivered(gw.store, id);
  assert.deepEqual(
    meta.delivery.recipients.map((r) => [r.address, r.status]),
    [['x@outside.example', 'delivered']],
  );
  assert.equal(meta.source.alias, 'support', 'stored for the alias too');
  const [got] = await upstream.waitFor(1);
  assert.deepEqual(got!.rcptTo, ['x@outside.example'], 'the alias recipient is ours: stored, not sent on');
  const text = got!.raw.toString();
  assert.match(
    text,
    new RegExp(
      `^Received: from app\\.client\\.test \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby ${gw.config.smtp.hostname.replace(/\./g, '\\.')} \\(mailgate\\) with ESMTP id ${id}\\r\\n\\tfor <x@outside\\.example>;\\r\\n\\t\\w{3}, \\d\\d \\w{3} \\d{4} [\\d:]{8} \\+0000\\r\\n`,
    ),
  );
  assert.match(text, /\r\nSubject: out\r\n\r\nhello\r\n$/);

  // What the admin sees: nothing left in the queue, the delivery on the message.
  await gw.stop();
  const list = await runCli(['queue', 'list', '--config', gw.configFile]);
  assert.equal(list.code, 0, list.stderr);
  assert.doesNotMatch(list.stdout.toString(), new RegExp(id));
  const check = await runCli(['config', 'check', gw.configFile]);
  assert.match(check.stdout.toString(), /accepting any recipient; relaying for 1 trusted network through 127\.0\.0\.1\)$/m);
  const show = await runCli(['messages', 'show', id, '--config', gw.configFile]);
  assert.match(show.stdout.toString(), /x@outside\.example/);
  assert.match(show.stdout.toString(), /delivered/);
});

test("an authenticated [[smtp.user]] relays on the loopback default too (ESMTPSA in our Received line); an unknown client's mail for another domain is only stored, as accept_all says", async (t) => {
  const upstream = await startUpstream();
  const gw = await startTestGateway(`
[smtp.tls]
cert = ${JSON.stringify(fixture('tls', 'cert.pem'))}
key = ${JSON.stringify(fixture('tls', 'key.pem'))}

[[smtp.user]]
name = "app"
password_hash = "${hashPassword('app pass')}"
${smartHost(upstream.port)}`);
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const client = nodemailer.createTransport({
    host: '127.0.0.1',
    port: gw.port,
    name: 'app.client.test',
    requireTLS: true,
    tls: { ca: readFileSync(fixture('tls', 'cert.pem')) },
    auth: { user: 'app', pass: 'app pass' },
  });
  t.after(() => client.close());
  const info = await client.sendMail({
    envelope: { from: 'app@example.com', to: ['y@outside.example'] },
    raw: 'From: app@example.com\r\nTo: y@outside.example\r\nSubject: authenticated\r\n\r\nhi\r\n',
  });
  const id = /queued as (\S+)/.exec(info.response)![1]!;
  await waitDelivered(gw.store, id);
  const [got] = await upstream.waitFor(1);
  assert.deepEqual(got!.rcptTo, ['y@outside.example']);
  assert.match(got!.raw.toString(), /^Received: from app\.client\.test \(\[127\.0\.0\.1\]\)\r\n\tby \S+ \(mailgate\) with ESMTPSA id /);

  // Not trusted, not authenticated: accept_all takes it as a sink would, and says so by storing it only.
  const stored = await send(gw.port, ['z@outside.example']);
  const meta = await gw.store.getMessage(stored);
  assert.ok(meta, 'stored');
  assert.equal(meta.delivery, undefined, 'and not sent');
  assert.equal(await gw.store.getQueueEntry(stored), undefined, 'nor queued');
});

test('submission: the message is stored and queued, and leaves with our Received line naming the client (ESMTPA)', async (t) => {
  const upstream = await startUpstream();
  const gw = await startTestGateway(`${alias}${submissionToml()}\n[partition.default_smtp]\nserver = "127.0.0.1"\nport = ${upstream.port}\n`);
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const port = gw.gateway.submission!.addresses[0]!.port;
  const id = await submit(port, {
    from: 'support@example.com',
    to: 'customer@example.org',
    subject: 'Your ticket',
    text: 'Answered.',
    headers: { 'X-Test': '1' },
  });
  const meta = await waitDelivered(gw.store, id);
  assert.equal(meta.delivery.status, 'delivered');
  const [got] = await upstream.waitFor(1);
  const text = got!.raw.toString();
  assert.match(
    text,
    new RegExp(`^Received: from \\S+ \\(\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby \\S+ \\(mailgate\\) with ESMTPA id ${id}\\r\\n\\tfor <customer@example\\.org>;`),
  );
  assert.equal(text.match(/^Received:/gm)?.length, 1, 'one line: ours');
  assert.doesNotMatch(text, /X-Mailgate-/, 'our findings stay ours: a customer gets none of them');
});
