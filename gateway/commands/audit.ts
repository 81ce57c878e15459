import { Command } from 'commander';
import type { AuditEntry } from '../admin/api.js';
import { clip, parsePositive, parseSince, shortTime, withAdminApi } from './common.js';

/** `mailgate audit ...`: the audit log of changes made through the REST API, and of sign-ins. */
export function auditCommand(): Command {
  const audit = new Command('audit').description('the audit log: who changed what through the REST API, and who signed in');

  audit
    .command('list')
    .description('list audit entries, newest first')
    .option('--since <time>', 'only entries since this time (ISO 8601, or an age like 2h, 7d)')
    .option('--limit <n>', 'at most this many entries', '100')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { since?: string; limit: string; json?: boolean }, cmd: Command) => {
      const limit = parsePositive('--limit')(opts.limit);
      const since = opts.since ? parseSince(opts.since) : undefined;
      await withAdminApi(cmd, async (api) => {
        const list = await api.listAudit({ ...(since ? { since: since.toISOString() } : {}), limit });
        process.stdout.write(opts.json ? JSON.stringify(list, null, 2) + '\n' : table(list));
      });
    });

  return audit;
}

function table(list: AuditEntry[]): string {
  return list
    .map((e) => [shortTime(e.at), clip(e.who, 24), e.action.padEnd(12), clip(e.target ?? '-', 30), e.from.padEnd(15), e.outcome].join('  ') + '\n')
    .join('');
}
