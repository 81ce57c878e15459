/**
 * A real PostgreSQL for the tests (RECIPES.md): Debian's `postgresql` package, installed on
 * first use, a private cluster made with `initdb` in a temporary directory and started on an
 * ephemeral loopback port, as the unprivileged `postgres` user when the tests run as root
 * (PostgreSQL refuses to run as root). Each test gets databases of its own from one cluster.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { migrateDatabase } from '../../storage/postgres/migrate.js';
import { ensureDebianPackages } from './debian.js';
import { freePorts } from './ports.js';

const run = promisify(execFile);

/** A PostgreSQL cluster running for a test. */
export interface TestPostgres extends TestDatabases {
  host: '127.0.0.1';
  port: number;
  /** The superuser (`mailgate`, trusted on loopback: no password). */
  user: string;
  /** The cluster's data directory (its log is `DIR/postgres.log`). */
  dir: string;
  /** Creates an empty database (a fresh name unless given) and resolves to its URL. */
  createDatabase(name?: string): Promise<string>;
  /** A pool on URL, ended by `stop()` before the server goes (a pool's idle client would fail on a stopped server). */
  pool(url: string, max?: number): pg.Pool;
  /**
   * A fresh database with mailgate's tables, made by every migration as `mailgate storage
   * migrate` makes them, and a pool on it: for tests of one piece of the PostgreSQL store.
   */
  createMailgateDatabase(max?: number): Promise<{ url: string; pool: pg.Pool }>;
  /** Runs SQL as the superuser on database `postgres` (or DATABASE). */
  query(sql: string, database?: string): Promise<pg.QueryResult>;
  /** Stops the server; `mode` `immediate` is a crash (recovery from the WAL on the next start). */
  stopServer(mode?: 'fast' | 'immediate'): Promise<void>;
  /** Starts it again on the same port after `stopServer`. */
  startServer(): Promise<void>;
  /** The server's log so far. */
  readLog(): Promise<string>;
  /** Ends the pools of `pool()`, stops the server and removes the cluster. Safe to call twice. */
  stop(): Promise<void>;
  /** The same, synchronously: for `process.on('exit')`, when a cluster lives as long as its test process. */
  stopSync(): void;
}

export interface PostgresOptions {
  /**
   * `fsync` (default on, as in production: the bench compares it with LevelDB's synced writes).
   * Off only where a test measures nothing and loses nothing by it: a crash of the server
   * process (`stopServer('immediate')`) keeps the WAL in the page cache either way.
   */
  fsync?: boolean;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
}

/** Installs Debian's PostgreSQL when it is missing (test/helpers/debian.ts). */
export async function ensurePostgres(): Promise<void> {
  await ensureDebianPackages({
    what: 'PostgreSQL',
    packages: ['postgresql'],
    installed: () => postgresBin() !== undefined,
    installedTest: 'ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1',
    // Debian's package would start a system cluster on 5432; nothing of ours needs it.
    noServiceStarts: true,
  });
}

/** The newest installed server's bin directory. */
function postgresBin(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : path.join(root, versions[0], 'bin');
}

let databases = 0;

const CLUSTER_PREFIX = 'mailgate-postgres-';
/** In a cluster's directory: the pid of the test process that owns it. */
const OWNER_FILE = 'owner.pid';

/**
 * Stops and removes the clusters whose test process is gone without stopping them (killed by
 * `node --test`'s timeout or a SIGKILL: `process.on('exit')` never ran). A cluster without an
 * owner file, or whose owner still runs, is left alone; a reused pid only leaves one behind.
 */
async function reapOrphanedClusters(as: (cmd: string, args: string[]) => Promise<unknown>): Promise<void> {
  for (const name of readdirSync(tmpdir()).filter((n) => n.startsWith(CLUSTER_PREFIX))) {
    const dir = path.join(tmpdir(), name);
    const owner = Number(await readFile(path.join(dir, OWNER_FILE), 'utf8').catch(() => ''));
    if (!Number.isInteger(owner) || owner <= 0 || processRuns(owner)) continue;
    if (existsSync(path.join(dir, 'data', 'postmaster.pid')))
      await as('pg_ctl', ['-D', path.join(dir, 'data'), '-m', 'immediate', '-w', 'stop']).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Databases made synchronously on a cluster that is running: the databases a test process
 * names in the configs it writes (test/helpers/test-store.ts).
 */
export interface TestDatabases {
  /** A connection URL to database NAME. */
  url(database: string): string;
  /** Creates database NAME (one run of the cluster's psql, ~0.1 s) and returns its URL. */
  createDatabaseSync(name: string): string;
  /** Drops databases NAMES, ending their sessions: for `process.on('exit')`. */
  dropDatabasesSync(names: string[]): void;
}

/**
 * The environment variable through which test/run-postgres.ts hands one cluster to every test
 * process of a run (`postgres://USER@127.0.0.1:PORT`), so that each test file does not pay an
 * initdb and a server start of its own (about 5 s).
 */
export const SHARED_CLUSTER_ENV = 'MAILGATE_TEST_POSTGRES';

/** Databases on the cluster at URL (`postgres://USER@HOST:PORT`), which someone else runs and stops. */
export function attachPostgres(url: string): TestDatabases {
  const { hostname, port, username } = new URL(url);
  if (!hostname || !port || !username) throw new Error(`${SHARED_CLUSTER_ENV}: expected postgres://USER@HOST:PORT, got ${url}`);
  return databasesOn(postgresBin()!, hostname, Number(port), username);
}

/**
 * FILE_COPY: copying template1's files is quicker than writing them through the WAL, the
 * default since PostgreSQL 15, for databases as small as these.
 */
function createDatabaseSql(name: string): string {
  return `CREATE DATABASE "${name}" STRATEGY FILE_COPY`;
}

function databasesOn(bin: string, host: string, port: number, user: string): TestDatabases {
  const url = (database: string) => `postgres://${user}@${host}:${port}/${database}`;
  // Each -c is a statement of its own: CREATE and DROP DATABASE cannot run in a transaction.
  const psql = (statements: string[]) =>
    execFileSync(path.join(bin, 'psql'), ['-q', '-h', host, '-p', String(port), '-U', user, '-d', 'postgres', ...statements.flatMap((s) => ['-c', s])], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  return {
    url,
    createDatabaseSync(name) {
      psql([createDatabaseSql(name)]);
      return url(name);
    },
    dropDatabasesSync(names) {
      if (names.length > 0) psql(names.map((n) => `DROP DATABASE IF EXISTS "${n}" WITH (FORCE)`));
    },
  };
}

/** Starts a private cluster; call `stop()` in `after`/`t.after`. */
export async function startPostgres(opts: PostgresOptions = {}): Promise<TestPostgres> {
  await ensurePostgres();
  const bin = postgresBin()!;
  const asRoot = process.getuid?.() === 0;
  // As root, the server runs as `postgres`, which must own the cluster and reach the socket.
  const command = (cmd: string, args: string[]): [string, string[]] =>
    asRoot ? ['runuser', ['-u', 'postgres', '--', path.join(bin, cmd), ...args]] : [path.join(bin, cmd), args];
  const as = (cmd: string, args: string[]) => run(...command(cmd, args));
  await reapOrphanedClusters(as);
  const dir = await mkdtemp(path.join(tmpdir(), CLUSTER_PREFIX));
  await writeFile(path.join(dir, OWNER_FILE), `${process.pid}\n`);
  if (asRoot) {
    const { stdout } = await run('id', ['-u', 'postgres']);
    const { stdout: gid } = await run('id', ['-g', 'postgres']);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const data = path.join(dir, 'data');
  const log = path.join(dir, 'postgres.log');
  const user = 'mailgate';
  // C collation: ids sort byte by byte whatever the locale (the store also says COLLATE "C").
  await as('initdb', ['-D', data, '-U', user, '--auth=trust', '--no-instructions', '--locale=C', '--encoding=UTF8']);
  const settings: Record<string, string> = {
    listen_addresses: '127.0.0.1',
    unix_socket_directories: dir,
    fsync: opts.fsync === false ? 'off' : 'on',
    // Several gateways and the contract's stores, each with a pool.
    max_connections: '200',
    ...opts.settings,
  };
  let port = 0;
  const start = async () => {
    const options = [`-p ${port}`, ...Object.entries(settings).map(([k, v]) => `-c ${k}=${v}`)].join(' ');
    await as('pg_ctl', ['-D', data, '-l', log, '-o', options, '-w', '-t', '60', 'start']);
  };
  for (let attempt = 1; ; attempt++) {
    port = (await freePorts(1))[0]!;
    try {
      await start();
      break;
    } catch (err) {
      const text = await readFile(log, 'utf8').catch(() => '');
      if (attempt >= 3 || !/could not bind|Address already in use/.test(text)) {
        await rm(dir, { recursive: true, force: true });
        throw new Error(`PostgreSQL did not start: ${(err as Error).message}\n${text.slice(-2000)}`, { cause: err });
      }
    }
  }
  let running = true;
  let removed = false;
  const url = (database: string) => `postgres://${user}@127.0.0.1:${port}/${database}`;
  const query = async (sql: string, database = 'postgres') => {
    const client = new pg.Client({ connectionString: url(database) });
    await client.connect();
    try {
      return await client.query(sql);
    } finally {
      await client.end();
    }
  };
  const stopServer = async (mode: 'fast' | 'immediate' = 'fast') => {
    if (!running) return;
    await as('pg_ctl', ['-D', data, '-m', mode, '-w', 'stop']);
    running = false;
  };
  const pools: pg.Pool[] = [];
  const pool = (connectionString: string, max = 4) => {
    const p = new pg.Pool({ connectionString, max });
    pools.push(p);
    return p;
  };
  const createDatabase = async (name?: string) => {
    const db = name ?? `t${process.pid}_${++databases}`;
    await query(createDatabaseSql(db));
    return url(db);
  };
  return {
    host: '127.0.0.1',
    port,
    user,
    dir,
    query,
    createDatabase,
    ...databasesOn(bin, '127.0.0.1', port, user),
    pool,
    async createMailgateDatabase(max) {
      const created = await createDatabase();
      const p = pool(created, max);
      await migrateDatabase(p, { where: created, node: 'test' });
      return { url: created, pool: p };
    },
    stopServer,
    async startServer() {
      if (running) return;
      await start();
      running = true;
    },
    readLog: () => readFile(log, 'utf8'),
    async stop() {
      if (removed) return;
      removed = true;
      await Promise.all(pools.map((p) => p.end().catch(() => {})));
      await stopServer('immediate').catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
    stopSync() {
      if (removed) return;
      removed = true;
      try {
        if (running) execFileSync(...command('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']), { stdio: 'ignore' });
      } catch {
        // already gone
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
