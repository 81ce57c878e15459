import { existsSync } from 'node:fs';
import { Command } from 'commander';
import type { AliasConfig, Config } from '../config/schema.js';
import type { Store } from '../../storage/store.js';
import { openStore } from '../../storage/open.js';
import type { AliasState, AliasStatus } from '../../storage/records.js';
import { setAliasStatusInStore } from '../fetch/alias-health.js';
import type { ConnectionStep, ConnectionTestOptions } from '../fetch/connection-test.js';
import { ControlClient, type AliasStateAccess } from '../admin/control.js';
import { clip, commandConfig, knownAlias, UsageError, withStoreReader } from './common.js';
import { requireSecrets } from '../config/load.js';

/** One row of `mailgate aliases list`. */
export interface AliasRow {
  name: string;
  address: string;
  department?: string;
  /** `type host:port` of the incoming server, when there is one. */
  incoming?: string;
  /** `status` in the configuration file. */
  configuredStatus: AliasStatus;
  /** What the retriever does now: inactive when the config says so, else the recorded health. */
  status: AliasStatus;
  failures: number;
  lastError?: string;
  lastErrorKind?: string;
  reason?: string;
  changedAt?: string;
  changedBy?: AliasState['changedBy'];
  retryAt?: string;
}

/** `mailgate aliases ...`: alias health (Cisco guide, "Changing the Status of Aliases" and "Test Connection"). */
export function aliasesCommand(): Command {
  const aliases = new Command('aliases').description('alias health: list status and failures, activate, deactivate, test connections');

  aliases
    .command('list')
    .description('list aliases with their configured and current status, failures, last error and its reason, next retry')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const { config } = commandConfig(cmd);
      // No store yet (the gateway never ran): every alias is as configured.
      const states = existsSync(config.data_dir) ? await withAliasStates(cmd, (a) => a.listAliasStates()) : {};
      const rows = config.alias.map((a) => row(a, states[a.name]));
      process.stdout.write(opts.json ? JSON.stringify(rows, null, 2) + '\n' : table(rows));
    });

  for (const status of ['active', 'inactive'] as const) {
    const verb = status === 'active' ? 'activate' : 'deactivate';
    aliases
      .command(verb)
      .description(
        status === 'active'
          ? 'make an alias active: the retriever fetches it again (at once, while the gateway runs); failures are reset'
          : 'make an alias inactive: the retriever stores no mail for it (mail for it alone stays in the mailbox; a mailbox shared with active aliases is still fetched for them); mail is still sent from it',
      )
      .argument('<name>', 'alias name')
      .action(async (name: string, _opts: unknown, cmd: Command) => {
        const { config, file } = commandConfig(cmd);
        const alias = knownAlias(config, name);
        if (status === 'active' && alias.status === 'inactive') {
          throw new UsageError(`alias ${name} has status = "inactive" in ${file ?? 'the configuration'}; set status = "active" there to fetch it`);
        }
        const state = await withAliasStates(cmd, (a) => a.setAliasStatus(name, status));
        process.stdout.write(`alias ${name} is ${state.status}${alias.incoming ? '' : ' (it has no [alias.incoming] server: nothing to fetch)'}\n`);
      });
  }

  aliases
    .command('test')
    .description(
      "test the alias's incoming server (DNS, TCP, TLS, login, folder or STAT) and outgoing server (EHLO, STARTTLS, AUTH); exit 0 only when every step passes",
    )
    .argument('<name>', 'alias name')
    .option('--json', 'print JSON instead of text')
    .action(async (name: string, opts: { json?: boolean }, cmd: Command) => {
      const loaded = commandConfig(cmd);
      const { config } = loaded;
      const alias = knownAlias(config, name);
      if (!alias.incoming && !alias.outgoing) throw new UsageError(`alias ${name} has neither [alias.incoming] nor [alias.outgoing]: nothing to test`);
      // It logs in as the retriever does: with the alias's passwords, or its OAuth app's client secret.
      const app = config.oauth_app.findIndex((a) => a.name === (alias.incoming?.oauth2 ?? alias.outgoing?.oauth2));
      requireSecrets(loaded, [`alias[${config.alias.indexOf(alias)}]`, ...(app >= 0 ? [`oauth_app[${app}]`] : [])]);
      // imapflow and friends load only for this subcommand.
      const { testAliasConnection } = await import('../fetch/connection-test.js');
      const steps = await withIncomingTokens(config, alias, (tokens) => testAliasConnection(alias, tokens));
      // A login that could not be tried (OAuth2 tokens held by the running gateway) is not a pass.
      const ok = steps.every((s) => s.result !== 'fail' && !(s.step === 'login' && s.result === 'skip'));
      process.stdout.write(opts.json ? JSON.stringify({ alias: name, ok, steps }, null, 2) + '\n' : report(alias, steps, ok));
      if (!ok) process.exitCode = 1;
    });

  return aliases;
}

/**
 * The token source the retriever would use for ALIAS's incoming login, for `aliases test`:
 * client credentials need nothing kept; the delegated flow's tokens are in the store, encrypted
 * (a refresh there rotates the refresh token, which must be saved back), so they can be had
 * only while the gateway is stopped.
 */
async function withIncomingTokens<T>(
  config: Config,
  alias: AliasConfig,
  run: (opts: Pick<ConnectionTestOptions, 'tokens' | 'noTokens'>) => Promise<T>,
): Promise<T> {
  if (alias.incoming?.oauth2 === undefined) return run({});
  // msal loads only for OAuth aliases.
  const { aliasTokenCache, aliasTokenProvider, gatewaySecretKey, oauthAppOf } = await import('../oauth/store.js');
  if (oauthAppOf(config, alias)?.flow === 'client_credentials') return run({ tokens: aliasTokenProvider(config, alias) });
  if (!existsSync(config.data_dir)) return run({ noTokens: `no tokens yet (no store at ${config.data_dir}): run \`mailgate oauth authorize ${alias.name}\`` });
  const key = await gatewaySecretKey(config);
  let store: Store;
  try {
    store = await openStore(config.data_dir);
  } catch (err) {
    if ((err as { code?: string }).code !== 'STORE_LOCKED') throw err;
    return run({
      noTokens: `the running gateway holds this alias's OAuth2 tokens (authorization_code flow): see its status and last error in \`mailgate aliases list\`, or stop the gateway to test the login here`,
    });
  }
  try {
    return await run({ tokens: aliasTokenProvider(config, alias, (app) => aliasTokenCache(store, app.name, alias.name, key)) });
  } finally {
    await store.close();
  }
}

function withAliasStates<T>(cmd: Command, run: (a: AliasStateAccess) => Promise<T>): Promise<T> {
  return withStoreReader(cmd, (reader) => run(reader instanceof ControlClient ? reader : direct(reader as Store)));
}

/** The same operations on a store this process opened (the gateway is not running). */
function direct(store: Store): AliasStateAccess {
  return {
    listAliasStates: () => store.listAliasStates(),
    setAliasStatus: (alias, status) => setAliasStatusInStore(store, alias, status),
  };
}

function row(alias: AliasConfig, state: AliasState | undefined): AliasRow {
  const r: AliasRow = {
    name: alias.name,
    address: alias.address,
    configuredStatus: alias.status,
    status: alias.status === 'inactive' ? 'inactive' : (state?.status ?? 'active'),
    failures: state?.failures ?? 0,
  };
  if (alias.department) r.department = alias.department;
  if (alias.incoming) r.incoming = `${alias.incoming.type} ${alias.incoming.host}:${alias.incoming.port}`;
  if (state) {
    for (const key of ['lastError', 'lastErrorKind', 'reason', 'changedAt', 'changedBy', 'retryAt'] as const) {
      if (state[key] !== undefined) (r as unknown as Record<string, unknown>)[key] = state[key];
    }
  }
  if (alias.status === 'inactive') r.reason = 'status = "inactive" in the configuration';
  return r;
}

function table(rows: AliasRow[]): string {
  if (rows.length === 0) return '';
  const head = `${'NAME'.padEnd(16)}  ${'ADDRESS'.padEnd(28)}  ${'DEPARTMENT'.padEnd(12)}  ${'CONFIG'.padEnd(8)}  ${'STATUS'.padEnd(8)}  ${'FAIL'.padStart(4)}  ${'RETRY AT'.padEnd(19)}  REASON (LAST ERROR)\n`;
  return (
    head +
    rows
      .map(
        (r) =>
          [
            clip(r.name, 16),
            clip(r.address, 28),
            clip(r.department ?? '-', 12),
            r.configuredStatus.padEnd(8),
            r.status.padEnd(8),
            String(r.failures).padStart(4),
            (r.retryAt ? r.retryAt.slice(0, 19).replace('T', ' ') : '-').padEnd(19),
            r.reason ? `${r.reason}${r.lastError ? ` (${r.lastError})` : ''}` : r.incoming ? '' : 'no incoming server',
          ].join('  ') + '\n',
      )
      .join('')
  );
}

function report(alias: AliasConfig, steps: ConnectionStep[], ok: boolean): string {
  const title = (server: ConnectionStep['server']) => {
    if (server === 'incoming') {
      const s = alias.incoming!;
      return `incoming ${s.type.toUpperCase()} ${s.host}:${s.port} (security ${s.security}, user ${JSON.stringify(s.user ?? '')}${s.type === 'imap' ? `, folder ${s.folder}` : ''})`;
    }
    const s = alias.outgoing!;
    return `outgoing ${s.type.toUpperCase()} ${s.host}:${s.port} (ssl ${s.ssl}${s.user ? `, user ${JSON.stringify(s.user)}` : ''})`;
  };
  let out = `alias ${alias.name} <${alias.address}>\n`;
  let current: string | undefined;
  for (const s of steps) {
    if (s.server !== current) {
      current = s.server;
      out += `${title(s.server)}\n`;
    }
    out += `  ${s.result.toUpperCase().padEnd(4)}  ${s.step.padEnd(8)}  ${s.detail}\n`;
  }
  const untested = steps.filter((s) => s.step === 'login' && s.result === 'skip' && !steps.some((f) => f.result === 'fail'));
  if (ok) return out + 'all steps passed\n';
  if (untested.length) return out + `not tested: ${untested.map((s) => `${s.server} ${s.step}`).join(', ')}\n`;
  return (
    out +
    `failed: ${steps
      .filter((s) => s.result === 'fail')
      .map((s) => `${s.server} ${s.step}`)
      .join(', ')}\n`
  );
}
