/**
 * Ingest throughput over SMTP, driven by Postfix's smtp-source (20 parallel sessions), into
 * these servers in one run: mailgate (all four stages, durable store) on LevelDB, on
 * PostgreSQL, and as two nodes on that PostgreSQL (the sessions split over both), a bare
 * smtp-server sink (the ceiling in Node), Postfix's smtp-sink (the machine's ceiling) and
 * Haraka queueing each message to disk. Runs are interleaved (the order rotates every run) and reported as medians,
 * with rates as ratios against the bare sink.
 *
 * smtp-source does not time replies, so the end-of-DATA to 250 latency comes from our own
 * load generator (test/bench/load.ts) with the same traffic shape (20 sessions, same size, same
 * connection mode), run against each server right after its smtp-source run.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { projectRoot } from '../helpers/paths.js';
import { startPostgres, type TestPostgres } from '../helpers/postgres.js';
import { startHaraka, startMailgate, startMailgateOnPostgres, startSink, startSmtpSink, type Peer } from './peers.js';
import { postgresCpuSeconds, reportedSettings, sampleConnections, walCounters, walDelta, type ConnectionPeak, type WalCounters } from './postgres-probe.js';
import { memoryOf, resetPeak } from './proc.js';
import { ensureHaraka, ensurePostfixTools, HARAKA_VERSION, postfixVersion, SMTP_SOURCE } from './tools.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const run = promisify(execFile);

export const SESSIONS = 20;

/** One traffic shape: message payload size, connection per message or reused (`-d`), messages per run and per latency sample. */
export interface Shape {
  size: number;
  reuse: boolean;
  messages: number;
  sample: number;
}

const fullShapes: Shape[] = [
  { size: 4096, reuse: true, messages: 6000, sample: 2000 },
  { size: 4096, reuse: false, messages: 800, sample: 400 },
  { size: 102400, reuse: true, messages: 1500, sample: 600 },
  { size: 102400, reuse: false, messages: 500, sample: 300 },
];
// --quick checks that every shape and peer works (the suite's smoke test): a few messages each.
const quickShapes: Shape[] = [
  { size: 4096, reuse: true, messages: 60, sample: 20 },
  { size: 4096, reuse: false, messages: 20, sample: 10 },
  { size: 102400, reuse: true, messages: 20, sample: 10 },
  { size: 102400, reuse: false, messages: 10, sample: 10 },
];

export const shapeName = (s: Shape) => `${s.size / 1024} KB, ${s.reuse ? 'reused connections (-d)' : 'connection per message'}`;

/** CPU seconds a process has used (user + system, all threads), from /proc. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** `smtp-source -s 20 -m N -l SIZE [-d] 127.0.0.1:PORT`: seconds from start to exit (it exits at the first non-2xx). */
export async function smtpSource(port: number, shape: Pick<Shape, 'size' | 'reuse'>, messages: number, sessions = SESSIONS): Promise<number> {
  const args = [
    '-s',
    String(sessions),
    '-m',
    String(messages),
    '-l',
    String(shape.size),
    ...(shape.reuse ? ['-d'] : []),
    '-M',
    'bench.example.org',
    '-f',
    'load@example.org',
    '-t',
    'support@example.com',
    '-S',
    'ingest bench',
    `127.0.0.1:${port}`,
  ];
  const start = process.hrtime.bigint();
  try {
    await run(SMTP_SOURCE, args, { timeout: 60_000 + messages * 50, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`smtp-source ${args.join(' ')} failed: ${(e.stderr ?? '').trim() || e.message}`, { cause: err });
  }
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** The servers of PEER: one, or each node of a peer that is several. */
const nodesOf = (peer: Peer) => peer.nodes ?? [{ port: peer.port, pid: peer.pid }];

/** N split in K near-equal whole shares; share I. */
const share = (n: number, k: number, i: number) => Math.floor(n / k) + (i < n % k ? 1 : 0);

/**
 * smtp-source into every node of PEER at once, the sessions and messages split evenly (one
 * smtp-source per node): seconds until the last has sent its share.
 */
export async function smtpSourceInto(peer: Peer, shape: Pick<Shape, 'size' | 'reuse'>, messages: number): Promise<number> {
  const nodes = nodesOf(peer);
  const start = process.hrtime.bigint();
  await Promise.all(nodes.map((n, i) => smtpSource(n.port, shape, share(messages, nodes.length, i), share(SESSIONS, nodes.length, i))));
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** CPU seconds of every node of PEER together. */
const peerCpuSeconds = (peer: Peer) => nodesOf(peer).reduce((sum, n) => sum + cpuSeconds(n.pid), 0);

interface Latency {
  rate: number;
  p50: number;
  p99: number;
}

/** test/bench/load.ts against PEER (its sessions spread over its nodes): the p50/p99 from end of DATA to the 250 reply. */
function latencySample(peer: Peer, shape: Shape): Promise<Latency> {
  return new Promise((resolve, reject) => {
    const ports = nodesOf(peer).map((n) => n.port);
    const args = [path.join(here, 'load.js'), ports.join(','), String(SESSIONS), String(shape.sample), String(shape.size), shape.reuse ? 'reuse' : 'new'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Latency) : reject(new Error(`load generator exited ${code}: ${err.trim()}`))));
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

export interface IngestBenchOptions {
  /** Few messages and one run: checks that every peer starts and takes mail; measures nothing worth keeping. */
  quick?: boolean;
  /** Runs of each shape and peer, interleaved. Default 3 (quick: 1). */
  runs?: number;
}

interface Sample {
  seconds: number;
  cpu: number;
  /** CPU seconds of the PostgreSQL cluster over the run (peers on PostgreSQL). */
  databaseCpu?: number;
  latency: Latency;
}

/** Versions of everything measured, for the report. */
async function versions(): Promise<string> {
  const pkg = (name: string, dir = path.join(projectRoot, 'node_modules')) =>
    (JSON.parse(readFileSync(path.join(dir, name, 'package.json'), 'utf8')) as { version: string }).version;
  return `Node ${process.version}, smtp-server ${pkg('smtp-server')}, pg ${pkg('pg')}, Postfix ${await postfixVersion()}, Haraka ${HARAKA_VERSION}`;
}

/**
 * Messages per second into each peer for each shape, medians of `runs` interleaved runs,
 * with the end-of-DATA to 250 latency, CPU per message and the peak resident memory of
 * each server process over the measured runs.
 */
export async function ingestBench(opts: IngestBenchOptions = {}): Promise<string[]> {
  const runs = opts.runs ?? (opts.quick ? 1 : 3);
  const shapes = opts.quick ? quickShapes : fullShapes;
  await ensurePostfixTools();
  await ensureHaraka();
  const lines: string[] = [
    `${await versions()}; ${SESSIONS} sessions; ${runs === 1 ? '1 run' : `medians of ${runs} interleaved runs`}${opts.quick ? ' (quick: not a measurement)' : ''}`,
  ];
  const peers: Peer[] = [];
  let cluster: TestPostgres | undefined;
  // Messages each peer answered 250 for (smtp-source stops at the first that is not), to check against what it stored.
  const sent = new Map<Peer['key'], number>();
  const count = (peer: Peer, n: number) => sent.set(peer.key, (sent.get(peer.key) ?? 0) + n);
  try {
    // One PostgreSQL for both mailgate peers on it, a database each: fsync on, as in production.
    cluster = await startPostgres({ fsync: true });
    const pgCluster = cluster;
    lines.push(`PostgreSQL: a private cluster on loopback TCP, initdb defaults but max_connections=200; ${await reportedSettings(pgCluster)}`);
    // The baseline first: ratios are against it. One at a time, so a failed start still stops the others.
    for (const start of [
      startSink,
      startMailgate,
      () => startMailgateOnPostgres(pgCluster, 1),
      () => startMailgateOnPostgres(pgCluster, 2),
      startSmtpSink,
      startHaraka,
    ])
      peers.push(await start());
    // Warm-up: JIT, LevelDB, PostgreSQL's caches, Haraka's plugin; then the peak memory is reset so it belongs to the measured runs.
    for (const peer of peers) {
      const warm = opts.quick ? [20, 10] : [1000, 200];
      await smtpSourceInto(peer, { size: 4096, reuse: true }, warm[0]!);
      await smtpSourceInto(peer, { size: 102400, reuse: true }, warm[1]!);
      count(peer, warm[0]! + warm[1]!);
    }
    const peakReset = peers.flatMap((p) => nodesOf(p).map((n) => resetPeak(n.pid)));

    for (const shape of shapes) {
      const samples = new Map<Peer['key'], Sample[]>(peers.map((p) => [p.key, []]));
      for (let i = 0; i < runs; i++) {
        // Rotate the order so no peer always runs first (or right after the slowest).
        const order = peers.map((_, j) => peers[(i + j) % peers.length]!);
        for (const peer of order) {
          const cpu0 = peerCpuSeconds(peer);
          const db0 = peer.database ? postgresCpuSeconds(peer.database.cluster) : 0;
          const seconds = await smtpSourceInto(peer, shape, shape.messages);
          const cpu = peerCpuSeconds(peer) - cpu0;
          const databaseCpu = peer.database ? postgresCpuSeconds(peer.database.cluster) - db0 : undefined;
          const latency = await latencySample(peer, shape);
          count(peer, shape.messages + shape.sample);
          samples.get(peer.key)!.push({ seconds, cpu, latency, ...(databaseCpu === undefined ? {} : { databaseCpu }) });
        }
      }
      const rateOf = (key: Peer['key']) => shape.messages / median(samples.get(key)!.map((s) => s.seconds));
      const baseRate = rateOf('sink');
      lines.push(`${shapeName(shape)}: ${shape.messages} messages a run by smtp-source; latency from load.js, ${shape.sample} messages`);
      for (const peer of peers) {
        const s = samples.get(peer.key)!;
        const rate = rateOf(peer.key);
        lines.push(
          `  ${peer.label.padEnd(38)} ${rate.toFixed(0).padStart(6)}/s  ratio ${(rate / baseRate).toFixed(2).padStart(5)}` +
            `  end-of-DATA->250 p50 ${median(s.map((x) => x.latency.p50))
              .toFixed(1)
              .padStart(5)} ms  p99 ${median(s.map((x) => x.latency.p99))
              .toFixed(1)
              .padStart(6)} ms` +
            `  CPU ${((median(s.map((x) => x.cpu)) * 1000) / shape.messages).toFixed(2)} ms/msg` +
            (peer.database ? `  PostgreSQL CPU ${((median(s.map((x) => x.databaseCpu ?? 0)) * 1000) / shape.messages).toFixed(2)} ms/msg` : ''),
        );
      }
    }
    lines.push(
      `peak resident memory${peakReset.every(Boolean) ? ' over the measured runs' : ''}: ` +
        peers
          .map((p) => {
            const each = nodesOf(p).map((n) => memoryOf(n.pid).peak / 1024 / 1024);
            const sum = each.reduce((a, b) => a + b, 0);
            return `${p.label} ${sum.toFixed(0)} MB${each.length > 1 ? ` (${each.map((m) => m.toFixed(0)).join(' + ')})` : ''}`;
          })
          .join(', '),
    );
    lines.push(...(await databaseCosts(peers, shapes, opts.quick === true, count)));
    for (const peer of peers) {
      if (!peer.stored) continue;
      const stored = await peer.stored();
      lines.push(`${peer.label}: ${stored} messages on disk for ${sent.get(peer.key)} accepted`);
      if (stored !== sent.get(peer.key)) throw new Error(`${peer.label} stored ${stored} messages but accepted ${sent.get(peer.key)}`);
    }
  } finally {
    await Promise.allSettled(peers.map((p) => p.stop()));
    await cluster?.stop();
  }
  return lines;
}

/**
 * What the peers on PostgreSQL cost the database, one run of each reused-connection shape
 * each: PostgreSQL's CPU, its WAL (records, bytes, write and fsync calls) and the connections
 * the database had open and busy. pg_stat_wal is cluster-wide and a backend reports its counts
 * when idle, up to PGSTAT_IDLE_INTERVAL (10 s) late: the counters are read once that has
 * passed after each run, with nothing else writing meanwhile.
 */
async function databaseCosts(peers: readonly Peer[], shapes: readonly Shape[], quick: boolean, count: (peer: Peer, n: number) => void): Promise<string[]> {
  const onPostgres = peers.filter((p) => p.database);
  if (onPostgres.length === 0) return [];
  const settle = () => new Promise((r) => setTimeout(r, quick ? 1000 : 11_000));
  const lines = [
    `PostgreSQL's costs, one run of each reused-connection shape into each peer on it${quick ? '' : ', WAL counters read 11 s after each run (backends report them when idle)'}:`,
  ];
  await settle();
  for (const shape of shapes.filter((s) => s.reuse)) {
    for (const peer of onPostgres) {
      const { cluster, name } = peer.database!;
      const wal0: WalCounters = await walCounters(cluster);
      const db0 = postgresCpuSeconds(cluster);
      const cpu0 = peerCpuSeconds(peer);
      const stopSampling = await sampleConnections(cluster, name);
      let peak: ConnectionPeak;
      let seconds: number;
      try {
        seconds = await smtpSourceInto(peer, shape, shape.messages);
      } finally {
        peak = await stopSampling();
      }
      count(peer, shape.messages);
      const cpu = peerCpuSeconds(peer) - cpu0;
      const db = postgresCpuSeconds(cluster) - db0;
      await settle();
      const wal = walDelta(wal0, await walCounters(cluster));
      const per = (x: number, digits = 2) => (x / shape.messages).toFixed(digits);
      lines.push(
        `  ${shapeName(shape)}, ${peer.label}: ${(shape.messages / seconds).toFixed(0)}/s; mailgate CPU ${per(cpu * 1000)} ms/msg, PostgreSQL CPU ${per(db * 1000)} ms/msg;` +
          ` WAL ${per(wal.records, 1)} records, ${per(wal.bytes / 1024, 1)} KB, ${per(wal.writes)} writes, ${per(wal.syncs)} fsyncs a message` +
          ` (${(shape.messages / Math.max(wal.syncs, 1)).toFixed(1)} messages a flush); connections open at most ${peak.open}, active at most ${peak.active}`,
      );
    }
  }
  return lines;
}
