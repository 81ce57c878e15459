import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import https from 'node:https';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pop3Client } from '../gateway/fetch/pop3/client.js';
import { Pop3Error } from '../gateway/fetch/pop3/errors.js';
import { ClientCredentialsTokenProvider, DelegatedTokenProvider, OAuthError, type OAuthApp } from '../gateway/oauth/tokens.js';
import { encryptedCacheStore, loadSecretKey, SecretKeyError } from '../gateway/oauth/cache.js';
import { ensureDovecot, startDovecot, type TestDovecot } from './helpers/dovecot.js';
import { startOAuthServer, type TestOAuthServer } from './helpers/oauth-server.js';
import { fixture, tempDir } from './helpers/paths.js';

const REDIRECT = 'http://localhost:8400/oauth/callback';

let idp: TestOAuthServer;
let dovecot: TestDovecot;
let dir: string;
let cleanup: () => Promise<void>;

before(async () => {
  await ensureDovecot();
  // `agent` is the mailbox the app-only token opens; `alice` signs in for the delegated flow.
  idp = await startOAuthServer({ appUser: 'agent', user: 'alice' });
  // Dovecot 2.3's oauth2 passdb trusts a private CA only through `tls_ca_cert_file` in its own
  // args file (ssl_client_ca_file is not used for introspection).
  dovecot = await startDovecot({
    users: [
      { name: 'agent', password: 'pw-agent' },
      { name: 'alice', password: 'pw-alice' },
    ],
    oauth: { introspectionUrl: idp.introspectionUrl, caFile: fixture('tls', 'cert.pem') },
  });
  ({ dir, cleanup } = await tempDir('mailgate-oauth-'));
});

after(async () => {
  await dovecot?.stop();
  await idp?.stop();
  await cleanup?.();
});

/** The app as a config would give it, pointed at SERVER through the authority overrides (RECIPES.md). */
function appFor(server: TestOAuthServer, extra: Partial<OAuthApp> = {}): OAuthApp {
  return {
    name: 'contoso',
    provider: 'microsoft365',
    tenant_id: server.tenant,
    client_id: server.clientId,
    client_secret: server.clientSecret,
    authority: server.authority,
    known_authorities: [server.host],
    authority_metadata: server.authorityMetadata,
    cloud_discovery_metadata: server.cloudDiscoveryMetadata,
    ca_pem: server.caPem,
    ...extra,
  };
}

/** Opens the sign-in URL as a browser would; the test provider signs the user in at once and redirects with a code. */
function signIn(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca }, (res) => {
        res.resume();
        if (res.statusCode !== 302 || !res.headers.location) return reject(new Error(`authorize answered ${res.statusCode}`));
        resolve(res.headers.location);
      })
      .on('error', reject);
  });
}

async function pop3Login(user: string, token: string, localAddress?: string): Promise<number> {
  const client = await Pop3Client.connect({
    host: '127.0.0.1',
    port: dovecot.pop3sPort,
    security: 'tls',
    tls: { ca: dovecot.certPem },
    connectTimeoutMs: 10_000,
    commandTimeoutMs: 10_000,
    ...(localAddress ? { localAddress } : {}),
  });
  try {
    await client.authXoauth2(user, token);
    const { count } = await client.stat();
    await client.quit();
    return count;
  } finally {
    client.close();
  }
}

async function rejectsWithKind(promise: Promise<unknown>, kind: OAuthError['kind']): Promise<OAuthError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof OAuthError, `expected an OAuthError, got ${String(err)}`);
    assert.equal(err.kind, kind, err.message);
    return err;
  }
  assert.fail(`expected an OAuthError of kind ${kind}`);
}

/** A fresh delegated provider over the encrypted cache FILE, signed in. */
async function authorized(server: TestOAuthServer, file: string, key: Buffer): Promise<DelegatedTokenProvider> {
  const provider = new DelegatedTokenProvider(appFor(server), { cache: encryptedCacheStore(file, key, 'contoso/support') });
  const url = await provider.authorizationUrl(REDIRECT);
  const { username } = await provider.redeemCode(await signIn(url, server.caPem));
  assert.equal(username, `${server.user}@contoso.example`);
  return provider;
}

test('client credentials: msal gets an app token from the local endpoint and Dovecot lets it in over XOAUTH2', async () => {
  await dovecot.deliver('agent', 'Subject: app\r\n\r\nhello\r\n');
  const provider = new ClientCredentialsTokenProvider(appFor(idp));
  const before = idp.requests.length;
  const token = await provider.getAccessToken();
  assert.ok(token.length > 600, 'a JWT-sized token');
  assert.equal(await pop3Login('agent', token), 1);
  // Valid and outside msal's renewal window: the cached token comes back, nothing is asked.
  assert.equal(await provider.getAccessToken(), token);
  assert.deepEqual(
    idp.requests.slice(before).map((r) => r.grantType),
    ['client_credentials'],
  );
});

test('a refused token fails the POP3 login: Dovecot really asks the introspection endpoint', async () => {
  await assert.rejects(
    pop3Login('agent', 'eyJ.not-issued.' + 'x'.repeat(700), '127.0.0.21'),
    (err: unknown) => err instanceof Pop3Error && err.kind === 'auth',
  );
});

test('authorization code: tokens saved encrypted, reused by a new provider, refreshed after expiry with the rotated refresh token saved', async () => {
  idp.tokenLifetimeSeconds = 2;
  const key = randomBytes(32);
  const file = path.join(dir, 'delegated.cache');
  const first = await authorized(idp, file, key);
  const firstToken = await first.getAccessToken();
  assert.equal(await pop3Login('alice', firstToken), 0);

  const issued = idp.requests.filter((r) => r.refreshTokenIssued).map((r) => r.refreshTokenIssued!);
  const saved = await readFile(file);
  for (const secret of [...issued, firstToken]) assert.ok(!saved.includes(secret), 'no token is in the file in clear');
  assert.ok(!saved.includes('RefreshToken') && !saved.includes('secret'), 'not even the cache structure is readable');
  const cleartext = await encryptedCacheStore(file, key, 'contoso/support').load();
  assert.ok(cleartext?.includes(issued.at(-1)!), 'the newest refresh token is what was saved');

  // A new process: a new provider from the saved cache, no code.
  const codesBefore = idp.requests.filter((r) => r.grantType === 'authorization_code').length;
  const second = new DelegatedTokenProvider(appFor(idp), { cache: encryptedCacheStore(file, key, 'contoso/support') });
  const secondToken = await second.getAccessToken();
  assert.equal(await pop3Login('alice', secondToken), 0);

  await sleep(2500);
  await assert.rejects(
    pop3Login('alice', firstToken, '127.0.0.22'),
    (err: unknown) => err instanceof Pop3Error && err.kind === 'auth',
    'an expired token is refused',
  );
  const refreshesBefore = idp.requests.filter((r) => r.grantType === 'refresh_token').length;
  const fresh = await second.getAccessToken();
  assert.notEqual(fresh, firstToken);
  assert.notEqual(fresh, secondToken);
  assert.ok(idp.requests.filter((r) => r.grantType === 'refresh_token').length > refreshesBefore, 'the fresh token came by refresh');
  assert.equal(idp.requests.filter((r) => r.grantType === 'authorization_code').length, codesBefore, 'no new code was needed');
  assert.equal(await pop3Login('alice', fresh), 0);

  // Rotation: only the newest refresh token is alive, and it is the one on disk.
  const live = idp.liveRefreshTokens();
  assert.equal(live.length, 1);
  const after = await encryptedCacheStore(file, key, 'contoso/support').load();
  assert.ok(after?.includes(live[0]!), 'the rotated refresh token was saved');
  for (const old of issued) assert.ok(!after?.includes(old), 'the spent refresh tokens are gone from the cache');
  idp.tokenLifetimeSeconds = 3600;
});

test("a token inside msal's five-minute renewal window is refreshed before it expires; concurrent callers share one refresh", async (t) => {
  const server = await startOAuthServer({ user: 'alice', tokenLifetimeSeconds: 200 });
  t.after(() => server.stop());
  const provider = await authorized(server, path.join(dir, 'window.cache'), randomBytes(32));
  const first = await provider.getAccessToken();
  const refreshes = () => server.requests.filter((r) => r.grantType === 'refresh_token').length;
  const before = refreshes();
  const [a, b] = await Promise.all([provider.getAccessToken(), provider.getAccessToken()]);
  assert.equal(a, b);
  assert.notEqual(a, first, 'a 200 s token is renewed at once: it is within 300 s of expiry');
  assert.equal(refreshes(), before + 1, 'one refresh for both callers, so no rotated refresh token is spent twice');
  assert.equal(server.liveRefreshTokens().length, 1);
});

test('revoked consent is oauth_reauthorization; signing in again fixes it', async (t) => {
  const server = await startOAuthServer({ user: 'alice', tokenLifetimeSeconds: 1 });
  t.after(() => server.stop());
  const key = randomBytes(32);
  const file = path.join(dir, 'revoked.cache');
  const provider = await authorized(server, file, key);
  await provider.getAccessToken();
  server.revokeConsent();
  await sleep(1200);
  const err = await rejectsWithKind(provider.getAccessToken(), 'oauth_reauthorization');
  assert.equal(err.code, 'invalid_grant');
  assert.equal(err.aadsts, 'AADSTS65001');
  assert.match(err.message, /re-authorization needed/);
  assert.doesNotMatch(err.message, /Trace ID/);

  const again = await authorized(server, file, key);
  assert.ok(await again.getAccessToken());
});

test('no saved tokens is oauth_reauthorization', async () => {
  const provider = new DelegatedTokenProvider(appFor(idp), { cache: encryptedCacheStore(path.join(dir, 'never.cache'), randomBytes(32)) });
  await rejectsWithKind(provider.getAccessToken(), 'oauth_reauthorization');
});

test('a wrong or expired client secret is oauth_client_secret', async (t) => {
  const wrong = new ClientCredentialsTokenProvider(appFor(idp, { client_secret: 'not-the-secret' }));
  const err = await rejectsWithKind(wrong.getAccessToken(), 'oauth_client_secret');
  assert.equal(err.aadsts, 'AADSTS7000215');

  const server = await startOAuthServer({ user: 'alice', tokenLifetimeSeconds: 1 });
  t.after(() => server.stop());
  const provider = await authorized(server, path.join(dir, 'expired-secret.cache'), randomBytes(32));
  server.expireSecret();
  await sleep(1200);
  const expired = await rejectsWithKind(provider.getAccessToken(), 'oauth_client_secret');
  assert.equal(expired.aadsts, 'AADSTS7000222');
});

test('an identity provider that cannot be reached is network', async () => {
  const server = await startOAuthServer();
  const app = appFor(server);
  await server.stop();
  const err = await rejectsWithKind(new ClientCredentialsTokenProvider(app).getAccessToken(), 'oauth_network');
  assert.match(err.message, /ECONNREFUSED/);
});

test('without a secret key the cache is neither read nor written, with an error that says what to set', async () => {
  const file = path.join(dir, 'nokey.cache');
  const store = encryptedCacheStore(file, undefined);
  await assert.rejects(store.save('{}'), (err: unknown) => err instanceof SecretKeyError && /MAILGATE_SECRET_KEY/.test(err.message));
  await assert.rejects(store.load(), SecretKeyError);
  const provider = new DelegatedTokenProvider(appFor(idp), { cache: store });
  await assert.rejects(
    provider
      .authorizationUrl(REDIRECT)
      .then((url) => signIn(url, idp.caPem))
      .then((u) => provider.redeemCode(u)),
    (err: unknown) => err instanceof OAuthError && err.kind === 'oauth' && /MAILGATE_SECRET_KEY/.test(err.message),
  );

  await assert.rejects(loadSecretKey({ env: {} }), /MAILGATE_SECRET_KEY/);
  await assert.rejects(loadSecretKey({ env: { MAILGATE_SECRET_KEY: 'abcd' } }), /32 bytes/);
  const hex = randomBytes(32).toString('hex');
  assert.equal((await loadSecretKey({ env: { MAILGATE_SECRET_KEY: hex } })).toString('hex'), hex);
  const b64 = Buffer.from(hex, 'hex').toString('base64');
  assert.equal((await loadSecretKey({ env: { MAILGATE_SECRET_KEY: b64 } })).toString('hex'), hex);

  // A different key does not open the cache, and says so.
  const sealed = encryptedCacheStore(path.join(dir, 'keyed.cache'), randomBytes(32));
  await sealed.save('{"RefreshToken":{}}');
  await assert.rejects(encryptedCacheStore(path.join(dir, 'keyed.cache'), randomBytes(32)).load(), /does not decrypt with this secret key/);
});
