/**
 * The busy-queue crash test: `mailgate serve` as a child process, a few hundred messages being
 * submitted and sent to a real SMTP upstream on loopback, SIGKILLed at random moments while
 * several deliveries are in flight, restarted each time. At the end every recipient of every
 * acknowledged message has its copy, and a recipient got two copies only where SMTP cannot
 * prevent it: the upstream's 250 came and the kill landed before our synced record of it
 * (README, "Sending mail", Queue).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import nodemailer from 'nodemailer';
import { openTestStore } from './helpers/test-store.js';
import { spawnServe, writeTestConfig } from './helpers/gateway.js';
import { startUpstream } from './helpers/upstream.js';
import { submissionToml, SUBMIT_PASSWORD, SUBMIT_USER } from './helpers/outbound.js';
import { tempDir } from './helpers/paths.js';

const MESSAGES = 300;
const KILLS = 5;
const RECIPIENTS = ['first@example.org', 'second@example.org'];
/**
 * "The moment of a kill", either side of it. Before: the upstream's 250 came and the kill
 * landed before our synced record of it (that write, shared with the commits of its moment,
 * takes milliseconds; this is generous for a loaded 2-core test machine). After: the
 * upstream accepted what it had read while our process was already gone, so the 250 never
 * reached us. A copy accepted further from every kill and sent again would be a lost record.
 */
const KILL_MOMENT_MS = 1000;

/** Deterministic randomness, so a failure can be replayed from the seed the test prints. */
function random(seed: number): () => number {
  let s = seed;
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One copy the upstream accepted: which message (the Message-ID of the submission try), for whom, when its 250 went out. */
interface Copy {
  messageId: string;
  rcptTo: string[];
  at: number;
}

test('a busy queue SIGKILLed at random moments: every recipient gets the message, a second copy only for one in flight at a kill', async (t) => {
  const seed = Number(process.env.MAILGATE_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
  t.diagnostic(`queue crash seed ${seed}`);
  const rand = random(seed);
  const { dir, cleanup } = await tempDir();
  const copies: Copy[] = [];
  let inData = 0;
  const upstream = await startUpstream({
    // Each DATA is held a little, so that at any moment several of the gateway's connections are mid-transaction.
    data: async (m) => {
      inData++;
      try {
        await sleep(5 + Math.floor(rand() * 40));
      } finally {
        inData--;
      }
      const messageId = /^Message-ID: <([^>]+)>/im.exec(m.raw.toString('latin1'))?.[1] ?? '';
      copies.push({ messageId, rcptTo: m.rcptTo, at: Date.now() });
      return undefined;
    },
  });
  t.after(async () => {
    await upstream.close();
    await cleanup();
  });
  const configFile = await writeTestConfig(
    dir,
    `
[[alias]]
name = "support"
address = "support@example.com"
[alias.outgoing]
host = "127.0.0.1"
port = ${upstream.port}
` + submissionToml(['support'], 'retry_intervals = [1]\nretry_jitter = 0.0'),
  );

  // Submissions: each message is submitted until a 250 comes; every try has its own
  // Message-ID, so a try the gateway stored but could not acknowledge before a kill (the
  // client's window, not the dispatcher's) is told apart from the one acknowledged.
  const acknowledged = new Map<number, string>();
  let tries = 0;
  const submitRound = async (port: number): Promise<void> => {
    const client = nodemailer.createTransport({
      host: '127.0.0.1',
      port,
      secure: false,
      ignoreTLS: true,
      pool: true,
      maxConnections: 4,
      auth: { user: SUBMIT_USER, pass: SUBMIT_PASSWORD },
    });
    try {
      const left = Array.from({ length: MESSAGES }, (_, i) => i).filter((i) => !acknowledged.has(i));
      await Promise.all(
        left.map(async (i) => {
          const messageId = `crash-${i}-try-${++tries}@app.example.com`;
          try {
            await client.sendMail({
              from: 'support@example.com',
              to: RECIPIENTS,
              subject: `order ${i}`,
              text: `Your order ${i}.\r\n`,
              messageId: `<${messageId}>`,
            });
            acknowledged.set(i, messageId);
          } catch {
            // The gateway was killed under this try: the next round submits it again.
          }
        }),
      );
    } finally {
      client.close();
    }
  };

  const kills: { at: number; exited: number }[] = [];
  for (let k = 0; k < KILLS; k++) {
    const serve = await spawnServe(configFile);
    t.after(() => void serve.child.kill('SIGKILL'));
    const round = submitRound(serve.submissionPort!);
    // A random moment after some sending has happened, with several deliveries in flight.
    const seen = copies.length;
    while (copies.length < seen + 5) await sleep(5);
    await sleep(Math.floor(rand() * 300));
    while (inData < 2) await sleep(1);
    const at = Date.now();
    serve.child.kill('SIGKILL');
    await serve.exited;
    kills.push({ at, exited: Date.now() });
    await round;
  }

  // The last run: everything acknowledged or not yet submitted goes in and out.
  const last = await spawnServe(configFile);
  t.after(() => void last.child.kill('SIGKILL'));
  while (acknowledged.size < MESSAGES) await submitRound(last.submissionPort!);
  const wanted = [...acknowledged.values()];
  const delivered = (id: string, rcpt: string) => copies.filter((c) => c.messageId === id && c.rcptTo.includes(rcpt));
  const deadline = Date.now() + 60_000;
  while (!wanted.every((id) => RECIPIENTS.every((r) => delivered(id, r).length > 0))) {
    if (Date.now() > deadline) break;
    await sleep(50);
  }
  last.child.kill('SIGTERM');
  await last.exited;

  // Every recipient of every acknowledged message got it.
  const missing = wanted.flatMap((id) => RECIPIENTS.filter((r) => delivered(id, r).length === 0).map((r) => `${id} to ${r}`));
  assert.deepEqual(missing, [], 'every acknowledged message reached every recipient');

  // The queue is empty and each acknowledged message records its delivery.
  const store = await openTestStore(path.join(dir, 'data'));
  t.after(() => store.close());
  assert.deepEqual(
    (await store.listQueue()).map((e) => e.id),
    [],
    'nothing left in the queue',
  );
  const stored = await store.listMessages({ limit: Infinity });
  for (const id of wanted) {
    const meta = stored.find((m) => m.messageId === id);
    assert.equal(meta?.delivery?.status, 'delivered', `${id} is recorded as delivered`);
  }

  // A second copy (of any try, acknowledged or not) only where the first one's 250 came at the moment of a kill.
  const duplicates: { id: string; rcpt: string; beforeKillMs: number | undefined }[] = [];
  for (const id of new Set(copies.map((c) => c.messageId))) {
    for (const rcpt of RECIPIENTS) {
      const got = delivered(id, rcpt);
      for (const first of got.slice(0, -1)) {
        const kill = kills.find((k) => first.at >= k.at - KILL_MOMENT_MS && first.at <= k.exited + KILL_MOMENT_MS);
        duplicates.push({ id, rcpt, beforeKillMs: kill ? kill.at - first.at : undefined });
      }
    }
  }
  t.diagnostic(
    `${copies.length} copies accepted upstream over ${KILLS} kills; ${duplicates.length} recipient(s) sent twice, ` +
      `accepted ${duplicates.map((d) => d.beforeKillMs).join(', ') || 'none'} ms before their kill (negative: after it)`,
  );
  assert.deepEqual(
    duplicates.filter((d) => d.beforeKillMs === undefined),
    [],
    'no recipient was sent twice except one whose 250 came at the moment of a kill',
  );
});
