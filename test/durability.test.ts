import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import nodemailer from 'nodemailer';
import { Store } from '../storage/store.js';
import { runCli, spawnServe, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';

function message(n: number, round: number): string {
  const body = `Message ${n} of round ${round}.\r\n` + `line ${'z'.repeat(70)}\r\n`.repeat(n % 40);
  return `From: sender@example.org\r\nTo: support@example.com\r\nSubject: durability ${round}-${n}\r\nMessage-ID: <d${round}-${n}@test>\r\n\r\n${body}`;
}

test('SIGKILL while clients send: every message that got a 250 survives intact, none twice', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, testConfigText(dir));

  const sent = new Map<string, string>(); // subject -> raw bytes, for every message we tried
  const acked = new Map<string, string>(); // stored id -> subject, for every 250
  for (const round of [1, 2, 3]) {
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
    const senders = Array.from({ length: 8 }, sender);
    // Kill at a moment that differs per round, with messages in flight.
    const before = acked.size;
    const deadline = Date.now() + 60_000;
    while (acked.size - before < 20 * round) {
      assert.ok(Date.now() < deadline, 'the gateway acknowledges messages');
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    await exited;
    stop = true;
    await Promise.all(senders);
  }

  // Restart once more and read everything back through the running gateway.
  const { child, exited } = await spawnServe(configFile);
  const list = await runCli(['messages', 'list', '--json', '--limit', '100000', '--config', configFile]);
  assert.equal(list.code, 0, list.stderr);
  const listed = JSON.parse(list.stdout.toString()) as { id: string; subject: string }[];
  child.kill('SIGTERM');
  assert.equal(await exited, 0, 'a SIGTERM stops the gateway cleanly');

  const store = await Store.open(path.join(dir, 'data'));
  t.after(() => store.close());
  const subjects = listed.map((m) => m.subject);
  assert.equal(new Set(subjects).size, subjects.length, 'no message stored twice');
  const storedIds = new Set(listed.map((m) => m.id));
  for (const [id, subject] of acked) {
    assert.ok(storedIds.has(id), `acknowledged message ${subject} (${id}) survived`);
  }
  for (const m of listed) {
    const original = sent.get(m.subject);
    assert.ok(original, `stored message ${m.subject} is one we sent`);
    const bytes = await buffer(store.openRaw(m.id));
    assert.ok(bytes.equals(Buffer.from(original)), `stored message ${m.subject} is intact`);
  }
  assert.ok(acked.size >= 60, `enough messages were acknowledged to mean something (${acked.size})`);
});
