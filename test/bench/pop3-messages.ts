/**
 * How long the POP3 mailbox takes to list, download and delete the fetch bench's mailbox (600
 * messages of 2 to 200 KB, fetch.ts), on loopback and through a delaying proxy: the figures
 * behind the pipelined POP3 client (RFC 2449 PIPELINING). Nothing is stored: this times the
 * protocol alone. In the same run, one RETR after another through the client (what
 * `Pop3Mailbox.messages` did before PIPELINING) is the baseline.
 *
 *   node dist/test/bench/pop3-messages.js [--rtt MS] [--runs N]
 */
import path from 'node:path';
import { loadConfigText } from '../../gateway/config/load.js';
import { Pop3Mailbox } from '../../gateway/fetch/pop3/mailbox.js';
import type { MailboxItem } from '../../gateway/fetch/mailbox.js';
import { readAll } from '../../gateway/fetch/mailbox.js';
import { Pop3Client } from '../../gateway/fetch/pop3/client.js';
import { startDovecot, type TestDovecot } from '../helpers/dovecot.js';
import { fixture } from '../helpers/paths.js';
import { benchMessage } from './fetch.js';
import { startDelayProxy } from './delay-proxy.js';

const COUNT = 600;
/** The bytes of one `messages()` call: the retriever bounds its ranges so; a plausible bound. */
const RANGE_BYTES = 4 * 1024 * 1024;

const arg = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at > 0 ? Number(process.argv[at + 1]) : fallback;
};
const rtt = arg('--rtt', 40);
const runs = arg('--runs', 3);

/** The items in ranges of at most RANGE_BYTES (at least one message each). */
function ranges(items: readonly MailboxItem[]): MailboxItem[][] {
  const out: MailboxItem[][] = [];
  let bytes = 0;
  for (const item of items) {
    const last = out.at(-1);
    if (!last || bytes + item.size > RANGE_BYTES) {
      out.push([item]);
      bytes = item.size;
    } else {
      last.push(item);
      bytes += item.size;
    }
  }
  return out;
}

const seconds = (start: bigint) => Number(process.hrtime.bigint() - start) / 1e9;

interface Timing {
  list: number;
  messages: number;
  markStored: number;
  bytes: number;
}

async function fill(dovecot: TestDovecot, user: string): Promise<void> {
  for (let n = 0; n < COUNT; n++) await dovecot.deliver(user, benchMessage(n));
}

/** Pop3Mailbox as the retriever drives it: list, messages() range by range, markStored, QUIT. */
async function mailbox(port: number, user: string): Promise<Timing> {
  const dir = '/nonexistent';
  const toml = [
    `data_dir = ${JSON.stringify(path.join(dir, 'data'))}`,
    '[[alias]]',
    `name = "${user}"`,
    `address = "${user}@example.com"`,
    '[alias.incoming]',
    'type = "pop3"',
    'host = "127.0.0.1"',
    `port = ${port}`,
    'security = "starttls"',
    `ca_file = ${JSON.stringify(fixture('tls', 'cert.pem'))}`,
    `user = "${user}"`,
    'password = "pw"',
  ].join('\n');
  const config = loadConfigText(toml, path.join(dir, 'mailgate.toml'), {});
  const box = new Pop3Mailbox(config.alias[0]!.incoming!);
  await box.open();
  let start = process.hrtime.bigint();
  const items = await box.list();
  const list = seconds(start);
  start = process.hrtime.bigint();
  let bytes = 0;
  let count = 0;
  for (const range of ranges(items)) {
    for await (const m of box.messages(range)) {
      bytes += m.content.length;
      count++;
    }
  }
  const messages = seconds(start);
  if (count !== COUNT) throw new Error(`messages() gave ${count} of ${COUNT}`);
  start = process.hrtime.bigint();
  await box.markStored(items);
  await box.close();
  return { list, messages, markStored: seconds(start), bytes };
}

/** The baseline: UIDL, LIST, then RETR one after another, DELE one after another, QUIT. */
async function sequential(port: number, user: string, certPem: string): Promise<Timing> {
  const client = await Pop3Client.connect({ host: '127.0.0.1', port, security: 'starttls', tls: { ca: certPem } });
  await client.login(user, 'pw');
  let start = process.hrtime.bigint();
  await client.uidl();
  const sizes = await client.list();
  const list = seconds(start);
  start = process.hrtime.bigint();
  let bytes = 0;
  for (const s of sizes) bytes += (await readAll(await client.retr(s.msgno))).length;
  const messages = seconds(start);
  start = process.hrtime.bigint();
  for (const s of sizes) await client.dele(s.msgno);
  await client.quit();
  return { list, messages, markStored: seconds(start), bytes };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

const dovecot = await startDovecot({
  users: [
    { name: 'seq', password: 'pw' },
    { name: 'box', password: 'pw' },
  ],
});
try {
  for (const delay of [0, rtt]) {
    const proxy = delay > 0 ? await startDelayProxy(dovecot.pop3Port, delay / 2) : undefined;
    const port = proxy?.port ?? dovecot.pop3Port;
    try {
      const seq: Timing[] = [];
      const box: Timing[] = [];
      for (let i = 0; i < runs; i++) {
        await fill(dovecot, 'seq');
        seq.push(await sequential(port, 'seq', dovecot.certPem));
        await fill(dovecot, 'box');
        box.push(await mailbox(port, 'box'));
      }
      const link = delay > 0 ? `${delay} ms round trips` : 'loopback';
      const row = (name: string, t: Timing[]) => {
        const m = median(t.map((x) => x.messages));
        return (
          `${name} (${link})`.padEnd(60) +
          `list ${median(t.map((x) => x.list)).toFixed(3)} s  ` +
          `messages ${m.toFixed(2)} s (${(COUNT / m).toFixed(0)} msg/s, ${((t[0]?.bytes ?? 0) / 1e6 / m).toFixed(1)} MB/s)  ` +
          `delete ${median(t.map((x) => x.markStored)).toFixed(3)} s`
        );
      };
      console.log(row('one command at a time (client, baseline)', seq));
      console.log(row('Pop3Mailbox', box));
      console.log(`  messages() against the baseline: ${(median(seq.map((x) => x.messages)) / median(box.map((x) => x.messages))).toFixed(2)}x faster`);
    } finally {
      await proxy?.close();
    }
  }
} finally {
  await dovecot.stop();
}
