/**
 * The REST API (gateway/web) against a running gateway with a real store: results equal what
 * the CLI prints, bytes equal what was sent over SMTP, restore byte-identical, every route with
 * every role, CSRF, sign-in limits and cookie flags, and an OpenAPI document that validates
 * and covers every route.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import nodemailer from 'nodemailer';
import { Validator } from '@seriousme/openapi-schema-validator';
import { attachmentsSectionSchema, attachmentsStage } from '../policy/attachments/stage.js';
import { hashPassword, verifyPassword } from '../gateway/config/password.js';
import { loadConfigText } from '../gateway/config/load.js';
import { ConfigError } from '../lib/config-file/toml.js';
import { apiRoutes } from '../gateway/web/api-routes.js';
import { runCli, startTestGateway, writeTestConfig, type TestGateway } from './helpers/gateway.js';
import { cliPath, fixture, tempDir } from './helpers/paths.js';

const ROLES = ['admin', 'operator', 'auditor'] as const;
const tokenOf = (role: string) => `token-for-${role}-0123456789`;
const PASSWORD = 'correct horse battery staple';

function adminToml(extra = ''): string {
  const tokens = ROLES.map((r) => `[[admin.token]]\nname = "${r}-script"\ntoken_hash = "${hashPassword(tokenOf(r))}"\nrole = "${r}"\n`).join('\n');
  return `[[alias]]\nname = "sales"\naddress = "sales@example.com"\n\n[admin]\n${extra}\n[[admin.user]]\nname = "alice"\npassword_hash = "${hashPassword(PASSWORD)}"\nrole = "operator"\n\n${tokens}`;
}

async function startApiGateway(): Promise<TestGateway & { base: string }> {
  const department = attachmentsSectionSchema.parse({ blocked_extensions: ['.exe'] });
  const gw = await startTestGateway(adminToml(), { stages: () => [attachmentsStage(undefined, department)] });
  return Object.assign(gw, { base: gw.gateway.web!.url });
}

async function send(port: number, raw: Buffer): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({ envelope: { from: 'customer@example.org', to: ['support@example.com'] }, raw });
  const id = /queued as (\S+)/.exec(info.response)?.[1];
  assert.ok(id, info.response);
  return id;
}

const bearer = (role: string) => ({ authorization: `Bearer ${tokenOf(role)}` });

test('[admin]: on by default on 127.0.0.1:8025; off with enabled = false; a non-loopback listen without TLS is refused naming the key', () => {
  const defaults = loadConfigText('', '/etc/mailgate/mailgate.toml', {});
  assert.equal(defaults.admin.enabled, true);
  assert.equal(defaults.admin.listen, '127.0.0.1:8025');
  assert.equal(loadConfigText('[admin]\nenabled = false\n', '/x/mailgate.toml', {}).admin.enabled, false);
  assert.throws(
    () => loadConfigText('[admin]\nlisten = "0.0.0.0:8025"\n', '/x/mailgate.toml', {}),
    (err: unknown) => err instanceof ConfigError && /mailgate\.toml:2: admin\.listen: expected a loopback address, or \[admin\.tls\]/.test(err.message),
  );
  // With a certificate any address will do; the files are taken from the config file's directory.
  const withTls = loadConfigText('[admin]\nlisten = "0.0.0.0:8025"\n[admin.tls]\ncert = "c.pem"\nkey = "k.pem"\n', '/x/mailgate.toml', {});
  assert.deepEqual(withTls.admin.tls, { cert: '/x/c.pem', key: '/x/k.pem' });
  assert.throws(
    () => loadConfigText('[[admin.user]]\nname = "a"\npassword_hash = "x"\nrole = "root"\n', '/x/mailgate.toml', {}),
    (err: unknown) =>
      err instanceof ConfigError &&
      /admin\.user\[0\]\.password_hash/.test(err.message) &&
      /admin\.user\[0\]\.role: expected "admin", "operator" or "auditor"/.test(err.message),
  );
});

test('REST API: messages, raw bytes and quarantine equal what the CLI prints; restore is byte-identical', async (t) => {
  const gw = await startApiGateway();
  t.after(() => gw.cleanup());
  const cli = async (...args: string[]) => {
    const r = await runCli([...args, '--config', gw.configFile]);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout.toString()) as unknown;
  };
  const get = async (path: string, role = 'admin') => {
    const res = await fetch(`${gw.base}/api/v1${path}`, { headers: bearer(role) });
    assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
    return res;
  };
  const original = readFileSync(fixture('attachments', 'double-extension.eml'));
  const id = await send(gw.port, original);

  // The API answers a page ({ messages, next }); the CLI prints the page's messages.
  const page = async (path: string) => ((await (await get(path)).json()) as { messages: unknown[]; next?: string }).messages;
  assert.deepEqual(await page('/messages'), await cli('messages', 'list', '--json'));
  assert.deepEqual(
    await page(`/messages?limit=1&since=2000-01-01T00:00:00Z`),
    await cli('messages', 'list', '--limit', '1', '--since', '2000-01-01T00:00:00Z', '--json'),
  );
  // Search: text in the subject, attachments, wrapped; each as the CLI's flags find them.
  const subject = /^Subject: (.*)$/m.exec(original.toString())![1]!.trim();
  const found = await page(`/messages?text=${encodeURIComponent(subject.slice(0, 6).toUpperCase())}&attachment=true&wrapped=false`);
  assert.equal(found.length, 1);
  assert.deepEqual(found, await cli('messages', 'list', '--text', subject.slice(0, 6).toUpperCase(), '--attachment', '--no-wrapped', '--json'));
  assert.deepEqual(await page('/messages?attachment=false'), []);
  assert.equal((await fetch(`${gw.base}/api/v1/messages?wrapped=maybe`, { headers: bearer('admin') })).status, 400);
  // The CLI prints the metadata of showMessage's answer; the API gives the attachments' details beside it.
  const shown = (await (await get(`/messages/${id}`)).json()) as { meta: unknown; attachments: unknown[] };
  assert.deepEqual(shown.meta, await cli('messages', 'show', id, '--json'));
  assert.equal(shown.attachments.length, 1);
  assert.deepEqual(await (await get('/quarantine')).json(), await cli('quarantine', 'list', '--json'));
  assert.deepEqual(await (await get('/aliases')).json(), await cli('aliases', 'list', '--json'));
  assert.deepEqual(await (await get('/queue')).json(), await cli('queue', 'list', '--json'));

  const [record] = (await (await get(`/quarantine?message=${id}`)).json()) as { id: string; size: number }[];
  assert.ok(record);
  assert.deepEqual(await (await get(`/quarantine/${record.id}`)).json(), record);
  const content = await get(`/quarantine/${record.id}/content`, 'operator');
  assert.equal(content.headers.get('content-type'), 'application/octet-stream');
  assert.equal(Buffer.from(await content.arrayBuffer()).length, record.size);

  // Restore: the stored message is again byte for byte what was sent over SMTP.
  const restore = await fetch(`${gw.base}/api/v1/quarantine/${record.id}/restore`, { method: 'POST', headers: bearer('operator') });
  assert.equal(restore.status, 200, await restore.clone().text());
  const raw = await get(`/messages/${id}/raw`);
  assert.equal(raw.headers.get('content-type'), 'message/rfc822');
  assert.ok(Buffer.from(await raw.arrayBuffer()).equals(original), 'raw bytes after restore equal the original');
  const again = await fetch(`${gw.base}/api/v1/quarantine/${record.id}`, { headers: bearer('admin') });
  assert.equal(again.status, 404);
  assert.equal(((await again.json()) as { code: string }).code, 'QUARANTINE_NOT_FOUND');

  // Bad input: 400 naming the field and why.
  const bad = await fetch(`${gw.base}/api/v1/messages?limit=zero`, { headers: bearer('admin') });
  assert.equal(bad.status, 400);
  const body = (await bad.json()) as { code: string; message: string };
  assert.equal(body.code, 'BAD_REQUEST');
  assert.match(body.message, /^querystring\.limit: /);

  assert.equal((await fetch(`${gw.base}/healthz`)).status, 200);
  assert.deepEqual(await (await fetch(`${gw.base}/readyz`)).json(), { status: 'ready' });
  const unknown = await fetch(`${gw.base}/api/v1/nothing`, { headers: bearer('admin') });
  assert.equal(unknown.status, 404);
});

test('REST API: every route with every role, allowed or refused on the server; no caller is 401', async (t) => {
  const gw = await startApiGateway();
  t.after(() => gw.cleanup());
  const id = await send(gw.port, readFileSync(fixture('attachments', 'double-extension.eml')));
  const allowed: Record<string, readonly string[]> = {
    admin: ['read', 'read-content', 'operate'],
    operator: ['read', 'read-content', 'operate'],
    auditor: ['read'],
  };
  for (const route of apiRoutes) {
    // Ids that do not exist: an allowed call is then 404 (or 400), never 401 or 403, and changes nothing.
    const url = `${gw.base}/api/v1${route.url.replace(':id', 'no-such-id').replace(':name', 'no-such-alias')}`;
    const init = (headers: Record<string, string>): RequestInit => ({
      method: route.method,
      headers: route.upload ? { ...headers, 'content-type': 'message/rfc822' } : headers,
      ...(route.upload ? { body: `Subject: test ${id}\r\n\r\nhello\r\n` } : {}),
    });
    const anonymous = await fetch(url, init({}));
    assert.equal(anonymous.status, 401, `${route.method} ${route.url} without a caller`);
    for (const role of ROLES) {
      const res = await fetch(url, init(bearer(role)));
      const body = (await res.json()) as { code?: string };
      if (allowed[role]!.includes(route.permission))
        assert.ok(![401, 403].includes(res.status), `${role} may ${route.method} ${route.url}: ${JSON.stringify(body)}`);
      else {
        assert.equal(res.status, 403, `${role} may not ${route.method} ${route.url}`);
        assert.equal(body.code, 'NOT_ALLOWED');
      }
    }
  }
  // The auditor reads metadata but not the bytes.
  assert.equal((await fetch(`${gw.base}/api/v1/messages/${id}`, { headers: bearer('auditor') })).status, 200);
  assert.equal((await fetch(`${gw.base}/api/v1/messages/${id}/raw`, { headers: bearer('auditor') })).status, 403);
  const wrong = await fetch(`${gw.base}/api/v1/messages`, { headers: { authorization: 'Bearer not-a-token' } });
  assert.equal(wrong.status, 401);
  assert.equal(((await wrong.json()) as { code: string }).code, 'SIGN_IN_FAILED');
});

test('REST API: sign-in sets an HttpOnly SameSite=Strict cookie; a foreign Origin with it is refused; sign-out ends it; failed sign-ins are limited', async (t) => {
  const gw = await startApiGateway();
  t.after(() => gw.cleanup());
  const signIn = (password: string) =>
    fetch(`${gw.base}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'alice', password }) });
  const ok = await signIn(PASSWORD);
  assert.equal(ok.status, 200, await ok.clone().text());
  assert.deepEqual(await ok.json(), { user: 'alice', role: 'operator' });
  const setCookie = ok.headers.get('set-cookie') ?? '';
  assert.match(setCookie, /^mailgate_session=[^;]+;/);
  assert.match(setCookie, /HttpOnly/);
  assert.match(setCookie, /SameSite=Strict/);
  assert.doesNotMatch(setCookie, /Secure/, 'no Secure flag over plain HTTP on loopback');
  const cookie = setCookie.split(';')[0]!;

  assert.equal((await fetch(`${gw.base}/api/v1/queue`, { headers: { cookie } })).status, 200);
  assert.equal((await fetch(`${gw.base}/api/v1/queue`, { headers: { cookie, origin: gw.base } })).status, 200);
  const csrf = await fetch(`${gw.base}/api/v1/queue/x/retry`, { method: 'POST', headers: { cookie, origin: 'https://evil.example' } });
  assert.equal(csrf.status, 403);
  assert.equal(((await csrf.json()) as { code: string }).code, 'CROSS_SITE_REQUEST');

  assert.equal((await fetch(`${gw.base}/api/v1/session`, { method: 'DELETE', headers: { cookie } })).status, 204);
  assert.equal((await fetch(`${gw.base}/api/v1/queue`, { headers: { cookie } })).status, 401);

  // [smtp.limits] auth_failures_per_ip (5) failures, then refused even with the right password.
  for (let i = 0; i < 5; i++) assert.equal((await signIn('wrong')).status, 401);
  const locked = await signIn(PASSWORD);
  assert.equal(locked.status, 429);
  assert.equal(((await locked.json()) as { code: string }).code, 'SIGN_IN_LOCKED');
});

test('REST API: the OpenAPI 3.1 document validates and covers every route; the reference page is served without a CDN', async (t) => {
  const gw = await startApiGateway();
  t.after(() => gw.cleanup());
  const doc = (await (await fetch(`${gw.base}/api/openapi.json`)).json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
  assert.equal(doc.openapi, '3.1.0');
  const result = await new Validator().validate(doc as never);
  assert.equal(result.valid, true, JSON.stringify(result.errors));
  for (const route of apiRoutes) {
    const path = `/api/v1${route.url.replace(/:(\w+)/g, '{$1}')}`;
    assert.ok(doc.paths[path]?.[route.method.toLowerCase()], `${route.method} ${path} is in the document`);
  }
  for (const path of ['/api/v1/session', '/api/v1/events', '/healthz', '/readyz']) assert.ok(doc.paths[path], path);
  const page = await fetch(`${gw.base}/api/docs/`);
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.doesNotMatch(html, /https?:\/\/(?!127\.0\.0\.1)[a-z]/i, 'no asset from another host');
});

test('`mailgate admin token` prints a token once with a hash that the API accepts; with no [[admin.user]], `serve` prints a sign-in link valid for the run', async (t) => {
  const made = await runCli(['admin', 'token']);
  assert.equal(made.code, 0, made.stderr);
  const m = /^token = (\S+)\ntoken_hash = "(scrypt\$[^"]+)"\n$/.exec(made.stdout.toString());
  assert.ok(m, made.stdout.toString());
  const [, token, hash] = m;
  assert.ok(verifyPassword(token!, hash!));

  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = await writeTestConfig(dir, `[admin]\n\n[[admin.token]]\nname = "made"\ntoken_hash = "${hash}"\nrole = "auditor"\n`);
  const child = spawn(process.execPath, [cliPath, 'serve', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  const link = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      const found = /^Sign in to mailgate \(valid until it stops\): (\S+)$/m.exec(out);
      if (found) resolve(found[1]!);
    });
    child.once('exit', (code) => reject(new Error(`serve exited ${code}: ${out}`)));
  });
  const base = new URL(link).origin;
  assert.equal((await fetch(`${base}/api/v1/queue`, { headers: { authorization: `Bearer ${token}` } })).status, 200);
  // The link signs in as admin: a session cookie, then the console's dashboard.
  const followed = await fetch(link, { redirect: 'manual' });
  assert.equal(followed.status, 303);
  assert.equal(followed.headers.get('location'), '/');
  const cookie = (followed.headers.get('set-cookie') ?? '').split(';')[0]!;
  assert.equal((await fetch(`${base}/api/v1/queue/none/retry`, { method: 'POST', headers: { cookie } })).status, 404, 'admin may retry (no such entry)');
  const guessed = await fetch(`${base}/api/v1/session/link?token=guess`, { redirect: 'manual' });
  assert.equal(guessed.status, 401);
  child.kill('SIGTERM');
});

test('the audit log: changes, exports, sign-ins and failed sign-ins through the API, who, what, from where; GET /api/v1/audit and `mailgate audit list` agree', async (t) => {
  const gw = await startApiGateway();
  t.after(() => gw.cleanup());
  const id = await send(gw.port, readFileSync(fixture('attachments', 'double-extension.eml')));
  const [record] = await gw.store.listQuarantine({ messageId: id });
  assert.ok(record);
  const signIn = (password: string) =>
    fetch(`${gw.base}/api/v1/session`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'alice', password }) });
  assert.equal((await signIn('wrong')).status, 401);
  const cookie = ((await signIn(PASSWORD)).headers.get('set-cookie') ?? '').split(';')[0]!;
  await (await fetch(`${gw.base}/api/v1/quarantine/${record.id}/content`, { headers: { cookie } })).arrayBuffer();
  assert.equal((await fetch(`${gw.base}/api/v1/quarantine/${record.id}/restore`, { method: 'POST', headers: { cookie } })).status, 200);
  assert.equal((await fetch(`${gw.base}/api/v1/queue/nothing-queued/retry`, { method: 'POST', headers: bearer('operator') })).status, 404);
  // Reading is not a change: not written.
  assert.equal((await fetch(`${gw.base}/api/v1/messages`, { headers: bearer('auditor') })).status, 200);

  const res = await fetch(`${gw.base}/api/v1/audit`, { headers: bearer('auditor') });
  assert.equal(res.status, 200);
  const entries = (await res.json()) as { who: string; action: string; target?: string; from: string; outcome: string; at: string }[];
  assert.deepEqual(
    entries.map(({ who, action, target, from, outcome }) => ({ who, action, target, from, outcome })),
    [
      { who: 'token operator-script', action: 'retry', target: 'nothing-queued', from: '127.0.0.1', outcome: 'QUEUE_ENTRY_NOT_FOUND' },
      { who: 'user alice', action: 'restore', target: record.id, from: '127.0.0.1', outcome: 'ok' },
      { who: 'user alice', action: 'export', target: record.id, from: '127.0.0.1', outcome: 'ok' },
      { who: 'user alice', action: 'sign-in', target: undefined, from: '127.0.0.1', outcome: 'ok' },
      { who: 'user alice', action: 'sign-in', target: undefined, from: '127.0.0.1', outcome: 'SIGN_IN_FAILED' },
    ],
  );
  assert.ok(entries.every((e) => !Number.isNaN(Date.parse(e.at))));
  const cli = await runCli(['audit', 'list', '--json', '--config', gw.configFile]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.deepEqual(JSON.parse(cli.stdout.toString()), entries);
  const table = await runCli(['audit', 'list', '--limit', '1', '--config', gw.configFile]);
  assert.match(table.stdout.toString(), /token operator-script +retry +nothing-queued +127\.0\.0\.1 +QUEUE_ENTRY_NOT_FOUND\n$/);
});

test('/api/v1/events: message stored, attachment quarantined and restored, queue and alias changes, as Server-Sent Events', async (t) => {
  const gw = await startApiGateway();
  t.after(() => gw.cleanup());
  assert.equal((await fetch(`${gw.base}/api/v1/events`)).status, 401);
  const abort = new AbortController();
  t.after(() => abort.abort());
  const res = await fetch(`${gw.base}/api/v1/events`, { headers: bearer('auditor'), signal: abort.signal });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const reader = res.body!.getReader();
  let text = '';
  const next = async (type: string): Promise<Record<string, string>> => {
    for (;;) {
      const m = new RegExp(`event: ${type}\ndata: (.*)\n\n`).exec(text);
      if (m) {
        text = text.slice(m.index + m[0].length);
        return JSON.parse(m[1]!) as Record<string, string>;
      }
      const { value, done } = await reader.read();
      assert.ok(!done, `the stream ended before ${type}`);
      text += Buffer.from(value).toString();
    }
  };
  const id = await send(gw.port, readFileSync(fixture('attachments', 'double-extension.eml')));
  const stored = await next('message-stored');
  assert.equal(stored.id, id);
  assert.equal(stored.source, 'smtp');
  const quarantined = await next('attachment-quarantined');
  assert.equal(quarantined.messageId, id);
  assert.equal(quarantined.fileName, 'invoice.pdf.exe');
  assert.equal((await fetch(`${gw.base}/api/v1/quarantine/${quarantined.id}/restore`, { method: 'POST', headers: bearer('operator') })).status, 200);
  assert.deepEqual(await next('attachment-restored'), { type: 'attachment-restored', id: quarantined.id, messageId: id });
  // An admin's change of an alias's status, written through the same store.
  assert.equal((await fetch(`${gw.base}/api/v1/aliases/sales/deactivate`, { method: 'POST', headers: bearer('operator') })).status, 200);
  assert.deepEqual(await next('alias-status'), { type: 'alias-status', alias: 'sales', status: 'inactive', failures: 0 });
  // A message queued (sales has no server: held), then dropped from the queue.
  const sent = await runCli([
    'send',
    '--from',
    'sales@example.com',
    '--to',
    'customer@example.org',
    '--subject',
    's',
    '--text',
    't',
    '--config',
    gw.configFile,
  ]);
  assert.equal(sent.code, 0, sent.stderr.toString());
  const queuedId = /^queued as (\S+)/.exec(sent.stdout.toString())![1]!;
  const queued = await next('queue-changed');
  assert.deepEqual([queued.id, queued.state], [queuedId, 'queued']);
  assert.equal((await fetch(`${gw.base}/api/v1/queue/${queuedId}`, { method: 'DELETE', headers: bearer('operator') })).status, 200);
  for (;;) {
    const changed = await next('queue-changed');
    assert.equal(changed.id, queuedId);
    if (changed.state === 'finished') break;
  }
});

test('REST API: quarantine in bulk by filter (operator yes, auditor no, no filter refused) and retry of the held, written to the audit log', async (t) => {
  const gw = await startApiGateway();
  t.after(() => gw.cleanup());
  const original = readFileSync(fixture('attachments', 'double-extension.eml'));
  await send(gw.port, original);
  await send(gw.port, original);
  const call = (method: string, path: string, role: string) => fetch(`${gw.base}/api/v1${path}`, { method, headers: bearer(role) });
  const listed = (await (await call('GET', '/quarantine?file=*.EXE', 'admin')).json()) as { id: string }[];
  assert.equal(listed.length, 2);
  assert.equal((await call('DELETE', '/quarantine', 'operator')).status, 400, 'no filter: nothing is deleted');
  assert.equal((await call('DELETE', '/quarantine?file=*.exe', 'auditor')).status, 403);
  const res = await call('DELETE', '/quarantine?file=*.exe', 'operator');
  assert.equal(res.status, 200);
  const result = (await res.json()) as { done: { id: string }[]; failed: unknown[] };
  assert.deepEqual(result.done.map((r) => r.id).sort(), listed.map((r) => r.id).sort());
  assert.deepEqual(result.failed, []);
  assert.deepEqual(await (await call('GET', '/quarantine', 'admin')).json(), []);
  const retried = await call('POST', '/queue/retry?held=true', 'operator');
  assert.equal(retried.status, 200);
  assert.deepEqual(await retried.json(), { retried: 0 });
  const audit = (await (await call('GET', '/audit', 'auditor')).json()) as { action: string; target?: string; outcome?: string }[];
  assert.ok(
    audit.some((e) => e.action === 'delete' && e.target === 'file=*.exe'),
    JSON.stringify(audit),
  );
  assert.ok(audit.some((e) => e.action === 'retry' && e.target === 'held=true'));
});

test('GET /api/v1/summary and `mailgate status` count the same: the last hour by source and outcome, the queue by state, the quarantine, the aliases', async (t) => {
  const gw = await startApiGateway();
  t.after(() => gw.cleanup());
  await send(gw.port, readFileSync(fixture('attachments', 'double-extension.eml')));
  await send(gw.port, readFileSync(fixture('attachments', 'clean.eml')));
  const api = (await (await fetch(`${gw.base}/api/v1/summary`, { headers: bearer('auditor') })).json()) as Record<string, unknown>;
  const cli = await runCli(['status', '--json', '--config', gw.configFile]);
  assert.equal(cli.code, 0, cli.stderr.toString());
  const printed = JSON.parse(cli.stdout.toString()) as Record<string, unknown>;
  const { at: _apiAt, ...fromApi } = api;
  const { at: _cliAt, ...fromCli } = printed;
  assert.deepEqual(fromCli, fromApi);
  const smtp = { source: 'smtp', messages: 2, wrapped: 0, blocked: 1, exceptions: 0, masked: 0, delivered: 0, failed: 0 };
  assert.deepEqual(fromApi['lastHour'], [smtp]);
  assert.deepEqual(fromApi['lastDay'], [smtp]);
  assert.deepEqual(fromApi['queue'], { total: 0, waiting: 0, retrying: 0, held: 0 });
  assert.equal(fromApi['quarantined'], 1);
  assert.deepEqual(
    (fromApi['aliases'] as { name: string; status: string }[]).map((a) => [a.name, a.status]),
    [['sales', 'active']],
  );
  const text = await runCli(['status', '--config', gw.configFile]);
  assert.match(text.stdout.toString(), /^gateway: running\n/);
  assert.match(text.stdout.toString(), /^ {2}smtp {16}2 {10}0 {10}1 {10}0 {10}0 {10}0 {10}0$/m);
  assert.match(text.stdout.toString(), /^quarantine: 1 attachment$/m);
});
