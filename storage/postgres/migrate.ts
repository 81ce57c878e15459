/**
 * Making and upgrading the PostgreSQL schema (schema.ts's migrations), and the checks a node
 * makes before it serves from a database.
 */
import type pg from 'pg';
import { storeErrors } from '../../lib/errors.js';
import { MIGRATION_LOCK, MIGRATIONS, SCHEMA_VERSION } from './schema.js';

/** Where a migration run reports what it did; pino fits. */
export interface MigrationLogger {
  info(obj: object, msg: string): void;
}

/** What {@link migrateDatabase} did. */
export interface MigrationResult {
  /** The version the database had when the run began. */
  from: number;
  /** The version it has now. */
  to: number;
  /** The migrations this run applied, in order (none when another node applied them meanwhile). */
  applied: { version: number; description: string }[];
}

/** The schema version of the database (0: no mailgate tables). */
export async function readSchemaVersion(db: pg.Pool | pg.PoolClient): Promise<number> {
  // A plain query of the catalog, read with this statement's snapshot: to_regclass() looks in
  // the session's catalog cache, which under the migration lock can still miss the table
  // another node has just committed (two `storage migrate` at once then both created it).
  const table = await db.query<{ found: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.relname = 'mailgate_schema' AND n.nspname = current_schema()) AS found`,
  );
  if (!table.rows[0]?.found) return 0;
  const version = await db.query<{ version: number | null }>('SELECT max(version) AS version FROM mailgate_schema');
  return version.rows[0]?.version ?? 0;
}

/**
 * Runs the migrations the database lacks, each in its own transaction under the migration
 * lock (two nodes migrating at once take turns). Rejects with `STORE_SCHEMA_TOO_NEW` when the
 * database is newer than this mailgate. `where` names the database in errors and logs
 * (its URL without the password); `node` is recorded as who applied each migration.
 */
export async function migrateDatabase(db: pg.Pool, opts: { where: string; node: string; logger?: MigrationLogger | undefined }): Promise<MigrationResult> {
  const from = await readSchemaVersion(db);
  if (from > SCHEMA_VERSION) throw storeErrors.schemaTooNew(opts.where, from, SCHEMA_VERSION);
  const applied: MigrationResult['applied'] = [];
  let version = from;
  for (const migration of MIGRATIONS) {
    if (migration.version <= version) continue;
    const client = await db.connect();
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      // Under the lock: another node may have run this migration (or more) while we waited.
      version = await readSchemaVersion(client);
      if (version > SCHEMA_VERSION) throw storeErrors.schemaTooNew(opts.where, version, SCHEMA_VERSION);
      if (version >= migration.version) {
        await client.query('COMMIT');
        continue;
      }
      await client.query(migration.sql);
      await client.query('INSERT INTO mailgate_schema (version, description, applied_by) VALUES ($1, $2, $3)', [
        migration.version,
        migration.description,
        opts.node,
      ]);
      await client.query('COMMIT');
      version = migration.version;
      applied.push({ version: migration.version, description: migration.description });
      opts.logger?.info({ database: opts.where, from: migration.version - 1, to: migration.version }, `schema migrated: ${migration.description}`);
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }
  return { from, to: version, applied };
}

/**
 * What a node checks before it uses a database: the schema is this mailgate's (created on an
 * empty database when `createIfEmpty`, as `serve` does so that a first start just works; an
 * older one is the admin's to upgrade with `mailgate storage migrate`, since the whole fleet
 * shares it), and a commit is durable when it returns (`synchronous_commit` not off).
 * Rejects with `STORE_SCHEMA_TOO_OLD`, `STORE_SCHEMA_TOO_NEW` or `STORE_UNSAFE_COMMIT`.
 */
export async function checkDatabase(
  db: pg.Pool,
  opts: { where: string; node: string; createIfEmpty?: boolean | undefined; logger?: MigrationLogger | undefined },
): Promise<void> {
  let version = await readSchemaVersion(db);
  if (version === 0 && opts.createIfEmpty) version = (await migrateDatabase(db, opts)).to;
  if (version > SCHEMA_VERSION) throw storeErrors.schemaTooNew(opts.where, version, SCHEMA_VERSION);
  if (version < SCHEMA_VERSION) throw storeErrors.schemaTooOld(opts.where, version, SCHEMA_VERSION);
  // local, remote_write, remote_apply and on all flush this server's WAL before answering; off does not.
  const setting = (await db.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]?.synchronous_commit ?? 'on';
  if (setting === 'off') throw storeErrors.unsafeCommit(opts.where, setting);
}
