import { pipeline } from 'node:stream/promises';
import { Command } from 'commander';
import type { AttachmentDetail, ConversationMessage, MessageMeta, TimelineStep } from '../admin/api.js';
import { clip, commandConfig, knownAlias, parsePositive, parseSince, shortTime, withAdminApi } from './common.js';

/** The options of `messages list`. */
interface ListFlags {
  alias?: string;
  tag?: string;
  since?: string;
  until?: string;
  text?: string;
  attachment?: boolean;
  wrapped?: boolean;
  thread?: string;
  cursor?: string;
  limit: string;
  json?: boolean;
}

export function messagesCommand(): Command {
  const messages = new Command('messages').description('list and read stored messages');

  messages
    .command('list')
    .description('list stored messages, newest first')
    .option('--alias <name>', 'only messages for this alias')
    .option(
      '--tag <tag>',
      'only messages with this tag: exception-queue (bounces and auto-replies), email-permanent-undeliverable, email-temporary-undeliverable, oversize, wrapped...',
    )
    .option('--since <time>', 'only messages received since this time (ISO 8601, or an age like 2h, 7d)')
    .option('--until <time>', 'only messages received before this time (ISO 8601, or an age like 2h, 7d)')
    .option('--text <text>', 'only messages whose subject, From or To contains this text, in any letter case')
    .option('--attachment', 'only messages with an attachment (a blocked one counts)')
    .option('--no-attachment', 'only messages without an attachment')
    .option('--wrapped', 'only wrapping messages (the original could not be processed)')
    .option('--no-wrapped', 'only messages that are not wrapping messages')
    .option('--thread <ref>', 'only messages of this conversation: its reference, e.g. K7P2QX (as in [ref:K7P2QX])')
    .option('--cursor <cursor>', 'the next page: the cursor the page before printed on stderr')
    .option('--limit <n>', 'at most this many messages', '100')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: ListFlags, cmd: Command) => {
      const limit = parsePositive('--limit')(opts.limit);
      const since = opts.since ? parseSince(opts.since) : undefined;
      const until = opts.until ? parseSince(opts.until, '--until') : undefined;
      // A mistyped alias name would list nothing, which reads as "no mail for it".
      if (opts.alias !== undefined) knownAlias((await commandConfig(cmd)).config, opts.alias);
      await withAdminApi(cmd, async (api) => {
        const page = await api.listMessages({
          ...(opts.alias !== undefined ? { alias: opts.alias } : {}),
          ...(opts.tag !== undefined ? { tag: opts.tag } : {}),
          ...(since ? { since: since.toISOString() } : {}),
          ...(until ? { until: until.toISOString() } : {}),
          ...(opts.text !== undefined ? { text: opts.text } : {}),
          ...(opts.attachment !== undefined ? { hasAttachment: opts.attachment } : {}),
          ...(opts.wrapped !== undefined ? { wrapped: opts.wrapped } : {}),
          ...(opts.thread !== undefined ? { thread: threadRef(opts.thread) } : {}),
          ...(opts.cursor !== undefined ? { cursor: opts.cursor } : {}),
          limit,
        });
        process.stdout.write(opts.json ? JSON.stringify(page.messages, null, 2) + '\n' : table(page.messages));
        // On stderr: the list on stdout stays the same for scripts, the way on is still said.
        if (page.next !== undefined) process.stderr.write(`more messages: add --cursor ${page.next} for the next page\n`);
      });
    });

  messages
    .command('show')
    .description("show a stored message's metadata: envelope, headers, attachments with their decoded sizes, tags, what each policy stage found, delivery")
    .argument('<id>', 'message id')
    .option('--json', 'print JSON (each attachment with its decodedSize)')
    .option('--timeline', 'print only the delivery timeline: received, each stage, queued, each attempt with the reply, delivered or failed')
    .action(async (id: string, opts: { json?: boolean; timeline?: boolean }, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const { meta, attachments, timeline, conversation } = await api.showMessage(id);
        if (opts.timeline) process.stdout.write(opts.json ? JSON.stringify(timeline, null, 2) + '\n' : timelineLines(timeline));
        else
          process.stdout.write(
            opts.json
              ? JSON.stringify(meta, null, 2) + '\n'
              : describe(meta, attachments) + conversationLines(meta, conversation) + 'timeline:\n' + timelineLines(timeline),
          );
      });
    });

  messages
    .command('raw')
    .description('write the stored bytes of a message to stdout')
    .argument('<id>', 'message id')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withAdminApi(cmd, async (api) => pipeline(await api.rawMessage(id), process.stdout, { end: false }));
    });

  messages
    .command('delete')
    .description(
      'delete a stored message for good: its bytes, indexes and quarantined attachments (refused for a message still in the outbound queue: drop it first with `mailgate queue drop ID`)',
    )
    .argument('<id>', 'message id')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const meta = await api.deleteMessage(id);
        process.stdout.write(
          `deleted message ${meta.id} (${meta.size} bytes${meta.subject !== undefined ? `, "${meta.subject.replace(/\s+/g, ' ')}"` : ''})\n`,
        );
      });
    });

  return messages;
}

/** The token of `--thread`: given bare (K7P2QX) or as written in a subject ([ref:K7P2QX]). */
function threadRef(value: string): string {
  return /([2-9A-Za-z]{6})\W*$/.exec(value.trim())?.[1]?.toUpperCase() ?? value;
}

/** `conversation:` and the conversation's other messages, newest first. */
function conversationLines(meta: MessageMeta, others: readonly ConversationMessage[]): string {
  if (!meta.conversation) return '';
  const head = field('conversation', [`${meta.conversation}${meta.inReplyTo ? `, answering ${meta.inReplyTo}` : ''}`]);
  const lines = others.map(
    (m) =>
      `${m.id}  ${m.receivedAt.slice(0, 19).replace('T', ' ')}  ${m.direction === 'outbound' ? 'out' : 'in '}  ${clip(m.from ?? '', 30)}  ${(m.subject ?? '').replace(/\s+/g, ' ')}`,
  );
  return head + (lines.length ? field('  messages', lines) : field('  messages', ['(no other message yet)']));
}

function table(list: MessageMeta[]): string {
  if (list.length === 0) return '';
  const head = `${'ID'.padEnd(26)}  ${'RECEIVED'.padEnd(20)}  ${'SIZE'.padStart(9)}  ${'SOURCE'.padEnd(14)}  ${'FROM'.padEnd(30)}  SUBJECT\n`;
  return (
    head +
    list
      .map(
        (m) =>
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

/** Width of the label column of `messages show`. */
const LABEL = 15;

/** `label:` beside the first line, the others under it. */
function field(label: string, lines: readonly string[]): string {
  return lines.map((line, i) => `${(i === 0 ? `${label}:` : '').padEnd(LABEL)}${line}\n`).join('');
}

/** `name (type, decoded size, where a blocked one went)`. */
function attachmentLine(meta: MessageMeta, i: number, detail: AttachmentDetail | undefined): string {
  const a = meta.attachments[i]!;
  const name = meta._AttachmentFileNames[i] ?? a.fileName;
  const size = detail?.decodedSize === undefined ? undefined : `${detail.decodedSize} bytes`;
  let where: string | undefined;
  if (a.blocked) {
    if (detail?.quarantined) where = `in quarantine as ${detail.quarantined.id}: ${detail.quarantined.rule}`;
    else where = detail?.quarantineId ? `deleted from quarantine (was ${detail.quarantineId})` : 'deleted';
  }
  return `${name} (${[a.contentType, size, where].filter(Boolean).join(', ')})`;
}

function describe(m: MessageMeta, attachments: AttachmentDetail[]): string {
  const lines: [string, string | undefined][] = [
    ['id', m.id],
    ['received', m.receivedAt],
    [
      'source',
      [m.source.kind, m.source.alias && `alias ${m.source.alias}`, m.source.remoteAddress && `from ${m.source.remoteAddress}`].filter(Boolean).join(', '),
    ],
    ['size', `${m.size} bytes (received ${m.receivedSize})`],
    ['envelope from', m.envelope.mailFrom || '<>'],
    ['envelope to', m.envelope.rcptTo.join(', ')],
    ['from', m.from],
    ['to', m.to.join(', ')],
    ['cc', m.cc.join(', ') || undefined],
    ['subject', m.subject],
    ['message-id', m.messageId],
    ['wrapped', m._WrappingMessageReason],
    ['tags', m.tags.join(', ') || undefined],
    ['direction', m.direction],
    [
      'quarantine',
      m.quarantineForward &&
        `forwarded to ${m.quarantineForward.to} as ${m.quarantineForward.id} (${m.quarantineForward.reason}): ${m.quarantineForward.status ?? 'queued'}${m.quarantineForward.leftAt ? ` ${m.quarantineForward.leftAt}` : ''}${m.quarantineForward.lastError ? `; ${m.quarantineForward.lastError}` : ''}`,
    ],
  ];
  let out = lines
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => field(k, [v!]))
    .join('');
  if (m.attachments.length)
    out += field(
      'attachments',
      m.attachments.map((_, i) => attachmentLine(m, i, attachments[i])),
    );
  const d = m.delivery;
  if (d) {
    out += field('delivery', [
      `${d.status.replace('_', ' ')} ${d.finishedAt} after ${d.attempts} attempt(s)${d.dsnId ? `; notification ${d.dsnId} sent back` : ''}${d.reason ? `; ${d.reason}` : ''}`,
    ]);
    const width = Math.max(...d.recipients.map((r) => r.address.length));
    for (const r of d.recipients) {
      const last = r.last && r.status !== 'delivered' ? `; last: ${r.last.message.replace(/\s+/g, ' ')}` : '';
      out += `  ${r.address.padEnd(width)}  ${r.status}${r.route ? ` via ${r.route}` : ''}${last}\n`;
    }
  }
  const stages = Object.entries(m.findings);
  if (stages.length) {
    // Each stage's own sentences for an admin (what `policy test` prints), the first beside its name.
    const width = Math.max(...stages.map(([stage]) => stage.length)) + 1;
    out += 'findings:\n';
    for (const [stage, finding] of stages) {
      const sentences = Array.isArray(finding.summary) && finding.summary.length ? finding.summary : ['(nothing recorded in words: see --json)'];
      out += sentences.map((s, i) => `  ${(i === 0 ? `${stage}:` : '').padEnd(width)}  ${s}\n`).join('');
    }
  }
  return out;
}

/** One line per step: its time (blank when it waits for an admin), then what happened. */
function timelineLines(steps: readonly TimelineStep[]): string {
  return steps.map((s) => `  ${(s.at === undefined ? '' : shortTime(s.at)).padEnd(19)}  ${s.summary.replace(/\s+/g, ' ')}\n`).join('');
}
