/**
 * How a database is named in errors, logs and output. Apart from pool.ts, which loads the
 * PostgreSQL client: a command on a LevelDB store names no database and should not load it.
 */
/** URL without its password, to name the database in errors, logs and output. */
export function databaseName(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    u.search = '';
    return u.href;
  } catch {
    return 'the configured database';
  }
}
