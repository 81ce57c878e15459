import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { runCli, startTestGateway } from './helpers/gateway.js';

test('metrics count stored and refused messages, served at /metrics', async (t) => {
  const gw = await startTestGateway('[metrics]\nlisten = "127.0.0.1:0"\n\n[smtp]\nmax_message_size = 2000\n');
  t.after(() => gw.cleanup());
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: gw.port, ignoreTLS: true });
  const envelope = { from: 'a@example.org', to: ['b@example.com'] };
  await transport.sendMail({ envelope, raw: 'Subject: small\r\n\r\nhello\r\n' });
  await assert.rejects(transport.sendMail({ envelope, raw: `Subject: big\r\n\r\n${'x'.repeat(3000)}\r\n` }));

  const res = await fetch(`http://127.0.0.1:${gw.gateway.metricsPort}/metrics`);
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.match(text, /^mailgate_messages_total\{source="smtp",outcome="stored"\} 1$/m);
  assert.match(text, /^mailgate_messages_total\{source="smtp",outcome="refused"\} 1$/m);
  assert.match(text, /^mailgate_refusals_total\{code="552"\} 1$/m);
  assert.match(text, /^mailgate_message_bytes_total\{source="smtp"\} 25$/m);
  // The wait each client saw, from its final dot to our reply, and the process itself.
  assert.match(text, /^# TYPE mailgate_data_to_reply_seconds histogram$/m);
  assert.match(text, /^mailgate_data_to_reply_seconds_count\{listener="smtp",reply="2xx"\} 1$/m);
  assert.match(text, /^mailgate_process_resident_memory_bytes \d+$/m);
  assert.match(text, /^mailgate_nodejs_eventloop_lag_seconds /m);
  assert.equal((await fetch(`http://127.0.0.1:${gw.gateway.metricsPort}/other`)).status, 404);
});

test('mailgate send through the running gateway counts in mailgate_messages_total as source "cli", queued and refused', async (t) => {
  const gw = await startTestGateway('[metrics]\nlisten = "127.0.0.1:0"\n\n[[alias]]\nname = "support"\naddress = "support@example.com"\n');
  t.after(() => gw.cleanup());
  const sent = await runCli(['send', '--config', gw.configFile, '--from', 'support', '--to', 'customer@example.org', '--subject', 'Hello', '--text', 'Hi.']);
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(sent.stderr, '', 'through the running gateway');
  const eml = path.join(gw.dir, 'other.eml');
  await writeFile(eml, 'From: someone@example.net\r\nTo: customer@example.org\r\nSubject: Not ours\r\n\r\nHi.\r\n');
  const refused = await runCli(['send', '--config', gw.configFile, '--from', 'support', '--to', 'customer@example.org', '--eml', eml]);
  assert.equal(refused.code, 1, refused.stderr);

  const text = await (await fetch(`http://127.0.0.1:${gw.gateway.metricsPort}/metrics`)).text();
  assert.match(text, /^mailgate_messages_total\{source="cli",outcome="queued"\} 1$/m);
  assert.match(text, /^mailgate_messages_total\{source="cli",outcome="refused"\} 1$/m);
  assert.doesNotMatch(text, /source="(smtp|submission)"/, 'counted once, under its own source');
});
