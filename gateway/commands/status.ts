import { Command } from 'commander';
import type { GatewaySummary, TrafficRow } from '../admin/api.js';
import { withAdminApi } from './common.js';

/** `mailgate status`: the gateway at a glance, as the console's dashboard shows it. */
export function statusCommand(): Command {
  return new Command('status')
    .description("the gateway at a glance: the last hour's and day's messages, the queue, the quarantine, the aliases")
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const summary = await api.summary();
        process.stdout.write(opts.json ? JSON.stringify(summary, null, 2) + '\n' : describe(summary, api.gatewayRunning));
      });
    });
}

const COLUMNS = ['messages', 'wrapped', 'blocked', 'exceptions', 'masked', 'delivered', 'failed'] as const;

function traffic(title: string, rows: TrafficRow[]): string {
  if (rows.length === 0) return `${title}: no messages\n`;
  const head = ['source'.padEnd(10), ...COLUMNS.map((c) => c.padStart(10))].join(' ');
  const lines = rows.map((r) => [r.source.padEnd(10), ...COLUMNS.map((c) => String(r[c]).padStart(10))].join(' '));
  return `${title}:\n  ${head}\n${lines.map((l) => `  ${l}\n`).join('')}`;
}

function describe(s: GatewaySummary, running: boolean): string {
  const q = s.queue;
  const aliases = s.aliases.map((a) => `  ${a.name.padEnd(20)} ${a.status.padEnd(8)} ${a.failures} failures${a.reason ? `  ${a.reason}` : ''}\n`).join('');
  return [
    `gateway: ${running ? 'running' : 'stopped (read from its store)'}\n`,
    traffic('last hour', s.lastHour),
    traffic('last day', s.lastDay),
    s.countedAtMost !== undefined ? `  (the newest ${s.countedAtMost} messages of the day counted)\n` : '',
    `queue: ${q.total} (${q.waiting} waiting, ${q.retrying} retrying, ${q.held} held)\n`,
    `quarantine: ${s.quarantined} attachment${s.quarantined === 1 ? '' : 's'}\n`,
    s.aliases.length === 0 ? 'aliases: none configured\n' : `aliases:\n${aliases}`,
  ].join('');
}
