/**
 * The SMTP servers the ingest bench measures, each in its own process on a loopback port:
 * `mailgate serve`, a bare smtp-server sink, Postfix's smtp-sink and Haraka. Each peer says how
 * to stop it; its pid is the process whose memory and CPU are read from /proc.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, readdir, writeFile } from 'node:fs/promises';

import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { testConfigText } from '../helpers/gateway.js';
import type { TestPostgres } from '../helpers/postgres.js';
import { cliPath, projectRoot, tempDir } from '../helpers/paths.js';
import { accepts, freePorts } from '../helpers/ports.js';
import { ensureHaraka, ensurePostfixTools, HARAKA_VERSION, SMTP_SINK } from './tools.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** A server under test. */
export interface Peer {
  /** Short name, used as a key and in the output. */
  key: 'sink' | 'mailgate' | 'mailgate-pg' | 'mailgate-pg2' | 'smtp-sink' | 'haraka';
  /** What it is, for the output. */
  label: string;
  port: number;
  /** The server process (the one whose memory and CPU count). */
  pid: number;
  /**
   * A peer that is several servers sharing the load: every one of them (the first is `port`
   * and `pid`), each given an equal share of the sessions; their sum is what is measured.
   */
  nodes?: readonly { port: number; pid: number }[];
  /** The PostgreSQL cluster and database it stores into, whose costs the bench reads too. */
  database?: { cluster: TestPostgres; name: string };
  /** Messages it has stored so far, where the bench can count them (Haraka's queue files, mailgate's rows in PostgreSQL). */
  stored?(): Promise<number>;
  stop(): Promise<void>;
}

/** How each peer is named in the bench's output (the smoke test looks for these). */
export const peerLabels: Record<Peer['key'], string> = {
  sink: 'bare smtp-server sink',
  mailgate: 'mailgate, LevelDB (4 stages, durable)',
  'mailgate-pg': 'mailgate, PostgreSQL, 1 node',
  'mailgate-pg2': 'mailgate, PostgreSQL, 2 nodes (sum)',
  'smtp-sink': 'Postfix smtp-sink',
  haraka: `Haraka ${HARAKA_VERSION} (queue to disk, fsync)`,
};

/** The partition policy with all four stages on, as the memory bench uses it. */
export const partitionPolicyToml = `[partition]\npolicy = ${JSON.stringify(path.join(projectRoot, 'policy', 'examples', 'partition.toml'))}\n`;

/** Resolves when the child exits (its code), and ends it with `signal`, then SIGKILL after a grace period. */
function stopper(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): () => Promise<void> {
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  return async () => {
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
}

/** Keeps the last few KB of a stream, for error messages, and drains the rest. */
function tail(stream: NodeJS.ReadableStream | null): () => string {
  let kept = '';
  stream?.on('data', (c: Buffer) => (kept = (kept + c.toString()).slice(-4000)));
  return () => kept;
}

async function waitForPort(port: number, child: ChildProcess, what: string, output: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await accepts(port))) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it listened: ${output()}`);
    if (Date.now() > deadline) throw new Error(`${what} does not accept connections on port ${port} after ${timeoutMs} ms: ${output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * `mailgate serve` from dist/gateway/cli.js with a config file in a temp dir: durable store
 * (every 250 after a synced LevelDB write) and `toml` (default: all four stages, through
 * policy/examples/partition.toml). `nodeArgs` e.g. `--cpu-prof`. Its log (a line a message)
 * is read and dropped, as a log shipper would. `cli`: another build's cli.js, to compare two builds in one run.
 */
export async function startMailgate(opts: { toml?: string; nodeArgs?: string[]; cli?: string } = {}): Promise<Peer & { dir: string }> {
  const { dir, cleanup } = await tempDir('mailgate-bench-');
  const configFile = path.join(dir, 'mailgate.toml');
  // LevelDB unless the TOML names a PostgreSQL: the bench picks each peer's store itself, whatever
  // MAILGATE_TEST_STORE the suite runs with.
  await writeFile(configFile, testConfigText(dir, opts.toml ?? partitionPolicyToml, { store: 'leveldb' }));
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), opts.cli ?? cliPath, 'serve', '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr = tail(child.stderr);
  const stop = stopper(child);
  try {
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (!line.includes('mailgate ready')) return;
        try {
          const entry = JSON.parse(line) as { msg?: string; smtp?: { port: number }[] };
          if (entry.msg === 'mailgate ready' && entry.smtp?.[0]) resolve(entry.smtp[0].port);
        } catch {
          // not a log line
        }
      });
      child.once('exit', (code) => reject(new Error(`mailgate serve exited with ${code} before it was ready: ${stderr()}`)));
    });
    return {
      key: 'mailgate',
      label: peerLabels.mailgate,
      port,
      pid: child.pid!,
      dir,
      async stop() {
        await stop();
        await cleanup();
      },
    };
  } catch (err) {
    await stop();
    await cleanup();
    throw err;
  }
}

/**
 * NODES `mailgate serve` processes (1 or 2) on one fresh database of CLUSTER, as a fleet runs
 * them: each its own data_dir (spool, control socket) and `[node] name`, all four stages, the
 * default `[storage] connections` (10). Started one after the other: the first makes the tables.
 */
export async function startMailgateOnPostgres(cluster: TestPostgres, nodes: 1 | 2, opts: { nodeArgs?: string[] } = {}): Promise<Peer> {
  const url = await cluster.createDatabase();
  const name = new URL(url).pathname.slice(1);
  const started: Awaited<ReturnType<typeof startMailgate>>[] = [];
  try {
    for (let i = 1; i <= nodes; i++) {
      const toml = `${partitionPolicyToml}\n[storage]\npostgres = ${JSON.stringify(url)}\n\n[node]\nname = "bench-${i}"\n`;
      started.push(await startMailgate({ toml, ...(opts.nodeArgs ? { nodeArgs: opts.nodeArgs } : {}) }));
    }
  } catch (err) {
    await Promise.allSettled(started.map((n) => n.stop()));
    throw err;
  }
  const key = nodes === 1 ? 'mailgate-pg' : 'mailgate-pg2';
  return {
    key,
    label: peerLabels[key],
    port: started[0]!.port,
    pid: started[0]!.pid,
    nodes: started.map((n) => ({ port: n.port, pid: n.pid })),
    database: { cluster, name },
    stored: async () => Number((await cluster.query('SELECT count(*) AS n FROM messages', name)).rows[0].n),
    async stop() {
      await Promise.allSettled(started.map((n) => n.stop()));
    },
  };
}

/** The bare smtp-server sink (test/bench/sink.ts): the ceiling for an SMTP server in Node. */
export async function startSink(): Promise<Peer> {
  const child = spawn(process.execPath, [path.join(here, 'sink.js')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`sink.js exited with ${code}`)));
  });
  return { key: 'sink', label: peerLabels.sink, port: (JSON.parse(line) as { port: number }).port, pid: child.pid!, stop: stopper(child) };
}

/** Postfix's smtp-sink: an event-driven C server that answers and discards, the machine's ceiling. */
export async function startSmtpSink(): Promise<Peer> {
  await ensurePostfixTools();
  const port = (await freePorts(1))[0]!;
  // smtp-sink insists on dropping root privileges (-u) when started as root.
  const user = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
  const child = spawn(SMTP_SINK, [...user, `127.0.0.1:${port}`, '256'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const stderr = tail(child.stderr);
  const stop = stopper(child);
  try {
    await waitForPort(port, child, 'smtp-sink', stderr);
  } catch (err) {
    await stop();
    throw err;
  }
  return { key: 'smtp-sink', label: peerLabels['smtp-sink'], port, pid: child.pid!, stop };
}

/**
 * The queue plugin of the bench's Haraka: each message is streamed to its own file, fsynced,
 * and only then OKed, so Haraka answers 250 for a durable copy as mailgate does. It also
 * answers the reverse DNS lookup itself (no network) and accepts every recipient (Haraka
 * refuses recipients no plugin accepts).
 */
const harakaQueuePlugin = `'use strict'
// mailgate bench: queue to disk, one file a message, fsynced before the 250.
const fs = require('node:fs')
const path = require('node:path')

exports.register = function () {
    this.dir = this.config.get('bench_queue.ini').main.dir
    fs.mkdirSync(this.dir, { recursive: true })
}

// No reverse DNS lookup (Haraka does one per connection unless a plugin answers).
exports.hook_lookup_rdns = function (next) {
    next(OK, 'localhost')
}

exports.hook_rcpt = function (next) {
    next(OK)
}

exports.hook_queue = function (next, connection) {
    const txn = connection.transaction
    const file = path.join(this.dir, txn.uuid + '.eml')
    fs.open(file, 'w', (err, fd) => {
        if (err) return next(DENYSOFT, 'cannot open queue file')
        let done = false
        const reply = (e) => {
            if (done) return
            done = true
            fs.close(fd, () => (e ? next(DENYSOFT, 'cannot write queue file') : next(OK, 'queued as ' + txn.uuid)))
        }
        const ws = fs.createWriteStream(null, { fd, autoClose: false })
        ws.once('error', reply)
        ws.once('finish', () => fs.fsync(fd, reply))
        txn.message_stream.pipe(ws, { line_endings: '\\r\\n' })
    })
}
`;

/**
 * Haraka (npm, installed on first use) in one process (`nodes=0`), with only the bench queue
 * plugin: no reverse DNS, no plugin that needs the network; log level notice (one line per
 * connection, like mailgate's line per message).
 */
export async function startHaraka(): Promise<Peer & { dir: string }> {
  const bin = await ensureHaraka();
  const { dir, cleanup } = await tempDir('mailgate-bench-haraka-');
  const port = (await freePorts(1))[0]!;
  const queueFiles = path.join(dir, 'queue-files');
  // Haraka's shipped defaults (connection.ini and the rest), then ours over them.
  await cp(path.join(path.dirname(bin), '..', 'config'), path.join(dir, 'config'), { recursive: true });
  await mkdir(path.join(dir, 'plugins'), { recursive: true });
  const files: Record<string, string> = {
    'config/smtp.ini': `listen=127.0.0.1:${port}\nnodes=0\n`,
    'config/plugins': 'bench_queue\n',
    'config/log.ini': '[main]\nlevel=notice\ntimestamps=false\nformat=default\n',
    'config/bench_queue.ini': `[main]\ndir=${queueFiles}\n`,
    // Haraka's own outbound queue, unused here, lives in the instance too.
    'config/outbound.ini': '[main]\ndisabled=true\n',
    'plugins/bench_queue.js': harakaQueuePlugin,
  };
  for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
  const child = spawn(process.execPath, [bin, '-c', dir], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  const output = tail(child.stdout);
  const stderr = tail(child.stderr);
  // Haraka shuts down on SIGINT (SIGTERM only as pid 1).
  const stop = stopper(child, 'SIGINT');
  try {
    await waitForPort(port, child, 'Haraka', () => output() + stderr());
  } catch (err) {
    await stop();
    await cleanup();
    throw err;
  }
  return {
    key: 'haraka',
    label: peerLabels.haraka,
    port,
    pid: child.pid!,
    dir,
    stored: async () => (await readdir(queueFiles)).filter((f) => f.endsWith('.eml')).length,
    async stop() {
      await stop();
      await cleanup();
    },
  };
}
