import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Command } from 'commander';
import type { QuarantineRecord } from '../admin/api.js';
import { clip, withAdminApi } from './common.js';

/** `mailgate quarantine ...`: attachments blocked by the attachments stage (Cisco guide, "Viewing/Restoring/Deleting Blocked Attachments"). */
export function quarantineCommand(): Command {
  const quarantine = new Command('quarantine').description('list, restore, delete and export quarantined attachments');

  quarantine
    .command('list')
    .description('list quarantined attachments, newest message first')
    .option('--message <id>', 'only the attachments of this message')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { message?: string; json?: boolean }, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const list = await api.listQuarantine(opts.message ? { messageId: opts.message } : {});
        process.stdout.write(opts.json ? JSON.stringify(list, null, 2) + '\n' : table(list));
      });
    });

  quarantine
    .command('restore')
    .description('put a quarantined attachment back into its message, byte for byte as received, and remove it from quarantine')
    .argument('<id>', 'quarantine id (as `quarantine list` shows it)')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const record = await api.restoreQuarantined(id);
        process.stdout.write(`restored "${record.fileName}" into message ${record.messageId}\n`);
      });
    });

  quarantine
    .command('delete')
    .description('delete a quarantined attachment for good (the notice in the message stays)')
    .argument('<id>', 'quarantine id')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const record = await api.deleteQuarantined(id);
        process.stdout.write(`deleted "${record.fileName}" (${id})\n`);
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
