import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { startTestGateway } from './helpers/gateway.js';
import { closedPort, startUpstream } from './helpers/upstream.js';
import { rawSmtp } from './helpers/smtp-client.js';
import { fixture, projectRoot } from './helpers/paths.js';
import { waitDelivered, waitQueue } from './helpers/outbound.js';

test('inbound relay: the downstream gets the processed message (attachment blocked, card masked, tags as headers) after an outage, and nothing that only the store keeps', async (t) => {
  const port = await closedPort();
  const partitionPolicy = path.join(projectRoot, 'policy', 'examples', 'partition.toml');
  const gw = await startTestGateway(`
[partition]
policy = ${JSON.stringify(partitionPolicy)}

[[relay]]
name = "internal"
domains = ["example.com"]
to = "smtp://127.0.0.1:${port}"

[queue]
retry_intervals = [1]
retry_jitter = 0.0
`);
  let downstream: Awaited<ReturnType<typeof startUpstream>> | undefined;
  t.after(async () => {
    await gw.cleanup();
    await downstream?.close();
  });

  // A bounce (null sender) for our domain and for an address we only store.
  const smtp = await rawSmtp(gw.port);
  assert.match(await smtp.command('EHLO mx.example.net'), /^250/);
  assert.match(await smtp.command('MAIL FROM:<>'), /^250/);
  assert.match(await smtp.command('RCPT TO:<support@example.com>'), /^250/);
  assert.match(await smtp.command('RCPT TO:<archive@store-only.example>'), /^250/);
  assert.match(await smtp.command('DATA'), /^354/);
  const eml = (await readFile(fixture('policy', 'bounce-with-exe.eml'), 'utf8')).replace(/\r?\n/g, '\r\n');
  const accepted = await smtp.write(eml + '.\r\n');
  smtp.close();
  const id = /queued as (\S+)/.exec(accepted)?.[1];
  assert.ok(id, accepted);

  // The downstream is down: the message waits in the queue, its reason shown.
  const waiting = await waitQueue(gw.store, id, (e) => e.attempts >= 2);
  assert.deepEqual(
    waiting.recipients.map((r) => [r.address, r.relay, r.status]),
    [['support@example.com', 'internal', 'pending']],
  );
  assert.match(waiting.lastError?.message ?? '', /ECONNREFUSED/);

  downstream = await startUpstream({ port });
  const meta = await waitDelivered(gw.store, id);
  assert.equal(meta.delivery.status, 'delivered');
  const [got] = await downstream.waitFor(1);
  assert.equal(got!.mailFrom, '');
  assert.deepEqual(got!.rcptTo, ['support@example.com'], 'the store-only recipient is not forwarded');
  const text = got!.raw.toString('latin1');
  assert.doesNotMatch(text, /TVqQAAMAAAAEAAAA/, 'the blocked attachment is not forwarded');
  assert.match(text, /X-Mailgate-Blocked-File: tool\.exe/i);
  assert.doesNotMatch(text, /4111 1111 1111 1111/, 'the card number is masked');
  assert.match(text, /\*{4} \*{4} \*{4} 1111/);
  assert.ok(
    meta.tags.some((tag) => /^email-(permanent|temporary)-undeliverable$/.test(tag)),
    `tagged as a bounce: ${meta.tags.join(', ')}`,
  );
  assert.ok(text.includes(`\r\nX-Mailgate-Tags: ${meta.tags.join(', ')}\r\n`), 'the tags travel as a header');
  assert.match(text, new RegExp(`^X-Mailgate-Id: ${id}`, 'm'));
  assert.match(text, /^Received: from mx\.example\.net .*\r\n\tby \S+ \(mailgate\) with ESMTP id/m);
  // What was forwarded is what the store holds (plus the trace headers in front).
  const stored = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    gw.store
      .openRaw(id)
      .on('data', (c: Buffer) => chunks.push(c))
      .on('end', () => resolve(Buffer.concat(chunks)))
      .on('error', reject);
  });
  assert.ok(got!.raw.subarray(got!.raw.length - stored.length).equals(stored), 'the downstream got the stored bytes, unchanged');
});

test('a relay domain is accepted by the MX even when accept_all is off, and other domains are still refused', async (t) => {
  const downstream = await startUpstream();
  const gw = await startTestGateway(`
[smtp]
accept_all = false

[[relay]]
name = "internal"
domains = ["corp.example"]
to = "smtp://127.0.0.1:${downstream.port}"
`);
  t.after(async () => {
    await gw.cleanup();
    await downstream.close();
  });
  const smtp = await rawSmtp(gw.port);
  await smtp.command('EHLO client.example');
  await smtp.command('MAIL FROM:<someone@example.org>');
  assert.match(await smtp.command('RCPT TO:<user@corp.example>'), /^250/);
  assert.match(await smtp.command('RCPT TO:<user@elsewhere.example>'), /^550 5\.7\.1/);
  await smtp.command('DATA');
  const reply = await smtp.write('From: someone@example.org\r\nTo: user@corp.example\r\nSubject: hi\r\n\r\nhello\r\n.\r\n');
  smtp.close();
  const id = /queued as (\S+)/.exec(reply)![1]!;
  await waitDelivered(gw.store, id);
  const [got] = await downstream.waitFor(1);
  assert.deepEqual(got!.rcptTo, ['user@corp.example']);
  assert.equal(got!.mailFrom, 'someone@example.org');
});
