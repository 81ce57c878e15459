/**
 * OAuth2 access tokens for SASL XOAUTH2 (IMAP, POP3, SMTP) from Microsoft 365, through msal-node.
 * Two flows: client credentials (app-only) and authorization code with refresh token
 * (delegated: an admin signs in once, `mailgate oauth authorize ALIAS`). msal's token cache is
 * persisted through a TokenCacheStore (gateway/oauth/cache.ts: encrypted at rest). Every
 * getAccessToken asks msal, which answers from its cache until the token is within its renewal
 * window (5 minutes before expiry, or the server's `refresh_in`) and then refreshes; a rotated
 * refresh token lands in the cache msal writes back, which the cache plugin saves.
 * Failures carry their kind of fetch failure (fetch/failures.ts), which alias health acts on
 * (issue 4, "Alias health").
 */
import https from 'node:https';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import * as msal from '@azure/msal-node';
import { SecretKeyError, type TokenCacheStore } from './cache.js';
import { ClassifiedError, type FetchFailureKind } from '../fetch/failures.js';

export type { TokenCacheStore } from './cache.js';

/** Scopes for client credentials: everything the app was granted on Exchange Online. */
export const DEFAULT_APP_SCOPES: readonly string[] = ['https://outlook.office365.com/.default'];
/** Scopes for the delegated flow: IMAP, POP and SMTP as the signed-in user, plus a refresh token. */
export const DEFAULT_DELEGATED_SCOPES: readonly string[] = [
  'https://outlook.office365.com/IMAP.AccessAsUser.All',
  'https://outlook.office365.com/POP.AccessAsUser.All',
  'https://outlook.office365.com/SMTP.Send',
  'offline_access',
];

/** One `[[oauth_app]]`: an app registration in a Microsoft Entra tenant. Keys as in the TOML. */
export interface OAuthApp {
  /** Name aliases use to refer to this app. */
  name: string;
  /** Identity provider; only `microsoft365` for now. */
  provider: 'microsoft365';
  /** Directory (tenant) id, a GUID, or a verified domain. */
  tenant_id: string;
  /** Application (client) id. */
  client_id: string;
  /** Client secret value (use `${ENV}` in the TOML). */
  client_secret: string;
  /** Cloud endpoint host (default `login.microsoftonline.com`; e.g. `login.microsoftonline.us` for US Government). */
  authority_host?: string | undefined;
  /** Client-credentials scopes (default `https://outlook.office365.com/.default`). */
  scopes?: string[] | undefined;
  /** Delegated-flow scopes (default IMAP.AccessAsUser.All, POP.AccessAsUser.All, SMTP.Send, offline_access on outlook.office365.com). */
  delegated_scopes?: string[] | undefined;
  /** Full authority URL, overriding `https://AUTHORITY_HOST/TENANT_ID`. For private endpoints and tests; a real deployment leaves it unset. */
  authority?: string | undefined;
  /** Hosts msal may trust as authorities without asking Microsoft (msal `knownAuthorities`). Tests only. */
  known_authorities?: string[] | undefined;
  /** OpenID configuration JSON, so msal does no discovery request (msal `authorityMetadata`). Tests only. */
  authority_metadata?: string | undefined;
  /** Instance discovery JSON (msal `cloudDiscoveryMetadata`). Tests only. */
  cloud_discovery_metadata?: string | undefined;
  /** Extra CA certificates (PEM) to trust for the token endpoint: msal then uses mailgate's own HTTPS client. Tests and private CAs only. */
  ca_pem?: string | undefined;
}

/**
 * Why a token could not be had (fetch/failures.ts says what alias health does about each):
 * `oauth_reauthorization` consent revoked, refresh token expired or revoked, or no tokens yet;
 * `oauth_client_secret` the client secret is wrong or expired, or the app is unknown;
 * `oauth_network` the identity provider could not be reached or is temporarily unavailable;
 * `oauth` anything else, including a missing or wrong secret key for the cache.
 */
export type OAuthErrorKind = Extract<FetchFailureKind, 'oauth_reauthorization' | 'oauth_client_secret' | 'oauth_network' | 'oauth'>;

/** A token failure with its kind and, when Microsoft answered, its AADSTS code. */
export class OAuthError extends ClassifiedError<OAuthErrorKind> {
  /** OAuth error code (`invalid_grant`, `invalid_client`, `network_error`, ...) when there was one. */
  readonly code: string | undefined;
  /** Entra ID's error number, e.g. `AADSTS65001`, when the answer carried one. */
  readonly aadsts: string | undefined;

  constructor(kind: OAuthErrorKind, message: string, opts: { code?: string; aadsts?: string; cause?: unknown } = {}) {
    super(kind, message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'OAuthError';
    this.code = opts.code;
    this.aadsts = opts.aadsts;
  }
}

const REAUTH_CODES = new Set([
  'invalid_grant',
  'interaction_required',
  'consent_required',
  'login_required',
  'bad_token',
  'no_tokens_found',
  'refresh_token_expired',
  'no_account_in_silent_request',
]);
const CLIENT_CODES = new Set(['invalid_client', 'unauthorized_client']);
const NETWORK_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

/** Turns whatever msal (or the cache) threw into an OAuthError with a kind and a sentence an admin can act on. */
export function oauthError(err: unknown, app: string): OAuthError {
  if (err instanceof OAuthError) return err;
  if (err instanceof SecretKeyError) return new OAuthError('oauth', `oauth_app ${app}: ${err.message}`, { cause: err });
  if (err instanceof msal.AuthError) {
    const code = err.errorCode;
    const text = (err.errorMessage || err.message).split(/\s+Trace ID:/)[0]!.trim();
    const aadsts = /AADSTS\d+/.exec(err.errorMessage)?.[0];
    const status = err instanceof msal.ServerError ? err.status : undefined;
    const extra = { code, ...(aadsts ? { aadsts } : {}), cause: err };
    if (REAUTH_CODES.has(code) || REAUTH_CODES.has(err.subError) || err instanceof msal.InteractionRequiredAuthError) {
      return new OAuthError('oauth_reauthorization', `oauth_app ${app}: re-authorization needed (${code}): ${text}`, extra);
    }
    if (CLIENT_CODES.has(code))
      return new OAuthError('oauth_client_secret', `oauth_app ${app}: the client secret or client id is not accepted (${code}): ${text}`, extra);
    if (code === 'network_error' || code === 'temporarily_unavailable' || (status !== undefined && status >= 500)) {
      return new OAuthError('oauth_network', `oauth_app ${app}: the identity provider cannot be reached or is unavailable (${code}): ${text}`, extra);
    }
    return new OAuthError('oauth', `oauth_app ${app}: token request failed (${code}): ${text}`, extra);
  }
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  if (errno && NETWORK_ERRNOS.has(errno))
    return new OAuthError('oauth_network', `oauth_app ${app}: the identity provider cannot be reached (${errno})`, { code: errno, cause: err });
  return new OAuthError('oauth', `oauth_app ${app}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/**
 * An msal network client on node:https that trusts CA (PEM) besides the system's, so a test
 * endpoint's certificate needs no process-wide NODE_EXTRA_CA_CERTS. Failures become msal's
 * `network_error` with the system error in the message.
 */
export function httpsNetworkClient(opts: { ca?: string; timeoutMs?: number } = {}): msal.INetworkModule {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  // Node replaces the default CA list when `ca` is given: keep the system's roots beside the extra CA.
  const trust = opts.ca ? [...tls.rootCertificates, opts.ca] : undefined;
  const send = <T>(method: 'GET' | 'POST', url: string, options?: msal.NetworkRequestOptions, timeout?: number) =>
    new Promise<msal.NetworkResponse<T>>((resolve, reject) => {
      const fail = (message: string) => reject(new msal.ClientAuthError('network_error', '', `Network request to ${url} failed: ${message}`));
      const req = https.request(url, { method, headers: options?.headers, ...(trust ? { ca: trust } : {}), timeout: timeout ?? timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (e) => fail(e.message));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: T;
          try {
            body = JSON.parse(text) as T;
          } catch {
            return fail(`HTTP ${res.statusCode} with a body that is not JSON`);
          }
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
          resolve({ headers, body, status: res.statusCode ?? 0 });
        });
      });
      req.on('timeout', () => {
        // Worded as a socket's own timeout; this failure settles the promise before the destroy's own error.
        fail(`ETIMEDOUT no answer within ${timeout ?? timeoutMs} ms`);
        req.destroy();
      });
      req.on('error', (e: NodeJS.ErrnoException) => fail(`${e.code ?? ''} ${e.message}`.trim()));
      if (method === 'POST') req.end(options?.body ?? '');
      else req.end();
    });
  return {
    sendGetRequestAsync: (url, options, timeout) => send('GET', url, options, timeout),
    sendPostRequestAsync: (url, options) => send('POST', url, options),
  };
}

/** msal cache plugin over a TokenCacheStore: load before each access, save when msal changed the cache (new or rotated tokens). */
export function cachePlugin(store: TokenCacheStore): msal.ICachePlugin {
  return {
    async beforeCacheAccess(ctx) {
      const saved = await store.load();
      if (saved) ctx.tokenCache.deserialize(saved);
    },
    async afterCacheAccess(ctx) {
      if (ctx.cacheHasChanged) await store.save(ctx.tokenCache.serialize());
    },
  };
}

/** What a TokenProvider needs besides the app. */
export interface TokenProviderOptions {
  /** Where msal's cache is kept (required for the delegated flow: it holds the refresh token). */
  cache?: TokenCacheStore;
  /** For the delegated flow when the cache holds several accounts: the signed-in user's name (UPN). */
  username?: string;
  /** msal network client; default: msal's own, or mailgate's HTTPS client when the app sets `ca_pem`. */
  networkClient?: msal.INetworkModule;
}

/** Gives an access token for XOAUTH2, fresh enough to use now. */
export interface TokenProvider {
  readonly flow: 'client_credentials' | 'authorization_code';
  /** Asks msal every time: a cached token while it is valid, a new one (refreshed) near expiry. Rejects with OAuthError. */
  getAccessToken(): Promise<string>;
}

function msalApp(app: OAuthApp, opts: TokenProviderOptions): msal.ConfidentialClientApplication {
  if (app.provider !== 'microsoft365') throw new OAuthError('oauth', `oauth_app ${app.name}: unknown provider ${String(app.provider)}`);
  const authority = app.authority ?? `https://${app.authority_host ?? 'login.microsoftonline.com'}/${app.tenant_id}`;
  const networkClient = opts.networkClient ?? (app.ca_pem ? httpsNetworkClient({ ca: app.ca_pem }) : undefined);
  return new msal.ConfidentialClientApplication({
    auth: {
      clientId: app.client_id,
      clientSecret: app.client_secret,
      authority,
      ...(app.known_authorities ? { knownAuthorities: app.known_authorities } : {}),
      ...(app.authority_metadata ? { authorityMetadata: app.authority_metadata } : {}),
      ...(app.cloud_discovery_metadata ? { cloudDiscoveryMetadata: app.cloud_discovery_metadata } : {}),
    },
    ...(opts.cache ? { cache: { cachePlugin: cachePlugin(opts.cache) } } : {}),
    system: {
      ...(networkClient ? { networkClient } : {}),
      // Tokens must never reach the logs.
      loggerOptions: { piiLoggingEnabled: false, logLevel: msal.LogLevel.Error, loggerCallback: () => undefined },
    },
  });
}

/** One request at a time: concurrent callers share the one in flight (no double refresh, which would burn a rotated refresh token). */
function coalesce(fn: () => Promise<string>): () => Promise<string> {
  let inFlight: Promise<string> | undefined;
  return () => {
    inFlight ??= fn().finally(() => (inFlight = undefined));
    return inFlight;
  };
}

/** Client credentials: app-only tokens (Exchange `IMAP.AccessAsApp` / `POP.AccessAsApp`). */
export class ClientCredentialsTokenProvider implements TokenProvider {
  readonly flow = 'client_credentials' as const;
  readonly #app: OAuthApp;
  readonly #msal: msal.ConfidentialClientApplication;
  readonly getAccessToken: () => Promise<string>;

  constructor(app: OAuthApp, opts: TokenProviderOptions = {}) {
    this.#app = app;
    this.#msal = msalApp(app, opts);
    this.getAccessToken = coalesce(() => this.#acquire());
  }

  async #acquire(): Promise<string> {
    let result: msal.AuthenticationResult | null;
    try {
      result = await this.#msal.acquireTokenByClientCredential({ scopes: [...(this.#app.scopes ?? DEFAULT_APP_SCOPES)] });
    } catch (err) {
      throw oauthError(err, this.#app.name);
    }
    if (!result?.accessToken) throw new OAuthError('oauth', `oauth_app ${this.#app.name}: the token endpoint gave no access token`);
    return result.accessToken;
  }
}

/** Authorization code with refresh token: tokens for a signed-in user, kept in the cache store. */
export class DelegatedTokenProvider implements TokenProvider {
  readonly flow = 'authorization_code' as const;
  readonly #app: OAuthApp;
  readonly #opts: TokenProviderOptions;
  readonly #msal: msal.ConfidentialClientApplication;
  #pending: { redirectUri: string; state: string; verifier: string } | undefined;
  readonly getAccessToken: () => Promise<string>;

  constructor(app: OAuthApp, opts: TokenProviderOptions & { cache: TokenCacheStore }) {
    this.#app = app;
    this.#opts = opts;
    this.#msal = msalApp(app, opts);
    this.getAccessToken = coalesce(() => this.#acquire());
  }

  get #scopes(): string[] {
    return [...(this.#app.delegated_scopes ?? DEFAULT_DELEGATED_SCOPES)];
  }

  /** The sign-in URL for the admin to open (with PKCE and a state this provider checks in redeemCode). */
  async authorizationUrl(redirectUri: string, loginHint?: string): Promise<string> {
    const { verifier, challenge } = await new msal.CryptoProvider().generatePkceCodes();
    const state = randomBytes(16).toString('base64url');
    this.#pending = { redirectUri, state, verifier };
    try {
      return await this.#msal.getAuthCodeUrl({
        scopes: this.#scopes,
        redirectUri,
        state,
        codeChallenge: challenge,
        codeChallengeMethod: 'S256',
        ...(loginHint ? { loginHint } : {}),
      });
    } catch (err) {
      throw oauthError(err, this.#app.name);
    }
  }

  /**
   * Takes the code from the redirect (the bare code, or the whole URL the browser landed on,
   * whose state must match), redeems it and saves the tokens. Returns the signed-in user's name.
   */
  async redeemCode(codeOrRedirect: string): Promise<{ username: string }> {
    const pending = this.#pending;
    if (!pending) throw new OAuthError('oauth', `oauth_app ${this.#app.name}: call authorizationUrl first`);
    let code = codeOrRedirect.trim();
    if (/^https?:\/\//i.test(code)) {
      const url = new URL(code);
      const error = url.searchParams.get('error');
      if (error)
        throw new OAuthError(
          error === 'access_denied' || error === 'consent_required' ? 'oauth_reauthorization' : 'oauth',
          `oauth_app ${this.#app.name}: sign-in failed: ${error}: ${url.searchParams.get('error_description') ?? ''}`,
          { code: error },
        );
      if (url.searchParams.get('state') !== pending.state)
        throw new OAuthError('oauth', `oauth_app ${this.#app.name}: the redirect's state does not match this sign-in; start again`);
      code = url.searchParams.get('code') ?? '';
    }
    if (!code) throw new OAuthError('oauth', `oauth_app ${this.#app.name}: no authorization code given`);
    try {
      const result = await this.#msal.acquireTokenByCode({ code, scopes: this.#scopes, redirectUri: pending.redirectUri, codeVerifier: pending.verifier });
      this.#pending = undefined;
      return { username: result.account?.username ?? '' };
    } catch (err) {
      throw oauthError(err, this.#app.name);
    }
  }

  async #acquire(): Promise<string> {
    try {
      const accounts = await this.#msal.getTokenCache().getAllAccounts();
      const wanted = this.#opts.username?.toLowerCase();
      const account = wanted ? accounts.find((a) => a.username.toLowerCase() === wanted) : accounts.length === 1 ? accounts[0] : undefined;
      if (!account) {
        const why =
          accounts.length === 0
            ? 'no saved tokens'
            : wanted
              ? `no saved tokens for ${wanted}`
              : `tokens for ${accounts.length} users and no username to choose`;
        throw new OAuthError('oauth_reauthorization', `oauth_app ${this.#app.name}: re-authorization needed: ${why}; run \`mailgate oauth authorize\``, {
          code: 'no_tokens_found',
        });
      }
      const result = await this.#msal.acquireTokenSilent({ account, scopes: this.#scopes });
      return result.accessToken;
    } catch (err) {
      throw oauthError(err, this.#app.name);
    }
  }
}
