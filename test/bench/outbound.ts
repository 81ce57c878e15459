/**
 * Outbound throughput: messages an application submits to `mailgate serve` until a local sink
 * has received them all (accepted, stored and queued durably, then sent by the dispatcher),
 * against nodemailer sending the same messages straight to the same sink.
 *
 * Each party runs in its own process so no one's CPU counts against another's. This file is
 * also the entry point of two of them (sink.ts only drains; this sink must say when it has
 * all N, and load.ts speaks SMTP without AUTH):
 *   node outbound.js sink                                   counting smtp-server; prints its port
 *   node outbound.js client PORT CONNECTIONS MAX_MESSAGES [USER PASS]
 *                                                           pooled nodemailer; `send N` on stdin
 * Both take commands on stdin and answer one JSON line each. Times are process.hrtime
 * (CLOCK_MONOTONIC, the same clock in every process), so the start a client reports and the
 * end the sink reports can be subtracted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import nodemailer from 'nodemailer';
import { SMTPServer } from 'smtp-server';
import { writeTestConfig } from '../helpers/gateway.js';
import { submissionToml, SUBMIT_PASSWORD, SUBMIT_USER } from '../helpers/outbound.js';
import { cliPath, tempDir } from '../helpers/paths.js';
import { memoryOf, resetPeak } from './proc.js';
import { rfc5322Date } from '../../lib/text.js';

const here = fileURLToPath(import.meta.url);
const SIZE = 4096;
const FROM = 'support@example.com';
const TO = 'customer@example.org';
/** The dispatcher's pool settings for a route (gateway/dispatch/routes.ts, `[queue]` defaults): the baseline uses the same. */
const ROUTE_CONNECTIONS = 5;
const ROUTE_MAX_MESSAGES = 100;
/** Connections the submitting application keeps open (and logged in) to the submission listener. */
const SUBMIT_CONNECTIONS = 20;

/** A message of exactly `size` bytes, From the alias, with its own Message-ID. */
function message(tag: string, size: number): Buffer {
  const head =
    `From: Support <${FROM}>\r\nTo: <${TO}>\r\nSubject: outbound bench\r\nMessage-ID: <${tag}@bench.example.com>\r\n` +
    `Date: ${rfc5322Date(new Date())}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const line = `${'Thank you for writing to us; we will look into it. '.padEnd(74, 'x')}\r\n`;
  // Full lines, then one of 1 to 76 characters that makes the size exact.
  const full = line.repeat(Math.max(0, Math.floor((size - head.length - 3) / line.length)));
  return Buffer.from(head + full + `${'x'.repeat(Math.max(1, size - head.length - full.length - 2))}\r\n`);
}

const now = () => process.hrtime.bigint().toString();

/** Lines of JSON from a child, one at a time, with a deadline. */
class Replies {
  readonly #lines: string[] = [];
  readonly #waiting: ((line: string) => void)[] = [];
  readonly #child: ChildProcess;
  #exited: string | undefined;

  constructor(child: ChildProcess, name: string) {
    this.#child = child;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const w = this.#waiting.shift();
      if (w) w(line);
      else this.#lines.push(line);
    });
    child.on('exit', (code) => (this.#exited = `${name} exited with ${code}`));
  }

  next<T>(timeoutMs = 30_000): Promise<T> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return Promise.resolve(JSON.parse(queued) as T);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.splice(this.#waiting.indexOf(take), 1);
        reject(new Error(this.#exited ?? `no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      const take = (line: string) => {
        clearTimeout(timer);
        resolve(JSON.parse(line) as T);
      };
      this.#waiting.push(take);
    });
  }

  ask<T>(command: string, timeoutMs?: number): Promise<T> {
    this.#child.stdin!.write(command + '\n');
    return this.next<T>(timeoutMs);
  }
}

function startRole(args: string[]): { child: ChildProcess; replies: Replies } {
  const child = spawn(process.execPath, [here, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  return { child, replies: new Replies(child, `outbound.js ${args[0]}`) };
}

/** `mailgate serve` with its submission port, read from its log; `nodeArgs` e.g. `--cpu-prof`. */
async function spawnGateway(
  configFile: string,
  nodeArgs: string[],
  cli = cliPath,
  env: Record<string, string> = {},
): Promise<{ submissionPort: number; child: ChildProcess; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, [...nodeArgs, cli, 'serve', '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  let submissionPort = 0;
  return new Promise((resolve, reject) => {
    // The log keeps flowing (a few lines per message): readline drains it for the whole run.
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: { msg?: string; port?: number };
      try {
        entry = JSON.parse(line) as typeof entry;
      } catch {
        return;
      }
      if (entry.msg === 'submission listener ready' && entry.port) submissionPort = entry.port;
      if (entry.msg === 'mailgate ready') {
        if (submissionPort) resolve({ submissionPort, child, exited });
        else reject(new Error('mailgate serve is ready but logged no submission listener'));
      }
    });
    void exited.then((code) => reject(new Error(`mailgate serve exited with ${code} before it was ready: ${stderr}`)));
  });
}

interface Sent {
  /** hrtime (ns) before the first sendMail. */
  start: string;
  /** hrtime (ns) when the last one was accepted. */
  accepted: string;
}

interface Run {
  /** First send to the sink having all N, seconds. */
  seconds: number;
  /** First send to the last 250 from the server sent to, seconds. */
  acceptSeconds: number;
  /** CPU seconds (user + system, all threads) each watched process used during the run. */
  cpu: number[];
}

/** CPU seconds a process has used, from /proc (Linux; USER_HZ is 100 on every Linux ABI). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "pid (comm) ": state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** One timed run: the sink is told how many to expect, the client sends them, the sink says when the last one arrived. */
async function timedRun(sink: Replies, client: Replies, n: number, watch: number[] = []): Promise<Run> {
  await sink.ask('expect ' + n);
  const timeout = 60_000 + n * 100;
  const cpu0 = watch.map(cpuSeconds);
  const arrived = sink.next<{ at: string }>(timeout);
  const sent = await client.ask<Sent>('send ' + n, timeout);
  const done = await arrived.catch(async (err: Error) => {
    const { count } = await sink.ask<{ count: number }>('count');
    throw new Error(`the sink received ${count} of ${n} messages: ${err.message}`);
  });
  const cpu = watch.map((pid, i) => cpuSeconds(pid) - cpu0[i]!);
  const start = BigInt(sent.start);
  return { seconds: Number(BigInt(done.at) - start) / 1e9, acceptSeconds: Number(BigInt(sent.accepted) - start) / 1e9, cpu };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface OutboundBenchOptions {
  /** Messages per run. Default 2000 (quick: 50). */
  messages?: number;
  /** Few messages and one run: checks that the bench works, measures nothing worth keeping. */
  quick?: boolean;
  /** Runs of each side, interleaved. Default 3 (quick: 1). */
  runs?: number;
  /** Write a V8 CPU profile of the `mailgate serve` process into this directory (`node --cpu-prof`). */
  cpuProfDir?: string;
  /** The builds measured (`compare`: another checkout's DIR/dist/gateway/cli.js too); default this checkout alone. */
  builds?: readonly { label: string; cli: string; env?: Record<string, string> }[];
}

/**
 * Messages per second from a submitting application through `mailgate serve` to a local sink
 * (durable store, default policy, `[queue]` defaults), as a ratio against nodemailer sending
 * the same messages straight to the sink with the dispatcher's pool settings. Interleaved,
 * medians of `runs`, after a warm-up of each side.
 */
export async function outboundBench(opts: OutboundBenchOptions = {}): Promise<string[]> {
  const n = opts.messages ?? (opts.quick ? 50 : 2000);
  const runs = opts.runs ?? (opts.quick ? 1 : 3);
  const warmUp = opts.quick ? 20 : 200;
  const builds = opts.builds ?? [{ label: 'mailgate', cli: cliPath }];
  const { dir, cleanup } = await tempDir('mailgate-bench-');
  const sink = startRole(['sink']);
  const children: ChildProcess[] = [sink.child];
  const gateways: Awaited<ReturnType<typeof spawnGateway>>[] = [];
  try {
    const { port: sinkPort } = await sink.replies.next<{ port: number }>();
    const toml = `
[[alias]]
name = "support"
address = "${FROM}"
[alias.outgoing]
host = "127.0.0.1"
port = ${sinkPort}
${submissionToml(['support'], '# [queue] defaults: concurrency = 20, connections_per_route = 5')}`;
    if (opts.cpuProfDir) await mkdir(opts.cpuProfDir, { recursive: true });
    const direct = startRole(['client', String(sinkPort), String(ROUTE_CONNECTIONS), String(ROUTE_MAX_MESSAGES)]);
    children.push(direct.child);
    const submitters: ReturnType<typeof startRole>[] = [];
    for (const [j, build] of builds.entries()) {
      // Each build its own directory and store.
      const own = path.join(dir, `build-${j}`);
      await mkdir(own);
      const configFile = await writeTestConfig(own, toml);
      const gateway = await spawnGateway(configFile, opts.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', opts.cpuProfDir] : [], build.cli, build.env);
      gateways.push(gateway);
      const submitter = startRole(['client', String(gateway.submissionPort), String(SUBMIT_CONNECTIONS), 'Infinity', SUBMIT_USER, SUBMIT_PASSWORD]);
      children.push(submitter.child);
      submitters.push(submitter);
    }

    // Opens the pools (and the submitter's logins: a synchronous scrypt each), warms JIT and LevelDB.
    await timedRun(sink.replies, direct.replies, warmUp);
    for (const submitter of submitters) await timedRun(sink.replies, submitter.replies, warmUp);
    await pause(200);
    const peakReset = gateways.map((g) => resetPeak(g.child.pid!));

    const base: Run[] = [];
    const mg: Run[][] = builds.map(() => []);
    for (let i = 0; i < runs; i++) {
      base.push(await timedRun(sink.replies, direct.replies, n, [direct.child.pid!, sink.child.pid!]));
      // The dispatcher's last few outcome commits land just after the sink's last 250.
      await pause(200);
      for (const [j, gateway] of gateways.entries()) {
        const submitter = submitters[j]!;
        mg[j]!.push(await timedRun(sink.replies, submitter.replies, n, [gateway.child.pid!, submitter.child.pid!, sink.child.pid!]));
        await pause(200);
      }
    }

    const rate = (rs: Run[], key: 'seconds' | 'acceptSeconds') => n / median(rs.map((r) => r[key]));
    const cpuMs = (rs: Run[], i: number) => ((median(rs.map((r) => r.cpu[i]!)) * 1000) / n).toFixed(2);
    const baseRate = rate(base, 'seconds');
    const fmt = (r: number) => r.toFixed(0).padStart(6);
    const lines = [
      `${n} messages of ${SIZE / 1024} KB per run, ${runs === 1 ? '1 run' : `medians of ${runs} interleaved runs`}, after a warm-up of ${warmUp} each${opts.quick ? ' (quick: not a measurement)' : ''}`,
      `nodemailer straight to the sink (baseline, pool of ${ROUTE_CONNECTIONS})       ${fmt(baseRate)} msg/s` +
        `  CPU per message: sender ${cpuMs(base, 0)} ms, sink ${cpuMs(base, 1)} ms`,
    ];
    for (const [j, build] of builds.entries()) {
      const who = builds.length > 1 ? build.label : 'mailgate';
      const mgRate = rate(mg[j]!, 'seconds');
      const peak = memoryOf(gateways[j]!.child.pid!).peak;
      lines.push(
        `${who}: first submit (${SUBMIT_CONNECTIONS} connections) to sink has all   ${fmt(mgRate)} msg/s  ratio ${(mgRate / baseRate).toFixed(2)}` +
          `  CPU per message: mailgate ${cpuMs(mg[j]!, 0)} ms, submitter ${cpuMs(mg[j]!, 1)} ms, sink ${cpuMs(mg[j]!, 2)} ms`,
        `${who}: submissions accepted (250 after the synced write)     ${fmt(rate(mg[j]!, 'acceptSeconds'))} msg/s`,
        `${builds.length > 1 ? `${who}:` : who} peak resident memory${peakReset[j] ? ' over the timed runs' : ''}: ${(peak / 1024 / 1024).toFixed(0)} MB`,
      );
    }
    return lines;
  } finally {
    for (const c of children) c.kill('SIGTERM');
    for (const gateway of gateways) {
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }
    await cleanup();
  }
}

/** The sink: a bare smtp-server that drains each message and counts it once it has all of it. */
function sinkRole(): void {
  let count = 0;
  let expected = Infinity;
  const server = new SMTPServer({
    authOptional: true,
    disableReverseLookup: true,
    // Plain SMTP: neither side pays for TLS, so the comparison is about what mailgate does.
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, _session, callback) {
      stream.on('end', () => {
        count++;
        if (count === expected) console.log(JSON.stringify({ at: now() }));
        callback();
      });
      stream.resume();
    },
  });
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [command, arg] = line.split(' ');
    if (command === 'expect') {
      count = 0;
      expected = Number(arg);
      console.log(JSON.stringify({ ok: true }));
    } else if (command === 'count') console.log(JSON.stringify({ count }));
  });
  process.stdin.on('end', () => server.close(() => process.exit(0)));
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
  server.listen(0, '127.0.0.1', () => {
    const address = server.server.address();
    console.log(JSON.stringify({ port: typeof address === 'object' && address ? address.port : 0 }));
  });
}

/** A sending application: one pooled nodemailer transport, kept across runs as an application would. */
function clientRole([port, connections, maxMessages, user, pass]: string[]): void {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: Number(port),
    secure: false,
    ignoreTLS: true,
    pool: true,
    maxConnections: Number(connections),
    maxMessages: Number(maxMessages),
    name: 'bench.example.com',
    logger: false,
    ...(user && pass ? { auth: { user, pass } } : {}),
  });
  let round = 0;
  createInterface({ input: process.stdin }).on('line', (line) => {
    const n = Number(line.split(' ')[1]);
    round++;
    const messages = Array.from({ length: n }, (_, i) => message(`${process.pid}.${round}.${i}`, SIZE));
    const start = now();
    Promise.all(messages.map((raw) => transport.sendMail({ envelope: { from: FROM, to: [TO] }, raw }))).then(
      () => console.log(JSON.stringify({ start, accepted: now() } satisfies Sent)),
      (err: Error) => {
        console.error(`outbound bench client: ${err.message}`);
        process.exit(1);
      },
    );
  });
  const stop = () => {
    transport.close();
    process.exit(0);
  };
  process.stdin.on('end', stop);
  process.on('SIGTERM', stop);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const [role, ...args] = process.argv.slice(2);
  if (role === 'sink') sinkRole();
  else if (role === 'client') clientRole(args);
  else throw new Error(`usage: node ${path.basename(here)} sink | client PORT CONNECTIONS MAX_MESSAGES [USER PASS]`);
}
