import { test } from 'node:test';
import assert from 'node:assert/strict';
import nodemailer from 'nodemailer';
import { startTestGateway } from './helpers/gateway.js';

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
  assert.equal((await fetch(`http://127.0.0.1:${gw.gateway.metricsPort}/other`)).status, 404);
});
