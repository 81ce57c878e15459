/**
 * Making and upgrading the PostgreSQL schema (schema.ts's migrations), and the checks a node
 * makes before it serves from a database.
 */
import type pg from 'pg';

function todo(): never {
  throw new Error('not built yet');
}

/** The schema version of the database (0: no mailgate tables). */
export async function readSchemaVersion(_db: pg.Pool | pg.PoolClient): Promise<number> {
  todo();
}

/**
 * Runs the migrations the database lacks, each in its own transaction under the migration
 * lock (two nodes migrating at once take turns). Rejects with `STORE_SCHEMA_TOO_NEW` when the
 * database is newer than this mailgate. `where` names the database in errors and logs
 * (its URL without the password); `node` is recorded as who applied each migration.
 */
export async function migrateDatabase(
  _db: pg.Pool,
  _opts: { where: string; node: string; logger?: { info(obj: object, msg: string): void } },
): Promise<{ from: number; to: number }> {
  todo();
}
