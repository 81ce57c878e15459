import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { simpleParser } from 'mailparser';
import nodemailer from 'nodemailer';
import { openTestStore } from './helpers/test-store.js';
import { spawnServe, startGatewayOn, testConfigText, writeTestConfig } from './helpers/gateway.js';
import { closedPort, startUpstream, type Received } from './helpers/upstream.js';
import { submissionToml, submit, waitDelivered, waitQueue } from './helpers/outbound.js';
import { tempDir } from './helpers/paths.js';

/** Starts a gateway on `dir` with this configuration (the data directory stays between runs, as after an admin's edit and restart). */
async function runOn(dir: string, toml: string) {
  return startGatewayOn(await writeTestConfig(dir, toml), { retriever: false });
}

const oldAlias = (port: number) => `
[[alias]]
name = "old"
address = "old@example.com"
[alias.outgoing]
host = "127.0.0.1"
port = ${port}
`;

const message = { from: 'old@example.com', to: 'customer@example.org', subject: 'Re: ticket 12', text: 'Reply from an alias that is about to go.\r\n' };

test('a message queued for an alias that IT then deleted goes out through the partition default SMTP', async (t) => {
  const { dir, cleanup } = await tempDir();
  const fallback = await startUpstream({ users: { partition: 'pw' } });
  t.after(async () => {
    await fallback.close();
    await cleanup();
  });
  // The alias's server is down: the message waits in the queue.
  const first = await runOn(dir, oldAlias(await closedPort()) + submissionToml(['old'], 'retry_intervals = [3600]'));
  const id = await submit(first.gateway.submission!.addresses[0]!.port, message);
  await waitQueue(first.store, id, (e) => e.attempts === 1);
  await first.stop();

  // IT removes the alias; the partition has default SMTP settings (ESMTP with a user).
  const second = await runOn(
    dir,
    `
[partition.default_smtp]
server = "127.0.0.1"
protocol = "esmtp"
port = ${fallback.port}
user = "partition"
password = "pw"
`,
  );
  t.after(() => second.stop());
  // The queue keeps its schedule across a restart; the admin asks for a retry now (`mailgate queue retry --all`).
  assert.equal((await second.gateway.admin.retryQueued()).retried, 1);
  const meta = await waitDelivered(second.store, id);
  assert.equal(meta.delivery.status, 'delivered');
  assert.match(meta.delivery.recipients[0]!.route ?? '', /deleted alias "old": partition default SMTP via 127\.0\.0\.1:\d+ \(ESMTP as partition/);
  const [got] = await fallback.waitFor(1);
  assert.equal(got!.user, 'partition');
  assert.equal(got!.mailFrom, 'old@example.com');
  assert.match((await simpleParser(got!.raw)).subject ?? '', /^Re: ticket 12 \[ref:[2-9A-Z]{6}\]$/, 'as submitted, with the conversation reference');
});

test('without default SMTP settings, mail from a deleted alias is held in the queue with the reason, not sent and not lost', async (t) => {
  const { dir, cleanup } = await tempDir();
  t.after(cleanup);
  const first = await runOn(dir, oldAlias(await closedPort()) + submissionToml(['old'], 'retry_intervals = [3600]'));
  const id = await submit(first.gateway.submission!.addresses[0]!.port, message);
  await waitQueue(first.store, id, (e) => e.attempts === 1);
  await first.stop();

  const second = await runOn(dir, '');
  t.after(() => second.stop());
  await second.gateway.admin.retryQueued(id);
  const held = await waitQueue(second.store, id, (e) => e.held !== undefined);
  assert.match(held.held!, /alias "old" no longer exists and \[partition\.default_smtp\] sets no server/);
  assert.equal(held.attempts, 1, 'holding is not an attempt');
  assert.equal(held.recipients[0]!.status, 'pending');
  const listed = await second.gateway.admin.listQueue();
  assert.deepEqual(
    listed.map((e) => e.id),
    [id],
  );
  assert.equal((await second.store.getMessage(id))?.delivery, undefined, 'still queued, not failed');
});

test('a message partly delivered is not sent again to those who got it, after a SIGKILL during sending', async (t) => {
  const { dir, cleanup } = await tempDir();
  let firstTryForB = true;
  let killed = false;
  let release: (() => void) | undefined;
  const holding = new Promise<void>((resolve) => (release = resolve));
  let heldOpen: (() => void) | undefined;
  const heldSeen = new Promise<void>((resolve) => (heldOpen = resolve));
  const upstream = await startUpstream({
    // b@ is deferred once, so a@ is delivered alone; b@'s next transaction is held open until the gateway is killed.
    rcpt: (address) => {
      if (address === 'b@example.org' && firstTryForB) {
        firstTryForB = false;
        return [451, '4.2.0 Mailbox busy, try later'];
      }
      return undefined;
    },
    data: async (m: Received) => {
      if (m.rcptTo.includes('b@example.org') && !killed) {
        heldOpen?.();
        await holding;
        return [451, '4.4.2 Connection lost'];
      }
      return undefined;
    },
  });
  t.after(async () => {
    release?.();
    await upstream.close();
    await cleanup();
  });
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(
    configFile,
    testConfigText(
      dir,
      `
[[alias]]
name = "support"
address = "support@example.com"
[alias.outgoing]
host = "127.0.0.1"
port = ${upstream.port}
` + submissionToml(['support']),
    ),
  );
  const serve = await spawnServe(configFile);
  t.after(() => void serve.child.kill('SIGKILL'));
  const id = await submit(serve.submissionPort!, { from: 'support@example.com', to: ['a@example.org', 'b@example.org'], subject: 'Re: both', text: 'hi\r\n' });
  await upstream.waitFor(1);
  await heldSeen; // b@'s retry is in DATA, waiting for the reply
  serve.child.kill('SIGKILL');
  await serve.exited;
  killed = true;
  release?.();

  const again = await spawnServe(configFile);
  t.after(() => void again.child.kill('SIGKILL'));
  await upstream.waitFor(2);
  again.child.kill('SIGTERM');
  await again.exited;
  const store = await openTestStore(path.join(dir, 'data'));
  t.after(() => store.close());
  const meta = await waitDelivered(store, id, 1000);
  assert.equal(meta.delivery.status, 'delivered');
  const copies = (address: string) => upstream.received.filter((m) => m.rcptTo.includes(address)).length;
  assert.equal(copies('a@example.org'), 1, 'a@ got exactly one copy');
  assert.equal(copies('b@example.org'), 1, 'b@ got exactly one copy');
});

test('a message relayed to two downstreams: the first one that took it is on record before the second is tried, so a SIGKILL during the second sends nothing twice', async (t) => {
  const { dir, cleanup } = await tempDir();
  let killed = false;
  let release: (() => void) | undefined;
  const holding = new Promise<void>((resolve) => (release = resolve));
  let heldOpen: (() => void) | undefined;
  const heldSeen = new Promise<void>((resolve) => (heldOpen = resolve));
  const first = await startUpstream();
  // The second downstream holds its DATA open until the gateway is killed.
  const second = await startUpstream({
    data: async () => {
      if (killed) return undefined;
      heldOpen?.();
      await holding;
      return [451, '4.4.2 Connection lost'];
    },
  });
  t.after(async () => {
    release?.();
    await first.close();
    await second.close();
    await cleanup();
  });
  const configFile = await writeTestConfig(
    dir,
    `
[[relay]]
name = "one"
domains = ["one.example"]
to = "smtp://127.0.0.1:${first.port}"

[[relay]]
name = "two"
domains = ["two.example"]
to = "smtp://127.0.0.1:${second.port}"

[queue]
retry_intervals = [1]
retry_jitter = 0.0
`,
  );
  const serve = await spawnServe(configFile);
  t.after(() => void serve.child.kill('SIGKILL'));
  const client = nodemailer.createTransport({ host: '127.0.0.1', port: serve.port, secure: false, ignoreTLS: true });
  await client.sendMail({ from: 'sender@outside.example', to: ['a@one.example', 'b@two.example'], subject: 'to both', text: 'hi\r\n' });
  client.close();
  await first.waitFor(1);
  await heldSeen; // the second transaction is in DATA, waiting for the reply
  serve.child.kill('SIGKILL');
  await serve.exited;
  killed = true;
  release?.();

  const again = await spawnServe(configFile);
  t.after(() => void again.child.kill('SIGKILL'));
  await second.waitFor(1);
  again.child.kill('SIGTERM');
  await again.exited;
  assert.equal(first.received.length, 1, 'a@one.example got exactly one copy');
  assert.deepEqual(
    second.received.map((m) => m.rcptTo),
    [['b@two.example']],
  );
});
