/**
 * Notices between nodes on PostgreSQL (storage/postgres/notices.ts): one node's notify reaches
 * another's handlers through LISTEN/NOTIFY, and after PostgreSQL restarts the listening node
 * listens again by itself (its log says so), so notices reach it without a restart of mailgate.
 *
 * @store-pinned: its stores are on a cluster of its own.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { PgStore } from '../storage/postgres/store.js';
import type { Notice } from '../storage/store.js';
import { capturingLogger } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { waitUntil } from './helpers/wait.js';

let postgres: TestPostgres;
before(async () => {
  postgres = await startPostgres({ fsync: false });
});
after(async () => {
  await postgres?.stop();
});

/** Sends notices from FROM until TO's handler has one with N (notices sent while it does not listen are missed, as documented). */
async function reaches(from: PgStore, heard: Notice[], n: number): Promise<void> {
  for (let tries = 0; !heard.some((h) => h.payload['n'] === n); tries++) {
    if (tries === 300) assert.fail(`notice ${n} never arrived`);
    await from.notify('ping', { n }).catch(() => {}); // the database may still be starting
    await sleep(100);
  }
}

test('a notice from node A reaches node B; after a PostgreSQL restart B listens again and notices reach it', async (t) => {
  const url = await postgres.createDatabase();
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const logB = capturingLogger();
  const a = await PgStore.open({ url, dir, node: 'node-a', createIfEmpty: true, maxConnections: 2 });
  const b = await PgStore.open({ url, dir, node: 'node-b', maxConnections: 2, logger: logB.logger });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  const heard: Notice[] = [];
  b.onNotice((notice) => heard.push(notice));
  await b.noticesListening();
  await a.notify('alias-status', { alias: 'desk', status: 'inactive', holder: 'node-b' });
  await waitUntil('the alias-status notice at node-b', () => heard.some((h) => h.topic === 'alias-status'));
  assert.deepEqual(heard[0], { topic: 'alias-status', from: 'node-a', payload: { alias: 'desk', status: 'inactive', holder: 'node-b' } });

  await postgres.stopServer('fast');
  await logB.waitFor((e) => e.msg === "the connection listening for other nodes' notices was lost; listening again");
  await postgres.startServer();
  await reaches(a, heard, 2);
  await logB.waitFor((e) => e.msg === "listening for other nodes' notices again");
});
