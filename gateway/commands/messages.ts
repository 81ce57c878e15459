import { pipeline } from 'node:stream/promises';
import { Command } from 'commander';
import type { MessageMeta } from '../../storage/message-meta.js';
import { clip, commandConfig, knownAlias, parsePositive, parseSince, withStoreReader } from './common.js';

export function messagesCommand(): Command {
  const messages = new Command('messages').description('list and read stored messages');

  messages
    .command('list')
    .description('list stored messages, newest first')
    .option('--alias <name>', 'only messages for this alias')
    .option('--tag <tag>', 'only messages with this tag: exception-queue (bounces and auto-replies), email-permanent-undeliverable, email-temporary-undeliverable, oversize, wrapped...')
    .option('--since <time>', 'only messages received since this time (ISO 8601, or an age like 2h, 7d)')
    .option('--limit <n>', 'at most this many messages', '100')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { alias?: string; tag?: string; since?: string; limit: string; json?: boolean }, cmd: Command) => {
      const limit = parsePositive('--limit')(opts.limit);
      const since = opts.since ? parseSince(opts.since) : undefined;
      // A mistyped alias name would list nothing, which reads as "no mail for it".
      if (opts.alias !== undefined) knownAlias(commandConfig(cmd).config, opts.alias);
      await withStoreReader(cmd, async (store) => {
        const list = await store.listMessages({
          ...(opts.alias !== undefined ? { alias: opts.alias } : {}),
          ...(opts.tag !== undefined ? { tag: opts.tag } : {}),
          ...(since ? { since } : {}),
          limit,
        });
        process.stdout.write(opts.json ? JSON.stringify(list, null, 2) + '\n' : table(list));
      });
    });

  messages
    .command('show')
    .description("show a stored message's metadata")
    .argument('<id>', 'message id')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
      await withStoreReader(cmd, async (store) => {
        const meta = await store.getMessage(id);
        if (!meta) throw new Error(`no message with id ${id}`);
        process.stdout.write(opts.json ? JSON.stringify(meta, null, 2) + '\n' : describe(meta));
      });
    });

  messages
    .command('raw')
    .description('write the stored bytes of a message to stdout')
    .argument('<id>', 'message id')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withStoreReader(cmd, (store) => pipeline(store.openRaw(id), process.stdout, { end: false }));
    });

  return messages;
}


function table(list: MessageMeta[]): string {
  if (list.length === 0) return '';
  const head = `${'ID'.padEnd(26)}  ${'RECEIVED'.padEnd(20)}  ${'SIZE'.padStart(9)}  ${'SOURCE'.padEnd(14)}  ${'FROM'.padEnd(30)}  SUBJECT\n`;
  return (
    head +
    list
      .map((m) =>
        [
          m.id,
          m.receivedAt.slice(0, 19).replace('T', ' ').padEnd(20),
          String(m.size).padStart(9),
          clip(m.source.alias ? `${m.source.kind}:${m.source.alias}` : m.source.kind, 14),
          clip(m.from ?? m.envelope.mailFrom, 30),
          (m.subject ?? '').replace(/\s+/g, ' '),
        ].join('  ') + '\n',
      )
      .join('')
  );
}

function describe(m: MessageMeta): string {
  const lines: [string, string | undefined][] = [
    ['id', m.id],
    ['received', m.receivedAt],
    ['source', [m.source.kind, m.source.alias && `alias ${m.source.alias}`, m.source.remoteAddress && `from ${m.source.remoteAddress}`].filter(Boolean).join(', ')],
    ['size', `${m.size} bytes (received ${m.receivedSize})`],
    ['envelope from', m.envelope.mailFrom || '<>'],
    ['envelope to', m.envelope.rcptTo.join(', ')],
    ['from', m.from],
    ['to', m.to.join(', ')],
    ['cc', m.cc.join(', ') || undefined],
    ['subject', m.subject],
    ['message-id', m.messageId],
    ['attachments', m._AttachmentFileNames.join(', ') || undefined],
    ['tags', m.tags.join(', ') || undefined],
  ];
  const d = m.delivery;
  if (m.direction) lines.push(['direction', m.direction]);
  if (d) {
    lines.push(['delivery', `${d.status.replace('_', ' ')} ${d.finishedAt} after ${d.attempts} attempt(s)${d.dsnId ? `; notification ${d.dsnId} sent back` : ''}${d.reason ? `; ${d.reason}` : ''}`]);
    for (const r of d.recipients) {
      lines.push(['  ' + r.address, `${r.status}${r.route ? ` via ${r.route}` : ''}${r.last ? `; last: ${r.last.message}` : ''}`]);
    }
  }
  let out = lines.filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => `${(k + ':').padEnd(15)}${v}\n`).join('');
  for (const [stage, finding] of Object.entries(m.findings)) out += `${(stage + ':').padEnd(15)}${JSON.stringify(finding)}\n`;
  return out;
}
