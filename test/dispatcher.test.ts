import { test } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { simpleParser } from 'mailparser';
import { startTestGateway } from './helpers/gateway.js';
import { startUpstream } from './helpers/upstream.js';
import { submissionToml, submit, waitDelivered, waitQueue } from './helpers/outbound.js';

function alias(name: string, outgoing: string, extra = ''): string {
  return `
[[alias]]
name = "${name}"
address = "${name}@example.com"
${extra}
${outgoing ? `[alias.outgoing]\nhost = "127.0.0.1"\n${outgoing}` : ''}
`;
}

const reply = (from: string, to: string | string[], subject = 'Re: your order') => ({ from, to, subject, text: 'Thanks for writing.\r\n' });

test('mail submitted for an alias goes out through its SMTP server, and its metadata says so', async (t) => {
  const upstream = await startUpstream();
  const gw = await startTestGateway(alias('support', `port = ${upstream.port}`) + submissionToml());
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const id = await submit(gw.gateway.submission!.addresses[0]!.port, reply('support@example.com', 'customer@example.org'));
  const [got] = await upstream.waitFor(1);
  assert.equal(got!.mailFrom, 'support@example.com');
  assert.deepEqual(got!.rcptTo, ['customer@example.org']);
  assert.equal(got!.user, undefined, 'plain SMTP does not authenticate');
  const parsed = await simpleParser(got!.raw);
  const meta = await waitDelivered(gw.store, id);
  // Reply threading: the conversation's reference is added to the subject, and a Message-ID we keep.
  assert.equal(parsed.subject, `Re: your order [ref:${meta.conversation}]`);
  assert.equal(parsed.messageId, `<${meta.messageId}>`);
  assert.equal(meta.direction, 'outbound');
  assert.equal(meta.source.kind, 'submission');
  assert.equal(meta.delivery.status, 'delivered');
  assert.equal(meta.delivery.recipients[0]!.status, 'delivered');
  assert.match(meta.delivery.recipients[0]!.route ?? '', /alias "support" via 127\.0\.0\.1:\d+ \(SMTP/);
  assert.equal(await gw.store.getQueueEntry(id), undefined, 'nothing left in the queue');
  // Its first attempt sends the bytes ingest kept in memory: they must be the stored ones (the subject as rewritten), after our trace headers.
  const stored = Buffer.concat(await gw.store.openRaw(id).toArray());
  assert.ok(got!.raw.length > stored.length && got!.raw.subarray(got!.raw.length - stored.length).equals(stored), 'sent byte for byte as stored');
  assert.match(got!.raw.subarray(0, got!.raw.length - stored.length).toString(), /^Received: from /);
});

test('ESMTP authenticates with the alias user and password', async (t) => {
  const upstream = await startUpstream({ users: { 'support-out': 'right' } });
  const gw = await startTestGateway(alias('support', `type = "esmtp"\nport = ${upstream.port}\nuser = "support-out"\npassword = "right"`) + submissionToml());
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const id = await submit(gw.gateway.submission!.addresses[0]!.port, reply('support@example.com', 'customer@example.org'));
  const [got] = await upstream.waitFor(1);
  assert.equal(got!.user, 'support-out');
  assert.equal((await waitDelivered(gw.store, id)).delivery.status, 'delivered');
});

test('ESMTP authentication refused: "when_auth_fails" sends without authentication, "never" keeps it queued with the reason', async (t) => {
  const upstream = await startUpstream({ users: { 'support-out': 'right' } });
  const gw = await startTestGateway(
    alias('fallback', `type = "esmtp"\nuse_smtp = "when_auth_fails"\nport = ${upstream.port}\nuser = "support-out"\npassword = "wrong"`) +
      alias('strict', `type = "esmtp"\nuse_smtp = "never"\nport = ${upstream.port}\nuser = "support-out"\npassword = "wrong"`) +
      submissionToml(['*'], 'retry_intervals = [3600]'),
  );
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const port = gw.gateway.submission!.addresses[0]!.port;
  const fallbackId = await submit(port, reply('fallback@example.com', 'a@example.org'));
  const [got] = await upstream.waitFor(1);
  assert.equal(got!.mailFrom, 'fallback@example.com');
  assert.equal(got!.user, undefined, 'delivered without authentication');
  const fallback = await waitDelivered(gw.store, fallbackId);
  assert.match(fallback.delivery.recipients[0]!.route ?? '', /SMTP, after ESMTP authentication failed/);

  const strictId = await submit(port, reply('strict@example.com', 'b@example.org'));
  const entry = await waitQueue(gw.store, strictId, (e) => e.attempts >= 1);
  assert.equal(entry.recipients[0]!.status, 'pending');
  assert.match(entry.lastError?.message ?? '', /authentication failed at alias "strict".*535/);
  assert.equal(upstream.received.length, 1, 'the strict alias sent nothing');
  assert.ok(upstream.authAttempts.filter((a) => !a.ok).length >= 2, 'both aliases tried to authenticate');
});

test('automatic BCC gets a copy; send_mail_to replaces every recipient, BCC included', async (t) => {
  const upstream = await startUpstream();
  const gw = await startTestGateway(
    alias('bcc', `port = ${upstream.port}`, 'automatic_bcc = "review@example.com"') +
      alias('testing', `port = ${upstream.port}`, 'automatic_bcc = "review@example.com"\nsend_mail_to = "qa@example.com"') +
      submissionToml(),
  );
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const port = gw.gateway.submission!.addresses[0]!.port;
  const bccId = await submit(port, reply('bcc@example.com', ['one@example.org', 'two@example.org']));
  await waitDelivered(gw.store, bccId);
  const testId = await submit(port, reply('testing@example.com', ['customer@example.org']));
  await waitDelivered(gw.store, testId);
  const [bcc, testing] = await upstream.waitFor(2);
  assert.deepEqual(bcc!.rcptTo, ['one@example.org', 'two@example.org', 'review@example.com']);
  assert.doesNotMatch(bcc!.raw.toString(), /review@example\.com/, 'the BCC address is not in the header');
  assert.deepEqual(testing!.rcptTo, ['qa@example.com']);
  const entryView = (await gw.store.getMessage(testId))!.delivery!;
  assert.deepEqual(
    entryView.recipients.map((r) => r.address),
    ['qa@example.com'],
  );
});

test('a 4xx is retried and then delivered; a 5xx fails at once and a delivery status notification goes back to the sender', async (t) => {
  let refusals = 0;
  const upstream = await startUpstream({
    rcpt: (address) => {
      if (address === 'later@example.org' && refusals++ === 0) return [451, '4.3.0 Try again later'];
      if (address === 'nobody@example.org') return [550, '5.1.1 No such user here'];
      return undefined;
    },
  });
  const gw = await startTestGateway(alias('support', `port = ${upstream.port}`) + submissionToml());
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const port = gw.gateway.submission!.addresses[0]!.port;
  const laterId = await submit(port, reply('support@example.com', 'later@example.org'));
  const later = await waitDelivered(gw.store, laterId);
  assert.equal(later.delivery.status, 'delivered');
  assert.equal(later.delivery.attempts, 2);

  const badId = await submit(port, reply('support@example.com', 'nobody@example.org', 'Re: refund'));
  const bad = await waitDelivered(gw.store, badId);
  assert.equal(bad.delivery.status, 'failed');
  assert.equal(bad.delivery.attempts, 1, 'a permanent refusal is not retried');
  assert.equal(bad.delivery.recipients[0]!.last?.code, 550);
  assert.ok(bad.delivery.dsnId, 'a notification was queued');
  // The notification goes to the envelope sender (the alias), through the alias's server, from the null sender.
  const dsn = await waitDelivered(gw.store, bad.delivery.dsnId);
  assert.equal(dsn.delivery.status, 'delivered');
  const notice = upstream.received.find((m) => m.mailFrom === '' && m.rcptTo[0] === 'support@example.com');
  assert.ok(notice, 'the upstream got the notification');
  const text = notice.raw.toString();
  assert.match(text, /^Auto-Submitted: auto-replied/m);
  assert.match(text, /multipart\/report;[^]*report-type=delivery-status/);
  assert.match(text, /Final-Recipient: rfc822; ?nobody@example\.org/);
  assert.match(text, /Status: 5\.1\.1/);
  assert.match(text, /Subject: Re: refund/, 'the original header is attached');
});

test('an outbound message that cannot be parsed is refused (554), not wrapped and sent', async (t) => {
  const upstream = await startUpstream();
  const gw = await startTestGateway(alias('support', `port = ${upstream.port}`) + submissionToml());
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const raw = 'From: support@example.com\r\nTo: c@example.org\r\nSubject: broken\r\nContent-Type: multipart/mixed\r\n\r\nno boundary at all\r\n';
  await assert.rejects(
    submit(gw.gateway.submission!.addresses[0]!.port, { envelope: { from: 'support@example.com', to: ['c@example.org'] }, raw }),
    (err: { responseCode?: number; response?: string }) => {
      assert.equal(err.responseCode, 554);
      assert.match(err.response ?? '', /5\.6\.0 .*could not be processed/);
      return true;
    },
  );
  assert.equal((await gw.store.listMessages()).length, 0);
  assert.equal(upstream.received.length, 0);
});

test('submission: AUTH is required, and a user sends only as the aliases send_as lists, in MAIL FROM and the From header', async (t) => {
  const upstream = await startUpstream();
  const gw = await startTestGateway(alias('support', `port = ${upstream.port}`) + alias('billing', `port = ${upstream.port}`) + submissionToml(['support']));
  t.after(async () => {
    await gw.cleanup();
    await upstream.close();
  });
  const port = gw.gateway.submission!.addresses[0]!.port;
  const refused = async (mail: Parameters<typeof submit>[1], code: number, text: RegExp) =>
    assert.rejects(submit(port, mail), (err: { responseCode?: number; response?: string }) => {
      assert.equal(err.responseCode, code, err.response);
      assert.match(err.response ?? '', text);
      return true;
    });
  await refused(reply('billing@example.com', 'c@example.org'), 550, /5\.7\.1 .*may not send as <billing@example\.com>/);
  await refused(reply('stranger@example.net', 'c@example.org'), 550, /5\.7\.1/);
  await refused(
    { ...reply('billing@example.com', 'c@example.org'), envelope: { from: 'support@example.com', to: ['c@example.org'] } },
    550,
    /From header <billing@example\.com> is not an address of alias "support"/,
  );
  // Without AUTH.
  const anonymous = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  await assert.rejects(anonymous.sendMail(reply('support@example.com', 'c@example.org')), (err: { responseCode?: number }) => err.responseCode === 530);
  anonymous.close();
  assert.equal((await gw.store.listMessages()).length, 0, 'nothing refused was stored');
  assert.equal(upstream.received.length, 0);
});
