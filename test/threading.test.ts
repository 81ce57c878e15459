/**
 * Reply threading and auto-replies against real servers: mail fetched from Dovecot by a running
 * gateway, auto-replies arriving at a real SMTP server standing in for the alias's outgoing
 * server (Enate "Inbound Email"; Cisco workflows' auto-responses; RFC 3834).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { loadConfigFile, loadConfigText } from '../gateway/config/load.js';
import { startGateway } from '../gateway/gateway.js';
import type { PollResult } from '../gateway/fetch/retriever.js';
import { openTestStore } from './helpers/test-store.js';
import type { MessageMeta } from '../storage/records.js';
import { silentLogger } from '../lib/logger.js';
import { ConfigError } from '../lib/config-file/toml.js';
import { startDovecot, dovecotIncoming, type TestDovecot } from './helpers/dovecot.js';
import { startUpstream, type Upstream } from './helpers/upstream.js';
import { runCli, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';

let dovecot: TestDovecot;
// startDovecot installs Dovecot first when it is missing (ensureDovecot).
before(async () => {
  dovecot = await startDovecot({
    users: [
      { name: 'desk', password: 'pw' },
      { name: 'shared', password: 'pw' },
    ],
  });
});
after(() => dovecot?.stop());

const aliasToml = (name: string, address: string, user: string, upstream: Upstream, extra: string[] = []) =>
  [
    '[[alias]]',
    `name = "${name}"`,
    `address = "${address}"`,
    ...dovecotIncoming(dovecot, user),
    'poll_interval = 1',
    'idle = false',
    '[alias.outgoing]',
    'host = "127.0.0.1"',
    `port = ${upstream.port}`,
    ...extra,
  ].join('\n');

/**
 * A gateway on the TOML `toml` gives for a fresh upstream (the aliases' outgoing server), whose
 * polls can be awaited: `polled(n)` resolves once n messages were stored by polls in all.
 */
async function gatewayWith(t: { after(fn: () => Promise<void>): void }, toml: (upstream: Upstream) => string) {
  const upstream = await startUpstream();
  t.after(() => upstream.close());
  const { dir, cleanup } = await tempDir();
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, testConfigText(dir, toml(upstream)));
  const config = loadConfigFile(configFile);
  const store = await openTestStore(config.data_dir);
  let stored = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  const gateway = await startGateway({
    config,
    store,
    logger: silentLogger(),
    retrieverHooks: {
      afterPoll: (_alias: string, r: PollResult) => {
        stored += r.stored;
        for (const w of waiters.filter((w) => stored >= w.n)) w.resolve();
      },
    },
  });
  t.after(async () => {
    await gateway.stop();
    await store.close();
    await cleanup();
  });
  // A poll that stored the n-th message has also decided its auto-reply (the retriever awaits it).
  const polled = (n: number) => new Promise<void>((resolve) => (stored >= n ? resolve() : waiters.push({ n, resolve })));
  const inbound = async () => (await store.listMessages()).filter((m) => m.direction !== 'outbound');
  const autoReplies = async () => (await store.listMessages()).filter((m) => m.source.kind === 'auto-reply');
  return { upstream, store, gateway, configFile, polled, inbound, autoReplies };
}

const mail = (lines: string[], body = 'Hello.') => Buffer.from([...lines, '', body, ''].join('\r\n'));
const bySubject = (list: MessageMeta[], subject: string) => list.find((m) => m.subject?.startsWith(subject));

test('one auto-reply per sender (RFC 3834), none to a bounce or a list; replies join their conversation by In-Reply-To or by the reference in the body', async (t) => {
  const gw = await gatewayWith(t, (upstream) =>
    aliasToml('desk', 'desk@example.com', 'desk', upstream, [
      '[alias.auto_reply]',
      'subject = "We have your message: {subject}"',
      'text = "Hello {from},\\nwe will answer soon. Please keep {reference} in the subject."',
    ]),
  );

  await dovecot.deliver('desk', mail(['From: Ann <ann@example.org>', 'To: desk@example.com', 'Subject: Broken printer', 'Message-ID: <a1@example.org>']));
  await gw.polled(1);
  const [first] = await gw.upstream.waitFor(1);
  const question = (await gw.inbound())[0]!;
  assert.match(question.conversation ?? '', /^[2-9A-Z]{6}$/, 'the first message starts a conversation');
  const ref = `[ref:${question.conversation}]`;
  const reply = await simpleParser(first!.raw);
  assert.deepEqual(first!.rcptTo, ['ann@example.org']);
  assert.equal(reply.from?.value[0]?.address, 'desk@example.com');
  assert.equal(reply.headers.get('auto-submitted'), 'auto-replied');
  assert.equal(reply.inReplyTo, '<a1@example.org>');
  assert.equal(reply.references, '<a1@example.org>');
  assert.equal(reply.subject, `We have your message: Broken printer ${ref}`, 'the reference added to the subject of mail going out');
  assert.equal(reply.text?.trim(), `Hello Ann <ann@example.org>,\nwe will answer soon. Please keep ${ref} in the subject.`);
  const [sent] = await gw.autoReplies();
  assert.equal(sent?.conversation, question.conversation, 'the auto-reply is in the conversation');
  assert.equal(sent?.inReplyTo, question.id);
  assert.equal(`<${sent?.messageId}>`, reply.messageId, 'the Message-ID we keep is the one sent');

  // Ann writes again, answering our reply (no reference in the subject); Bob answers with the reference only in his text.
  await dovecot.deliver('desk', mail(['From: ann@example.org', 'To: desk@example.com', 'Subject: Re: still broken', `In-Reply-To: ${reply.messageId}`]));
  await dovecot.deliver(
    'desk',
    mail(
      [
        'From: bob@example.org',
        'To: desk@example.com',
        'Subject: about the printer',
        'MIME-Version: 1.0',
        'Content-Type: text/plain; charset=utf-8',
        'Content-Transfer-Encoding: base64',
      ],
      Buffer.from(`Ann's colleague here. ${'Some words. '.repeat(300)}\nYour reference: ${ref.toLowerCase()}\n`)
        .toString('base64')
        .replace(/.{76}/g, '$&\r\n'),
    ),
  );
  await dovecot.deliver(
    'desk',
    mail(
      ['From: carl@example.org', 'To: desk@example.com', 'Subject: Toner order', `X-Note: none`],
      `Ticket [ref:ZZZZZZ] of another desk. ${ref.padStart(5100, '.')}`,
    ),
  );
  // A bounce (null Return-Path, a delivery report) and a mailing-list post are never answered.
  await dovecot.deliver(
    'desk',
    mail(
      [
        'Return-Path: <>',
        'From: MAILER-DAEMON@mx.example.net',
        'To: desk@example.com',
        'Subject: Undelivered Mail Returned to Sender',
        'MIME-Version: 1.0',
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"',
      ],
      [
        '--b1',
        'Content-Type: text/plain',
        '',
        'This is a permanent error; I have given up.',
        '--b1',
        'Content-Type: message/delivery-status',
        '',
        'Reporting-MTA: dns; mx.example.net',
        '',
        'Final-Recipient: rfc822; gone@example.org',
        'Action: failed',
        'Status: 5.1.1',
        '--b1--',
      ].join('\r\n'),
    ),
  );
  await dovecot.deliver(
    'desk',
    mail(['From: news@lists.example.org', 'To: desk@example.com', 'Subject: Weekly digest', 'List-Id: <digest.lists.example.org>']),
  );
  await gw.polled(6);

  const inbound = await gw.inbound();
  const again = bySubject(inbound, 'Re: still broken')!;
  assert.equal(again.conversation, question.conversation, 'joined by In-Reply-To naming the auto-reply we sent');
  assert.equal(again.inReplyTo, sent!.id);
  const bob = bySubject(inbound, 'about the printer')!;
  assert.equal(bob.conversation, question.conversation, 'joined by the reference in the decoded text, without In-Reply-To or References');
  assert.equal(bob.inReplyTo, undefined);
  const carl = bySubject(inbound, 'Toner order')!;
  assert.notEqual(carl.conversation, question.conversation, 'a reference past the first 5000 characters, or to no known conversation, is not followed');
  const thread = await gw.store.listMessages({ thread: question.conversation! });
  assert.deepEqual(
    thread.filter((m) => m.direction !== 'outbound').map((m) => m.id),
    [bob.id, again.id, question.id],
    'messages list --thread: newest first',
  );
  assert.deepEqual(
    thread.filter((m) => m.direction === 'outbound').map((m) => m.envelope.rcptTo.join()),
    ['bob@example.org', 'ann@example.org'],
    'and our answers to Ann and to Bob',
  );

  // Answers: Ann once (her second message is within the interval), Bob and Carl once each; the bounce and the list none.
  const answers = await gw.autoReplies();
  const received = await gw.upstream.waitFor(answers.length);
  assert.deepEqual(received.map((r) => r.rcptTo.join()).sort(), ['ann@example.org', 'bob@example.org', 'carl@example.org']);
  assert.ok(bySubject(inbound, 'Undelivered Mail')!.tags.includes('exception-queue'));
  assert.match(String(bySubject(inbound, 'Weekly digest')!.findings.threading?.noAutoReply), /mailing list/);

  // What the admin sees: the conversation through the admin API (REST and console use it), and the CLI.
  const page = await gw.gateway.admin.listMessages({ thread: question.conversation! });
  assert.deepEqual(
    page.messages.map((m) => m.id),
    thread.map((m) => m.id),
  );
  const shown = await gw.gateway.admin.showMessage(again.id);
  assert.deepEqual(
    shown.conversation.map((c) => c.id).sort(),
    thread
      .map((m) => m.id)
      .filter((id) => id !== again.id)
      .sort(),
  );
  const listed = await runCli(['messages', 'list', '--thread', ref, '--config', gw.configFile]);
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual(
    listed.stdout
      .toString()
      .split('\n')
      .slice(1)
      .filter(Boolean)
      .map((l) => l.split(' ')[0]),
    thread.map((m) => m.id),
  );
  const show = (await runCli(['messages', 'show', again.id, '--config', gw.configFile])).stdout.toString();
  assert.match(show, new RegExp(`^conversation: +${question.conversation}, answering ${sent!.id}$`, 'm'));
  assert.match(show, new RegExp(`${question.id} .* in +Ann <ann@example.org> +Broken printer$`, 'm'));
});

test('mail for an address no alias has: tagged unknown-recipient and answered with the addresses that work, once', async (t) => {
  const gw = await gatewayWith(t, (upstream) =>
    [
      '[partition]',
      'unknown_recipient = "auto_reply"',
      aliasToml('sales', 'sales@example.com', 'shared', upstream),
      aliasToml('billing', 'billing@example.com', 'shared', upstream),
    ].join('\n'),
  );
  await dovecot.deliver('shared', mail(['From: dan@example.org', 'To: Info <info@example.com>', 'Subject: Opening hours?']));
  await dovecot.deliver('shared', mail(['From: dan@example.org', 'To: billing@example.com', 'Subject: An invoice']));
  await gw.polled(2);
  const [answer] = await gw.upstream.waitFor(1);
  const parsed = await simpleParser(answer!.raw);
  assert.deepEqual(answer!.rcptTo, ['dan@example.org']);
  assert.equal(parsed.from?.value[0]?.address, 'sales@example.com', 'sent from the alias it was filed under');
  assert.match(parsed.subject ?? '', /^Undeliverable address: Opening hours\? \[ref:[2-9A-Z]{6}\]$/);
  assert.match(parsed.text ?? '', /You wrote to info@example\.com, an address that does not receive mail here/);
  assert.match(parsed.text ?? '', /sales@example\.com\nbilling@example\.com/);
  const inbound = await gw.inbound();
  assert.deepEqual(bySubject(inbound, 'Opening hours')!.tags, ['unknown-recipient', 'resolved']);
  assert.deepEqual(bySubject(inbound, 'An invoice')!.tags, [], 'mail for an alias is not tagged');
  assert.equal((await gw.autoReplies()).length, 1, 'an alias without [alias.auto_reply] does not answer its own mail');
});

test('mail for the alias over SMTP is acknowledged too, once per sender', async (t) => {
  const gw = await gatewayWith(t, (upstream) =>
    [
      '[[alias]]',
      'name = "desk"',
      'address = "desk@example.com"',
      '[alias.outgoing]',
      'host = "127.0.0.1"',
      `port = ${upstream.port}`,
      '[alias.auto_reply]',
      'subject = "Thanks: {subject}"',
      'text = "Noted."',
    ].join('\n'),
  );
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.gateway.smtp.addresses[0]!.port, secure: false, ignoreTLS: true });
  t.after(() => transport.close());
  for (const [from, subject] of [
    ['eve@example.org', 'First'],
    ['eve@example.org', 'Second'],
    ['fay@example.org', 'Third'],
  ]) {
    await transport.sendMail({ from, to: 'desk@example.com', subject, text: 'Hi.' });
  }
  const received = await gw.upstream.waitFor(2);
  assert.deepEqual(received.map((r) => r.rcptTo.join()).sort(), ['eve@example.org', 'fay@example.org']);
  // The listener answers after the 250 without awaiting it, so a second answer to Eve could reach
  // the upstream after these two: what the gateway queued is counted as well.
  assert.deepEqual((await gw.autoReplies()).map((m) => m.envelope.rcptTo.join()).sort(), ['eve@example.org', 'fay@example.org']);
  const subjects = await Promise.all(received.map(async (r) => (await simpleParser(r.raw)).subject));
  assert.ok(
    subjects.some((s) => /^Thanks: First \[ref:[2-9A-Z]{6}\]$/.test(s ?? '')),
    subjects.join(' | '),
  );
});

test('config: reference_format needs {ref} once, templates only known placeholders, auto_reply_interval an age', () => {
  const load = (toml: string) => loadConfigText(toml, '/etc/mailgate/mailgate.toml', {});
  const config = load('[partition]\nauto_reply_interval = "12h"\n');
  assert.equal(config.partition.reference_format, '[ref:{ref}]');
  assert.equal(config.partition.unknown_recipient, 'file');
  assert.equal(config.partition.auto_reply_interval, 12 * 3600_000);
  assert.equal(load('').partition.auto_reply_interval, 24 * 3600_000, 'default one day');
  const problem = (toml: string) => {
    try {
      load(toml);
    } catch (err) {
      assert.ok(err instanceof ConfigError);
      return err.message;
    }
    assert.fail('the config loaded');
  };
  assert.match(problem('[partition]\nreference_format = "[ref]"\n'), /mailgate\.toml:2: partition\.reference_format: expected a text with \{ref\} in it once/);
  assert.match(problem('[partition]\nauto_reply_interval = "1 day"\n'), /mailgate\.toml:2: partition\.auto_reply_interval: expected an age such as "30m"/);
  // An age past any valid date would make every sender "not answered yet": refused.
  assert.match(
    problem('[partition]\nauto_reply_interval = "8700000000000s"\n'),
    /mailgate\.toml:2: partition\.auto_reply_interval: expected an age such as "30m"/,
  );
  assert.match(
    problem('[[alias]]\nname = "a"\naddress = "a@example.com"\n[alias.auto_reply]\nsubject = "Re: {subjcet}"\ntext = "ok"\n'),
    /mailgate\.toml:5: alias\[0\]\.auto_reply\.subject: expected a text whose placeholders are among \{subject\}, \{from\}, \{reference\}/,
  );
});
