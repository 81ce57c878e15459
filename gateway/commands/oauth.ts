import { createInterface } from 'node:readline';
import { Command } from 'commander';
import { commandConfig, UsageError } from './common.js';

/** Redirect URI registered for the app ("Mobile and desktop applications" in Entra ID accepts http://localhost). */
const DEFAULT_REDIRECT = 'http://localhost';

/** `mailgate oauth ...`: OAuth2 sign-in for aliases whose app uses the authorization code flow (Cisco "Email Accounts"). */
export function oauthCommand(): Command {
  const oauth = new Command('oauth').description('OAuth2 for aliases that log in with [[oauth_app]] (Microsoft 365)');
  oauth
    .command('authorize')
    .description(
      'sign in for an alias (authorization_code flow): prints the sign-in URL, reads the code or the redirect URL, stores the tokens encrypted. The gateway must be stopped.',
    )
    .argument('<alias>', 'alias name')
    .option('--code <code>', 'the authorization code or the whole redirect URL (default: read from stdin)')
    .option('--redirect-uri <uri>', `redirect URI registered for the app (default ${DEFAULT_REDIRECT})`, DEFAULT_REDIRECT)
    .action(async (name: string, opts: { code?: string; redirectUri: string }, cmd: Command) => {
      const loaded = await commandConfig(cmd);
      const { config, file } = loaded;
      const where = file ?? 'the configuration';
      // msal loads only for this command.
      const { aliasTokenCache, gatewaySecretKey, oauthApp, oauthAppOf } = await import('../oauth/store.js');
      const { DelegatedTokenProvider } = await import('../oauth/tokens.js');
      const { requireSecrets } = await import('../config/load.js');
      const { openOwnStore } = await import('../admin/api.js');
      const { errors } = await import('../../lib/errors.js');
      const alias = config.alias.find((a) => a.name === name);
      if (!alias) throw new UsageError(`no alias named ${JSON.stringify(name)} in ${where}`);
      const app = oauthAppOf(config, alias);
      if (!app) throw new UsageError(`alias ${name} has no oauth2 (in [alias.incoming] or [alias.outgoing]) in ${where}`);
      if (app.flow !== 'authorization_code')
        throw new UsageError(`oauth_app ${app.name} uses flow = "${app.flow}": nobody signs in; only flow = "authorization_code" needs \`oauth authorize\``);
      // Redeeming the code takes the app's client secret; storing the tokens, the database's password when there is one.
      requireSecrets(loaded, [`oauth_app[${config.oauth_app.indexOf(app)}]`, 'storage']);
      const key = await gatewaySecretKey(config);
      const store = await openOwnStore(config, (cause) => errors.oauthGatewayRunning(config.data_dir, name, cause));
      try {
        const provider = new DelegatedTokenProvider(oauthApp(app), { cache: aliasTokenCache(store, app.name, alias.name, key) });
        const url = await provider.authorizationUrl(opts.redirectUri, alias.incoming?.user);
        process.stderr.write(
          `Open this URL, sign in as ${alias.incoming?.user ?? 'the mailbox user'}, then paste the code or the whole URL the browser was sent to:\n`,
        );
        process.stdout.write(url + '\n');
        const answer = opts.code ?? (await firstLine());
        if (!answer) throw new UsageError('no code given (expected the code or the redirect URL on stdin, or --code)');
        const { username } = await provider.redeemCode(answer);
        process.stderr.write(
          `Tokens for ${username || 'the signed-in user'} stored (encrypted) for alias ${name}. If the alias was made inactive, run \`mailgate aliases activate ${name}\`.\n`,
        );
      } finally {
        await store.close();
      }
    });
  return oauth;
}

async function firstLine(): Promise<string> {
  const lines = createInterface({ input: process.stdin });
  try {
    for await (const line of lines) if (line.trim()) return line.trim();
    return '';
  } finally {
    lines.close();
  }
}
