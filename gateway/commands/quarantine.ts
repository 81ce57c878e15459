import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Command } from 'commander';
import type { AdminApi, QuarantineBulkResult, QuarantineQuery, QuarantineRecord } from '../admin/api.js';
import { clip, parseSince, UsageError, withAdminApi } from './common.js';

/** `mailgate quarantine ...`: attachments blocked by the attachments stage (Cisco guide, "Viewing/Restoring/Deleting Blocked Attachments"). */
export function quarantineCommand(): Command {
  const quarantine = new Command('quarantine').description('list, restore, delete, purge and export quarantined attachments');

  quarantine
    .command('list')
    .description('list quarantined attachments, newest message first')
    .option('--message <id>', 'only the attachments of this message')
    .option(...RULE)
    .option(...FILE)
    .option(...OLDER_THAN)
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: FilterFlags & { json?: boolean }, cmd: Command) => {
      const query = quarantineQuery(opts);
      await withAdminApi(cmd, async (api) => {
        const list = await api.listQuarantine(query);
        process.stdout.write(opts.json ? JSON.stringify(list, null, 2) + '\n' : table(list));
      });
    });

  oneOrMatching(
    quarantine,
    'restore',
    'put a quarantined attachment back into its message, byte for byte as received, and remove it from quarantine; or, with filters instead of an id, every one they match',
    'quarantine id (as `quarantine list` shows it)',
    (api, id) => api.restoreQuarantined(id),
    (r) => `restored "${r.fileName}" into message ${r.messageId}\n`,
  );

  oneOrMatching(
    quarantine,
    'delete',
    'delete a quarantined attachment for good (the notice in the message stays); or, with filters instead of an id, every one they match',
    'quarantine id',
    (api, id) => api.deleteQuarantined(id),
    (r) => `deleted "${r.fileName}" (${r.id})\n`,
  );

  quarantine
    .command('purge')
    .description(
      'delete for good every quarantined attachment quarantined before a time, as `delete --older-than` does (the notices in the messages stay); prints how many',
    )
    .requiredOption('--before <time>', 'an ISO 8601 time, or an age like 30d')
    .action(async (opts: { before: string }, cmd: Command) => {
      const before = parseSince(opts.before, '--before').toISOString();
      await withAdminApi(cmd, async (api) => {
        // The same operation as the bulk delete by age (REST: DELETE /api/v1/quarantine?older_than=T).
        const result = await api.bulkQuarantine('delete', { olderThan: before });
        printFailures(result, 'delete');
        process.stdout.write(`purged ${result.done.length} quarantined attachment(s) quarantined before ${before}\n`);
      });
    });

  quarantine
    .command('export')
    .description("write the attachment's decoded content (the file as the sender attached it, not the MIME part) to FILE")
    .argument('<id>', 'quarantine id')
    .argument('<file>', 'where to write it ("-" for stdout); an existing file is not overwritten')
    .action(async (id: string, file: string, _opts: unknown, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        // An unknown id fails here, before the file is made.
        const content = await api.exportQuarantined(id);
        if (file === '-') await pipeline(content, process.stdout, { end: false });
        else await pipeline(content, createWriteStream(file, { flags: 'wx', mode: 0o600 }));
      });
    });

  return quarantine;
}

/** The filter options of `quarantine list`, `restore` and `delete`. */
interface FilterFlags {
  message?: string;
  rule?: string;
  file?: string;
  olderThan?: string;
}

const RULE = ['--rule <text>', 'only attachments whose blocking rule contains this text, in any letter case'] as const;
const FILE = ['--file <pattern>', 'only attachments whose file name fits this pattern, in any letter case (* any characters, ? one; quote it)'] as const;
const OLDER_THAN = ['--older-than <time>', 'only attachments quarantined before this time (ISO 8601, or an age like 7d)'] as const;

const hasFilter = (opts: FilterFlags) => [opts.message, opts.rule, opts.file, opts.olderThan].some((v) => v !== undefined);

function quarantineQuery(opts: FilterFlags): QuarantineQuery {
  return {
    ...(opts.message !== undefined ? { messageId: opts.message } : {}),
    ...(opts.rule !== undefined ? { rule: opts.rule } : {}),
    ...(opts.file !== undefined ? { fileName: opts.file } : {}),
    ...(opts.olderThan !== undefined ? { olderThan: parseSince(opts.olderThan, '--older-than').toISOString() } : {}),
  };
}

/** The filters of a bulk ACTION; an id beside them is a usage error, as is nothing at all. */
function bulkQuery(action: string, id: string | undefined, opts: FilterFlags): QuarantineQuery {
  if (id !== undefined) throw new UsageError(`quarantine ${action}: give a quarantine id or filters, not both`);
  if (!hasFilter(opts)) throw new UsageError(`quarantine ${action}: give a quarantine id, or at least one of --message, --rule, --file, --older-than`);
  return quarantineQuery(opts);
}

/**
 * `quarantine ACTION [id]`: the attachment ID (ONE of it), or with filters instead every one they
 * match (the admin API's bulk ACTION); LINE is what is printed for each attachment done.
 */
function oneOrMatching(
  quarantine: Command,
  action: 'restore' | 'delete',
  description: string,
  idHelp: string,
  one: (api: AdminApi, id: string) => Promise<QuarantineRecord>,
  line: (r: QuarantineRecord) => string,
): void {
  quarantine
    .command(action)
    .description(description)
    .argument('[id]', idHelp)
    .option('--message <id>', 'every attachment of this message')
    .option(...RULE)
    .option(...FILE)
    .option(...OLDER_THAN)
    .action(async (id: string | undefined, opts: FilterFlags, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        if (id !== undefined && !hasFilter(opts)) return void process.stdout.write(line(await one(api, id)));
        printBulk(await api.bulkQuarantine(action, bulkQuery(action, id, opts)), action, line);
      });
    });
}

/** One line per attachment done on stdout, one per failure on stderr (and exit 1 if any failed). */
function printBulk(result: QuarantineBulkResult, action: string, line: (r: QuarantineRecord) => string): void {
  for (const record of result.done) process.stdout.write(line(record));
  printFailures(result, action);
  if (result.done.length === 0 && result.failed.length === 0) process.stdout.write(`nothing in quarantine matches: nothing to ${action}\n`);
}

/** One line per failure on stderr, and exit 1 if any. */
function printFailures(result: QuarantineBulkResult, action: string): void {
  for (const f of result.failed) process.stderr.write(`could not ${action} ${f.id}: ${f.message}\n`);
  if (result.failed.length > 0) process.exitCode = 1;
}

function table(list: QuarantineRecord[]): string {
  if (list.length === 0) return '';
  const head = `${'ID'.padEnd(29)}  ${'DATE'.padEnd(19)}  ${'SIZE'.padStart(9)}  ${'FILE'.padEnd(30)}  ${'MESSAGE'.padEnd(26)}  RULE\n`;
  return (
    head +
    list
      .map(
        (r) =>
          [r.id.padEnd(29), r.date.slice(0, 19).replace('T', ' '), String(r.size).padStart(9), clip(r.fileName, 30), r.messageId, r.rule].join('  ') + '\n',
      )
      .join('')
  );
}
