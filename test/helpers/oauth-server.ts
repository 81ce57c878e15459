/**
 * A local stand-in for Microsoft's identity platform (login.microsoftonline.com), enough for
 * msal-node and Dovecot: the v2.0 token endpoint (client credentials, authorization code with
 * PKCE, refresh token with rotation), an authorize endpoint that signs the user in at once,
 * OpenID metadata, and token introspection for Dovecot's oauth2 passdb (RECIPES.md, OAuth2).
 * Errors look like Azure AD's: `{ error, error_description: "AADSTSnnnn: ...", error_codes }`.
 * HTTPS only, on 127.0.0.1 and an ephemeral port, with test/fixtures/tls (SAN IP:127.0.0.1).
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fixture } from './paths.js';

/** How to start the test identity provider. */
export interface OAuthServerOptions {
  /** Directory (tenant) id in the URL paths (default a fixed GUID). */
  tenant?: string;
  /** The registered application's client id (default a fixed GUID). */
  clientId?: string;
  /** The application's client secret (default `test-secret`). */
  clientSecret?: string;
  /** Access token lifetime in seconds (default 3600); changeable later through `tokenLifetimeSeconds`. */
  tokenLifetimeSeconds?: number;
  /** Who signs in at the authorize endpoint, and the name introspection gives delegated tokens (default `agent`). */
  user?: string;
  /** The name introspection gives app-only (client credentials) tokens (default `agent`): Exchange lets the app into mailboxes it was granted. */
  appUser?: string;
}

/** One call to the token endpoint, as tests see it. */
export interface TokenRequestRecord {
  grantType: string;
  /** `ok` or the OAuth error code answered. */
  outcome: string;
  refreshTokenIssued?: string;
}

/** The running test identity provider. */
export interface TestOAuthServer {
  port: number;
  tenant: string;
  clientId: string;
  /** `https://127.0.0.1:PORT/TENANT`: msal's `authority`. */
  authority: string;
  /** `127.0.0.1:PORT`: msal's `knownAuthorities` entry and cloud alias. */
  host: string;
  /** OpenID configuration (JSON) for msal's `authorityMetadata`. */
  authorityMetadata: string;
  /** Instance discovery answer (JSON) for msal's `cloudDiscoveryMetadata`. */
  cloudDiscoveryMetadata: string;
  /** The certificate the server presents (PEM): a client's `ca`. */
  caPem: string;
  /** `https://127.0.0.1:PORT/introspect`. Dovecot 2.3 trusts it only with `tls_ca_cert_file` in its oauth2 args file, which test/helpers/dovecot.ts does not write (yet). */
  introspectionUrl: string;
  /** Access token lifetime for tokens issued from now on. */
  tokenLifetimeSeconds: number;
  /** The current client secret; change it (or call `expireSecret`) to make the old one fail. */
  clientSecret: string;
  /** Who signs in at the authorize endpoint from now on. */
  user: string;
  /** Every token endpoint call so far, oldest first. */
  requests: TokenRequestRecord[];
  /** Refresh tokens that would still be accepted. */
  liveRefreshTokens(): string[];
  /** The user withdraws consent: every refresh token dies and refresh answers invalid_grant (AADSTS65001). Signing in again restores consent. */
  revokeConsent(): void;
  /** The client secret expires: the token endpoint answers invalid_client (AADSTS7000222). */
  expireSecret(): void;
  /** Stops the server. Safe to call twice. */
  stop(): Promise<void>;
}

interface TokenRecord {
  username: string;
  expiresAt: number;
}
interface CodeRecord {
  user: string;
  scope: string;
  redirectUri: string;
  nonce: string;
  challenge?: string;
  method?: string;
  expiresAt: number;
}
interface RefreshRecord {
  user: string;
  scope: string;
}

const OIDC_SCOPES = new Set(['openid', 'profile', 'offline_access', 'email']);

const b64url = (v: string | Buffer) => Buffer.from(v).toString('base64url');

/** Starts the provider on an ephemeral loopback port. Call `stop()` in `t.after`. */
export async function startOAuthServer(opts: OAuthServerOptions = {}): Promise<TestOAuthServer> {
  const tenant = opts.tenant ?? '72f988bf-86f1-41af-91ab-2d7cd011db47';
  const clientId = opts.clientId ?? '6731de76-14a6-49ae-97bc-6eba6914391e';
  const caPem = readFileSync(fixture('tls', 'cert.pem'), 'utf8');
  const accessTokens = new Map<string, TokenRecord>();
  const codes = new Map<string, CodeRecord>();
  const refreshTokens = new Map<string, RefreshRecord>();
  const revokedRefreshTokens = new Set<string>();
  let consented = true;
  let secretExpired = false;
  const oidForUser = (user: string) =>
    createHash('sha256')
      .update(user)
      .digest('hex')
      .slice(0, 32)
      .replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');

  let port = 0;
  const base = () => `https://127.0.0.1:${port}`;
  const issuer = () => `${base()}/${tenant}/v2.0`;

  const state: TestOAuthServer = {
    port: 0,
    tenant,
    clientId,
    authority: '',
    host: '',
    authorityMetadata: '',
    cloudDiscoveryMetadata: '',
    caPem,
    introspectionUrl: '',
    tokenLifetimeSeconds: opts.tokenLifetimeSeconds ?? 3600,
    clientSecret: opts.clientSecret ?? 'test-secret',
    user: opts.user ?? 'agent',
    requests: [],
    liveRefreshTokens: () => [...refreshTokens.keys()],
    revokeConsent() {
      consented = false;
      for (const rt of refreshTokens.keys()) revokedRefreshTokens.add(rt);
      refreshTokens.clear();
    },
    expireSecret() {
      secretExpired = true;
    },
    stop: async () => undefined,
  };

  /** A JWT-shaped access token of realistic length (Microsoft's run past a thousand characters). */
  function issueAccessToken(username: string, scope: string, appOnly: boolean): { token: string; expiresIn: number } {
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = state.tokenLifetimeSeconds;
    const claims = {
      aud: 'https://outlook.office365.com',
      iss: `https://sts.windows.net/${tenant}/`,
      iat: now,
      nbf: now,
      exp: now + expiresIn,
      appid: clientId,
      tid: tenant,
      [appOnly ? 'roles' : 'scp']: scope,
      upn: username,
      uti: randomUUID(),
    };
    const token = `${b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', kid: 'test' }))}.${b64url(JSON.stringify(claims))}.${randomBytes(256).toString('base64url')}`;
    accessTokens.set(token, { username, expiresAt: Date.now() + expiresIn * 1000 });
    return { token, expiresIn };
  }

  function idToken(user: string, nonce: string): string {
    const now = Math.floor(Date.now() / 1000);
    const claims: Record<string, unknown> = {
      aud: clientId,
      iss: issuer(),
      iat: now,
      nbf: now,
      exp: now + 3600,
      name: user,
      preferred_username: `${user}@contoso.example`,
      oid: oidForUser(user),
      sub: oidForUser(user),
      tid: tenant,
      ver: '2.0',
    };
    if (nonce) claims.nonce = nonce;
    // msal-node reads the claims and does not check the signature (the token came over TLS from the token endpoint).
    return `${b64url(JSON.stringify({ typ: 'JWT', alg: 'none' }))}.${b64url(JSON.stringify(claims))}.`;
  }

  function aadError(res: ServerResponse, status: number, error: string, code: number, text: string, suberror?: string): void {
    const traceId = randomUUID();
    const correlationId = randomUUID();
    const timestamp = new Date()
      .toISOString()
      .replace('T', ' ')
      .replace(/\.\d+Z$/, 'Z');
    json(res, status, {
      error,
      error_description: `AADSTS${code}: ${text} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${timestamp}`,
      error_codes: [code],
      timestamp,
      trace_id: traceId,
      correlation_id: correlationId,
      ...(suberror ? { suberror } : {}),
    });
  }

  function token(form: URLSearchParams, res: ServerResponse): void {
    const grantType = form.get('grant_type') ?? '';
    const record: TokenRequestRecord = { grantType, outcome: 'ok' };
    state.requests.push(record);
    const fail = (status: number, error: string, code: number, text: string, suberror?: string) => {
      record.outcome = error;
      aadError(res, status, error, code, text, suberror);
    };
    if (form.get('client_id') !== clientId)
      return fail(400, 'unauthorized_client', 700016, `Application with identifier '${form.get('client_id')}' was not found in the directory '${tenant}'.`);
    if (secretExpired)
      return fail(
        401,
        'invalid_client',
        7000222,
        `The provided client secret keys for app '${clientId}' are expired. Visit the Azure portal to create new keys for your app.`,
      );
    if (form.get('client_secret') !== state.clientSecret)
      return fail(
        401,
        'invalid_client',
        7000215,
        'Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.',
      );
    const scope = form.get('scope') ?? '';
    const resourceScope = scope
      .split(' ')
      .filter((s) => s && !OIDC_SCOPES.has(s))
      .join(' ');

    if (grantType === 'client_credentials') {
      if (!/\/\.default$/.test(scope))
        return fail(
          400,
          'invalid_scope',
          1002012,
          `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).`,
        );
      const { token: accessToken, expiresIn } = issueAccessToken(opts.appUser ?? 'agent', 'IMAP.AccessAsApp POP.AccessAsApp', true);
      return json(res, 200, { token_type: 'Bearer', expires_in: expiresIn, ext_expires_in: expiresIn, access_token: accessToken });
    }

    let user: string;
    let nonce = '';
    if (grantType === 'authorization_code') {
      const code = codes.get(form.get('code') ?? '');
      codes.delete(form.get('code') ?? '');
      if (!code || code.expiresAt < Date.now())
        return fail(
          400,
          'invalid_grant',
          70008,
          'The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.',
        );
      if (code.redirectUri !== form.get('redirect_uri'))
        return fail(400, 'invalid_grant', 50148, 'The redirect_uri does not match the one used in the authorization request.');
      if (code.challenge) {
        const verifier = form.get('code_verifier') ?? '';
        const computed = code.method === 'S256' ? createHash('sha256').update(verifier).digest('base64url') : verifier;
        if (computed !== code.challenge)
          return fail(400, 'invalid_grant', 501481, 'The Code_Verifier does not match the code_challenge supplied in the authorization request.');
      }
      user = code.user;
      nonce = code.nonce;
    } else if (grantType === 'refresh_token') {
      const rt = form.get('refresh_token') ?? '';
      const held = refreshTokens.get(rt);
      if (!held) {
        if (revokedRefreshTokens.has(rt) && !consented)
          return fail(
            400,
            'invalid_grant',
            65001,
            `The user or administrator has not consented to use the application with ID '${clientId}'. Send an interactive authorization request for this user and resource.`,
            'consent_required',
          );
        return fail(400, 'invalid_grant', 50173, 'The provided grant has expired due to it being revoked, a fresh auth token is needed.');
      }
      // Rotation: a refresh token is good once.
      refreshTokens.delete(rt);
      user = held.user;
    } else {
      return fail(400, 'unsupported_grant_type', 70003, `The app requested an unsupported grant type '${grantType}'.`);
    }

    const { token: accessToken, expiresIn } = issueAccessToken(user, resourceScope, false);
    const refreshToken = `0.rt.${randomBytes(48).toString('base64url')}`;
    refreshTokens.set(refreshToken, { user, scope: resourceScope });
    record.refreshTokenIssued = refreshToken;
    json(res, 200, {
      token_type: 'Bearer',
      scope: resourceScope,
      expires_in: expiresIn,
      ext_expires_in: expiresIn,
      access_token: accessToken,
      refresh_token: refreshToken,
      id_token: idToken(user, nonce),
      client_info: b64url(JSON.stringify({ uid: oidForUser(user), utid: tenant })),
    });
  }

  function authorize(url: URL, res: ServerResponse): void {
    const q = url.searchParams;
    const redirectUri = q.get('redirect_uri');
    if (q.get('client_id') !== clientId || !redirectUri) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('AADSTS700016: unknown application or missing redirect_uri');
      return;
    }
    // The user signs in and consents at once.
    consented = true;
    const code = `0.code.${randomBytes(32).toString('base64url')}`;
    const challenge = q.get('code_challenge');
    codes.set(code, {
      user: state.user,
      scope: q.get('scope') ?? '',
      redirectUri,
      nonce: q.get('nonce') ?? '',
      ...(challenge ? { challenge, method: q.get('code_challenge_method') ?? 'plain' } : {}),
      expiresAt: Date.now() + 10 * 60_000,
    });
    const target = new URL(redirectUri);
    target.searchParams.set('code', code);
    if (q.get('state')) target.searchParams.set('state', q.get('state')!);
    target.searchParams.set('session_state', randomUUID());
    res.writeHead(302, { location: target.toString() }).end();
  }

  function introspect(form: URLSearchParams, res: ServerResponse): void {
    const held = accessTokens.get(form.get('token') ?? '');
    if (!held || held.expiresAt <= Date.now()) return json(res, 200, { active: false });
    json(res, 200, { active: true, username: held.username, exp: Math.floor(held.expiresAt / 1000) });
  }

  const server: Server = createServer({ cert: caPem, key: readFileSync(fixture('tls', 'key.pem'), 'utf8') }, (req, res) => {
    const url = new URL(req.url ?? '/', base());
    readBody(req).then(
      (body) => {
        const form = new URLSearchParams(body);
        const p = url.pathname;
        if (req.method === 'POST' && p === `/${tenant}/oauth2/v2.0/token`) return token(form, res);
        if (req.method === 'GET' && p === `/${tenant}/oauth2/v2.0/authorize`) return authorize(url, res);
        if (req.method === 'POST' && p === '/introspect') return introspect(form, res);
        if (req.method === 'GET' && p === `/${tenant}/v2.0/.well-known/openid-configuration`) return json(res, 200, JSON.parse(state.authorityMetadata));
        json(res, 404, { error: 'not_found' });
      },
      () => res.destroy(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  port = (server.address() as AddressInfo).port;
  const host = `127.0.0.1:${port}`;
  Object.assign(state, {
    port,
    host,
    authority: `${base()}/${tenant}`,
    introspectionUrl: `${base()}/introspect`,
    authorityMetadata: JSON.stringify({
      token_endpoint: `${base()}/${tenant}/oauth2/v2.0/token`,
      authorization_endpoint: `${base()}/${tenant}/oauth2/v2.0/authorize`,
      end_session_endpoint: `${base()}/${tenant}/oauth2/v2.0/logout`,
      issuer: issuer(),
      jwks_uri: `${base()}/${tenant}/discovery/v2.0/keys`,
      token_endpoint_auth_methods_supported: ['client_secret_post'],
      response_types_supported: ['code'],
      scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    }),
    cloudDiscoveryMetadata: JSON.stringify({
      tenant_discovery_endpoint: `${base()}/${tenant}/v2.0/.well-known/openid-configuration`,
      'api-version': '1.1',
      metadata: [{ preferred_network: host, preferred_cache: host, aliases: [host] }],
    }),
  });
  let stopped = false;
  state.stop = async () => {
    if (stopped) return;
    stopped = true;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  };
  return state;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      body += c;
      if (body.length > 1_000_000) req.destroy(new Error('body too large'));
    });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}
