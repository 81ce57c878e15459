/**
 * Genesys "notification of delivery status and message disposition" (issue 14): read receipts
 * (RFC 8098 message disposition notifications) coming in are tagged as what they are, not as
 * bounces; mail going out from an alias asks for delivery status notifications (RFC 3461 NOTIFY)
 * when its `[alias.outgoing] dsn_notify` says so and the server offers DSN.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { loadConfigText } from '../gateway/config/load.js';
import { ConfigError } from '../lib/config-file/toml.js';
import { startTestGateway } from './helpers/gateway.js';
import { startUpstream } from './helpers/upstream.js';
import { submissionToml, submit, waitDelivered } from './helpers/outbound.js';
import { check } from './helpers/delivery-exceptions.js';
import { storedMessage } from './helpers/wrapped.js';
import { fixture } from './helpers/paths.js';

const mdnFile = fixture('delivery-exceptions', 'disposition-displayed.eml');

test('a read receipt (RFC 8098) from the null sender over SMTP is tagged disposition-notification, not undeliverable', async (t) => {
  const gw = await startTestGateway(); // the default policy: all four stages
  t.after(() => gw.cleanup());
  // RFC 8098 section 3: the receipt's envelope sender is null, as a bounce's.
  const info = await nodemailer
    .createTransport({ host: '127.0.0.1', port: gw.port, secure: false, ignoreTLS: true })
    .sendMail({ envelope: { from: '', to: ['support@example.com'] }, raw: readFileSync(mdnFile) });
  const id = /queued as (\S+)/.exec(info.response)![1]!;
  const { meta } = await storedMessage(gw.store, id);
  assert.deepEqual([...meta.tags].sort(), ['disposition-notification', 'exception-queue']);
  const findings = meta.findings.delivery_exceptions as { decidedBy?: string; failure?: string; summary: string[]; dispositionNotification?: object };
  assert.equal(findings.failure, undefined);
  assert.equal(findings.decidedBy, 'disposition_notification');
  assert.match(findings.summary[0]!, /^Tagged disposition-notification and put it in the exception queue: a read receipt, not a bounce/);
  assert.deepEqual(findings.dispositionNotification, {
    mode: 'manual-action/MDN-sent-manually',
    disposition: 'displayed',
    finalRecipient: 'joe.recipient@customer.example',
    originalMessageId: '<reply-4471.20250317160200@example.com>',
    reportingUa: 'joes-pc.customer.example; Foomail 97.1',
  });
  assert.ok(
    findings.summary.includes(
      'Disposition notification: displayed by joe.recipient@customer.example; about <reply-4471.20250317160200@example.com>; Reporting-UA: joes-pc.customer.example; Foomail 97.1.',
    ),
  );
  assert.deepEqual(
    (await gw.store.listMessages({ tag: 'disposition-notification' })).map((m) => m.id),
    [id],
  );
});

test('read receipts sent automatically, of a message deleted unread, or in the RFC 6533 global form are receipts too; a Sieve reject is a bounce; turning the signal off brings back the old reading', async () => {
  const text = readFileSync(mdnFile, 'utf8');
  const automatic = text
    .replace('manual-action/MDN-sent-manually; displayed', 'automatic-action/MDN-sent-automatically; processed')
    .replace('Subject: Disposition notification', 'Subject: Read: Undeliverable goods in ticket 4471\nAuto-Submitted: auto-replied');
  const r = await check(automatic, { mailFrom: '' });
  assert.deepEqual(r.tags.sort(), ['disposition-notification', 'exception-queue'], r.findings.summary.join(' '));
  assert.equal(r.findings.dispositionNotification?.disposition, 'processed');
  const deletedUnread = await check(text.replace('manual-action/MDN-sent-manually; displayed', 'manual-action/MDN-sent-manually; deleted'), { mailFrom: '' });
  assert.deepEqual(deletedUnread.tags.sort(), ['disposition-notification', 'exception-queue']);

  // RFC 5429 section 2.1.1: a Sieve reject is sent as an MDN, automatic-action and deleted.
  const rejected = await check(text.replace('manual-action/MDN-sent-manually; displayed', 'automatic-action/MDN-sent-automatically; deleted'), {
    mailFrom: '',
  });
  assert.equal(rejected.failure, 'permanent', rejected.findings.summary.join(' '));
  assert.ok(!rejected.tags.includes('disposition-notification'));
  assert.match(rejected.findings.decidingEvidence ?? '', /a rejection \(RFC 5429\)$/);

  const global = text.replace('report-type=disposition-notification', 'report-type=global-disposition-notification');
  assert.deepEqual((await check(global.replace('message/disposition-notification', 'message/global-disposition-notification'), { mailFrom: '' })).tags.sort(), [
    'disposition-notification',
    'exception-queue',
  ]);

  // structural_signals without it: the null sender alone decides, as before issue 14.
  const off = await check(text, { mailFrom: '', partition: { structural_signals: ['delivery_status', 'empty_return_path'] } });
  assert.equal(off.failure, 'temporary');
  // A message that only quotes a receipt's words is no receipt.
  assert.deepEqual((await check('From: a@example.org\nTo: support@example.com\nSubject: about the disposition-notification\n\nhello\n')).tags, []);
});

function alias(name: string, outgoing: string): string {
  return `
[[alias]]
name = "${name}"
address = "${name}@example.com"
[alias.outgoing]
host = "127.0.0.1"
${outgoing}
`;
}

const reply = (from: string, to: string[]) => ({ from, to, subject: 'Re: your order', text: 'Thanks for writing.\r\n' });

test('dsn_notify: NOTIFY=FAILURE,DELAY on every RCPT TO where the server offers DSN; nothing where it does not, nor from an alias without it', async (t) => {
  const offers = await startUpstream({ dsn: true });
  const silent = await startUpstream();
  const gw = await startTestGateway(
    alias('asks', `port = ${offers.port}\ndsn_notify = ["FAILURE", "DELAY"]`) +
      alias('plain', `port = ${offers.port}`) +
      alias('nodsn', `port = ${silent.port}\ndsn_notify = ["FAILURE", "DELAY"]`) +
      submissionToml(),
  );
  t.after(async () => {
    await gw.cleanup();
    await offers.close();
    await silent.close();
  });
  const port = gw.gateway.submission!.addresses[0]!.port;
  const asks = await submit(port, reply('asks@example.com', ['one@example.org', 'two@example.org']));
  const [got] = await offers.waitFor(1);
  assert.deepEqual(got!.notify, { 'one@example.org': ['FAILURE', 'DELAY'], 'two@example.org': ['FAILURE', 'DELAY'] });
  assert.equal((await waitDelivered(gw.store, asks)).delivery.status, 'delivered');

  const plain = await submit(port, reply('plain@example.com', ['three@example.org']));
  const [, second] = await offers.waitFor(2);
  assert.equal(second!.notify, undefined, 'an alias without dsn_notify asks for nothing');
  assert.equal((await waitDelivered(gw.store, plain)).delivery.status, 'delivered');

  const nodsn = await submit(port, reply('nodsn@example.com', ['four@example.org']));
  const [third] = await silent.waitFor(1);
  assert.deepEqual(third!.rcptTo, ['four@example.org']);
  assert.equal(third!.notify, undefined, 'no NOTIFY to a server that does not offer DSN');
  assert.equal((await waitDelivered(gw.store, nodsn)).delivery.status, 'delivered');
});

test('config: dsn_notify takes SUCCESS, FAILURE and DELAY, or NEVER alone, and errors name the key', () => {
  const toml = (value: string) =>
    ['[[alias]]', 'name = "a"', 'address = "a@example.com"', '[alias.outgoing]', 'host = "127.0.0.1"', `dsn_notify = ${value}`].join('\n');
  assert.deepEqual(loadConfigText(toml('["FAILURE", "DELAY"]'), 'mailgate.toml', {}).alias[0]!.outgoing!.dsn_notify, ['FAILURE', 'DELAY']);
  assert.deepEqual(loadConfigText(toml('["NEVER"]'), 'mailgate.toml', {}).alias[0]!.outgoing!.dsn_notify, ['NEVER']);
  for (const bad of ['["NEVER", "FAILURE"]', '["FAILURE", "FAILURE"]', '["failure"]', '[]', '"FAILURE"']) {
    assert.throws(
      () => loadConfigText(toml(bad), 'mailgate.toml', {}),
      (err: unknown) => err instanceof ConfigError && /alias\[0\]\.outgoing\.dsn_notify/.test(err.message) && /\["NEVER"\] alone/.test(err.message),
      bad,
    );
  }
});
