/**
 * Quarantine forwarding (PCEmail "Email Quarantine Settings"; issue 14): a bad inbound message
 * is stored as before and forwarded over SMTP to the quarantine mailbox (a real smtp-server
 * here), with the original attached byte for byte and the reason in the subject.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import nodemailer from 'nodemailer';
import { simpleParser, type ParsedMail } from 'mailparser';
import type { MessageMeta } from '../storage/records.js';
import type { Store } from '../storage/store.js';
import { runCli, startGatewayOn, startTestGateway, writeTestConfig, type TestGateway } from './helpers/gateway.js';
import { startUpstream, type Received, type Upstream, type UpstreamOptions } from './helpers/upstream.js';
import { waitDelivered, waitQueue } from './helpers/outbound.js';
import { ensureDovecot, startDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { fixture, tempDir } from './helpers/paths.js';
import { loadConfigFile } from '../gateway/config/load.js';
import { openTestStore } from './helpers/test-store.js';
import { ingestMessage } from '../ingest/ingest.js';
import { silentLogger } from '../lib/logger.js';
import { quarantineForwarding } from '../gateway/quarantine-forward/forwarding.js';
import { asReceivedOverSmtp, parseWrapped, storedMessage } from './helpers/wrapped.js';

const ALIASES = ['support', 'sales'].map((n) => `[[alias]]\nname = "${n}"\naddress = "${n}@example.com"\n`).join('\n');

function quarantineToml(upstream: { port: number }, extra = ''): string {
  return [
    '[quarantine]',
    'forward_to = "agents-quarantine@example.com"',
    'server = "127.0.0.1"',
    `port = ${upstream.port}`,
    'from = "mailgate-quarantine@example.com"',
    extra,
    '',
    '[queue]',
    'retry_intervals = [1]',
    'retry_jitter = 0.0',
    '',
  ].join('\n');
}

/** A gateway of the two aliases forwarding to a quarantine mailbox of its own (`extra`: more `[quarantine]` keys), both closed after the test. */
async function forwardingGateway(
  t: TestContext,
  opts: { aliases?: string; extra?: string; mailbox?: UpstreamOptions } = {},
): Promise<{ gw: TestGateway; mailbox: Upstream }> {
  const mailbox = await startUpstream(opts.mailbox);
  const gw = await startTestGateway((opts.aliases ?? ALIASES) + quarantineToml(mailbox, opts.extra));
  t.after(async () => {
    await gw.cleanup();
    await mailbox.close();
  });
  return { gw, mailbox };
}

async function send(gw: TestGateway, raw: Buffer, to = 'support@example.com'): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.port, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope: { from: 'customer@example.org', to: [to] }, raw });
  const queued = /queued as (\S+)/.exec(info.response);
  assert.ok(queued, info.response);
  return queued[1]!;
}

/** The forward as the quarantine mailbox's user reads it, and the attached bytes. */
async function forwardOf(got: Received): Promise<{ mail: ParsedMail; attached: Buffer; type: string }> {
  const mail = await simpleParser(got.raw, { skipTextToHtml: true });
  assert.equal(mail.attachments.length, 1, 'one attachment: the quarantined message');
  const a = mail.attachments[0]!;
  // The declared type, as written (a parser may guess message/rfc822 from the .eml name).
  const type = /\r\nContent-Type: (message\/rfc822|application\/octet-stream)/.exec(got.raw.toString('latin1'))?.[1] ?? 'none';
  return { mail, attached: a.content, type };
}

async function showJson(gw: { configFile: string }, id: string): Promise<MessageMeta> {
  const r = await runCli(['messages', 'show', id, '--json', '--config', gw.configFile]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.toString()) as MessageMeta;
}

async function stored(store: Store, id: string): Promise<MessageMeta> {
  return (await storedMessage(store, id)).meta;
}

test('an unparsable message over SMTP is stored wrapped and arrives at the quarantine mailbox with the original attached byte for byte', async (t) => {
  const { gw, mailbox } = await forwardingGateway(t);
  // A NUL in the header: bytes that cannot travel as message/rfc822, so they go as base64.
  const nul = readFileSync(fixture('unparsable', 'header-nul.eml'));
  const id = await send(gw, nul);
  const meta = await stored(gw.store, id);
  assert.ok(meta.tags.includes('wrapped'), 'kept in the store as a wrapping message');
  assert.equal(meta.quarantineForward?.to, 'agents-quarantine@example.com');

  const [got] = await mailbox.waitFor(1);
  assert.equal(got!.mailFrom, 'mailgate-quarantine@example.com');
  assert.deepEqual(got!.rcptTo, ['agents-quarantine@example.com']);
  const fwd = await forwardOf(got!);
  assert.equal(fwd.mail.subject, 'Quarantined: could not be processed (header_nul) — Unknown subject');
  assert.ok(fwd.attached.equals(asReceivedOverSmtp(nul)), 'the original as received, byte for byte');
  assert.equal(fwd.type, 'application/octet-stream');
  assert.match(fwd.mail.text ?? '', /header_nul: /);
  assert.match(fwd.mail.text ?? '', new RegExp(`mailgate messages show ${id}`));
  assert.equal(fwd.mail.headers.get('auto-submitted'), 'auto-generated');

  // The original records the forward: to whom, as which message, and when it left.
  const forwardId = meta.quarantineForward!.id;
  const forward = await waitDelivered(gw.store, forwardId);
  assert.equal(forward.source.kind, 'quarantine');
  assert.equal(forward.delivery.kind, 'quarantine');
  const shown = await showJson(gw, id);
  assert.deepEqual(
    { ...shown.quarantineForward, queuedAt: undefined },
    {
      to: 'agents-quarantine@example.com',
      id: forwardId,
      reason: 'could not be processed (header_nul)',
      queuedAt: undefined,
      status: 'delivered',
      leftAt: forward.delivery.finishedAt,
    },
  );
  const timeline = await runCli(['messages', 'show', id, '--timeline', '--config', gw.configFile]);
  assert.match(timeline.stdout.toString(), new RegExp(`forwarded to the quarantine mailbox agents-quarantine@example.com as message ${forwardId}`));
  assert.match(timeline.stdout.toString(), new RegExp(`forward ${forwardId} to agents-quarantine@example.com delivered`));

  // A message whose bytes can travel as an attached message goes as message/rfc822.
  const unterminated = readFileSync(fixture('unparsable', 'boundary-unterminated.eml'));
  const id2 = await send(gw, unterminated);
  assert.ok((await stored(gw.store, id2)).tags.includes('wrapped'));
  const [, got2] = await mailbox.waitFor(2);
  const fwd2 = await forwardOf(got2!);
  assert.equal(fwd2.type, 'message/rfc822');
  assert.ok(fwd2.attached.equals(asReceivedOverSmtp(unterminated)), 'the original as received, byte for byte');
  assert.match(fwd2.mail.subject ?? '', /^Quarantined: could not be processed \(\w+\) — /);
});

test('the [pcemail quarantine test message] subject marker goes to the quarantine mailbox', async (t) => {
  const { gw, mailbox } = await forwardingGateway(t);
  const sent = readFileSync(fixture('unparsable', 'pcemail-quarantine-test.eml'));
  const id = await send(gw, sent);
  const meta = await stored(gw.store, id);
  assert.match(meta._WrappingMessageReason ?? '', /^quarantine_test:/);
  const [got] = await mailbox.waitFor(1);
  const fwd = await forwardOf(got!);
  assert.equal(fwd.mail.subject, `Quarantined: quarantine test message — ${meta.subject}`);
  assert.match(meta.subject ?? '', /\[pcemail quarantine test message\]/i);
  assert.ok(fwd.attached.equals(asReceivedOverSmtp(sent)));
});

test('auto-responses stay in the store by default; with auto_responses = true they are forwarded too', async (t) => {
  const { gw, mailbox } = await forwardingGateway(t, {
    aliases: ALIASES.replace('address = "sales@example.com"\n', 'address = "sales@example.com"\n[alias.quarantine]\nauto_responses = true\n'),
  });
  const auto = readFileSync(fixture('delivery-exceptions', 'auto-reply.eml'));
  const kept = await stored(gw.store, await send(gw, auto, 'support@example.com'));
  assert.ok(kept.tags.includes('exception-queue'), 'recognised as an auto-reply');
  assert.equal(kept.quarantineForward, undefined, 'not forwarded: auto_responses is off for support');
  assert.deepEqual(await gw.store.listQueue(), [], 'nothing queued');

  const id = await send(gw, auto, 'sales@example.com');
  const meta = await stored(gw.store, id);
  assert.equal(meta.quarantineForward?.reason, 'auto-response');
  const [got] = await mailbox.waitFor(1);
  const fwd = await forwardOf(got!);
  assert.equal(fwd.mail.subject, 'Quarantined: auto-response — Re: Your ticket 4473');
  assert.equal(fwd.type, 'message/rfc822');
  const { raw } = await storedMessage(gw.store, id);
  assert.ok(fwd.attached.equals(raw), 'the stored message, byte for byte');
  assert.match(fwd.mail.text ?? '', /Auto-Submitted: auto-replied/);
  assert.equal(mailbox.received.length, 1, 'only the one for sales');
});

test('blocked_attachments forwards the message whose attachment was blocked, without the attachment', async (t) => {
  const mailbox = await startUpstream();
  const { dir, cleanup } = await tempDir();
  await writeFile(path.join(dir, 'policy.toml'), '[attachments]\nblocked_extensions = [".exe"]\n');
  const configFile = await writeTestConfig(dir, `[partition]\npolicy = "policy.toml"\n\n${ALIASES}\n${quarantineToml(mailbox, 'blocked_attachments = true')}`);
  const gw = await startGatewayOn(configFile, { retriever: false });
  t.after(async () => {
    await gw.stop();
    await cleanup();
    await mailbox.close();
  });
  const port = gw.gateway.smtp.addresses[0]!.port;
  const id = await send({ port } as TestGateway, readFileSync(fixture('attachments', 'case.eml')));
  const meta = await stored(gw.store, id);
  assert.equal(meta.quarantineForward?.reason, 'blocked attachment (REPORT.ExE)');
  const [got] = await mailbox.waitFor(1);
  const fwd = await forwardOf(got!);
  assert.equal(fwd.mail.subject, 'Quarantined: blocked attachment (REPORT.ExE) — case');
  assert.ok(fwd.attached.equals((await storedMessage(gw.store, id)).raw), 'the message as stored, byte for byte');
  const attached = await simpleParser(fwd.attached);
  assert.ok(!attached.attachments.some((a) => a.content.subarray(0, 2).toString('latin1') === 'MZ'), 'the blocked program is not sent on');
  assert.equal((await gw.store.listQuarantine({ messageId: id })).length, 1, 'it stays in mailgate’s quarantine');
});

test('[alias.quarantine] overrides the server and mailbox for mail fetched for that alias from Dovecot', async (t) => {
  await ensureDovecot();
  const dovecot = await startDovecot({ users: [{ name: 'sales', password: 'pw' }] });
  const partitionBox = await startUpstream();
  const salesBox = await startUpstream({ users: { 'sales-q': 'secret' } });
  const { dir, cleanup } = await tempDir();
  t.after(async () => {
    await dovecot.stop();
    await partitionBox.close();
    await salesBox.close();
  });
  const sent = readFileSync(fixture('unparsable', 'quarantine-test.eml'));
  await dovecot.deliver('sales', sent);
  const configFile = await writeTestConfig(
    dir,
    [
      '[[alias]]',
      'name = "sales"',
      'address = "sales@example.com"',
      ...dovecotIncoming(dovecot, 'sales'),
      'poll_interval = 1',
      '[alias.quarantine]',
      'forward_to = "sales-quarantine@example.com"',
      'server = "127.0.0.1"',
      `port = ${salesBox.port}`,
      'user = "sales-q"',
      'password = "secret"',
      quarantineToml(partitionBox),
    ].join('\n'),
  );
  const gw = await startGatewayOn(configFile);
  t.after(async () => {
    await gw.stop();
    await cleanup();
  });
  const [got] = await salesBox.waitFor(1);
  assert.deepEqual(got!.rcptTo, ['sales-quarantine@example.com']);
  assert.equal(got!.mailFrom, 'mailgate-quarantine@example.com', 'from is inherited from [quarantine]');
  assert.equal(got!.user, 'sales-q', 'logged in with the alias’s own credentials');
  const fwd = await forwardOf(got!);
  assert.match(fwd.mail.subject ?? '', /^Quarantined: quarantine test message — /);
  const meta = (await gw.store.listMessages({ alias: 'sales' })).find((m) => m.source.kind === 'imap');
  const wrapped = await storedMessage(gw.store, meta!.id);
  assert.ok(fwd.attached.equals((await parseWrapped(wrapped.raw, wrapped.meta)).original), 'the original as fetched, byte for byte');
  assert.match(fwd.attached.toString('latin1'), /\[mailgate quarantine test message\]/i);
  assert.equal(meta!.quarantineForward?.to, 'sales-quarantine@example.com');
  assert.equal(partitionBox.received.length, 0, 'nothing went to the partition’s quarantine server');
});

test('a quarantine server that is down: the forward stays queued with the error and is retried, then delivered', async (t) => {
  // Take a port, then stop the server: nothing listens there until the mailbox starts again on it.
  const first = await startUpstream();
  const port = first.port;
  await first.close();
  const gw = await startTestGateway(ALIASES + quarantineToml({ port }));
  let mailbox: Upstream | undefined;
  t.after(async () => {
    await gw.cleanup();
    await mailbox?.close();
  });
  const id = await send(gw, readFileSync(fixture('unparsable', 'quarantine-test.eml')));
  const forwardId = (await stored(gw.store, id)).quarantineForward!.id;
  const entry = await waitQueue(gw.store, forwardId, (e) => e.attempts >= 1);
  assert.equal(entry.kind, 'quarantine');
  assert.equal(entry.recipients[0]!.status, 'pending');
  assert.match(entry.lastError?.message ?? entry.recipients[0]!.last?.message ?? '', /ECONNREFUSED|connect/i);
  const shown = await showJson(gw, id);
  assert.equal(shown.quarantineForward?.status, 'queued');
  assert.match(shown.quarantineForward?.lastError ?? '', /ECONNREFUSED|connect/i);
  const list = await runCli(['queue', 'list', '--config', gw.configFile]);
  assert.match(list.stdout.toString(), new RegExp(forwardId));

  mailbox = await startUpstream({ port });
  const [got] = await mailbox.waitFor(1, 20_000);
  assert.match((await forwardOf(got!)).mail.subject ?? '', /^Quarantined: quarantine test message/);
  assert.equal((await waitDelivered(gw.store, forwardId)).delivery.status, 'delivered');
});

test('without forward_to nothing is forwarded', async (t) => {
  const gw = await startTestGateway(ALIASES);
  t.after(() => gw.cleanup());
  const id = await send(gw, readFileSync(fixture('unparsable', 'pcemail-quarantine-test.eml')));
  const meta = await stored(gw.store, id);
  assert.ok(meta.tags.includes('wrapped'));
  assert.equal(meta.quarantineForward, undefined);
  assert.deepEqual(await gw.store.listQueue(), []);
});

test('the forward is committed with the message: after a crash before the forwarding message was made, the next start sends it (unknown recipient)', async (t) => {
  const mailbox = await startUpstream();
  const { dir, cleanup } = await tempDir();
  const configFile = await writeTestConfig(dir, `[partition]\nunknown_recipient = "quarantine"\n\n${ALIASES}\n${quarantineToml(mailbox)}`);
  const config = loadConfigFile(configFile);
  const store = await openTestStore(config.data_dir);
  const raw = Buffer.from('From: customer@example.org\r\nTo: nobody@example.com\r\nSubject: Where does this go?\r\n\r\nHello.\r\n');
  // As the retriever stores a message for no alias of its mailbox; the process dies before the dispatcher hears of it.
  const hook = quarantineForwarding(config, silentLogger(), () => {});
  const meta = await ingestMessage({ store, logger: silentLogger(), stages: () => [], commitHook: hook }, Readable.from([raw]), {
    envelope: { mailFrom: 'customer@example.org', rcptTo: ['support@example.com'] },
    source: { kind: 'imap', alias: 'support' },
    tags: ['unknown-recipient'],
  });
  const forwardId = meta.quarantineForward!.id;
  assert.equal(meta.quarantineForward!.reason, 'unknown recipient');
  assert.deepEqual(
    (await store.listQueue()).map((e) => [e.id, e.kind, e.quarantine?.original]),
    [[forwardId, 'quarantine', meta.id]],
  );
  assert.equal(await store.getMessage(forwardId), undefined, 'the forwarding message itself is not made yet');
  await store.close();

  const gw = await startGatewayOn(configFile, { retriever: false });
  t.after(async () => {
    await gw.stop();
    await cleanup();
    await mailbox.close();
  });
  const [got] = await mailbox.waitFor(1);
  const fwd = await forwardOf(got!);
  assert.equal(fwd.mail.subject, 'Quarantined: unknown recipient — Where does this go?');
  assert.ok(fwd.attached.equals((await storedMessage(gw.store, meta.id)).raw));
  assert.match(fwd.mail.text ?? '', /nobody@example\.com/);
  assert.equal((await waitDelivered(gw.store, forwardId)).delivery.status, 'delivered');
});

test('a [quarantine] user without its password is a configuration error naming the key', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const configFile = await writeTestConfig(dir, '[quarantine]\nforward_to = "q@example.com"\nuser = "alone"\n');
    const r = await runCli(['config', 'check', configFile]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /mailgate\.toml:\d+: quarantine\.password: missing \(expected user and password together, or neither\)/);
  } finally {
    await cleanup();
  }
});

test('ssl = true forwards over verified STARTTLS with the login, trusting ca_file', async (t) => {
  const { gw, mailbox } = await forwardingGateway(t, {
    mailbox: { tls: true, users: { quarantine: 'q-secret' }, authOnlyOverTls: true },
    extra: ['ssl = true', 'user = "quarantine"', 'password = "q-secret"', `ca_file = ${JSON.stringify(fixture('tls', 'cert.pem'))}`].join('\n'),
  });
  const id = await send(gw, readFileSync(fixture('unparsable', 'quarantine-test.eml')));
  const [got] = await mailbox.waitFor(1);
  assert.equal(got!.secure, true, 'over TLS');
  assert.equal(got!.user, 'quarantine');
  const forward = await waitDelivered(gw.store, (await stored(gw.store, id)).quarantineForward!.id);
  assert.match(forward.delivery.recipients[0]!.route ?? '', /^quarantine of alias "support" via 127\.0\.0\.1:\d+ \(ESMTP as quarantine, STARTTLS\)/);
});
