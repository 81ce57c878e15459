import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Command } from 'commander';
import type { Store } from '../../storage/store.js';
import type { QuarantineRecord } from '../../storage/records.js';
import { openQuarantinedContent, restoreQuarantined } from '../../policy/attachments/quarantine.js';
import { ControlClient, type QuarantineAccess, type StoreReader } from '../admin/control.js';
import { clip, withStoreReader } from './common.js';

/** `mailgate quarantine ...`: attachments blocked by the attachments stage (Cisco guide, "Viewing/Restoring/Deleting Blocked Attachments"). */
export function quarantineCommand(): Command {
  const quarantine = new Command('quarantine').description('list, restore, delete and export quarantined attachments');

  quarantine
    .command('list')
    .description('list quarantined attachments, newest message first')
    .option('--message <id>', 'only the attachments of this message')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { message?: string; json?: boolean }, cmd: Command) => {
      await withQuarantine(cmd, async (q) => {
        const list = await q.listQuarantine(opts.message ? { messageId: opts.message } : {});
        process.stdout.write(opts.json ? JSON.stringify(list, null, 2) + '\n' : table(list));
      });
    });

  quarantine
    .command('restore')
    .description('put a quarantined attachment back into its message, byte for byte as received, and remove it from quarantine')
    .argument('<id>', 'quarantine id (as `quarantine list` shows it)')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withQuarantine(cmd, async (q) => {
        const record = await q.restoreQuarantined(id);
        process.stdout.write(`restored "${record.fileName}" into message ${record.messageId}\n`);
      });
    });

  quarantine
    .command('delete')
    .description('delete a quarantined attachment for good (the notice in the message stays)')
    .argument('<id>', 'quarantine id')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withQuarantine(cmd, async (q) => {
        const record = await q.deleteQuarantined(id);
        process.stdout.write(`deleted "${record.fileName}" (${id})\n`);
      });
    });

  quarantine
    .command('export')
    .description("write the attachment's decoded content (the file as the sender attached it, not the MIME part) to FILE")
    .argument('<id>', 'quarantine id')
    .argument('<file>', 'where to write it ("-" for stdout); an existing file is not overwritten')
    .action(async (id: string, file: string, _opts: unknown, cmd: Command) => {
      await withQuarantine(cmd, async (q) => {
        if (!(await q.getQuarantined(id))) throw new Error(`no quarantined attachment with id ${id}`);
        if (file === '-') await pipeline(q.openQuarantinedContent(id), process.stdout, { end: false });
        else await pipeline(q.openQuarantinedContent(id), createWriteStream(file, { flags: 'wx', mode: 0o600 }));
      });
    });

  return quarantine;
}

function withQuarantine(cmd: Command, run: (q: QuarantineAccess) => Promise<void>): Promise<void> {
  return withStoreReader(cmd, (reader) => run(quarantineAccess(reader)));
}

/** Quarantine management on what openStoreReader gave: the running gateway, or the store itself. */
export function quarantineAccess(reader: StoreReader): QuarantineAccess {
  return reader instanceof ControlClient ? reader : direct(reader as Store);
}

/** The same operations on a store this process opened. */
function direct(store: Store): QuarantineAccess {
  return {
    listQuarantine: (opts) => store.listQuarantine(opts),
    getQuarantined: (id) => store.getQuarantined(id),
    restoreQuarantined: (id) => restoreQuarantined(store, id),
    deleteQuarantined: (id) => store.deleteQuarantined(id),
    openQuarantinedContent: (id) => openQuarantinedContent(store, id),
  };
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
