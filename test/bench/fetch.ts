import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ImapFlow } from 'imapflow';
import { pathToFileURL } from 'node:url';
import { projectRoot } from '../helpers/paths.js';
import { ensureDovecot, startDovecot, type TestDovecot } from '../helpers/dovecot.js';
import { fixture, tempDir } from '../helpers/paths.js';
import { startDelayProxyProcess } from './delay-proxy.js';
import { openStore } from '../../storage/open.js';
import { newMessageId } from '../../storage/ids.js';
import { sampleMeta } from '../helpers/store-contract.js';
import { machineCpuTicks } from './proc.js';
import { availableParallelism } from 'node:os';

const COUNT = 600;

/**
 * The bench mailbox, as the issue measured it: 600 messages of 2 to 200 KB (sizes spread
 * evenly on a log scale, so most are small as real mail is), a quarter of them with a PDF
 * attachment that makes up most of their size. The same every run (no randomness).
 */
export function benchMessage(n: number): string {
  const size = Math.round(2048 * 100 ** (((n * 37) % COUNT) / (COUNT - 1)));
  const line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, order 4711 of customer ' + String(n).padStart(5, '0') + '.\r\n';
  const head = `From: customer${n}@example.net\r\nTo: support@example.com\r\nSubject: fetch bench ${n}\r\nMessage-ID: <bench-${n}@example.net>\r\nDate: Mon, 7 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n`;
  if (n % 4 !== 0) return `${head}Content-Type: text/plain; charset=utf-8\r\n\r\n${line.repeat(Math.max(1, Math.round((size - head.length) / line.length)))}`;
  const text = line.repeat(10);
  // base64 of pseudo-PDF bytes, 76 characters a line.
  const raw = Buffer.alloc(Math.max(1, Math.round(((size - head.length - text.length - 300) * 3) / 4)), `%PDF-1.4 ${n} `);
  const b64 = raw.toString('base64').replace(/.{76}/g, '$&\r\n');
  return (
    `${head}Content-Type: multipart/mixed; boundary="b${n}"\r\n\r\n` +
    `--b${n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n${text}` +
    `--b${n}\r\nContent-Type: application/pdf; name="invoice-${n}.pdf"\r\nContent-Disposition: attachment; filename="invoice-${n}.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}\r\n` +
    `--b${n}--\r\n`
  );
}

const MESSAGES = Array.from({ length: COUNT }, (_, n) => benchMessage(n));
/** Total bytes of the bench mailbox, for the MB/s figures. */
const TOTAL_BYTES = MESSAGES.reduce((sum, m) => sum + Buffer.byteLength(m), 0);

async function fill(dovecot: TestDovecot, user: string): Promise<void> {
  for (const m of MESSAGES) await dovecot.deliver(user, m);
}

/** Where the clients connect: Dovecot itself, or a delaying proxy in front of it. */
interface Ports {
  imap: number;
  pop3: number;
}

/** An imapflow client of USER's mailbox, as the plain download and the floor use it (STARTTLS with the test CA). */
function imapClient(ports: Ports, user: string): ImapFlow {
  return new ImapFlow({
    host: '127.0.0.1',
    port: ports.imap,
    secure: false,
    auth: { user, pass: 'pw' },
    logger: false,
    tls: { ca: [readFileSync(fixture('tls', 'cert.pem'))] },
  });
}

/** The baseline: a plain imapflow download of the whole mailbox (fresh, as the retriever's is), nothing stored. */
async function plainImapflow(ports: Ports, user: string): Promise<number> {
  const client = imapClient(ports, user);
  const start = process.hrtime.bigint();
  await client.connect();
  const lock = await client.getMailboxLock('INBOX');
  let n = 0;
  try {
    for await (const msg of client.fetch('1:*', { uid: true, source: true })) if (msg.source) n++;
  } finally {
    lock.release();
  }
  await client.logout();
  if (n !== COUNT) throw new Error(`imapflow fetched ${n} of ${COUNT}`);
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/**
 * The floor: the plain download, each message's bytes written to the store as the retriever
 * writes them (one synced commit each, several in flight so they share the group commit), then
 * one UID MOVE of all to Processed; no policy, no headers read. What any durable retriever pays
 * on this machine: the retriever's distance from it is the cost of the policy pipeline.
 */
async function floorImapflow(ports: Ports, user: string): Promise<number> {
  const { dir, cleanup } = await tempDir('mailgate-bench-floor-');
  const store = await openStore(path.join(dir, 'data'));
  const client = imapClient(ports, user);
  try {
    const start = process.hrtime.bigint();
    await client.connect();
    const lock = await client.getMailboxLock('INBOX');
    const commits: Promise<void>[] = [];
    try {
      for await (const msg of client.fetch('1:*', { uid: true, source: true })) {
        const source = msg.source;
        if (!source) continue;
        const id = newMessageId();
        const writer = store.createMessageWriter(id);
        const meta = sampleMeta(id, {
          receivedAt: new Date().toISOString(),
          size: source.length,
          receivedSize: source.length,
          envelope: { mailFrom: '', rcptTo: [] },
          source: { kind: 'imap', alias: user },
          to: [],
        });
        commits.push(
          new Promise<void>((resolve, reject) => writer.end(source, (err?: Error | null) => (err ? reject(err) : resolve()))).then(() => writer.commit(meta)),
        );
      }
      await Promise.all(commits);
      await client.mailboxCreate('Processed').catch(() => undefined);
      await client.messageMove('1:*', 'Processed');
    } finally {
      lock.release();
    }
    await client.logout();
    if (commits.length !== COUNT) throw new Error(`the floor stored ${commits.length} of ${COUNT}`);
    return Number(process.hrtime.bigint() - start) / 1e9;
  } finally {
    await store.close();
    await cleanup();
  }
}

/** A mailgate build whose retriever is measured: ROOT/dist holds its compiled modules (this checkout, or another's for `compare`). */
export interface FetchBuild {
  label: string;
  root: string;
}

/** The modules of BUILD the bench drives, loaded from its own dist (the same interfaces in every build compared). */
async function modulesOf(build: FetchBuild) {
  const load = (file: string) => import(pathToFileURL(path.join(build.root, 'dist', file)).href);
  const [config, logger, fetch, policy, storage] = await Promise.all([
    load('gateway/config/load.js') as Promise<typeof import('../../gateway/config/load.js')>,
    load('lib/logger.js') as Promise<typeof import('../../lib/logger.js')>,
    load('gateway/fetch/retriever.js') as Promise<typeof import('../../gateway/fetch/retriever.js')>,
    load('policy/policy-set.js') as Promise<typeof import('../../policy/policy-set.js')>,
    load('storage/open.js') as Promise<typeof import('../../storage/open.js')>,
  ]);
  return {
    loadConfigText: config.loadConfigText,
    silentLogger: logger.silentLogger,
    startRetriever: fetch.startRetriever,
    ...policy,
    openStore: storage.openStore,
  };
}

/** mailgate's retriever: fetch, policy stages (default policy), durable store, move to Processed or delete. */
async function retriever(ports: Ports, user: string, type: 'imap' | 'pop3', build: FetchBuild): Promise<number> {
  const { loadConfigText, silentLogger, startRetriever, PolicySet, policySources, openStore } = await modulesOf(build);
  const { dir, cleanup } = await tempDir('mailgate-bench-');
  try {
    const port = type === 'imap' ? ports.imap : ports.pop3;
    const toml = [
      `data_dir = ${JSON.stringify(path.join(dir, 'data'))}`,
      '[[alias]]',
      `name = "${user}"`,
      `address = "${user}@example.com"`,
      '[alias.incoming]',
      `type = "${type}"`,
      'host = "127.0.0.1"',
      `port = ${port}`,
      'security = "starttls"',
      `ca_file = ${JSON.stringify(fixture('tls', 'cert.pem'))}`,
      `user = "${user}"`,
      'password = "pw"',
      'poll_interval = 3600',
      'idle = false',
      `max_items = ${COUNT}`,
    ].join('\n');
    const config = loadConfigText(toml, path.join(dir, 'mailgate.toml'), {});
    const store = await openStore(config.data_dir);
    const policy = PolicySet.load(policySources(config));
    const start = process.hrtime.bigint();
    let stored = 0;
    const done = new Promise<void>((resolve) => {
      const r = startRetriever({
        config,
        store,
        logger: silentLogger(),
        stages: (d) => policy.stagesFor(d),
        hooks: {
          afterPoll: (_a, result) => {
            stored += result.stored;
            if (stored >= COUNT) void r.stop().then(resolve);
          },
        },
      });
    });
    await done;
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    await store.close();
    return seconds;
  } finally {
    await cleanup();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

/** One path's runs: seconds each, and how many of the machine's cores were busy meanwhile (Dovecot, the proxy and the store's threads included). */
class Runs {
  readonly seconds: number[] = [];
  readonly cores: number[] = [];
  async time(run: () => Promise<number>): Promise<void> {
    const before = machineCpuTicks();
    this.seconds.push(await run());
    const after = machineCpuTicks();
    this.cores.push(((after.busy - before.busy) / Math.max(1, after.total - before.total)) * availableParallelism());
  }
  get median(): number {
    return median(this.seconds);
  }
  busy(): string {
    return `  machine ${median(this.cores).toFixed(1)} of ${availableParallelism()} cores busy`;
  }
}

export interface FetchBenchOptions {
  /** Interleaved runs of each; default 3. */
  runs?: number;
  /** Round-trip times to measure, in ms (0: direct to Dovecot); default [0]. */
  rtts?: readonly number[];
  /** The builds measured; default this checkout alone. */
  builds?: readonly FetchBuild[];
}

/**
 * Fetch throughput from a real Dovecot, as a ratio against a plain imapflow download in the same
 * run; with RTTS, again through a proxy giving each connection that round-trip time (0: direct).
 * With several BUILDS (`compare`), each build's retriever in turn, interleaved with the others.
 */
export async function fetchBench(opts: FetchBenchOptions = {}): Promise<string[]> {
  const runs = opts.runs ?? 3;
  const builds = opts.builds ?? [{ label: 'mailgate', root: projectRoot }];
  await ensureDovecot();
  const rtts = opts.rtts ?? [0];
  // The baseline downloads a freshly filled mailbox each run, as the retrievers do: Dovecot
  // indexes new mail on its first access, which a mailbox downloaded before would not pay.
  const baseUser = (r: number, i: number) => `base${r}x${i}`;
  const dovecot = await startDovecot({
    users: [
      ...rtts.flatMap((_, r) => Array.from({ length: runs }, (_, i) => ({ name: baseUser(r, i), password: 'pw' }))),
      { name: 'imap', password: 'pw' },
      { name: 'pop', password: 'pw' },
      { name: 'floor', password: 'pw' },
    ],
  });
  const lines: string[] = [];
  try {
    for (const [r, rtt] of rtts.entries()) {
      const imapProxy = rtt > 0 ? await startDelayProxyProcess(dovecot.imapPort, rtt / 2) : undefined;
      const popProxy = rtt > 0 ? await startDelayProxyProcess(dovecot.pop3Port, rtt / 2) : undefined;
      const ports: Ports = { imap: imapProxy?.port ?? dovecot.imapPort, pop3: popProxy?.port ?? dovecot.pop3Port };
      try {
        const base = new Runs();
        const floor = new Runs();
        const imap = builds.map(() => new Runs());
        const pop = builds.map(() => new Runs());
        for (let i = 0; i < runs; i++) {
          await fill(dovecot, baseUser(r, i));
          await base.time(() => plainImapflow(ports, baseUser(r, i)));
          await fill(dovecot, 'floor');
          await floor.time(() => floorImapflow(ports, 'floor'));
          for (const [j, build] of builds.entries()) {
            await fill(dovecot, 'imap');
            await imap[j]!.time(() => retriever(ports, 'imap', 'imap', build));
            await fill(dovecot, 'pop');
            await pop[j]!.time(() => retriever(ports, 'pop', 'pop3', build));
          }
        }
        const rate = (s: number) => `${(COUNT / s).toFixed(0).padStart(6)} msg/s ${(TOTAL_BYTES / 1e6 / s).toFixed(1).padStart(5)} MB/s`;
        const b = base.median;
        const link = rtt > 0 ? `, ${rtt} ms round trips` : ', loopback';
        const row = (label: string, runs: Runs) =>
          label.padEnd(66) + rate(runs.median) + (runs === base ? '           ' : `  ratio ${(b / runs.median).toFixed(2)}`) + runs.busy();
        lines.push(row(`plain imapflow download (baseline${link})`, base), row(`floor (download, store, move; no policy${link})`, floor));
        for (const [j, build] of builds.entries()) {
          const who = builds.length > 1 ? `${build.label}: ` : 'mailgate ';
          lines.push(row(`${who}retriever, IMAP (store + move${link})`, imap[j]!), row(`${who}retriever, POP3 (store + DELE${link})`, pop[j]!));
        }
      } finally {
        await imapProxy?.close();
        await popProxy?.close();
      }
    }
    return lines;
  } finally {
    await dovecot.stop();
  }
}
