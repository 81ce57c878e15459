import { Command } from 'commander';
import type { DeliveryResult, QueueEntry } from '../admin/api.js';
import { clip, shortTime, UsageError, withAdminApi } from './common.js';

/** `mailgate queue ...`: the outbound queue (mail sent for aliases, inbound mail relayed downstream). */
export function queueCommand(): Command {
  const queue = new Command('queue').description('list, show, retry and drop messages waiting to be sent or relayed');

  queue
    .command('list')
    .description('list queued messages, oldest first')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const list = await api.listQueue();
        process.stdout.write(opts.json ? JSON.stringify(list, null, 2) + '\n' : table(list));
      });
    });

  queue
    .command('show')
    .description('show one queued message: each recipient with its status, attempts and last reply')
    .argument('<id>', 'message id (as `queue list` shows it)')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { json?: boolean }, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const entry = await api.showQueued(id);
        process.stdout.write(opts.json ? JSON.stringify(entry, null, 2) + '\n' : describe(entry));
      });
    });

  queue
    .command('retry')
    .description('make a queued message (or every one, with --all; every held one, with --held) due now, held ones included')
    .argument('[id]', 'message id')
    .option('--all', 'every queued message')
    .option('--held', 'every held message (once what held them is fixed)')
    .action(async (id: string | undefined, opts: { all?: boolean; held?: boolean }, cmd: Command) => {
      if (opts.held && (id !== undefined || opts.all)) throw new UsageError('queue retry: --held goes alone, without a message id or --all');
      if (!opts.held && (id === undefined) === !opts.all) throw new UsageError('queue retry: give a message id or --all, not both and not neither');
      await withAdminApi(cmd, async (api) => {
        const { retried: n, delivering = [] } = await (opts.held ? api.retryQueued(undefined, { heldOnly: true }) : api.retryQueued(id));
        const what = `${n} queued message${n === 1 ? '' : 's'}`;
        process.stdout.write(
          api.gatewayRunning ? `${what} made due now\n` : `${what} made due now; the gateway is not running: they are tried when it starts\n`,
        );
        // Several nodes: being sent by another node right now; it was told, and tries again at once if this attempt does not finish it.
        for (const d of delivering)
          process.stdout.write(`${d.id} is being delivered by node ${d.node}, which tries it again at once if this attempt does not finish it\n`);
      });
    });

  queue
    .command('drop')
    .description('take a message out of the queue unsent; the message stays in the store, the drop recorded on it')
    .argument('<id>', 'message id')
    .action(async (id: string, _opts: unknown, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const entry = await api.dropQueued(id);
        const unsent = entry.recipients.filter((r) => r.status === 'pending').map((r) => r.address);
        process.stdout.write(`dropped ${entry.id}${unsent.length ? `; not sent to ${unsent.join(', ')}` : ''}\n`);
      });
    });

  return queue;
}

/** `outbound`, `relay`, or `dsn` for a delivery status notification going back to a sender. */
const kindOf = (e: QueueEntry) => (e.dsn ? 'dsn' : e.kind);

/** The alias it is sent as, or the relays it is forwarded through. */
const routeOf = (e: QueueEntry) => (e.kind === 'relay' ? [...new Set(e.recipients.map((r) => r.relay ?? '?'))].join(',') : (e.alias ?? '-'));

/** Why it is still here: held, else the last error of the message or of a pending recipient. */
function problemOf(e: QueueEntry): string {
  if (e.held !== undefined) return `held: ${e.held}`;
  return e.lastError?.message ?? e.recipients.find((r) => r.status === 'pending' && r.last)?.last?.message ?? '';
}

function table(list: QueueEntry[]): string {
  if (list.length === 0) return '';
  const head = `${'ID'.padEnd(26)}  ${'QUEUED'.padEnd(19)}  ${'ATTEMPTS'.padStart(8)}  ${'NEXT'.padEnd(19)}  ${'KIND'.padEnd(8)}  ${'ALIAS/RELAY'.padEnd(16)}  ${'PENDING'.padStart(7)}  HELD/LAST ERROR\n`;
  return (
    head +
    list
      .map(
        (e) =>
          [
            e.id.padEnd(26),
            shortTime(e.queuedAt),
            String(e.attempts).padStart(8),
            (e.held !== undefined ? 'held' : shortTime(e.nextAttemptAt)).padEnd(19),
            kindOf(e).padEnd(8),
            clip(routeOf(e), 16),
            `${e.recipients.filter((r) => r.status === 'pending').length}/${e.recipients.length}`.padStart(7),
            // Wide: a route's failure names the route first (alias, host, port, mode), its cause after.
            clip(problemOf(e), 110).trimEnd(),
          ].join('  ') + '\n',
      )
      .join('')
  );
}

const sameResult = (a: DeliveryResult, b: DeliveryResult | undefined) => a.at === b?.at && a.message === b.message;

const reply = (r: DeliveryResult) => `${r.message.replace(/\s+/g, ' ')} (${shortTime(r.at)})`;

function describe(e: QueueEntry): string {
  const lines: [string, string | undefined][] = [
    ['id', e.id],
    [
      'kind',
      e.kind === 'relay'
        ? 'relay (inbound mail forwarded downstream)'
        : `${e.dsn ? 'delivery status notification' : 'outbound'}${e.alias ? `, alias ${e.alias}` : ''}`,
    ],
    ['queued', shortTime(e.queuedAt)],
    ['attempts', String(e.attempts)],
    ['last attempt', e.lastAttemptAt && shortTime(e.lastAttemptAt)],
    ['next attempt', e.held !== undefined ? 'when an admin acts (held)' : shortTime(e.nextAttemptAt)],
    ['held', e.held],
    ['last error', e.lastError && reply(e.lastError)],
    ['envelope from', e.mailFrom || '<>'],
    ['envelope to', e.requestedRecipients.join(', ')],
  ];
  let out = lines
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${(k + ':').padEnd(15)}${v}\n`)
    .join('');
  out += 'recipients:\n';
  const width = Math.max(...e.recipients.map((r) => r.address.length));
  for (const r of e.recipients) {
    const detail = [
      `${r.attempts} attempt${r.attempts === 1 ? '' : 's'}`,
      r.relay && `relay ${r.relay}`,
      r.deliveredAt && `delivered ${shortTime(r.deliveredAt)}${r.route ? ` via ${r.route}` : ''}`,
      r.last && r.status !== 'delivered' && `last: ${sameResult(r.last, e.lastError) ? 'the last error above' : reply(r.last)}`,
    ].filter(Boolean);
    out += `  ${r.address.padEnd(width)}  ${r.status.padEnd(9)}  ${detail.join('; ')}\n`;
  }
  return out;
}
