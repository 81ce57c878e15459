/**
 * Several `mailgate serve` processes on one PostgreSQL database (issue 16, "Tests: Several
 * nodes"): each node a child process with its own config file, data directory (its spool and
 * control socket) and `[node] name`, all naming one database of a private cluster
 * (helpers/postgres.ts). A node's JSON log is kept line by line, so a test waits for what a node
 * says (`mailbox lease taken`, `message fetched`) instead of for a time.
 *
 * The cluster runs with fsync off: these tests kill gateways and the PostgreSQL server process
 * (`stopServer('immediate')`), never the machine, and a committed transaction's WAL is in the
 * page cache either way; with four helpers' tests on two cores, fsync would only slow every
 * commit and hide nothing these tests can see. (The bench keeps fsync on.)
 */
import type { ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { openStore } from '../../storage/open.js';
import type { Store } from '../../storage/store.js';
import { runCli, spawnServe, writeTestConfig, type CliResult } from './gateway.js';
import { tempDir } from './paths.js';
import { before, after } from 'node:test';
import { ensureDovecot, startDovecot, type TestDovecot } from './dovecot.js';
import { startPostgres, type TestPostgres } from './postgres.js';

/** A log entry of a node, as serve writes it (pino JSON). */
export type LogEntry = Record<string, unknown> & { msg?: string };

/** One `mailgate serve` of the fleet. */
export interface FleetNode {
  /** Its `[node] name`. */
  name: string;
  configFile: string;
  /** The SMTP listener's port (of the current run). */
  port: number;
  submissionPort?: number;
  /** The REST API's base URL, when the config has an `[admin]` table. */
  api?: string;
  child: ChildProcess;
  /** Resolves with the exit code (null after a signal). */
  exited: Promise<number | null>;
  /** Every log entry of this run so far. */
  log: LogEntry[];
  /** Entries of this run that MATCH. */
  count(match: (e: LogEntry) => boolean): number;
  /**
   * Resolves with the first entry that MATCH (past or future); rejects when the node exits
   * first, or after `boundMs` (default 120 s), a bound against a hung test, not a timing claim.
   */
  waitForLog(match: (e: LogEntry) => boolean, what: string, boundMs?: number): Promise<LogEntry>;
  /** SIGKILL, resolved once the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM (a clean stop), resolved with the exit code. */
  stop(): Promise<number | null>;
  /** Runs the CLI with this node's config. */
  cli(args: string[]): Promise<CliResult>;
}

export interface Fleet {
  postgres: TestPostgres;
  /** The shared database's URL. */
  url: string;
  nodes: FleetNode[];
  /** Starts node I again (after `kill` or `stop`) on its config; `nodes[i]` is the new run. */
  restart(i: number): Promise<FleetNode>;
  /** Opens the shared store in this process (for assertions); closed by `stop`. */
  openStore(): Promise<Store>;
  /** Kills what still runs, closes stores, stops the cluster (unless given), removes the directories. */
  stop(): Promise<void>;
}

export interface FleetOptions {
  /** How many nodes (named `node-a`, `node-b`, ...). */
  nodes: number;
  /** The TOML each node gets besides its data_dir, `[storage]` and `[node]`: aliases, `[queue]`, `[retriever]`... (by node name, when a function). */
  toml: string | ((node: string) => string);
  /** A cluster to use (else one is started with fsync off and stopped by `stop`). */
  postgres?: TestPostgres;
}

const NAMES = 'abcdefghijklmnopqrstuvwxyz';

/** Starts N nodes on one fresh database, one after the other (each migrates if it must, under the advisory lock). */
export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const postgres = opts.postgres ?? (await startPostgres({ fsync: false }));
  const { dir, cleanup } = await tempDir('mailgate-fleet-');
  const url = await postgres.createDatabase();
  const stores: Store[] = [];
  const configs: { name: string; configFile: string }[] = [];
  for (let i = 0; i < opts.nodes; i++) {
    const name = `node-${NAMES[i]}`;
    const nodeDir = path.join(dir, name);
    await mkdir(nodeDir, { recursive: true });
    const toml = `${typeof opts.toml === 'string' ? opts.toml : opts.toml(name)}\n[storage]\npostgres = ${JSON.stringify(url)}\n\n[node]\nname = "${name}"\n`;
    configs.push({ name, configFile: await writeTestConfig(nodeDir, toml) });
  }
  const nodes: FleetNode[] = [];
  for (const c of configs) nodes.push(await startNode(c.name, c.configFile));
  return {
    postgres,
    url,
    nodes,
    async restart(i) {
      const old = nodes[i]!;
      if (old.child.exitCode === null && old.child.signalCode === null) throw new Error(`${old.name} still runs: kill or stop it first`);
      nodes[i] = await startNode(old.name, old.configFile);
      return nodes[i];
    },
    async openStore() {
      const store = await openStore(path.join(dir, 'reader'), { postgres: { url, connections: 3 }, node: 'test-reader', createIfEmpty: false });
      stores.push(store);
      return store;
    },
    async stop() {
      await Promise.all(nodes.map((n) => n.kill()));
      for (const s of stores.splice(0)) await s.close().catch(() => {});
      if (!opts.postgres) await postgres.stop();
      await cleanup();
    },
  };
}

/** Starts `mailgate serve` on CONFIG_FILE, keeping its log from the first line. */
async function startNode(name: string, configFile: string): Promise<FleetNode> {
  const log: LogEntry[] = [];
  const waiters = new Set<() => void>();
  const serve = await spawnServe(configFile, {
    onLine(line) {
      try {
        log.push(JSON.parse(line) as LogEntry);
      } catch {
        return; // not a log line (the sign-in link)
      }
      for (const w of waiters) w();
    },
  });
  const gone = () => serve.child.exitCode !== null || serve.child.signalCode !== null;
  const node: FleetNode = {
    name,
    configFile,
    port: serve.port,
    ...(serve.submissionPort ? { submissionPort: serve.submissionPort } : {}),
    ...(serve.api ? { api: serve.api } : {}),
    child: serve.child,
    exited: serve.exited,
    log,
    count: (match) => log.filter(match).length,
    waitForLog(match, what, boundMs = 120_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = log.find(match);
          if (found) return done(() => resolve(found));
          if (gone()) done(() => reject(new Error(`${name} exited before logging ${what}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`${name} did not log ${what} within ${boundMs} ms`))), boundMs);
        const done = (settle: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          settle();
        };
        waiters.add(check);
        void serve.exited.then(check);
        check();
      });
    },
    async kill() {
      if (!gone()) serve.child.kill('SIGKILL');
      await serve.exited;
    },
    async stop() {
      if (!gone()) serve.child.kill('SIGTERM');
      return serve.exited;
    },
    cli: (args) => runCli([...args, '--config', configFile]),
  };
  return node;
}

/**
 * The servers of a test of nodes sharing one mailbox: a Dovecot with user `desk` (password
 * `pw-desk`) and a private PostgreSQL, started in the calling file's `before` and stopped in its
 * `after`; read them from the object returned, once the tests run.
 */
export function deskServers(): { readonly dovecot: TestDovecot; readonly postgres: TestPostgres } {
  const servers = {} as { dovecot: TestDovecot; postgres: TestPostgres };
  before(async () => {
    await ensureDovecot();
    [servers.dovecot, servers.postgres] = await Promise.all([
      startDovecot({ users: [{ name: 'desk', password: 'pw-desk' }] }),
      startPostgres({ fsync: false }),
    ]);
  });
  after(async () => {
    await servers.dovecot?.stop();
    await servers.postgres?.stop();
  });
  return servers;
}

/** A customer's question N to desk@example.com; its Message-ID starts with TAG and is new on every run. */
export function deskMessage(n: number, tag: string): Buffer {
  return Buffer.from(
    [
      `From: customer${n}@example.net`,
      'To: desk@example.com',
      `Subject: question ${n}`,
      `Message-ID: <${tag}${n}-${Date.now()}@example.net>`,
      '',
      `Body ${n}`,
      '',
    ].join('\r\n'),
  );
}
