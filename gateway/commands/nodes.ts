import { Command } from 'commander';
import type { NodeRow } from '../admin/api.js';
import { clip, shortTime, withAdminApi } from './common.js';

/** `mailgate nodes`: the nodes sharing the store (issue 16, "Several nodes: Admin"); on LevelDB, this one. */
export function nodesCommand(): Command {
  return new Command('nodes')
    .description('list the nodes sharing the store (one on LevelDB): started, last seen, live, mailboxes held, queued messages being delivered')
    .option('--json', 'print JSON instead of a table')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      await withAdminApi(cmd, async (api) => {
        const rows = await api.listNodes();
        process.stdout.write(opts.json ? JSON.stringify(rows, null, 2) + '\n' : table(rows));
      });
    });
}

function table(rows: NodeRow[]): string {
  const head = `${'NODE'.padEnd(20)}  ${'STATE'.padEnd(7)}  ${'STARTED'.padEnd(19)}  ${'LAST SEEN'.padEnd(19)}  ${'MAILBOXES'.padStart(9)}  ${'DELIVERING'.padStart(10)}\n`;
  return (
    head +
    rows
      .map(
        (r) =>
          [
            clip(r.name + (r.thisNode ? ' *' : ''), 20),
            (r.live ? 'live' : 'gone').padEnd(7),
            shortTime(r.startedAt).padEnd(19),
            shortTime(r.seenAt).padEnd(19),
            String(r.mailboxes).padStart(9),
            (r.delivering === undefined ? '-' : String(r.delivering)).padStart(10),
          ].join('  ') +
          '\n' +
          // Under the node: a list too long for a column, and one the admin must act on.
          (r.configDiffers?.length ? `  configuration differs from this node's: ${r.configDiffers.join(', ')}\n` : ''),
      )
      .join('') +
    '(* this node)\n'
  );
}
