/**
 * How the gateway and the commands get a store: the one place that knows which
 * implementation stands behind the storage interface: LevelDB in the data directory, or
 * PostgreSQL (storage/postgres/) when `[storage] postgres` names a database.
 */
import type { Store } from './store.js';
import { LevelStore, type StoreOptions } from './leveldb/store.js';
import { defaultNodeName } from './node-name.js';
import type { MigrationResult } from './postgres/migrate.js';
import { databaseName } from './postgres/database-name.js';

export type { StoreOptions } from './leveldb/store.js';

/** Which store {@link openStore} opens, and how. */
export interface OpenStoreOptions extends Omit<StoreOptions, 'node'> {
  /** `[storage] postgres`: the connection URL (password included) and the pool's size. Absent: LevelDB in the data directory. */
  postgres?: { url: string; connections: number } | undefined;
  /** `[node] name`: who holds leases and applied migrations. Default: defaultNodeName(), the host name. */
  node?: string | undefined;
  /**
   * PostgreSQL: create mailgate's tables on a database that has none (`serve`, and the commands
   * that add to a store as `serve` would); otherwise such a database is `STORE_SCHEMA_TOO_OLD`.
   * LevelDB always makes its own.
   */
  createIfEmpty?: boolean | undefined;
}

/**
 * Opens the store: with `opts.postgres`, the database (its schema checked first, see
 * checkDatabase: `STORE_SCHEMA_TOO_OLD`, `STORE_SCHEMA_TOO_NEW`, `STORE_UNSAFE_COMMIT`), with
 * `dir` as this node's data directory (its spool and control socket; no lock, several nodes
 * share the database); otherwise LevelDB in `dir`, created if needed, rejecting with
 * `STORE_LOCKED` when another process holds it and `STORE_SCHEMA_TOO_NEW` when a newer
 * mailgate wrote it.
 */
export async function openStore(dir: string, opts: OpenStoreOptions = {}): Promise<Store> {
  const { postgres, node = defaultNodeName(), createIfEmpty, ...rest } = opts;
  if (!postgres) return LevelStore.open(dir, { ...rest, node });
  // The PostgreSQL client is loaded only for a store that is in PostgreSQL: a LevelDB one, and each CLI command on it, does without.
  const { PgStore } = await import('./postgres/store.js');
  return PgStore.open({
    url: postgres.url,
    dir,
    node,
    maxConnections: postgres.connections,
    ...(rest.logger ? { logger: rest.logger } : {}),
    ...(createIfEmpty === undefined ? {} : { createIfEmpty }),
  });
}

/** Whether TARGET, as `mailgate storage copy --to` takes it, names a PostgreSQL database rather than a directory. */
export function isDatabaseUrl(target: string): boolean {
  return /^postgres(ql)?:\/\//i.test(target);
}

/** The database URL without its password: how errors, logs and output name it. */
export { databaseName } from './postgres/database-name.js';

/**
 * Creates or upgrades mailgate's tables in the database at URL (`mailgate storage migrate`), on
 * one connection of its own; resolves to the version it ends at and the migrations it ran.
 */
export async function migrateStore(url: string, opts: { node: string }): Promise<MigrationResult> {
  const { default: pg } = await import('pg');
  const { migrateDatabase } = await import('./postgres/migrate.js');
  const db = new pg.Pool({ connectionString: url, max: 1 });
  // A server that goes away while the connection idles is reported by the query that fails, not as a crash.
  db.on('error', () => {});
  try {
    return await migrateDatabase(db, { where: databaseName(url), node: opts.node });
  } finally {
    await db.end();
  }
}
