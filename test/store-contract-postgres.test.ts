/**
 * The storage interface's contract (test/helpers/store-contract.ts) against the PostgreSQL
 * store: one cluster for the file, a fresh database per store, `reopen` opening the same
 * database again as the same node.
 */
import { after, before } from 'node:test';
import { tempDir } from './helpers/paths.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { storeContract } from './helpers/store-contract.js';
import { PgStore } from '../storage/postgres/store.js';
import type { Store } from '../storage/store.js';

let postgres: TestPostgres;
const cleanups: (() => Promise<void>)[] = [];
const urls = new WeakMap<Store, string>();

before(async () => {
  postgres = await startPostgres({ fsync: false });
});
after(async () => {
  for (const cleanup of cleanups) await cleanup();
  await postgres?.stop();
});

async function open(url: string, dir: string): Promise<Store> {
  const store = await PgStore.open({ url, dir, node: 'node-a', createIfEmpty: true, maxConnections: 4 });
  urls.set(store, url);
  return store;
}

storeContract('PostgreSQL', {
  async open() {
    const { dir, cleanup } = await tempDir('mailgate-pg-contract-');
    cleanups.push(cleanup);
    return open(await postgres.createDatabase(), dir);
  },
  reopen: (closed) => open(urls.get(closed)!, closed.dir),
});
