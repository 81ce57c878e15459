import { Command } from 'commander';
import type { AliasConfig } from '../config/schema.js';
import type { ConnectionStep } from '../fetch/connection-test.js';
import type { AliasRow } from '../admin/api.js';
import { backfillText } from '../admin/alias-rows.js';
import { clip, commandConfig, knownAlias, UsageError, withAdminApi } from './common.js';

export type { AliasRow };

/** `mailgate aliases ...`: alias health (Cisco guide, "Changing the Status of Aliases" and "Test Connection"). */
export function aliasesCommand(): Command {
  const aliases = new Command('aliases').description('alias health: list status and failures, activate, deactivate, test connections');

  aliases
    .command('list')
    .description('list aliases with their configured and current status, failures, last error and its reason, next retry, and the progress of a backfill')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const rows = await withAdminApi(cmd, (api) => api.listAliases());
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
        const { config, file } = await commandConfig(cmd);
        const alias = knownAlias(config, name);
        if (status === 'active' && alias.status === 'inactive') {
          throw new UsageError(`alias ${name} has status = "inactive" in ${file ?? 'the configuration'}; set status = "active" there to fetch it`);
        }
        const state = await withAdminApi(cmd, (api) => api.setAliasStatus(name, status));
        // Several nodes: the node whose retriever applies it (this one or, told through the store, another).
        const where = state.node !== undefined ? `; node ${state.node} fetches its mailbox` : '';
        process.stdout.write(`alias ${name} is ${state.status}${where}${alias.incoming ? '' : ' (it has no [alias.incoming] server: nothing to fetch)'}\n`);
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
      const alias = knownAlias((await commandConfig(cmd)).config, name);
      if (!alias.incoming && !alias.outgoing) throw new UsageError(`alias ${name} has neither [alias.incoming] nor [alias.outgoing]: nothing to test`);
      // From where the gateway runs, with its secrets and tokens; or here, when it is stopped.
      const result = await withAdminApi(cmd, (api) => api.testAlias(name));
      process.stdout.write(opts.json ? JSON.stringify(result, null, 2) + '\n' : report(alias, result.steps, result.ok));
      if (!result.ok) process.exitCode = 1;
    });

  return aliases;
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
          ].join('  ') +
          '\n' +
          // On a line of their own under the alias: too long for a column, and they must be read.
          (r.warnings ?? []).map((w) => `  warning: ${w}\n`).join('') +
          (r.backfill ? `  backfill ${backfillText(r.backfill)}\n` : '') +
          (r.node !== undefined ? `  fetched by node ${r.node}\n` : ''),
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
