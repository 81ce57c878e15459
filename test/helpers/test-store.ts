/**
 * Which store the suite runs on: LevelDB in each test's data directory (the default), or with
 * `MAILGATE_TEST_STORE=postgres` a PostgreSQL database per data directory, on the cluster
 * test/run-postgres.ts runs for the whole run, or on one of the test file's own (testCluster).
 * Tests that configure a gateway through `testConfigText` (helpers/gateway.ts) and open its
 * store through `openTestStore` run on either; tests of LevelDB itself open it by name and
 * stay on it.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { LevelStore } from '../../storage/leveldb/store.js';
import { openStore } from '../../storage/open.js';
import type { Store } from '../../storage/store.js';
import { attachPostgres, SHARED_CLUSTER_ENV, startPostgres, type TestDatabases } from './postgres.js';

/** `postgres` when the suite runs on PostgreSQL. */
export const testStoreKind: 'leveldb' | 'postgres' = process.env.MAILGATE_TEST_STORE === 'postgres' ? 'postgres' : 'leveldb';
if (process.env.MAILGATE_TEST_STORE && !['postgres', 'leveldb'].includes(process.env.MAILGATE_TEST_STORE))
  throw new Error(`MAILGATE_TEST_STORE: expected postgres or leveldb, got ${process.env.MAILGATE_TEST_STORE}`);

const created = new Set<string>();

/**
 * The cluster: the one test/run-postgres.ts started for the whole run (`npm run test:postgres`),
 * whose databases this process drops as it exits; else one of this process's own (a file run
 * by hand), removed as it exits. fsync off: the suite checks behaviour, not power loss; a crash
 * of the server process (`stopServer('immediate')`) keeps the WAL in the page cache either
 * way. The bench keeps fsync on.
 */
async function testCluster(): Promise<TestDatabases | undefined> {
  if (testStoreKind !== 'postgres') return undefined;
  const shared = process.env[SHARED_CLUSTER_ENV];
  if (shared) {
    const databases = attachPostgres(shared);
    process.once('exit', () => databases.dropDatabasesSync([...created]));
    return databases;
  }
  const own = await startPostgres({ fsync: false });
  process.once('exit', () => own.stopSync());
  return own;
}
const cluster = await testCluster();

/**
 * The database of data directory DATA_DIR (made on first use): a name derived from the path,
 * so the gateway child processes and the test that reads their store afterwards meet in it.
 */
function testDatabaseUrl(dataDir: string): string {
  if (!cluster) throw new Error('testDatabaseUrl: the suite runs on LevelDB (MAILGATE_TEST_STORE is not postgres)');
  const name = 'mg_' + createHash('sha256').update(path.resolve(dataDir)).digest('hex').slice(0, 24);
  if (!created.has(name)) {
    // Synchronous: testConfigText, which names it, is.
    cluster.createDatabaseSync(name);
    created.add(name);
  }
  return cluster.url(name);
}

/** The `[storage]` table for a gateway whose data directory is DATA_DIR: empty on LevelDB. */
export function testStorageToml(dataDir: string): string {
  return cluster ? `\n[storage]\npostgres = ${JSON.stringify(testDatabaseUrl(dataDir))}\n` : '';
}

/** Opens the store of data directory DATA_DIR the way `serve` would with the suite's store. */
export function openTestStore(dataDir: string): Promise<Store> {
  if (!cluster) return openStore(dataDir);
  return openStore(dataDir, { postgres: { url: testDatabaseUrl(dataDir), connections: 5 }, node: 'test', createIfEmpty: true });
}

/**
 * What a finished write must not leave in STORE, on either implementation: marks of unfinished
 * writes (LevelDB's pending marks, PostgreSQL's `unfinished` rows) and the keys of quarantined
 * bytes (LevelDB's quarantine-chunks, PostgreSQL's `quarantine_chunks`), for tests that check a
 * refused or deleted message leaves nothing behind.
 */
export async function storeLeftovers(store: Store): Promise<{ unfinished: string[]; quarantineChunks: string[] }> {
  if (store instanceof LevelStore) {
    return { unfinished: await store.sublevels.pending.keys().all(), quarantineChunks: await store.sublevels.quarantineChunks.keys().all() };
  }
  const client = new pg.Client({ connectionString: testDatabaseUrl(store.dir) });
  await client.connect();
  try {
    const unfinished = await client.query<{ key: string }>(`SELECT kind || ':' || id AS key FROM unfinished ORDER BY 1`);
    const chunks = await client.query<{ key: string }>(`SELECT quarantine || '!' || seq AS key FROM quarantine_chunks ORDER BY 1`);
    return { unfinished: unfinished.rows.map((r) => r.key), quarantineChunks: chunks.rows.map((r) => r.key) };
  } finally {
    await client.end();
  }
}

/** The retriever's fetched keys in STORE, as `<alias>\0<key>` (LevelDB's own form), in key order. */
export async function fetchedKeys(store: Store): Promise<string[]> {
  if (store instanceof LevelStore) return store.sublevels.fetched.keys().all();
  const client = new pg.Client({ connectionString: testDatabaseUrl(store.dir) });
  await client.connect();
  try {
    const { rows } = await client.query<{ alias: string; key: string }>('SELECT alias, key FROM fetched ORDER BY alias COLLATE "C", key COLLATE "C"');
    return rows.map((r) => `${r.alias}\x00${r.key}`);
  } finally {
    await client.end();
  }
}
