import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import nodemailer from 'nodemailer';
import { openTestStore } from './helpers/test-store.js';
import { runCli, spawnServe, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';

/** mulberry32: a small seeded PRNG, so that a failing run can be replayed with its seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A message we can recognise by its subject and Message-ID; every seventh is over 64 KiB (several chunks, and the spool). */
function message(n: number, round: number): string {
  const lines = n % 7 === 0 ? 1500 + (n % 5) * 300 : n % 40;
  const body = `Message ${n} of round ${round}.\r\n` + `line ${round}-${n} ${'z'.repeat(64)}\r\n`.repeat(lines);
  return `From: sender@example.org\r\nTo: support@example.com\r\nSubject: durability ${round}-${n}\r\nMessage-ID: <d${round}-${n}@durability.test>\r\n\r\n${body}`;
}

const SENDERS = 20;

test('SIGKILL at random moments while 20 clients send: every message that got a 250 survives intact, none twice, none half', async (t) => {
  const seed = Number(process.env.MAILGATE_DURABILITY_SEED ?? Math.floor(Math.random() * 2 ** 32));
  const random = prng(seed);
  // Printed, not only reported: a failure is replayed with MAILGATE_DURABILITY_SEED=<seed>.
  console.log(`durability seed ${seed}`);
  t.diagnostic(`seed ${seed} (replay with MAILGATE_DURABILITY_SEED=${seed})`);
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, testConfigText(dir));

  const sent = new Map<string, string>(); // subject -> raw bytes, for every message we tried
  const acked = new Map<string, string>(); // stored id -> subject, for every 250
  const kills = 5 + Math.floor(random() * 6);
  const delays: number[] = [];
  for (let round = 1; round <= kills; round++) {
    const { port, child, exited } = await spawnServe(configFile);
    let stop = false;
    let n = 0;
    const sender = async () => {
      const transport = nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true, pool: true, maxConnections: 1, maxMessages: Infinity });
      try {
        while (!stop) {
          const i = n++;
          const raw = message(i, round);
          sent.set(`durability ${round}-${i}`, raw);
          try {
            const info = await transport.sendMail({ envelope: { from: 'sender@example.org', to: ['support@example.com'] }, raw });
            const id = /queued as (\S+)/.exec(info.response)?.[1];
            assert.ok(id, info.response);
            acked.set(id, `durability ${round}-${i}`);
          } catch {
            return; // the gateway is gone: this message was not acknowledged
          }
        }
      } finally {
        transport.close();
      }
    };
    const senders = Array.from({ length: SENDERS }, sender);
    // Once mail flows (the first 250 of the round), anywhere from at once to a second later.
    const before = acked.size;
    const deadline = Date.now() + 30_000;
    while (acked.size === before) {
      assert.ok(Date.now() < deadline, 'the gateway acknowledges messages');
      await new Promise((r) => setTimeout(r, 5));
    }
    const delay = Math.round(random() * 1000);
    delays.push(delay);
    await new Promise((r) => setTimeout(r, delay));
    child.kill('SIGKILL');
    await exited;
    stop = true;
    await Promise.all(senders);
  }
  t.diagnostic(`${kills} kills, ${delays.join(', ')} ms after the first 250 of each round; ${acked.size} of ${sent.size} messages acknowledged`);

  // Restart once more and read everything back through the running gateway.
  const { child, exited } = await spawnServe(configFile);
  const list = await runCli(['messages', 'list', '--json', '--limit', '100000', '--config', configFile]);
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout.toString()) as { id: string; subject: string; messageId?: string; size: number }[];
  child.kill('SIGTERM');
  assert.equal(await exited, 0, 'a SIGTERM stops the gateway cleanly');

  const store = await openTestStore(path.join(dir, 'data'));
  t.after(() => store.close());
  const subjects = listed.map((m) => m.subject);
  assert.equal(new Set(subjects).size, subjects.length, 'no message stored twice');
  const messageIds = listed.map((m) => m.messageId);
  assert.equal(new Set(messageIds).size, messageIds.length, 'no Message-ID stored twice');
  const storedIds = new Set(listed.map((m) => m.id));
  for (const [id, subject] of acked) {
    assert.ok(storedIds.has(id), `acknowledged message ${subject} (${id}) survived`);
  }
  for (const m of listed) {
    const original = sent.get(m.subject);
    assert.ok(original, `stored message ${m.subject} is one we sent`);
    // openRaw fails with MESSAGE_DAMAGED unless the chunks add up to the recorded size.
    const bytes = await buffer(store.openRaw(m.id));
    assert.equal(bytes.length, m.size, `stored message ${m.subject} is whole`);
    assert.ok(bytes.equals(Buffer.from(original)), `stored message ${m.subject} is intact`);
  }
  t.diagnostic(`${listed.length} stored: ${listed.length - acked.size} of them without a 250 (the kill came between commit and reply)`);
  assert.ok(acked.size >= 50, `enough messages were acknowledged to mean something (${acked.size})`);
});
