/**
 * The dispatcher on a queue several nodes share (gateway/dispatch/dispatcher.ts): two
 * dispatchers, each the dispatcher of a "node", on one store whose queue claims are shared
 * (test/helpers/shared-queue.ts; the PostgreSQL claims themselves are checked by
 * test/postgres-queue-claims.test.ts). Every recipient gets the message once, each message
 * from one node; a node that lost its claim while it sent does not record over the node
 * that took the message over.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Dispatcher } from '../gateway/dispatch/dispatcher.js';
import { outboundEntry } from '../gateway/dispatch/entries.js';
import { dropQueued, retryQueued } from '../gateway/dispatch/queue-actions.js';
import { loadConfigText } from '../gateway/config/load.js';
import type { Config } from '../gateway/config/schema.js';
import { openTestStore } from './helpers/test-store.js';
import { newMessageId } from '../storage/ids.js';
import type { MessageMeta, QueueEntry } from '../storage/records.js';
import type { Store } from '../storage/store.js';
import { capturingLogger, testConfigText } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { waitUntil } from './helpers/wait.js';
import { ClaimTable } from './helpers/shared-queue.js';
import { startUpstream, type Received } from './helpers/upstream.js';

const RECIPIENTS = ['first@example.org', 'second@example.org'];

async function setup(upstreamPort: number, concurrency: number): Promise<{ config: Config; store: Store; cleanup(): Promise<void> }> {
  const { dir, cleanup } = await tempDir('mailgate-shared-queue-');
  const toml = `
[[alias]]
name = "support"
address = "support@example.com"
[alias.outgoing]
host = "127.0.0.1"
port = ${upstreamPort}

[queue]
concurrency = ${concurrency}
retry_intervals = [1]
retry_jitter = 0.0
`;
  const config = loadConfigText(testConfigText(dir, toml), path.join(dir, 'mailgate.toml'));
  const store = await openTestStore(config.data_dir);
  return {
    config,
    store,
    cleanup: async () => {
      await store.close();
      await cleanup();
    },
  };
}

/** Stores a message from the alias with subject SUBJECT, queued with it (as the submission listener does). */
async function queueMessage(store: Store, config: Config, subject: string, over: Partial<QueueEntry> = {}): Promise<{ entry: QueueEntry; meta: MessageMeta }> {
  const id = newMessageId();
  const raw = Buffer.from(`From: support@example.com\r\nTo: ${RECIPIENTS.join(', ')}\r\nSubject: ${subject}\r\n\r\nHello.\r\n`);
  const entry = { ...outboundEntry(id, config.alias[0], { mailFrom: 'support@example.com', rcptTo: RECIPIENTS }), ...over };
  const writer = store.createMessageWriter(id);
  await new Promise<void>((resolve, reject) => writer.end(raw, () => resolve()).once('error', reject));
  const meta: MessageMeta = {
    id,
    version: 1,
    receivedAt: new Date().toISOString(),
    size: raw.length,
    receivedSize: raw.length,
    envelope: { mailFrom: 'support@example.com', rcptTo: RECIPIENTS },
    source: { kind: 'submission', alias: 'support' },
    subject,
    to: RECIPIENTS,
    cc: [],
    _AttachmentFileNames: [],
    attachments: [],
    findings: {},
    tags: [],
  };
  await writer.commit(meta, [{ type: 'queue-entry', entry }]);
  return { entry, meta: { ...meta, size: writer.bytesWritten } };
}

const subjectOf = (m: Received) => /^Subject: (.*)$/m.exec(m.raw.toString('utf8'))?.[1]?.trim() ?? '';

test('two nodes on one shared queue: every recipient gets each message once, and both nodes deliver', async (t) => {
  const upstream = await startUpstream();
  const { config, store, cleanup } = await setup(upstream.port, 3);
  const table = new ClaimTable();
  const nodes = ['node-a', 'node-b'].map((name) => {
    const log = capturingLogger();
    const dispatcher = new Dispatcher({ store: table.nodeView(store, name), config, logger: log.logger, stages: () => [], claimPollMs: 100 });
    return { name, log, dispatcher };
  });
  t.after(async () => {
    for (const n of nodes) await n.dispatcher.stop();
    await upstream.close();
    await cleanup();
  });
  // A backlog both nodes find by polling, then new mail handed to node-a in memory, which node-b may poll first.
  for (let i = 0; i < 40; i++) await queueMessage(store, config, `backlog ${i}`);
  for (const n of nodes) await n.dispatcher.start();
  for (let i = 0; i < 30; i++) {
    const { entry, meta } = await queueMessage(store, config, `new ${i}`);
    nodes[0]!.dispatcher.queued(entry, meta);
  }
  await waitUntil('the queue to empty', async () => (await store.listQueue()).length === 0);
  const copies = new Map<string, number>();
  for (const m of upstream.received) for (const r of m.rcptTo) copies.set(`${subjectOf(m)} to ${r}`, (copies.get(`${subjectOf(m)} to ${r}`) ?? 0) + 1);
  assert.equal(copies.size, 70 * RECIPIENTS.length, 'every recipient of every message');
  assert.deepEqual(
    [...copies].filter(([, n]) => n !== 1),
    [],
    'none twice',
  );
  const attempts = nodes.map((n) => n.log.entries.filter((e) => e.msg === 'delivery attempt').length);
  assert.equal(attempts[0]! + attempts[1]!, 70, `one attempt per message, on one node or the other: ${attempts.join(' + ')}`);
  assert.ok(
    attempts.every((n) => n > 0),
    `both nodes delivered: ${attempts.join(' + ')}`,
  );
  for (const meta of await store.listMessages({ limit: 1000 })) assert.equal(meta.delivery?.status, 'delivered', `${meta.subject}: recorded as delivered`);
});

test('a node that lost its claim while it sent does not record over the node that took the message over', async (t) => {
  let holdFirst: (() => void) | undefined;
  const firstHeld = new Promise<void>((resolve) => (holdFirst = resolve));
  let releaseFirst: (() => void) | undefined;
  const released = new Promise<void>((resolve) => (releaseFirst = resolve));
  let seen = 0;
  const upstream = await startUpstream({
    // The first copy (node-a's) waits for its 250 until the test lets it go: node-a "paused" past its lease.
    data: async () => {
      if (++seen === 1) {
        holdFirst!();
        await released;
      }
      return undefined;
    },
  });
  const { config, store, cleanup } = await setup(upstream.port, 2);
  const table = new ClaimTable();
  const a = capturingLogger();
  const b = capturingLogger();
  // node-a polls once, at its start: a node paused past its lease does not poll either (polling
  // every 100 ms, it could find its own expired claim before node-b did and renew it).
  const nodeA = new Dispatcher({ store: table.nodeView(store, 'node-a'), config, logger: a.logger, stages: () => [], claimPollMs: 600_000 });
  const nodeB = new Dispatcher({ store: table.nodeView(store, 'node-b'), config, logger: b.logger, stages: () => [], claimPollMs: 100 });
  t.after(async () => {
    releaseFirst!();
    await nodeA.stop();
    await nodeB.stop();
    await upstream.close();
    await cleanup();
  });
  const { entry } = await queueMessage(store, config, 'taken over');
  await nodeA.start();
  await firstHeld;
  table.expire('node-a');
  await nodeB.start();
  await b.waitFor((e) => e.msg === 'taking over a queued message whose claim by another node expired' && e.from_node === 'node-a' && e.msg_id === entry.id);
  await waitUntil('node-b to deliver it', async () => (await store.getQueueEntry(entry.id)) === undefined);
  const recorded = (await store.getMessage(entry.id))?.delivery;
  assert.equal(recorded?.status, 'delivered');
  assert.equal(recorded?.attempts, 1, "node-b's one attempt is the record");
  // node-a gets its 250 now: too late, its claim is node-b's (and gone with the entry).
  releaseFirst!();
  await a.waitFor((e) => e.msg_id === entry.id && String(e.msg).startsWith("this node's claim on the queued message expired"));
  assert.equal(a.entries.filter((e) => e.msg === 'delivery attempt').length, 0, 'node-a logs no attempt it could not record');
  assert.deepEqual((await store.getMessage(entry.id))?.delivery, recorded, "the record is still node-b's");
  // The window a pause past the lease opens: the server got the message from both nodes.
  assert.equal(upstream.received.length, 2);
});

test("an admin's drop and retry on a shared queue: refused under another node's attempt, done otherwise", async (t) => {
  let holding: (() => void) | undefined;
  const held = new Promise<void>((resolve) => (holding = resolve));
  let release: (() => void) | undefined;
  const released = new Promise<void>((resolve) => (release = resolve));
  const upstream = await startUpstream({
    data: async (m) => {
      if (subjectOf(m) === 'busy') {
        holding!();
        await released;
      }
      return undefined;
    },
  });
  const { config, store, cleanup } = await setup(upstream.port, 2);
  const table = new ClaimTable();
  const viewA = table.nodeView(store, 'node-a');
  const nodeA = new Dispatcher({ store: viewA, config, logger: capturingLogger().logger, stages: () => [], claimPollMs: 100 });
  const nodeB = new Dispatcher({ store: table.nodeView(store, 'node-b'), config, logger: capturingLogger().logger, stages: () => [], claimPollMs: 100 });
  t.after(async () => {
    release!();
    await nodeA.stop();
    await nodeB.stop();
    await upstream.close();
    await cleanup();
  });
  // node-b alone runs at first, so it is the one sending "busy".
  const busy = await queueMessage(store, config, 'busy');
  await nodeB.start();
  await held;
  await assert.rejects(dropQueued(viewA, busy.entry.id, nodeA), { code: 'QUEUE_BUSY' }, "node-a's admin cannot drop what node-b is sending");
  assert.equal(await retryQueued(viewA, busy.entry.id, nodeA), 1, 'a retry of it is counted');
  release!();
  await waitUntil('node-b to deliver it', async () => (await store.getQueueEntry(busy.entry.id)) === undefined);
  assert.equal(upstream.received.filter((m) => subjectOf(m) === 'busy').length, 1, 'and it was not sent again');

  // Waiting an hour for its next attempt: a retry on node-a sends it now, a drop takes it out.
  await nodeA.start();
  const inAnHour = new Date(Date.now() + 3_600_000).toISOString();
  const waiting = await queueMessage(store, config, 'waiting', { attempts: 1, nextAttemptAt: inAnHour });
  assert.equal(await retryQueued(viewA, waiting.entry.id, nodeA), 1);
  await waitUntil('the retried message to go', async () => (await store.getQueueEntry(waiting.entry.id)) === undefined);
  assert.equal(upstream.received.filter((m) => subjectOf(m) === 'waiting').length, 1);

  const dropped = await queueMessage(store, config, 'dropped', { nextAttemptAt: inAnHour });
  await dropQueued(viewA, dropped.entry.id, nodeA);
  assert.equal(await store.getQueueEntry(dropped.entry.id), undefined);
  assert.equal((await store.getMessage(dropped.entry.id))?.delivery?.status, 'dropped');
  assert.equal(table.claims.size, 0, 'no claim left behind');
});
