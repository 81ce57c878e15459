/**
 * The admin across nodes (issue 16, "Several nodes: Admin"): two `mailgate serve` on one real
 * PostgreSQL database, one real Dovecot mailbox held by node B, and every admin command given
 * on node A. What an admin sees: A's CLI answers which node fetches the mailbox, B's log says it
 * stopped and started again, both nodes list the same state, `mailgate nodes` lists both, and a
 * node whose aliases differ from another's says so in its log.
 *
 * @store-pinned: its nodes name their own PostgreSQL (test/helpers/fleet.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AliasRow, MessageMeta, NodeRow } from '../gateway/admin/api.js';
import { dovecotIncoming } from './helpers/dovecot.js';
import { runCli, spawnServe } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { waitUntil } from './helpers/wait.js';
import { deskMessage, deskServers } from './helpers/fleet.js';

const servers = deskServers();
const message = (n: number) => deskMessage(n, 'q');

/** A node's mailgate.toml: its own data directory and name, the shared database, the desk alias (and EXTRA). */
async function nodeConfig(name: string, database: string, extra = ''): Promise<string> {
  const { dir } = await tempDir();
  const toml = [
    `data_dir = ${JSON.stringify(path.join(dir, 'data'))}`,
    '[node]',
    `name = "${name}"`,
    '[storage]',
    `postgres = ${JSON.stringify(database)}`,
    '[retriever]',
    'lease_ttl = "3s"',
    '[admin]',
    'enabled = false',
    '[smtp]',
    'listen = ["127.0.0.1:0"]',
    '[[alias]]',
    'name = "desk"',
    'address = "desk@example.com"',
    ...dovecotIncoming(servers.dovecot, 'desk', { password: 'pw-desk' }),
    'poll_interval = 1',
    'reconnect_interval = 1',
    'idle = false',
    extra,
  ].join('\n');
  const file = path.join(dir, 'mailgate.toml');
  await writeFile(file, toml);
  return file;
}

/** `mailgate serve` on CONFIG, its log lines kept as they come. */
async function serve(t: { after(fn: () => Promise<void>): void }, config: string) {
  const log: Record<string, unknown>[] = [];
  const node = await spawnServe(config, {
    onLine: (line) => {
      try {
        log.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    },
  });
  t.after(async () => {
    node.child.kill('SIGTERM');
    await node.exited;
  });
  return {
    log,
    waitFor: (match: (e: Record<string, unknown>) => boolean) =>
      waitUntil(
        () => `a log line; the log has: ${log.map((e) => e.msg).join(' | ')}`,
        () => log.some(match),
      ).then(() => log.find(match)!),
  };
}

async function cli<T>(args: string[]): Promise<T> {
  const r = await runCli([...args, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.toString()) as T;
}

const desk = async (config: string) => (await cli<AliasRow[]>(['aliases', 'list', '--config', config])).find((r) => r.name === 'desk')!;
const subjects = async (config: string) => (await cli<MessageMeta[]>(['messages', 'list', '--alias', 'desk', '--config', config])).map((m) => m.subject).sort();

test('deactivate and activate on node A reach node B, which holds the mailbox; both list the same; mailgate nodes lists both; a differing alias list is logged', async (t) => {
  const database = await servers.postgres.createDatabase();
  const configB = await nodeConfig('node-b', database, ['[[alias]]', 'name = "spare"', 'address = "spare@example.com"'].join('\n'));
  const configA = await nodeConfig('node-a', database);
  await servers.dovecot.deliver('desk', message(1));

  // B alone takes the mailbox and fetches it; A, joining after, finds it held (one mailbox, B's share).
  const b = await serve(t, configB);
  await waitUntil('the mailbox emptied', async () => (await servers.dovecot.listMessages('desk')).length === 0);
  const a = await serve(t, configA);
  assert.equal((await desk(configA)).node, 'node-b', "A's aliases list names the node that fetches the mailbox");

  // A's configuration lacks B's alias `spare`: A says so at its start, naming B and the alias.
  const differs = await a.waitFor((e) => e.level === 40 && e.node === 'node-a' && e.other_node === 'node-b' && Array.isArray(e.aliases));
  assert.deepEqual(differs.aliases, ['spare']);
  assert.match(String(differs.msg), /node node-b has another configuration of what the nodes share \(aliases spare\)/);
  // And B, told of A's start, says it too, once.
  await b.waitFor((e) => e.level === 40 && e.node === 'node-b' && e.other_node === 'node-a' && Array.isArray(e.aliases));

  // The nodes view, from either node.
  await waitUntil('both nodes listed live', async () => (await cli<NodeRow[]>(['nodes', '--config', configA])).filter((n) => n.live).length === 2);
  const nodes = await cli<NodeRow[]>(['nodes', '--config', configA]);
  assert.deepEqual(
    nodes.map((n) => [n.name, n.live, n.mailboxes, n.thisNode ?? false]),
    [
      ['node-a', true, 0, true],
      ['node-b', true, 1, false],
    ],
  );
  assert.deepEqual(nodes.find((n) => n.name === 'node-b')!.configDiffers, ['alias spare']);
  assert.equal(nodes[0]!.delivering, 0);

  // Deactivated on A: the answer names B, and B's retriever applies it (its log says so).
  const off = await runCli(['aliases', 'deactivate', 'desk', '--config', configA]);
  assert.equal(off.code, 0, off.stderr);
  assert.equal(off.stdout.toString(), 'alias desk is inactive; node node-b fetches its mailbox\n');
  const applied = await b.waitFor((e) => e.msg === 'alias desk deactivated by an admin on node node-a');
  assert.equal(applied.applied, true);
  const stopped = await b.waitFor((e) => e.msg === 'alias deactivated by an admin' && e.alias === 'desk');
  assert.deepEqual([stopped.from, stopped.to, stopped.by], ['active', 'inactive', 'admin']);
  for (const config of [configA, configB]) {
    const row = await desk(config);
    assert.deepEqual([row.status, row.changedBy, row.node], ['inactive', 'admin', 'node-b']);
  }

  // Mail arriving while it is inactive waits in the mailbox: B, which polls every second, leaves it.
  await servers.dovecot.deliver('desk', message(2));
  await sleep(2500);
  assert.equal((await servers.dovecot.listMessages('desk')).length, 1, 'not fetched while inactive');

  // Activated on A: B fetches again.
  const on = await runCli(['aliases', 'activate', 'desk', '--config', configA]);
  assert.equal(on.stdout.toString(), 'alias desk is active; node node-b fetches its mailbox\n');
  await b.waitFor((e) => e.msg === 'alias activated by an admin' && e.alias === 'desk');
  await waitUntil('the mailbox emptied', async () => (await servers.dovecot.listMessages('desk')).length === 0);
  assert.deepEqual(await subjects(configA), ['question 1', 'question 2'], 'fetched by B, listed on A');
  assert.equal((await desk(configB)).status, 'active');
  // Each node logged the difference once, for all that happened since.
  const warned = (log: Record<string, unknown>[], other: string) =>
    log.filter((e) => e.level === 40 && e.other_node === other && Array.isArray(e.aliases)).length;
  assert.deepEqual([warned(a.log, 'node-b'), warned(b.log, 'node-a')], [1, 1]);
});
