import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SMTPServer } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import type { AliasRow } from '../gateway/commands/aliases.js';
import type { MessageMeta } from '../storage/records.js';
import { ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { runCli, spawnServe, testConfigText } from './helpers/gateway.js';
import { fixture, tempDir } from './helpers/paths.js';
import { dovecotIncoming } from './helpers/retrieve.js';
import { testStoreKind } from './helpers/test-store.js';

let dovecot: TestDovecot;

before(async () => {
  await ensureDovecot();
  dovecot = await startDovecot({
    users: [
      { name: 'desk', password: 'pw-desk' },
      { name: 'tester', password: 'pw-tester' },
      { name: 'popper', password: 'pw-popper' },
      { name: 'helpdesk', password: 'pw-helpdesk' },
    ],
    // `supervisor` opens other users' mailboxes by naming them as the authorization identity (a shared mailbox).
    masterUsers: [{ name: 'supervisor', password: 'pw-supervisor' }],
    // Logins fail here on purpose: without the penalty each later login would wait 4 s or more.
    authPenalty: false,
  });
});
after(async () => {
  await dovecot?.stop();
});

/** Changes a Dovecot user's password by rewriting its passwd-file (Dovecot rereads it when it changes). */
async function setDovecotPassword(user: string, password: string): Promise<void> {
  const file = path.join(dovecot.dir, 'users.passwd');
  const lines = (await readFile(file, 'utf8'))
    .split('\n')
    .map((l) => (l.startsWith(`${user}:`) ? l.replace(/^([^:]*):\{PLAIN\}[^:]*:/, `$1:{PLAIN}${password}:`) : l));
  await writeFile(file, lines.join('\n'));
}

function aliasToml(name: string, incoming: Record<string, string | number | boolean>, outgoing?: Record<string, string | number | boolean>): string {
  const lines = ['[[alias]]', `name = "${name}"`, `address = "${name}@example.com"`, 'department = "support"', '[alias.incoming]'];
  for (const [k, v] of Object.entries(incoming)) lines.push(`${k} = ${JSON.stringify(v)}`);
  if (outgoing) {
    lines.push('[alias.outgoing]');
    for (const [k, v] of Object.entries(outgoing)) lines.push(`${k} = ${JSON.stringify(v)}`);
  }
  return lines.join('\n');
}

const imap = (user: string, extra: Record<string, string | number | boolean> = {}) => ({
  ...dovecotIncoming(dovecot, user),
  poll_interval: 1,
  reconnect_interval: 1,
  health_retry_interval: 1,
  idle: false,
  ...extra,
});

async function list(configFile: string): Promise<AliasRow[]> {
  const r = await runCli(['aliases', 'list', '--json', '--config', configFile]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.toString()) as AliasRow[];
}

async function waitForRow(configFile: string, name: string, match: (row: AliasRow) => boolean, timeoutMs = 30_000): Promise<AliasRow> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const row = (await list(configFile)).find((r) => r.name === name);
    if (row && match(row)) return row;
    assert.ok(Date.now() < deadline, `alias ${name} did not reach the expected state: ${JSON.stringify(row)}`);
    await sleep(200);
  }
}

test('while the gateway runs: list shows an auth-failed alias as inactive with its reason; activate brings it back without a restart', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  await setDovecotPassword('desk', 'changed-on-the-server');
  await dovecot.deliver('desk', 'From: c@example.net\r\nTo: desk@example.com\r\nSubject: Printer on fire\r\nMessage-ID: <fire@example.net>\r\n\r\nHelp.\r\n');
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[department]]',
        'name = "support"',
        aliasToml('desk', imap('desk')),
        '[[alias]]',
        'name = "spare"',
        'address = "spare@example.com"',
        'status = "inactive"',
      ].join('\n'),
    ),
  );
  const { child, exited } = await spawnServe(configFile);
  t.after(async () => {
    child.kill('SIGTERM');
    await exited;
  });

  const row = await waitForRow(configFile, 'desk', (r) => r.status === 'inactive');
  assert.equal(row.configuredStatus, 'active');
  assert.equal(row.failures, 3);
  assert.equal(row.lastErrorKind, 'auth');
  assert.match(row.reason ?? '', /^authentication failed: check user and password/);
  assert.equal(row.department, 'support');
  assert.equal(row.address, 'desk@example.com');
  assert.equal(row.retryAt, undefined);
  const spare = (await list(configFile)).find((r) => r.name === 'spare');
  assert.deepEqual([spare?.configuredStatus, spare?.status], ['inactive', 'inactive']);

  const text = await runCli(['aliases', 'list', '--config', configFile]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout.toString(), /desk\s+desk@example\.com\s+support\s+active\s+inactive\s+3\s+-\s+authentication failed/);

  const unknown = await runCli(['aliases', 'activate', 'dsek', '--config', configFile]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no alias named "dsek"; known aliases: desk, spare/);
  const configInactive = await runCli(['aliases', 'activate', 'spare', '--config', configFile]);
  assert.equal(configInactive.code, 2);
  assert.match(configInactive.stderr, /status = "inactive" in/);

  await setDovecotPassword('desk', 'pw-desk');
  const activate = await runCli(['aliases', 'activate', 'desk', '--config', configFile]);
  assert.equal(activate.code, 0, activate.stderr);
  assert.match(activate.stdout.toString(), /alias desk is active/);
  const back = await waitForRow(configFile, 'desk', (r) => r.status === 'active');
  assert.equal(back.failures, 0);
  assert.equal(back.changedBy, 'admin');
  let fetched: MessageMeta[] = [];
  const deadline = Date.now() + 15_000;
  while (fetched.length === 0) {
    assert.ok(Date.now() < deadline, 'the message is fetched after activation');
    await sleep(200);
    const r = await runCli(['messages', 'list', '--alias', 'desk', '--json', '--config', configFile]);
    fetched = JSON.parse(r.stdout.toString()) as MessageMeta[];
  }
  assert.equal(fetched[0]?.subject, 'Printer on fire');

  const deactivate = await runCli(['aliases', 'deactivate', 'desk', '--config', configFile]);
  assert.equal(deactivate.code, 0, deactivate.stderr);
  const paused = await waitForRow(configFile, 'desk', (r) => r.status === 'inactive');
  assert.equal(paused.changedBy, 'admin');
});

test('with the gateway stopped: deactivate and activate write the store directly', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[department]]',
        'name = "support"',
        aliasToml('popper', { type: 'pop3', host: '127.0.0.1', port: dovecot.pop3Port, user: 'popper', password: 'pw-popper' }),
      ].join('\n'),
    ),
  );
  if (testStoreKind === 'leveldb') {
    // No store yet (no data directory): list shows the configuration.
    assert.deepEqual(
      (await list(configFile)).map((r) => [r.name, r.status, r.failures]),
      [['popper', 'active', 0]],
    );
  } else {
    // A database without mailgate's tables is no store to read: only serve and migrate make them (README, STORE_SCHEMA_TOO_OLD).
    const before = await runCli(['aliases', 'list', '--json', '--config', configFile]);
    assert.equal(before.code, 1);
    assert.match(before.stderr, /has no mailgate tables: run `mailgate storage migrate`/);
  }
  const { child, exited } = await spawnServe(configFile); // creates the store
  child.kill('SIGTERM');
  await exited;
  const off = await runCli(['aliases', 'deactivate', 'popper', '--config', configFile]);
  assert.equal(off.code, 0, off.stderr);
  let row = (await list(configFile))[0]!;
  assert.deepEqual([row.status, row.changedBy, row.reason], ['inactive', 'admin', 'deactivated by an admin']);
  const on = await runCli(['aliases', 'activate', 'popper', '--config', configFile]);
  assert.equal(on.code, 0, on.stderr);
  row = (await list(configFile))[0]!;
  assert.equal(row.status, 'active');
});

test('aliases test: every step passes on a good alias (IMAP STARTTLS and SMTP with STARTTLS and AUTH); a wrong password names the login step', async (t) => {
  const smtp = new SMTPServer({
    key: await readFile(fixture('tls', 'key.pem')),
    cert: await readFile(fixture('tls', 'cert.pem')),
    authMethods: ['PLAIN', 'LOGIN'],
    onAuth(auth, _session, callback) {
      if (auth.username === 'sender' && auth.password === 'pw-sender') return callback(null, { user: auth.username });
      callback(new Error('Invalid username or password'));
    },
    logger: false,
  });
  await new Promise<void>((resolve) => smtp.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => smtp.close(() => resolve())));
  const smtpPort = (smtp.server.address() as AddressInfo).port;

  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  const outgoing = { type: 'esmtp', host: '127.0.0.1', port: smtpPort, ssl: true, user: 'sender', password: 'pw-sender' };
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[department]]',
        'name = "support"',
        aliasToml('tester', imap('tester'), outgoing),
        aliasToml('wrongpw', imap('tester', { password: 'not-it' }), { ...outgoing, password: 'nope' }),
        aliasToml('pop', {
          type: 'pop3',
          host: '127.0.0.1',
          port: dovecot.pop3sPort,
          security: 'tls',
          ca_file: fixture('tls', 'cert.pem'),
          user: 'popper',
          password: 'pw-popper',
        }),
        aliasToml('nowhere', { type: 'pop3', host: 'mail.mailgate-test.invalid', security: 'tls' }),
      ].join('\n'),
    ),
  );
  // The outgoing server has no ca_file: trust the test certificate the way an admin would trust a private CA system-wide.
  const env = { NODE_EXTRA_CA_CERTS: fixture('tls', 'cert.pem') };

  const good = await runCli(['aliases', 'test', 'tester', '--config', configFile], { env });
  const out = good.stdout.toString();
  assert.equal(good.code, 0, out + good.stderr);
  for (const step of ['DNS', 'TCP', 'TLS', 'login', 'folder']) assert.match(out, new RegExp(`incoming[\\s\\S]*PASS\\s+${step}\\b`), out);
  for (const step of ['DNS', 'TCP', 'EHLO', 'STARTTLS', 'AUTH']) assert.match(out, new RegExp(`outgoing[\\s\\S]*PASS\\s+${step}\\b`), out);
  assert.match(out, /STARTTLS, TLS.*certificate for localhost/);
  assert.match(out, /all steps passed/);

  const bad = await runCli(['aliases', 'test', 'wrongpw', '--json', '--config', configFile], { env });
  assert.equal(bad.code, 1, bad.stderr);
  const report = JSON.parse(bad.stdout.toString()) as { ok: boolean; steps: { server: string; step: string; result: string; detail: string }[] };
  assert.equal(report.ok, false);
  const login = report.steps.find((s) => s.server === 'incoming' && s.step === 'login');
  assert.equal(login?.result, 'fail');
  assert.match(login?.detail ?? '', /authentication failed: check user and password/);
  assert.equal(report.steps.find((s) => s.server === 'incoming' && s.step === 'folder')?.result, 'skip');
  assert.equal(report.steps.find((s) => s.server === 'incoming' && s.step === 'TLS')?.result, 'pass');
  const auth = report.steps.find((s) => s.server === 'outgoing' && s.step === 'AUTH');
  assert.equal(auth?.result, 'fail');
  assert.match(auth?.detail ?? '', /authentication failed/);

  const pop = await runCli(['aliases', 'test', 'pop', '--config', configFile]);
  assert.equal(pop.code, 0, pop.stdout.toString() + pop.stderr);
  assert.match(pop.stdout.toString(), /PASS\s+STAT\s+\d+ message/);

  const nowhere = await runCli(['aliases', 'test', 'nowhere', '--config', configFile]);
  assert.equal(nowhere.code, 1);
  assert.match(nowhere.stdout.toString(), /FAIL\s+DNS\s+mail\.mailgate-test\.invalid does not resolve/);
  assert.match(nowhere.stdout.toString(), /SKIP\s+TCP/);

  const unknown = await runCli(['aliases', 'test', 'ghost', '--config', configFile]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /known aliases: tester, wrongpw, pop, nowhere/);
});

test('aliases test on a shared mailbox (auth_identity): login and folder (IMAP) or STAT (POP3) pass as the retriever logs in, and the retriever fetches it', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  await dovecot.deliver(
    'helpdesk',
    'From: c@example.net\r\nTo: helpdesk@example.com\r\nSubject: Shared inbox\r\nMessage-ID: <shared-inbox@example.net>\r\n\r\nHello.\r\n',
  );
  const shared = { user: 'supervisor', password: 'pw-supervisor', auth_identity: 'helpdesk' };
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[department]]',
        'name = "support"',
        aliasToml('helpdesk', imap('supervisor', shared)),
        aliasToml('helpdeskpop', { type: 'pop3', host: '127.0.0.1', port: dovecot.pop3sPort, security: 'tls', ca_file: fixture('tls', 'cert.pem'), ...shared }),
        aliasToml('notshared', imap('supervisor', { ...shared, password: 'not-it' })),
      ].join('\n'),
    ),
  );

  const r = await runCli(['aliases', 'test', 'helpdesk', '--config', configFile]);
  const out = r.stdout.toString();
  assert.equal(r.code, 0, out + r.stderr);
  assert.match(out, /PASS\s+login\s+logged in as "supervisor" for the shared mailbox "helpdesk" \(SASL PLAIN with authorization identity\)/);
  assert.match(out, /PASS\s+folder\s+INBOX: 1 message\(s\)/);
  assert.match(out, /all steps passed/);

  const pop = await runCli(['aliases', 'test', 'helpdeskpop', '--config', configFile]);
  assert.equal(pop.code, 0, pop.stdout.toString() + pop.stderr);
  assert.match(pop.stdout.toString(), /PASS\s+login\s+logged in as "supervisor" for the shared mailbox "helpdesk"/);
  assert.match(pop.stdout.toString(), /PASS\s+STAT\s+1 message\(s\)/);

  // What the test said is what the retriever does: it fetches the shared mailbox with the same login.
  const serveDir = path.join(dir, 'serve');
  await mkdir(serveDir);
  const serveConfig = path.join(serveDir, 'mailgate.toml');
  await writeFile(serveConfig, testConfigText(serveDir, ['[[department]]', 'name = "support"', aliasToml('helpdesk', imap('supervisor', shared))].join('\n')));
  const { child, exited } = await spawnServe(serveConfig);
  t.after(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const listed = await runCli(['messages', 'list', '--alias', 'helpdesk', '--json', '--config', serveConfig]);
    const metas = JSON.parse(listed.stdout.toString() || '[]') as MessageMeta[];
    if (metas.some((m) => m.subject === 'Shared inbox')) break;
    assert.ok(Date.now() < deadline, `the shared mailbox is fetched: ${listed.stderr}`);
    await sleep(200);
  }
  // A refused login to a shared mailbox fails the login step, which says what to check.
  const refused = await runCli(['aliases', 'test', 'notshared', '--json', '--config', configFile]);
  assert.equal(refused.code, 1, refused.stderr);
  const login = (JSON.parse(refused.stdout.toString()) as { steps: { step: string; result: string; detail: string }[] }).steps.find((s) => s.step === 'login');
  assert.equal(login?.result, 'fail');
  assert.match(login?.detail ?? '', /^authentication failed: check user and password, and that "supervisor" may open the shared mailbox "helpdesk"/);
});
