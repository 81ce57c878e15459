/**
 * Secrets sealed at rest in mailgate.toml (issue 14; CCaaS: "encrypted by ... the Tenant
 * Encryption Key"; "If the Tenant Encryption Key does not exist, the password cannot be saved").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import path from 'node:path';
import { ensureDovecot, startDovecot, dovecotIncoming } from './helpers/dovecot.js';
import { capturingLogger, runCli, startGatewayOn, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { loadConfigText, requireSecrets, resolveConfig } from '../gateway/config/load.js';
import { ConfigError } from '../lib/config-file/toml.js';
import { hashPassword } from '../gateway/config/password.js';
import type { AliasRow } from '../gateway/admin/alias-rows.js';
import { watchClientSecrets } from '../gateway/oauth/secret-expiry.js';
import { Metrics } from '../lib/metrics.js';

const hexKey = () => randomBytes(32).toString('hex');

/** `mailgate config encrypt-secret` with KEY in MAILGATE_SECRET_KEY: the sealed value it prints. */
async function encryptSecret(key: string, secret: string): Promise<string> {
  const r = await runCli(['config', 'encrypt-secret'], { env: { MAILGATE_SECRET_KEY: key }, input: `${secret}\n` });
  assert.equal(r.code, 0, r.stderr);
  const sealed = r.stdout.toString().trim();
  assert.match(sealed, /^enc:v1:[A-Za-z0-9_-]+$/);
  return sealed;
}

/** `[partition.default_smtp]` on loopback, signing in with PASSWORD as written. */
const defaultSmtp = (password: string) => [
  '[partition.default_smtp]',
  'server = "127.0.0.1"',
  'protocol = "esmtp"',
  'user = "gate"',
  `password = "${password}"`,
];

/** 1-based line of the first line of TEXT that starts with START. */
const lineOf = (text: string, start: string) => text.split('\n').findIndex((l) => l.startsWith(start)) + 1;

test('an enc:v1: alias password opens with the key file and the alias fetches mail from Dovecot into the store', async (t) => {
  await ensureDovecot();
  const dovecot = await startDovecot({ users: [{ name: 'sales', password: 'pw' }] });
  t.after(() => dovecot.stop());
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const key = hexKey();
  await writeFile(path.join(dir, 'secret.key'), key + '\n', { mode: 0o600 });
  const sealed = await encryptSecret(key, 'pw');
  // Sealed twice, the same secret reads differently (a fresh IV each time): nothing to compare across files.
  assert.notEqual(await encryptSecret(key, 'pw'), sealed);
  await dovecot.deliver('sales', 'From: customer@example.net\r\nTo: sales@example.com\r\nSubject: Sealed password works\r\n\r\nHello.\r\n');

  const incoming = dovecotIncoming(dovecot, 'sales').map((l) => (l.startsWith('password =') ? `password = "${sealed}"` : l));
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      ['secret_key_file = "secret.key"', '[[alias]]', 'name = "sales"', 'address = "sales@example.com"', ...incoming, 'poll_interval = 1'].join('\n'),
    ),
  );
  // MAILGATE_SECRET_KEY would win over the file: make sure this process has none.
  const saved = process.env.MAILGATE_SECRET_KEY;
  delete process.env.MAILGATE_SECRET_KEY;
  t.after(() => {
    if (saved !== undefined) process.env.MAILGATE_SECRET_KEY = saved;
  });
  const { config, store, stop } = await startGatewayOn(configFile);
  t.after(stop);
  assert.equal(config.alias[0]!.incoming!.password, 'pw', 'the loaded config holds the opened secret');

  const deadline = Date.now() + 20_000;
  for (;;) {
    const stored = await store.listMessages({ alias: 'sales' });
    if (stored.length > 0) {
      assert.equal(stored[0]!.subject, 'Sealed password works');
      break;
    }
    assert.ok(Date.now() < deadline, 'the message fetched with the sealed password is stored');
    await new Promise((r) => setTimeout(r, 200));
  }

  // config check opens it too, and has no clear password to warn about.
  const check = await runCli(['config', 'check', configFile], { env: { MAILGATE_SECRET_KEY: '' } });
  assert.equal(check.code, 0, check.stderr);
  assert.doesNotMatch(check.stderr, /in clear/);
});

test('without the secret key, or with another one, serve and config check stop with the file, line and key of the sealed value', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const sealed = await encryptSecret(hexKey(), 'pw-relay');
  const text = testConfigText(
    dir,
    ['[[relay]]', 'name = "crm"', 'to = "smtp://127.0.0.1:2526"', 'domains = ["example.com"]', 'user = "gate"', `password = "${sealed}"`].join('\n'),
  );
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, text);
  const line = lineOf(text, 'password =');

  for (const args of [
    ['config', 'check', configFile],
    ['serve', '--config', configFile],
  ]) {
    const missing = await runCli(args, { env: { MAILGATE_SECRET_KEY: '' } });
    assert.equal(missing.code, 2, `${args[0]}: ${missing.stderr}`);
    assert.match(
      missing.stderr,
      new RegExp(`mailgate\\.toml:${line}: relay\\[0\\]\\.password: sealed \\(enc:v1:\\), but no secret key is configured: set MAILGATE_SECRET_KEY`),
    );

    const wrong = await runCli(args, { env: { MAILGATE_SECRET_KEY: hexKey() } });
    assert.equal(wrong.code, 2, `${args[0]}: ${wrong.stderr}`);
    assert.match(wrong.stderr, new RegExp(`mailgate\\.toml:${line}: relay\\[0\\]\\.password: sealed \\(enc:v1:\\) but does not open with this secret key`));
    assert.doesNotMatch(wrong.stderr, /pw-relay/);
  }

  // A command that uses no password runs without the key, as with an unset ${NAME}.
  // requireSecrets stops the one that does, naming the same line.
  const deferred = resolveConfig({ file: configFile, env: {}, secrets: 'deferred' });
  assert.equal(deferred.config.relay[0]!.password, sealed, 'left as written, never used');
  assert.throws(
    () => requireSecrets(deferred, ['relay[0]']),
    (err: unknown) => err instanceof ConfigError && err.problems[0]!.line === line && /no secret key is configured/.test(err.message),
  );

  // An altered value does not open either (GCM authenticates it).
  const altered = sealed.slice(0, -2) + (sealed.endsWith('AA') ? 'BB' : 'AA');
  const key = hexKey();
  assert.throws(
    () => loadConfigText(text.replace(sealed, altered), configFile, { MAILGATE_SECRET_KEY: key }),
    (err: unknown) => err instanceof ConfigError && err.problems[0]!.key === 'relay[0].password' && err.problems[0]!.line === line,
  );
});

test('${NAME} references keep working, and a variable may itself hold an enc:v1: value; an oauth_app client_secret may be sealed', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const key = hexKey();
  const sealedSecret = await encryptSecret(key, 'app-secret-value');
  const sealedSmtp = await encryptSecret(key, 'smtp-pw');
  const text = testConfigText(
    dir,
    [
      ...defaultSmtp('${SMTP_PASSWORD}'),
      '[[oauth_app]]',
      'name = "m365"',
      'provider = "microsoft365"',
      'tenant_id = "contoso.example"',
      'client_id = "11111111-2222-3333-4444-555555555555"',
      `client_secret = "${sealedSecret}"`,
      'flow = "client_credentials"',
      '[[relay]]',
      'name = "crm"',
      'to = "smtp://127.0.0.1:2526"',
      'domains = ["example.com"]',
      'user = "gate"',
      'password = "${RELAY_PASSWORD}"',
    ].join('\n'),
  );
  const config = loadConfigText(text, path.join(dir, 'mailgate.toml'), {
    MAILGATE_SECRET_KEY: key,
    SMTP_PASSWORD: sealedSmtp,
    RELAY_PASSWORD: 'plain-from-env',
  });
  assert.equal(config.partition.default_smtp!.password, 'smtp-pw');
  assert.equal(config.oauth_app[0]!.client_secret, 'app-secret-value');
  assert.equal(config.relay[0]!.password, 'plain-from-env');
});

test('config check warns about each secret written in clear, naming line and key, and still exits 0', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const key = hexKey();
  const sealed = await encryptSecret(key, 'pw');
  const text = testConfigText(
    dir,
    [
      ...defaultSmtp('clear-smtp-password'),
      '[[alias]]',
      'name = "sales"',
      'address = "sales@example.com"',
      '[alias.incoming]',
      'host = "127.0.0.1"',
      'security = "none"',
      'user = "sales"',
      `password = "${sealed}"`,
      '[[alias]]',
      'name = "support"',
      'address = "support@example.com"',
      '[alias.incoming]',
      'host = "127.0.0.1"',
      'security = "none"',
      'user = "support"',
      'password = "${SUPPORT_PASSWORD}"',
      '[alias.outgoing]',
      'host = "127.0.0.1"',
      'type = "esmtp"',
      'user = "support"',
      "password = 'clear-outgoing'",
    ].join('\n'),
  );
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, text);
  const r = await runCli(['config', 'check', configFile], { env: { MAILGATE_SECRET_KEY: key, SUPPORT_PASSWORD: 'x' } });
  assert.equal(r.code, 0, r.stderr);
  const lines = text.split('\n');
  const at = (value: string) => lines.findIndex((l) => l.includes(value)) + 1;
  assert.equal(
    r.stderr,
    'warning: secrets written in clear (anyone who can read the file can use them):\n' +
      `  ${configFile}:${at('clear-smtp-password')}: partition.default_smtp.password: written in clear: seal it with \`mailgate config encrypt-secret\` (or use \${NAME})\n` +
      `  ${configFile}:${at('clear-outgoing')}: alias[1].outgoing.password: written in clear: seal it with \`mailgate config encrypt-secret\` (or use \${NAME})\n`,
  );
});

test('config encrypt-secret refuses without a key (the secret cannot be saved) and refuses an empty secret', async () => {
  const { dir, cleanup } = await tempDir();
  try {
    const r = await runCli(['config', 'encrypt-secret'], { cwd: dir, env: { MAILGATE_SECRET_KEY: '' }, input: 'pw\n' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /config encrypt-secret: the secret cannot be sealed: no secret key is configured: set MAILGATE_SECRET_KEY/);
    assert.equal(r.stdout.toString(), '');
    const empty = await runCli(['config', 'encrypt-secret'], { cwd: dir, env: { MAILGATE_SECRET_KEY: hexKey() }, input: '\n' });
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /the secret is empty/);
  } finally {
    await cleanup();
  }
});

/** A non-loopback IPv4 address of this machine, for a server "on the local network". */
function lanAddress(): string {
  const found = Object.values(networkInterfaces())
    .flat()
    .find((i) => i !== undefined && i.family === 'IPv4' && !i.internal);
  assert.ok(found, 'this test needs a network interface with a non-loopback IPv4 address (a server on the local network)');
  return found.address;
}

test('security = "none" to a host that is not loopback is refused unless allow_plaintext = true; 127.0.0.0/8 is loopback', () => {
  const file = '/etc/mailgate/mailgate.toml';
  const alias = (host: string, extra = '') =>
    `[[alias]]\nname = "sales"\naddress = "sales@example.com"\n[alias.incoming]\nhost = "${host}"\nsecurity = "none"\nuser = "sales"\npassword = "pw"\n${extra}`;
  assert.throws(
    () => loadConfigText(alias('pop.office.lan'), file, {}),
    (err: unknown) =>
      err instanceof ConfigError &&
      err.message ===
        `${file}:6: alias[0].incoming.security: expected "tls", "starttls" or "auto" for a host that is not loopback (the password would cross in clear; allow_plaintext = true permits it), got "none"`,
  );
  assert.equal(loadConfigText(alias('pop.office.lan', 'allow_plaintext = true'), file, {}).alias[0]!.incoming!.allow_plaintext, true);
  assert.throws(() => loadConfigText(alias('192.168.10.4', 'allow_plaintext = false'), file, {}), ConfigError);
  for (const loopback of ['127.0.0.2', 'localhost', '::1', '::ffff:127.0.0.1']) {
    assert.equal(loadConfigText(alias(loopback), file, {}).alias[0]!.incoming!.security, 'none', loopback);
  }
});

test('allow_plaintext: the retriever fetches from a POP3 server on the local network without TLS and warns at each connection', async (t) => {
  await ensureDovecot();
  const lan = lanAddress();
  const dovecot = await startDovecot({
    users: [
      { name: 'branch', password: 'pw-branch' },
      { name: 'local', password: 'pw-local' },
    ],
    alsoListenOn: lan,
  });
  t.after(() => dovecot.stop());
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  await dovecot.deliver('branch', 'From: customer@example.net\r\nTo: branch@example.com\r\nSubject: Over the office network\r\n\r\nHello.\r\n');
  const pop3 = (host: string, user: string) => [
    '[alias.incoming]',
    'type = "pop3"',
    `host = "${host}"`,
    `port = ${dovecot.pop3Port}`,
    'security = "none"',
    `user = "${user}"`,
    `password = "pw-${user}"`,
    'poll_interval = 1',
  ];
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      [
        '[[alias]]',
        'name = "branch"',
        'address = "branch@example.com"',
        ...pop3(lan, 'branch'),
        'allow_plaintext = true',
        '[[alias]]',
        'name = "local"',
        'address = "local@example.com"',
        ...pop3('127.0.0.1', 'local'),
      ].join('\n'),
    ),
  );
  const log = capturingLogger();
  const { store, stop } = await startGatewayOn(configFile, { logger: log.logger });
  t.after(stop);

  const warning = `alias branch: logging in to ${lan}:${dovecot.pop3Port} without TLS (security = "none", allow_plaintext = true): the password crosses the network in clear`;
  const warnings = () => log.entries.filter((e) => e.msg === warning);
  const deadline = Date.now() + 20_000;
  // POP3 connects for each poll: a second warning shows it is each connection, not once at start.
  while (warnings().length < 2 || (await store.listMessages({ alias: 'branch' })).length === 0) {
    assert.ok(Date.now() < deadline, `two connections warned and the message stored; log: ${log.entries.map((e) => e.msg).join(' | ')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const [first] = warnings();
  assert.equal(first!.level, 40, 'a warning');
  assert.equal(first!.alias, 'branch');
  assert.equal((await store.listMessages({ alias: 'branch' }))[0]!.subject, 'Over the office network');
  assert.deepEqual(
    log.entries.filter((e) => e.alias === 'local' && /without TLS/.test(String(e.msg))),
    [],
    'no warning for a loopback server: nothing crosses a network',
  );
});

/** The UTC day DAYS from today, "YYYY-MM-DD". */
const dayFromToday = (days: number) => new Date(Date.now() + days * 86_400_000).toISOString().slice(0, 10);

test('client_secret_expires: from 30 days before (and after), a warning in the log, aliases list, the console and a metric', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const soon = dayFromToday(10);
  const gone = dayFromToday(-3);
  const far = dayFromToday(100);
  const app = (name: string, expires?: string) => [
    '[[oauth_app]]',
    `name = "${name}"`,
    'provider = "microsoft365"',
    'tenant_id = "contoso.example"',
    'client_id = "11111111-2222-3333-4444-555555555555"',
    'client_secret = "${APP_SECRET}"',
    'flow = "client_credentials"',
    ...(expires ? [`client_secret_expires = "${expires}"`] : []),
  ];
  const alias = (name: string, appName?: string) => [
    '[[alias]]',
    `name = "${name}"`,
    `address = "${name}@example.com"`,
    '[alias.incoming]',
    'type = "imap"',
    'host = "outlook.office365.com"',
    `user = "${name}@example.com"`,
    ...(appName ? [`oauth2 = "${appName}"`] : ['password = "${APP_SECRET}"']),
  ];
  const password = 'console-password';
  await writeFile(
    path.join(dir, 'mailgate.toml'),
    testConfigText(
      dir,
      [
        ...app('soon', soon),
        ...app('gone', gone),
        ...app('far', far),
        ...app('untracked'),
        ...alias('sales', 'soon'),
        ...alias('billing', 'gone'),
        ...alias('support', 'far'),
        ...alias('desk'),
        '[admin]',
        '[[admin.user]]',
        'name = "alice"',
        `password_hash = "${hashPassword(password)}"`,
        'role = "auditor"',
      ].join('\n'),
    ),
  );
  const configFile = path.join(dir, 'mailgate.toml');
  const env = { APP_SECRET: 'x', MAILGATE_SECRET_KEY: hexKey() };
  const saved = { ...process.env };
  Object.assign(process.env, env);
  t.after(() => {
    for (const k of Object.keys(env)) if (saved[k] === undefined) delete process.env[k];
  });
  const log = capturingLogger();
  const { gateway, stop } = await startGatewayOn(configFile, { logger: log.logger, retriever: false });
  t.after(stop);

  const soonText = `client secret of oauth_app soon expires on ${soon}: create a new secret for the app registration and set client_secret`;
  const goneText = `client secret of oauth_app gone expired on ${gone}: create a new secret for the app registration and set client_secret`;
  // At start, in the log: the two within 30 days, not the one 100 days away.
  const warned = log.entries.filter((e) => e.level === 40 && /client secret of oauth_app/.test(String(e.msg)));
  assert.deepEqual(
    warned.map((e) => [e.msg, e.days_left]),
    [
      [soonText, 10],
      [goneText, -3],
    ],
  );

  const metrics = await gateway.metrics.render();
  assert.match(metrics, /^mailgate_oauth_client_secret_expiry_days\{app="soon"\} 10$/m);
  assert.match(metrics, /^mailgate_oauth_client_secret_expiry_days\{app="gone"\} -3$/m);
  assert.match(metrics, /^mailgate_oauth_client_secret_expiry_days\{app="far"\} 100$/m);
  assert.doesNotMatch(metrics, /app="untracked"/);

  // aliases list, through the running gateway: a line under each alias whose app is concerned.
  const list = await runCli(['aliases', 'list', '--config', configFile], { env });
  assert.equal(list.code, 0, list.stderr);
  const lines = list.stdout.toString().split('\n');
  const under = (alias: string) => lines[lines.findIndex((l) => l.startsWith(alias)) + 1];
  assert.equal(under('sales'), `  warning: ${soonText}`);
  assert.equal(under('billing'), `  warning: ${goneText}`);
  assert.doesNotMatch(list.stdout.toString(), /oauth_app far|oauth_app untracked/);
  const json = JSON.parse((await runCli(['aliases', 'list', '--json', '--config', configFile], { env })).stdout.toString()) as AliasRow[];
  assert.deepEqual(
    json.map((r) => [r.name, r.warnings]),
    [
      ['sales', [soonText]],
      ['billing', [goneText]],
      ['support', undefined],
      ['desk', undefined],
    ],
  );

  // The console's aliases page, signed in as an auditor.
  const base = gateway.web!.url;
  const session = await fetch(`${base}/api/v1/session`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: 'alice', password }),
  });
  assert.equal(session.status, 200);
  const cookie = (session.headers.get('set-cookie') ?? '').split(';')[0]!;
  const page = await fetch(`${base}/aliases`, { headers: { cookie } });
  assert.equal(page.status, 200);
  const body = await page.text();
  const row = (alias: string) => body.slice(body.indexOf(`id="alias-${alias}"`), body.indexOf('</tr>', body.indexOf(`id="alias-${alias}"`)));
  assert.match(row('sales'), new RegExp(`role="note">.*warning.*${soonText.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`, 's'));
  assert.match(row('billing'), /expired on/);
  assert.doesNotMatch(row('support'), /role="note"/);
});

test('client_secret_expires must be a real day written "YYYY-MM-DD"', () => {
  const text = (value: string) =>
    `[[oauth_app]]\nname = "m365"\nprovider = "microsoft365"\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\nflow = "client_credentials"\nclient_secret_expires = ${value}\n`;
  assert.equal(loadConfigText(text('"2027-02-28"'), 'mailgate.toml', {}).oauth_app[0]!.client_secret_expires, '2027-02-28');
  for (const [value, given] of [
    ['"2027-02-30"', '"2027-02-30"'],
    ['"28/02/2027"', '"28/02/2027"'],
    ['2027-02-28', 'a date'],
  ]) {
    assert.throws(
      () => loadConfigText(text(value!), 'mailgate.toml', {}),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message === `mailgate.toml:8: oauth_app[0].client_secret_expires: expected a date in quotes, "YYYY-MM-DD", got ${given}`,
      value,
    );
  }
});

test('the client secret warning is repeated at each check (daily in the gateway), not only at start', async (t) => {
  const expires = dayFromToday(0);
  const config = loadConfigText(
    `[[oauth_app]]\nname = "m365"\nprovider = "microsoft365"\ntenant_id = "t"\nclient_id = "c"\nclient_secret = "s"\nflow = "client_credentials"\nclient_secret_expires = "${expires}"\n`,
    'mailgate.toml',
    {},
  );
  const log = capturingLogger();
  const metrics = new Metrics();
  // A check every 20 ms stands in for the day between two.
  const watch = watchClientSecrets(config, log.logger, metrics, 20);
  t.after(() => watch.stop());
  const text = `client secret of oauth_app m365 expires on ${expires}: create a new secret for the app registration and set client_secret`;
  await log.waitFor(() => log.entries.filter((e) => e.msg === text).length >= 3);
  assert.match(await metrics.render(), /^mailgate_oauth_client_secret_expiry_days\{app="m365"\} 0$/m);
});
