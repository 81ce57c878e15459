import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import https from 'node:https';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfigText } from '../gateway/config/load.js';
import { ConfigError } from '../lib/config-file/toml.js';
import type { Config } from '../gateway/config/schema.js';
import { startRetriever, type PollResult } from '../gateway/fetch/retriever.js';
import { aliasTokenProviders } from '../gateway/oauth/store.js';
import type { AliasState } from '../storage/records.js';
import { openTestStore, testStorageToml, testStoreKind } from './helpers/test-store.js';
import { ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { startOAuthServer, type TestOAuthServer } from './helpers/oauth-server.js';
import { capturingLogger, runCli } from './helpers/gateway.js';
import { cliPath, fixture, tempDir } from './helpers/paths.js';

let idp: TestOAuthServer;
let dovecot: TestDovecot;
let dir: string;
let cleanup: () => Promise<void>;
const key = randomBytes(32);
const env = { OAUTH_SECRET: '', MAILGATE_SECRET_KEY: key.toString('hex') };

before(async () => {
  await ensureDovecot();
  // `agent` is the mailbox app-only tokens open; `alice` signs in for the delegated flow.
  idp = await startOAuthServer({ appUser: 'agent', user: 'alice' });
  env.OAUTH_SECRET = idp.clientSecret;
  dovecot = await startDovecot({
    users: [
      { name: 'agent', password: 'pw-agent' },
      { name: 'alice', password: 'pw-alice' },
    ],
    oauth: { introspectionUrl: idp.introspectionUrl, caFile: fixture('tls', 'cert.pem') },
  });
  ({ dir, cleanup } = await tempDir('mailgate-oauth-retriever-'));
});

after(async () => {
  await dovecot?.stop();
  await idp?.stop();
  await cleanup?.();
});

const q = JSON.stringify;

/** A config with one `[[oauth_app]]` pointed at the local endpoint and one alias logging in with it. */
function configText(dataDir: string, flow: 'client_credentials' | 'authorization_code', alias: Record<string, string | number | boolean>): string {
  return (
    [
      `data_dir = ${q(dataDir)}`,
      '[[oauth_app]]',
      'name = "contoso"',
      'provider = "microsoft365"',
      `tenant_id = ${q(idp.tenant)}`,
      `client_id = ${q(idp.clientId)}`,
      'client_secret = "${OAUTH_SECRET}"',
      `flow = ${q(flow)}`,
      `authority = ${q(idp.authority)}`,
      `known_authorities = [${q(idp.host)}]`,
      `authority_metadata = ${q(idp.authorityMetadata)}`,
      `cloud_discovery_metadata = ${q(idp.cloudDiscoveryMetadata)}`,
      `ca_file = ${q(fixture('tls', 'cert.pem'))}`,
      '[[alias]]',
      `name = ${q(String(alias.user))}`,
      `address = "${String(alias.user)}@example.com"`,
      '[alias.incoming]',
      ...Object.entries({
        host: '127.0.0.1',
        security: 'starttls',
        ca_file: fixture('tls', 'cert.pem'),
        oauth2: 'contoso',
        poll_interval: 3600,
        reconnect_interval: 1,
        idle: false,
        ...alias,
      }).map(([k, v]) => `${k} = ${q(v)}`),
    ].join('\n') + testStorageToml(dataDir)
  );
}

/** Runs a retriever on CONFIG with the gateway's token providers until `stop`. */
async function retrieve(config: Config) {
  const store = await openTestStore(config.data_dir);
  const polls: PollResult[] = [];
  const log = capturingLogger();
  const retriever = startRetriever({
    config,
    store,
    logger: log.logger,
    stages: () => [],
    tokenProvider: aliasTokenProviders(config, store, key),
    hooks: { afterPoll: (_a, r) => polls.push(r) },
  });
  const waitFor = async <T>(what: string, get: () => Promise<T | undefined> | T | undefined, timeoutMs = 20_000): Promise<T> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = await get();
      if (v !== undefined) return v;
      if (Date.now() > deadline)
        throw new Error(
          `no ${what} in ${timeoutMs} ms; log: ${log.entries.map((e) => `${String(e.msg)} ${String((e.err as Error | undefined)?.message ?? '')}`).join(' | ')}`,
        );
      await sleep(50);
    }
  };
  return {
    store,
    polls,
    log,
    waitFor,
    async stop() {
      await retriever.stop();
      await store.close();
    },
  };
}

function signIn(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca: idp.caPem }, (res) => {
        res.resume();
        if (res.statusCode !== 302 || !res.headers.location) return reject(new Error(`authorize answered ${res.statusCode}`));
        resolve(res.headers.location);
      })
      .on('error', reject);
  });
}

const mail = (n: string) =>
  `From: c@example.net\r\nTo: support@example.com\r\nSubject: ${n}\r\nMessage-ID: <${n}-${Date.now()}@example.net>\r\n\r\nhello ${n}\r\n`;

for (const type of ['pop3', 'imap'] as const) {
  test(`client credentials over ${type}: the alias logs in with an app token Dovecot checks by introspection`, async () => {
    await dovecot.deliver('agent', mail(`cc-${type}`));
    const config = loadConfigText(
      configText(path.join(dir, `cc-${type}`), 'client_credentials', { type, port: type === 'pop3' ? dovecot.pop3Port : dovecot.imapPort, user: 'agent' }),
      path.join(dir, 'mailgate.toml'),
      env,
    );
    const before = idp.requests.length;
    const r = await retrieve(config);
    try {
      await r.waitFor('poll', () => r.polls[0]);
      assert.equal(r.polls[0]!.stored, 1);
      const [meta] = await r.store.listMessages({ alias: 'agent' });
      assert.equal(meta?.subject, `cc-${type}`);
      assert.deepEqual(await dovecot.listMessages('agent'), []);
      assert.deepEqual(
        idp.requests.slice(before).map((x) => `${x.grantType} ${x.outcome}`),
        ['client_credentials ok'],
      );
    } finally {
      await r.stop();
    }
  });
}

const delegatedDir = () => path.join(dir, 'delegated');
const delegatedConfig = () => configText(path.join(delegatedDir(), 'data'), 'authorization_code', { type: 'pop3', port: dovecot.pop3Port, user: 'alice' });

test('`mailgate oauth authorize ALIAS` stores encrypted tokens that the retriever then uses (and refreshes)', async () => {
  // Tokens inside msal's renewal window: every session refreshes, with the rotated refresh token saved.
  idp.tokenLifetimeSeconds = 2;
  const file = path.join(delegatedDir(), 'mailgate.toml');
  await (await import('node:fs/promises')).mkdir(delegatedDir(), { recursive: true });
  await writeFile(file, delegatedConfig());
  const child = spawn(process.execPath, [cliPath, 'oauth', 'authorize', 'alice', '--config', file], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', resolve);
    void exited.then((code) => reject(new Error(`exited ${code}: ${stderr}`)));
  });
  assert.match(url, /\/oauth2\/v2\.0\/authorize\?/);
  child.stdin.end((await signIn(url)) + '\n');
  assert.equal(await exited, 0, stderr);
  assert.match(stderr, /stored \(encrypted\) for alias alice/);

  const config = loadConfigText(delegatedConfig(), file, env);
  const store = await openTestStore(config.data_dir);
  const sealed = await store.readTokenCache('alice');
  await store.close();
  assert.ok(sealed && sealed.length > 100);
  for (const rt of idp.liveRefreshTokens()) assert.ok(!sealed.includes(rt), 'no refresh token in clear');

  await dovecot.deliver('alice', mail('delegated'));
  const r = await retrieve(config);
  try {
    await r.waitFor('poll', () => r.polls[0]);
    assert.equal((await r.store.listMessages({ alias: 'alice' }))[0]?.subject, 'delegated');
    assert.deepEqual(await dovecot.listMessages('alice'), []);
  } finally {
    await r.stop();
  }
  assert.ok(
    idp.requests.some((x) => x.grantType === 'refresh_token' && x.outcome === 'ok'),
    'the stored refresh token was used',
  );
});

test('aliases test on a delegated-flow alias: logs in with the stored tokens while the gateway is stopped; says why not while the store is held', async () => {
  const file = path.join(delegatedDir(), 'mailgate.toml');
  const refreshes = idp.requests.filter((x) => x.grantType === 'refresh_token' && x.outcome === 'ok').length;
  const r = await runCli(['aliases', 'test', 'alice', '--config', file], { env });
  const out = r.stdout.toString();
  assert.equal(r.code, 0, out + r.stderr);
  assert.match(out, /PASS\s+login\s+logged in as "alice" with an OAuth2 token from oauth_app "contoso"/);
  assert.match(out, /PASS\s+STAT/);
  // Tokens live 2 s here: the test refreshed, and the rotated refresh token went back to the store.
  assert.ok(idp.requests.filter((x) => x.grantType === 'refresh_token' && x.outcome === 'ok').length > refreshes);

  // The store held, as a running gateway holds it: LevelDB's lock on the data directory. A
  // PostgreSQL database is shared by design (several nodes), so nothing is held there.
  if (testStoreKind === 'leveldb') {
    const store = await openTestStore(loadConfigText(delegatedConfig(), file, env).data_dir);
    try {
      const held = await runCli(['aliases', 'test', 'alice', '--config', file], { env });
      assert.equal(held.code, 1, held.stderr);
      assert.match(held.stdout.toString(), /SKIP\s+login\s+the running gateway holds this alias's OAuth2 tokens/);
      assert.match(held.stdout.toString(), /not tested: incoming login/);
    } finally {
      await store.close();
    }
  }
  // The tokens the test saved still work for the retriever.
  const config = loadConfigText(delegatedConfig(), file, env);
  await dovecot.deliver('alice', mail('after-test'));
  const run = await retrieve(config);
  try {
    await run.waitFor('poll', () => run.polls[0]);
    assert.ok((await run.store.listMessages({ alias: 'alice' })).some((m) => m.subject === 'after-test'));
  } finally {
    await run.stop();
  }
});

test('revoked consent: the alias becomes inactive with the reason "re-authorization needed" and is not retried', async () => {
  const config = loadConfigText(delegatedConfig(), path.join(delegatedDir(), 'mailgate.toml'), env);
  idp.revokeConsent();
  const r = await retrieve(config);
  try {
    const state: AliasState = await r.waitFor('inactive alias', async () => {
      const s = await r.store.getAliasState('alice');
      return s?.status === 'inactive' ? s : undefined;
    });
    assert.match(state.reason ?? '', /^re-authorization needed/);
    assert.equal(state.lastErrorKind, 'oauth_reauthorization');
    assert.equal(state.retryAt, undefined, 'only an admin (after oauth authorize) brings it back');
    assert.match(state.lastError ?? '', /invalid_grant|AADSTS/);
  } finally {
    await r.stop();
  }
});

test('an OAuth alias without a secret key: `serve` exits 2 naming MAILGATE_SECRET_KEY and secret_key_file', async () => {
  const { dir: d, cleanup: c } = await tempDir();
  try {
    const file = path.join(d, 'mailgate.toml');
    await writeFile(
      file,
      configText(path.join(d, 'data'), 'client_credentials', { type: 'pop3', port: dovecot.pop3Port, user: 'agent' }) + '\n[smtp]\nlisten = ["127.0.0.1:0"]\n',
    );
    const result = await runCli(['serve', '--config', file], { env: { OAUTH_SECRET: 'x', MAILGATE_SECRET_KEY: '' } });
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /MAILGATE_SECRET_KEY/);
    assert.match(result.stderr, /secret_key_file/);
    assert.match(result.stderr, /"agent" uses oauth2/);
  } finally {
    await c();
  }
});

test('config: oauth2 must name a configured [[oauth_app]]; no password beside it; errors name the line and key', () => {
  const text = configText('/tmp/x', 'client_credentials', { type: 'pop3', user: 'agent', oauth2: 'fabrikam', password: 'pw' });
  assert.throws(
    () => loadConfigText(text, 'mailgate.toml', env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const lines = text.split('\n');
      const lineOf = (k: string) => lines.findIndex((l) => l.startsWith(`${k} =`)) + 1;
      assert.match(
        err.message,
        new RegExp(`mailgate.toml:${lineOf('oauth2')}: alias\\[0\\]\\.incoming\\.oauth2: expected one of the configured OAuth apps: "contoso"`),
      );
      assert.match(err.message, new RegExp(`mailgate.toml:${lineOf('password')}: alias\\[0\\]\\.incoming\\.password: expected no password with oauth2`));
      return true;
    },
  );
});
