/**
 * OAuth2 for the aliases of a running gateway: one TokenProvider per alias that sets
 * `[alias.incoming] oauth2`, its msal cache kept encrypted in the store (its token cache), and
 * the secret key loaded at start only when some alias needs it.
 */
import { readFileSync } from 'node:fs';
import type { AliasConfig, Config, OAuthAppConfig } from '../config/schema.js';
import { ConfigError } from '../../lib/config-file/toml.js';
import type { Store } from '../../storage/store.js';
import { ClientCredentialsTokenProvider, DelegatedTokenProvider, type OAuthApp, type TokenProvider } from './tokens.js';
import { encryptedCacheStore, loadSecretKey, SecretKeyError, type TokenCacheStore } from './cache.js';

/** The `[[oauth_app]]` an alias logs in with (fetching or sending: the same app, see invariants.ts), or undefined when it uses a password. */
export function oauthAppOf(config: Config, alias: AliasConfig): OAuthAppConfig | undefined {
  const name = alias.incoming?.oauth2 ?? alias.outgoing?.oauth2;
  return name === undefined ? undefined : config.oauth_app.find((a) => a.name === name);
}

/** The app as gateway/oauth/tokens.ts takes it: the CA file read, the scopes put where the flow looks for them. */
export function oauthApp(app: OAuthAppConfig): OAuthApp {
  const { flow, scopes, ca_file, ...rest } = app;
  return {
    ...rest,
    ...(scopes ? (flow === 'client_credentials' ? { scopes } : { delegated_scopes: scopes }) : {}),
    ...(ca_file ? { ca_pem: readFileSync(ca_file, 'utf8') } : {}),
  };
}

/** The alias's token cache, sealed under KEY in the store; the app and alias names are authenticated with it. */
export function aliasTokenCache(store: Store, app: string, alias: string, key: Buffer | undefined): TokenCacheStore {
  return encryptedCacheStore(
    {
      read: () => store.readTokenCache(alias),
      // A durable write: a rotated refresh token lost in a crash would need a new sign-in.
      write: (bytes) => store.writeTokenCache(alias, bytes),
    },
    key,
    `mailgate-oauth/${app}/${alias}`,
  );
}

/**
 * The secret key, when some alias uses OAuth2; undefined when none does (no key is needed).
 * A missing or malformed key is a configuration error (exit 2) naming MAILGATE_SECRET_KEY and
 * secret_key_file, and the aliases that need it.
 */
export async function gatewaySecretKey(config: Config, env: NodeJS.ProcessEnv = process.env): Promise<Buffer | undefined> {
  const users = config.alias.filter((a) => oauthAppOf(config, a) !== undefined).map((a) => a.name);
  if (users.length === 0) return undefined;
  try {
    return await loadSecretKey({ env, ...(config.secret_key_file ? { keyFile: config.secret_key_file } : {}) });
  } catch (err) {
    if (!(err instanceof SecretKeyError)) throw err;
    const fromEnv = Boolean(env.MAILGATE_SECRET_KEY?.trim());
    const key = fromEnv || !config.secret_key_file ? 'MAILGATE_SECRET_KEY' : 'secret_key_file';
    const why = `alias${users.length > 1 ? 'es' : ''} ${users.map((u) => JSON.stringify(u)).join(', ')} use${users.length > 1 ? '' : 's'} oauth2: ${err.message}`;
    const hint = fromEnv || config.secret_key_file ? '' : ' (set MAILGATE_SECRET_KEY in the environment, or secret_key_file in the configuration)';
    throw new ConfigError([
      {
        file: key === 'secret_key_file' ? config.secret_key_file! : 'environment',
        key,
        expected: 'a 32-byte secret key',
        given: fromEnv || config.secret_key_file ? 'an unusable key' : 'nothing',
        message: why + hint,
      },
    ]);
  }
}

/**
 * The token source of ALIAS when it logs in with OAuth2, the one way the gateway and
 * `mailgate aliases test` make it: client credentials need nothing kept; the delegated flow
 * reads and writes its tokens through CACHE (undefined: it cannot be had here, so none).
 */
export function aliasTokenProvider(config: Config, alias: AliasConfig, cache?: (app: OAuthAppConfig) => TokenCacheStore): TokenProvider | undefined {
  const app = oauthAppOf(config, alias);
  if (!app) return undefined;
  if (app.flow === 'client_credentials') return new ClientCredentialsTokenProvider(oauthApp(app));
  // Each alias has its own cache, holding the one account `oauth authorize` signed in (whose UPN
  // need not be the IMAP/POP3 login name): no username to choose by.
  return cache ? new DelegatedTokenProvider(oauthApp(app), { cache: cache(app) }) : undefined;
}

/**
 * One TokenProvider per OAuth alias, made on first use and kept (so the client-credentials
 * token msal holds in memory is reused between sessions). The delegated flow's cache, with the
 * refresh token, is in the store; client credentials need no persisted state.
 */
export function aliasTokenProviders(config: Config, store: Store, key: Buffer | undefined): (alias: AliasConfig) => TokenProvider | undefined {
  const made = new Map<string, TokenProvider>();
  return (alias) => {
    let provider = made.get(alias.name);
    if (!provider) {
      provider = aliasTokenProvider(config, alias, (app) => aliasTokenCache(store, app.name, alias.name, key));
      if (provider) made.set(alias.name, provider);
    }
    return provider;
  };
}
