/**
 * Who may use the REST API, beyond what rest-api.test.ts walks: session timeouts on the
 * sessions' own clock, and the session cookie's Secure flag under [admin.tls].
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:https';
import { hashPassword } from '../gateway/config/password.js';
import { loadConfigText } from '../gateway/config/load.js';
import { Access } from '../gateway/web/access.js';
import { startTestGateway } from './helpers/gateway.js';
import { fixture } from './helpers/paths.js';

const PASSWORD = 'correct horse battery staple';
const users = `[[admin.user]]\nname = "alice"\npassword_hash = "${hashPassword(PASSWORD)}"\nrole = "auditor"\n`;

test('a session ends after session_idle_timeout minutes unused, and after session_max_age hours however used', async () => {
  const config = loadConfigText(`[admin]\nsession_idle_timeout = 10\nsession_max_age = 1\n${users}`, '/x/mailgate.toml', {});
  let now = Date.parse('2026-03-01T10:00:00Z');
  const access = new Access(config.admin, config.smtp.limits, () => now);
  const minutes = (n: number) => (now += n * 60_000);

  const idle = await access.signIn('alice', PASSWORD, '127.0.0.1');
  minutes(9);
  assert.deepEqual(access.session(idle.sessionId), { who: 'user alice', role: 'auditor', session: true });
  minutes(10.5);
  assert.equal(access.session(idle.sessionId), undefined, 'unused for more than 10 minutes');

  const busy = await access.signIn('alice', PASSWORD, '127.0.0.1');
  for (let i = 0; i < 6; i++) {
    minutes(9);
    assert.ok(access.session(busy.sessionId), `used every 9 minutes: still on after ${(i + 1) * 9}`);
  }
  minutes(7); // 61 minutes after sign-in
  assert.equal(access.session(busy.sessionId), undefined, 'past session_max_age, used or not');
  await assert.rejects(access.signIn('alice', 'wrong', '127.0.0.1'), { code: 'SIGN_IN_FAILED' });
  await assert.rejects(access.signIn('nobody', PASSWORD, '127.0.0.1'), { code: 'SIGN_IN_FAILED' });
});

test('under [admin.tls] the API is HTTPS and the session cookie is Secure', async (t) => {
  const tls = `[admin]\n[admin.tls]\ncert = ${JSON.stringify(fixture('tls', 'cert.pem'))}\nkey = ${JSON.stringify(fixture('tls', 'key.pem'))}\n\n${users}`;
  const gw = await startTestGateway(tls);
  t.after(() => gw.cleanup());
  const url = new URL(`${gw.gateway.web!.url}/api/v1/session`);
  assert.equal(url.protocol, 'https:');
  const answer = await new Promise<{ status: number; cookie: string }>((resolve, reject) => {
    const req = request(url, { method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume();
      res.once('end', () => resolve({ status: res.statusCode ?? 0, cookie: String(res.headers['set-cookie'] ?? '') }));
    });
    req.once('error', reject);
    req.end(JSON.stringify({ user: 'alice', password: PASSWORD }));
  });
  assert.equal(answer.status, 200);
  assert.match(answer.cookie, /^mailgate_session=[^;]+;.*HttpOnly/);
  assert.match(answer.cookie, /; Secure/);
  assert.match(answer.cookie, /SameSite=Strict/);
});
