/**
 * The README's deployment, end to end with a real Postfix (issue 11): a local Postfix whose
 * `relayhost` is mailgate, mailgate on the loopback default (`[smtp] accept_all` unset, so
 * true) with Postfix's address in `trusted_networks`. Mail for an outside domain used to be
 * answered 250, stored and never queued; it must reach the partition's default SMTP.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { runCli, startTestGateway } from './helpers/gateway.js';
import { startPostfix } from './helpers/postfix.js';
import { startUpstream } from './helpers/upstream.js';
import { waitDelivered } from './helpers/outbound.js';
import type { MessageMeta } from '../storage/records.js';

/** The application's HELO to Postfix, which Postfix's Received line names. */
const CLIENT_HELO = 'app.example.net';

function rawMessage(to: string, subject: string, messageId: string): string {
  return [
    'From: Helpdesk App <app@example.com>',
    `To: ${to}`,
    `Subject: ${subject}`,
    `Message-ID: <${messageId}>`,
    'Date: Mon, 07 Dec 2026 09:00:00 +0000',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    'Hello,',
    '',
    '. a line that starts with a dot, stuffed and unstuffed at every hop',
    'Grüße aus der Zentrale: the 8-bit text goes through unchanged.',
    '',
  ].join('\r\n');
}

/** Sends `raw` to Postfix's smtpd as an application on this machine would. */
async function sendThroughPostfix(port: number, to: string, raw: string): Promise<void> {
  const client = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true, name: CLIENT_HELO });
  try {
    const info = await client.sendMail({ envelope: { from: 'app@example.com', to: [to] }, raw });
    assert.match(info.response, /^250 /, `Postfix took it: ${info.response}`);
  } finally {
    client.close();
  }
}

/** The id mailgate gave the message whose Message-ID is `messageId`, once it is stored. */
async function storedId(
  store: Awaited<ReturnType<typeof startTestGateway>>['store'],
  messageId: string,
  postfixLog: () => Promise<string>,
  timeoutMs = 15_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = (await store.listMessages()).find((m) => m.messageId === messageId);
    if (found) return found.id;
    if (Date.now() > deadline) assert.fail(`mailgate did not store ${messageId} within ${timeoutMs} ms; Postfix's log:\n${await postfixLog()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test('through a local Postfix whose relayhost is mailgate (loopback default): mail for an outside domain reaches the default SMTP, mail for an alias is stored', async (t) => {
  const sink = await startUpstream();
  let gw: Awaited<ReturnType<typeof startTestGateway>> | undefined;
  let postfix: Awaited<ReturnType<typeof startPostfix>> | undefined;
  t.after(async () => {
    await postfix?.stop();
    await gw?.cleanup();
    await sink.close();
  });
  gw = await startTestGateway(`
[smtp]
trusted_networks = ["127.0.0.0/8"]

[partition.default_smtp]
server = "127.0.0.1"
port = ${sink.port}

[[alias]]
name = "support"
address = "support@example.com"
`);
  postfix = await startPostfix({ relayPort: gw.port });
  assert.equal(gw.config.smtp.accept_all, true, 'the loopback default: accept_all is on');

  // To an outside domain: Postfix relays it to mailgate, which must send it on.
  const outside = rawMessage('x@outside.example', 'Order 4711 shipped', 'order-4711@example.com');
  await sendThroughPostfix(postfix.port, 'x@outside.example', outside);
  const id = await storedId(gw.store, 'order-4711@example.com', () => postfix.logTail());
  const [got] = await sink
    .waitFor(1)
    .catch(async (err: Error) => assert.fail(`${err.message}; mailgate's queue: ${JSON.stringify(await gw.store.getQueueEntry(id))}`));
  assert.deepEqual(got!.rcptTo, ['x@outside.example']);
  assert.equal(got!.mailFrom, 'app@example.com');

  const text = got!.raw.toString('utf8');
  // The findings are for a [[relay]] downstream of ours; x@outside.example is somebody else.
  assert.doesNotMatch(text, /^X-Mailgate-/im, 'no X-Mailgate-* header goes to an outside domain');
  // Two hops, newest on top (RFC 5321 section 4.4): ours, then Postfix's, then the message as the application wrote it.
  const ours = new RegExp(
    `^Received: from ${esc(postfix.hostname)} \\((?:\\S+ )?\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby ${esc(gw.config.smtp.hostname)} \\(mailgate\\) with ESMTP id ${id}\\r\\n\\tfor <x@outside\\.example>;\\r\\n\\t[^\\r\\n]+\\r\\n`,
  );
  const theirs = new RegExp(
    `^Received: from ${esc(CLIENT_HELO)} \\((?:\\S+ )?\\[127\\.0\\.0\\.1\\]\\)\\r\\n\\tby ${esc(postfix.hostname)} \\(Postfix\\) with ESMTP id \\w+\\r\\n\\tfor <x@outside\\.example>; [^\\r\\n]+\\r\\n`,
  );
  const first = ours.exec(text);
  assert.ok(first, `our Received line is on top:\n${text.slice(0, 600)}`);
  const rest = text.slice(first[0].length);
  const second = theirs.exec(rest);
  assert.ok(second, `Postfix's Received line comes right after ours:\n${text.slice(0, 600)}`);
  assert.equal(rest.slice(second[0].length), outside, 'the message itself arrives as the application sent it');

  // The sink answered 250 a moment before mailgate recorded it: wait for the record, then read it as an admin would.
  await waitDelivered(gw.store, id);
  const show = await runCli(['messages', 'show', id, '--config', gw.configFile]);
  assert.equal(show.code, 0, show.stderr);
  const shown = show.stdout.toString();
  assert.match(shown, /^delivery: +delivered /m, shown);
  assert.match(shown, new RegExp(`^  x@outside\\.example:? +delivered via partition default SMTP via 127\\.0\\.0\\.1:${sink.port}\\b`, 'm'), shown);

  // To an alias: ours, so it is stored for the alias and not queued, so it is sent nowhere.
  await sendThroughPostfix(postfix.port, 'support@example.com', rawMessage('support@example.com', 'Where is my parcel?', 'parcel-1@example.org'));
  const aliasId = await storedId(gw.store, 'parcel-1@example.org', () => postfix.logTail());
  const meta = (await gw.store.getMessage(aliasId)) as MessageMeta;
  assert.equal(meta.source.alias, 'support');
  assert.deepEqual(meta.envelope.rcptTo, ['support@example.com']);
  assert.equal(await gw.store.getQueueEntry(aliasId), undefined, 'nothing queued for the alias');
  assert.equal(meta.delivery, undefined);
});

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
