/**
 * Admin changes a node missed while its LISTEN connection was down (issue 16, "Several nodes:
 * Admin"; storage/store.ts onNoticesResumed, gateway/admin/fleet.ts). Node B holds the mailbox
 * and logs in to PostgreSQL as a role of its own, so the test can cut B's LISTEN connection and
 * keep B from making it again (the role made NOLOGIN) until the admin's change on node A is
 * recorded: the notice is missed for certain, not by a race. Once B listens again it applies
 * the change: the mailbox stops being fetched, or starts again. And B's worker, recording its
 * own state afterwards, keeps an admin's change it never heard of rather than overwrite it.
 *
 * @store-pinned: its nodes name their own PostgreSQL.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { AliasRow, MessageMeta } from '../gateway/admin/api.js';
import { loadConfigText } from '../gateway/config/load.js';
import { AliasHealth, setAliasStatusInStore } from '../gateway/fetch/alias-health.js';
import { PgStore } from '../storage/postgres/store.js';
import { dovecotIncoming } from './helpers/dovecot.js';
import { capturingLogger, runCli, spawnServe } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { waitUntil } from './helpers/wait.js';
import { deskMessage, deskServers } from './helpers/fleet.js';

const servers = deskServers();
const message = (n: number) => deskMessage(n, 'r');

/** A node's mailgate.toml on DATABASE (its URL names the role it logs in as). */
async function nodeConfig(name: string, database: string): Promise<string> {
  const { dir } = await tempDir();
  const toml = [
    `data_dir = ${JSON.stringify(path.join(dir, 'data'))}`,
    '[node]',
    `name = "${name}"`,
    '[storage]',
    `postgres = ${JSON.stringify(database)}`,
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
  ].join('\n');
  const file = path.join(dir, 'mailgate.toml');
  await writeFile(file, toml);
  return file;
}

async function cli<T>(args: string[]): Promise<T> {
  const r = await runCli([...args, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout.toString()) as T;
}

test("node B's LISTEN connection is cut and kept down while an admin on node A deactivates, then activates: B applies each once it listens again", async (t) => {
  const database = await servers.postgres.createDatabase();
  // B's own role (a superuser like the test's, so it may migrate and read everything): made
  // NOLOGIN, it keeps its open connections and cannot open new ones.
  const role = `node_b_${process.pid}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: database });
  await admin.connect();
  t.after(() => admin.end());
  await admin.query(`CREATE ROLE ${role} SUPERUSER LOGIN`);
  const asB = new URL(database);
  asB.username = role;
  const configB = await nodeConfig('node-b', asB.toString());
  const configA = await nodeConfig('node-a', database);

  await servers.dovecot.deliver('desk', message(1));
  const log: Record<string, unknown>[] = [];
  const b = await spawnServe(configB, {
    onLine: (line) => {
      try {
        log.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    },
  });
  t.after(async () => {
    b.child.kill('SIGTERM');
    await b.exited;
  });
  const count = (msg: string) => log.filter((e) => e.msg === msg).length;
  const logged = (what: string, match: (e: Record<string, unknown>) => boolean) =>
    waitUntil(
      () => `${what}; B's log has: ${log.map((e) => e.msg).join(' | ')}`,
      () => log.some(match),
    );
  await waitUntil('B fetched the mailbox', async () => (await servers.dovecot.listMessages('desk')).length === 0);

  /** Cuts B's LISTEN connection and keeps it from coming back while CHANGE runs, then lets it. */
  const whileBCannotHear = async (change: () => Promise<void>) => {
    const lostBefore = count("the connection listening for other nodes' notices was lost; listening again");
    const refusedBefore = count("cannot listen for other nodes' notices; trying again");
    // B's LISTEN may still be connecting (at its start, or after a former cut): cut it once it is there.
    await waitUntil(
      'B listening',
      async () => (await admin.query(`SELECT 1 FROM pg_stat_activity WHERE usename = $1 AND query LIKE 'LISTEN%'`, [role])).rowCount === 1,
    );
    await admin.query(`ALTER ROLE ${role} NOLOGIN`);
    const cut = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND query LIKE 'LISTEN%'`, [role]);
    assert.equal(cut.rowCount, 1, "B's LISTEN connection");
    await logged('B lost its LISTEN connection', () => count("the connection listening for other nodes' notices was lost; listening again") > lostBefore);
    await logged('B refused a new one', () => count("cannot listen for other nodes' notices; trying again") > refusedBefore);
    await change();
    await admin.query(`ALTER ROLE ${role} LOGIN`);
  };

  // Deactivated on A while B cannot hear: A's answer names B; B applies it when it listens again.
  await whileBCannotHear(async () => {
    const off = await runCli(['aliases', 'deactivate', 'desk', '--config', configA]);
    assert.equal(off.code, 0, off.stderr);
    assert.equal(off.stdout.toString(), 'alias desk is inactive; node node-b fetches its mailbox\n');
  });
  const missedOff = 'alias desk deactivated by an admin on node node-a while its notice was not reaching this node; applied now';
  await logged('the deactivation applied late', (e) => e.msg === missedOff);
  assert.equal(count('alias desk deactivated by an admin on node node-a'), 0, 'the notice itself never reached B');
  assert.equal(count(missedOff), 1, 'logged once');
  assert.deepEqual(
    (await cli<AliasRow[]>(['aliases', 'list', '--config', configA])).filter((r) => r.name === 'desk').map((r) => [r.status, r.changedBy, r.node]),
    [['inactive', 'admin', 'node-b']],
  );

  // Mail arriving now waits in the mailbox: B, polling every second while active, leaves it.
  await servers.dovecot.deliver('desk', message(2));
  await sleep(3000);
  assert.equal((await servers.dovecot.listMessages('desk')).length, 1, 'not fetched while inactive');

  // Activated on A while B cannot hear: B fetches again once it listens.
  await whileBCannotHear(async () => {
    const on = await runCli(['aliases', 'activate', 'desk', '--config', configA]);
    assert.equal(on.code, 0, on.stderr);
  });
  await logged(
    'the activation applied late',
    (e) => e.msg === 'alias desk activated by an admin on node node-a while its notice was not reaching this node; applied now',
  );
  await waitUntil('B fetched the waiting message', async () => (await servers.dovecot.listMessages('desk')).length === 0);
  const subjects = (await cli<MessageMeta[]>(['messages', 'list', '--alias', 'desk', '--config', configA])).map((m) => m.subject).sort();
  assert.deepEqual(subjects, ['question 1', 'question 2']);
  assert.equal(count('alias desk activated by an admin on node node-a'), 0, 'the notice itself never reached B');
});

test("node B's worker, recording a failure or a success later, keeps an admin's change from node A that it never heard of", async (t) => {
  const url = await servers.postgres.createDatabase();
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const a = await PgStore.open({ url, dir, node: 'node-a', createIfEmpty: true, maxConnections: 2 });
  const b = await PgStore.open({ url, dir, node: 'node-b', maxConnections: 2 });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  const server = loadConfigText(
    [
      '[[alias]]',
      'name = "desk"',
      'address = "desk@example.com"',
      '[alias.incoming]',
      'host = "127.0.0.1"',
      'password = "pw"',
      'auto_connect_retries = 2',
    ].join('\n'),
    path.join(dir, 'm.toml'),
    {},
  ).alias[0]!.incoming!;
  const log = capturingLogger();
  const health = await AliasHealth.load({ store: b, logger: log.logger }, 'desk', server);
  const unreachable = Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' });

  // A failure counted by B; then an admin on A deactivates (B hears nothing); B's next failure
  // would have recorded the alias active with two failures over the admin's decision.
  await health.failed(unreachable, 'timeout');
  assert.equal((await b.getAliasState('desk'))?.failures, 1);
  await setAliasStatusInStore(a, 'desk', 'inactive');
  await health.failed(unreachable, 'timeout');
  const kept = await b.getAliasState('desk');
  assert.deepEqual([kept?.status, kept?.changedBy, kept?.changedOn, kept?.failures], ['inactive', 'admin', 'node-a', 0]);
  assert.deepEqual([health.state.status, health.holdMs()], ['inactive', Infinity], 'B stops fetching it');
  await log.waitFor((e) => e.msg === 'alias desk deactivated by an admin on node node-a while its notice was not reaching this node; applied now');

  // Activated on A, then B's failures make it inactive (its own decision, after the admin's, recorded).
  await setAliasStatusInStore(a, 'desk', 'active');
  await health.failed(unreachable, 'timeout'); // takes in the activation instead of counting
  assert.equal(health.state.status, 'active');
  await health.failed(unreachable, 'timeout');
  await health.failed(unreachable, 'timeout');
  assert.deepEqual([(await b.getAliasState('desk'))?.status, (await b.getAliasState('desk'))?.changedBy], ['inactive', 'retriever']);

  // Deactivated on A while B's timed retry is under way: the retry's success does not undo it.
  await setAliasStatusInStore(a, 'desk', 'inactive');
  await health.succeeded();
  const after = await b.getAliasState('desk');
  assert.deepEqual([after?.status, after?.changedBy, after?.changedOn], ['inactive', 'admin', 'node-a']);
  assert.equal(health.active, false);
});
