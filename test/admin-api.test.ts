/**
 * The admin API (gateway/admin/api.ts) answers the same, operation for operation, whether a
 * caller holds the store itself or asks the running gateway over its control socket; errors
 * cross the socket with their code and sentence; the route table covers every operation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import nodemailer from 'nodemailer';
import { Admin, type AdminApi, type MessageMeta, type QueueEntry } from '../gateway/admin/api.js';
import { openAdminApi } from '../gateway/admin/open.js';
import { fileNamePattern } from '../gateway/admin/quarantine-filter.js';
import { messageTimeline } from '../gateway/admin/timeline.js';
import { adminClient, controlSocketPath } from '../gateway/admin/http-client.js';
import { startAdminServer } from '../gateway/admin/http-server.js';
import { routes } from '../gateway/admin/routes.js';
import { resolveConfig } from '../gateway/config/load.js';
import { MailgateError, storeErrors } from '../lib/errors.js';
import { silentLogger } from '../lib/logger.js';
import { attachmentsSectionSchema, attachmentsStage } from '../policy/attachments/stage.js';
import { startTestGateway } from './helpers/gateway.js';
import { fixture, tempDir } from './helpers/paths.js';
import { closedPort } from './helpers/upstream.js';
import { idTime } from '../storage/ids.js';

async function bytesOf(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * What a caller can see of a failure: its code and message (the sentence the CLI prints).
 * Through the socket it is always rebuilt as a MailgateError; on the store a coded error from
 * storage (QUEUE_ENTRY_NOT_FOUND) is still a plain Error.
 */
async function failure(promise: Promise<unknown>, through?: 'socket'): Promise<{ code: unknown; message: string }> {
  try {
    await promise;
  } catch (err) {
    if (through === 'socket') assert.ok(err instanceof MailgateError, `rebuilt as a MailgateError: ${String(err)}`);
    const e = err as { code?: unknown; message: string };
    return { code: e.code, message: e.message };
  }
  assert.fail('expected a failure');
}

async function receive(port: number, file: string): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
  const info = await transport.sendMail({
    envelope: { from: 'customer@example.org', to: ['support@example.com'] },
    raw: readFileSync(fixture('attachments', file)),
  });
  return /queued as (\S+)/.exec(info.response)![1]!;
}

/** A raw HTTP request on the control socket: status and parsed JSON body. */
function http(socketPath: string, method: string, path: string, json?: unknown): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const body = json === undefined ? undefined : JSON.stringify(json);
    const req = request({ socketPath, method, path, headers: body ? { 'content-type': 'application/json' } : {} }, (res) => {
      void bytesOf(res).then((b) => resolve({ status: res.statusCode!, body: JSON.parse(b.toString()) as unknown }), reject);
    });
    req.once('error', reject);
    req.end(body);
  });
}

test('the same operations answer the same on the store and through the running gateway: reads, bytes, errors, restore, retry, drop', async (t) => {
  const port = await closedPort();
  const blockExe = attachmentsSectionSchema.parse({ blocked_extensions: ['.exe'] });
  const stages = () => [attachmentsStage(undefined, blockExe)];
  const gw = await startTestGateway(
    `[queue]\nretry_intervals = [3600]\nretry_jitter = 0.0\n[[alias]]\nname = "support"\naddress = "support@example.com"\n[alias.outgoing]\nhost = "127.0.0.1"\nport = ${port}\n`,
    { stages },
  );
  t.after(() => gw.cleanup());
  const loaded = resolveConfig({ file: gw.configFile });

  // While the gateway runs, a command gets its API through the socket; beside it, an Admin on the same open store.
  const remote = await openAdminApi(loaded);
  assert.equal(remote.gatewayRunning, true);
  const local: AdminApi = new Admin({ config: gw.config, store: async () => gw.store, logger: silentLogger(), stages });
  assert.equal(local.gatewayRunning, false);

  const blocked = [await receive(gw.port, 'double-extension.eml'), await receive(gw.port, 'zip-with-exe.eml')];
  const send = (subject: string) =>
    remote.sendMessage(
      { alias: 'support', mailFrom: 'support@example.com', rcptTo: ['customer@example.org'] },
      Readable.from([`From: support@example.com\r\nTo: customer@example.org\r\nSubject: ${subject}\r\n\r\nHello.\r\n`]),
    );
  const queued = [await send('first'), await send('second')];
  assert.deepEqual(queued[0]!.recipients, ['customer@example.org']);
  // The server is down: each is tried once, then waits an hour; from then on the queue stands still.
  for (const { id } of queued) {
    for (let entry: QueueEntry | undefined; !entry || entry.attempts < 1; await sleep(50)) entry = await remote.showQueued(id);
  }

  const same = async <T>(what: string, ask: (api: AdminApi, through?: 'socket') => Promise<T>): Promise<T> => {
    const [onStore, overSocket] = [await ask(local), await ask(remote, 'socket')];
    assert.deepEqual(overSocket, onStore, what);
    return onStore;
  };
  const messages = await same('messages list', (api) => api.listMessages({}));
  assert.equal(messages.messages.length, 4);
  assert.equal(messages.next, undefined, 'one page');
  await same('messages list, one alias, limited', (api) => api.listMessages({ alias: 'support', limit: 1, since: '2000-01-01T00:00:00Z' }));
  const details = await same('messages show', (api) => api.showMessage(blocked[0]!));
  assert.ok(details.attachments[0]?.quarantined, 'a blocked attachment with its quarantine record');
  for (const id of [blocked[0]!, queued[0]!.id]) {
    const [onStore, overSocket] = [await bytesOf(await local.rawMessage(id)), await bytesOf(await remote.rawMessage(id))];
    assert.ok(overSocket.equals(onStore) && onStore.length > 0, `messages raw ${id}: byte for byte`);
  }
  const quarantined = await same('quarantine list', (api) => api.listQuarantine({}));
  assert.equal(quarantined.length, 2);
  await same('quarantine list, one message', (api) => api.listQuarantine({ messageId: blocked[1]! }));
  const program = quarantined.find((r) => r.messageId === blocked[0])!;
  await same('quarantine show', (api) => api.showQuarantined(program.id));
  const [exported, exportedRemote] = [await bytesOf(await local.exportQuarantined(program.id)), await bytesOf(await remote.exportQuarantined(program.id))];
  assert.ok(exported.equals(exportedRemote), 'quarantine export: byte for byte');
  assert.equal(exported.length, program.size, 'the decoded program');
  await same('queue list', (api) => api.listQueue());
  await same('queue show', (api) => api.showQueued(queued[0]!.id));
  await same('aliases list', (api) => api.listAliases());
  const tried = await same('policy test', (api) =>
    api.testPolicy(Readable.from([readFileSync(fixture('attachments', 'double-extension.eml'))]), { direction: 'inbound' }),
  );
  assert.match(tried.stages[0]!.summary.join(' '), /invoice\.pdf\.exe/);

  // Errors: the same code and sentence, rebuilt as a MailgateError (an SMTP reply's enhanced code kept in front).
  await same('unknown message', (api, through) => failure(api.showMessage('nope'), through));
  assert.deepEqual(await failure(remote.rawMessage('nope'), 'socket'), { code: 'MESSAGE_NOT_FOUND', message: 'No such message: nope' });
  assert.deepEqual(await failure(remote.showQueued('nope'), 'socket'), { code: 'QUEUE_ENTRY_NOT_FOUND', message: 'no queued message with id nope' });
  await same('unknown queue entry', (api, through) => failure(api.dropQueued('nope'), through));
  await same('unknown quarantine id', (api, through) => failure(api.restoreQuarantined('nope'), through));
  await same('unknown alias', (api, through) => failure(api.setAliasStatus('ghost', 'active'), through));
  // A refusal before the message is read does not wait for a large upload to end.
  const large = () =>
    Readable.from(
      (function* () {
        for (let i = 0; i < 2000; i++) yield Buffer.alloc(16 * 1024, 0x61);
      })(),
    );
  const ghost = { alias: 'ghost', mailFrom: 'ghost@example.com', rcptTo: ['customer@example.org'] };
  await same('send as an alias not configured', (api, through) => failure(api.sendMessage(ghost, large()), through));

  // Changes through the socket: the running gateway's restore, retry and drop.
  const restored = await remote.restoreQuarantined(program.id);
  assert.equal(restored.messageId, blocked[0]);
  assert.ok(
    (await bytesOf(await remote.rawMessage(blocked[0]!))).equals(readFileSync(fixture('attachments', 'double-extension.eml'))),
    'restored byte for byte',
  );
  assert.deepEqual(await remote.retryQueued(queued[0]!.id), { retried: 1 });
  const dropped = await remote.dropQueued(queued[1]!.id);
  assert.equal(dropped.id, queued[1]!.id);
  assert.equal((await local.showMessage(queued[1]!.id)).meta.delivery?.status, 'dropped');
  await same('queue list after the drop', async (api) => (await api.listQueue()).map((e) => e.id));
  const goneRemote = await failure(remote.dropQueued(queued[1]!.id), 'socket');
  await remote.close();

  // The gateway stopped: a command gets this process's own Admin on the store, and the same changes work there.
  await gw.stop();
  const stopped = await openAdminApi(loaded);
  t.after(() => stopped.close());
  assert.equal(stopped.gatewayRunning, false);
  const rest = quarantined.find((r) => r.messageId === blocked[1])!;
  assert.deepEqual(await stopped.restoreQuarantined(rest.id), rest, 'the record restored, as the socket answered it');
  assert.deepEqual(await stopped.listQuarantine({}), []);
  assert.deepEqual(await stopped.retryQueued(), { retried: 1 });
  assert.ok(Date.parse((await stopped.showQueued(queued[0]!.id)).nextAttemptAt) <= Date.now(), 'due now');
  assert.equal((await stopped.dropQueued(queued[0]!.id)).id, queued[0]!.id);
  assert.deepEqual(await stopped.listQueue(), []);
  assert.deepEqual(await failure(stopped.dropQueued(queued[1]!.id)), goneRemote, 'the same error both ways');
  assert.deepEqual(goneRemote, { code: 'QUEUE_ENTRY_NOT_FOUND', message: `no queued message with id ${queued[1]!.id}` });
});

test('over HTTP: one route per operation, errors with a fitting status and { code, message }', async (t) => {
  const operations = Object.getOwnPropertyNames(Admin.prototype).filter((name) => name !== 'constructor' && name !== 'close');
  assert.deepEqual(Object.keys(routes).sort(), operations.sort());

  const gw = await startTestGateway('[[alias]]\nname = "support"\naddress = "support@example.com"\n');
  t.after(() => gw.cleanup());
  const socket = controlSocketPath(gw.config.data_dir);
  assert.deepEqual(await http(socket, 'GET', '/messages/nope'), {
    status: 404,
    body: { code: 'MESSAGE_NOT_FOUND', message: 'No such message: nope' },
  });
  assert.deepEqual(await http(socket, 'GET', '/nothing/here'), {
    status: 404,
    body: { code: 'UNKNOWN_OPERATION', message: 'no admin operation at GET /nothing/here' },
  });
  assert.deepEqual(await http(socket, 'PUT', '/aliases/support/status', { status: 'asleep' }), {
    status: 400,
    body: { code: 'BAD_REQUEST', message: 'status must be active or inactive, got asleep' },
  });
  assert.deepEqual(await http(socket, 'GET', '/messages?limit=0'), {
    status: 400,
    body: { code: 'BAD_REQUEST', message: 'limit: expected a whole number of at least 1, got "0"' },
  });
  assert.deepEqual(await http(socket, 'GET', '/messages?attachment=yes'), {
    status: 400,
    body: { code: 'BAD_REQUEST', message: 'attachment: expected true or false, got "yes"' },
  });
  assert.deepEqual(await http(socket, 'POST', '/quarantine-bulk/purge?rule=exe'), {
    status: 400,
    body: { code: 'BAD_REQUEST', message: 'a bulk action is restore or delete, got purge' },
  });
  assert.deepEqual(await http(socket, 'GET', '/quarantine?older_than=soon'), {
    status: 400,
    body: { code: 'BAD_REQUEST', message: 'older_than: expected an ISO 8601 time, got "soon"' },
  });
  const activated = await http(socket, 'PUT', '/aliases/support/status', { status: 'inactive' });
  assert.equal(activated.status, 200);
  assert.equal((activated.body as { status: string }).status, 'inactive');
  assert.deepEqual((await http(socket, 'GET', '/aliases')).body, await gw.gateway.admin.listAliases());
});

test('an error met after the bytes began reaches the client with its code and sentence (the trailer)', async (t) => {
  const { dir, cleanup } = await tempDir();
  const socketPath = controlSocketPath(dir);
  // Only rawMessage is asked for: a stored message whose chunks stop short.
  const damaged = {
    rawMessage: async () =>
      Readable.from(
        (async function* () {
          yield Buffer.from('Subject: half\r\n\r\n');
          throw storeErrors.messageDamaged('01ZZZZZZZZZZZZZZZZZZZZZZZZ', 100, 17);
        })(),
      ),
  } as unknown as AdminApi;
  const server = await startAdminServer(damaged, socketPath, silentLogger());
  t.after(async () => {
    await server.close();
    await cleanup();
  });
  const stream = await adminClient(socketPath).rawMessage('01ZZZZZZZZZZZZZZZZZZZZZZZZ');
  const got: Buffer[] = [];
  stream.on('data', (c: Buffer) => got.push(c));
  assert.deepEqual(await failure(new Promise((resolve, reject) => stream.once('end', resolve).once('error', reject)), 'socket'), {
    code: 'MESSAGE_DAMAGED',
    message: 'Message 01ZZZZZZZZZZZZZZZZZZZZZZZZ is damaged: 17 of 100 bytes are stored',
  });
  assert.equal(Buffer.concat(got).toString(), 'Subject: half\r\n\r\n');
});

test('search, timeline, quarantine in bulk and retry of the held: the same answers on the store and through the running gateway', async (t) => {
  const port = await closedPort();
  const blockExe = attachmentsSectionSchema.parse({ blocked_extensions: ['.exe'] });
  const stages = () => [attachmentsStage(undefined, blockExe)];
  // support sends to a closed port (tried, then waits an hour); desk has no server at all (held).
  const gw = await startTestGateway(
    `[queue]\nretry_intervals = [3600]\nretry_jitter = 0.0\n[[alias]]\nname = "support"\naddress = "support@example.com"\n[alias.outgoing]\nhost = "127.0.0.1"\nport = ${port}\n` +
      `[[alias]]\nname = "desk"\naddress = "desk@example.com"\n`,
    { stages },
  );
  t.after(() => gw.cleanup());
  const remote = await openAdminApi(resolveConfig({ file: gw.configFile }));
  t.after(() => remote.close());
  const local: AdminApi = new Admin({ config: gw.config, store: async () => gw.store, logger: silentLogger(), stages });
  const same = async <T>(what: string, ask: (api: AdminApi, through?: 'socket') => Promise<T>): Promise<T> => {
    const [onStore, overSocket] = [await ask(local), await ask(remote, 'socket')];
    assert.deepEqual(overSocket, onStore, what);
    return onStore;
  };

  const blocked = [await receive(gw.port, 'double-extension.eml'), await receive(gw.port, 'double-extension.eml'), await receive(gw.port, 'zip-with-exe.eml')];
  const send = (alias: string, subject: string) =>
    remote.sendMessage(
      { alias, mailFrom: `${alias}@example.com`, rcptTo: ['customer@example.org'] },
      Readable.from([`From: ${alias}@example.com\r\nTo: customer@example.org\r\nSubject: ${subject}\r\n\r\nHello.\r\n`]),
    );
  const tried = (await send('support', 'Your Order 77')).id;
  const held = (await send('desk', 'Desk reply')).id;
  for (let entry: QueueEntry | undefined; !entry || entry.attempts < 1; await sleep(50)) entry = await remote.showQueued(tried);
  for (let entry: QueueEntry | undefined; entry?.held === undefined; await sleep(50)) entry = await remote.showQueued(held);

  // Search: each filter, alone and together, and pages that follow one another by cursor.
  const ids = (page: { messages: { id: string }[] }) => page.messages.map((m) => m.id);
  assert.deepEqual(ids(await same('text, any case', (api) => api.listMessages({ text: 'order 77' }))), [tried]);
  // In To of the mail received, in From of the mail support sent.
  assert.deepEqual(ids(await same('text in From and To', (api) => api.listMessages({ text: 'SUPPORT@example.com' }))), [tried, ...[...blocked].reverse()]);
  assert.deepEqual(ids(await same('with an attachment', (api) => api.listMessages({ hasAttachment: true }))), [...blocked].reverse());
  assert.deepEqual(ids(await same('without one, of one alias', (api) => api.listMessages({ hasAttachment: false, alias: 'desk' }))), [held]);
  assert.deepEqual(ids(await same('not wrapped', (api) => api.listMessages({ wrapped: false, limit: 2 }))), [held, tried]);
  assert.deepEqual(ids(await same('wrapped', (api) => api.listMessages({ wrapped: true }))), []);
  // A message was received when its id was made (ids follow arrival); its metadata's
  // receivedAt is a little later, by as much as taking it in took.
  const arrived = idTime(tried);
  assert.deepEqual(
    ids(await same('a time range', (api) => api.listMessages({ since: new Date(arrived).toISOString(), until: new Date(arrived + 1).toISOString() }))),
    [tried],
  );
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const page = await same(`page ${pages.length + 1}`, (api) => api.listMessages({ limit: 2, ...(cursor ? { cursor } : {}) }));
    pages.push(ids(page));
    cursor = page.next;
  } while (cursor);
  assert.deepEqual(pages, [[held, tried], [blocked[2]!, blocked[1]!], [blocked[0]!]], 'newest first, every message once, the last page without a next');
  assert.deepEqual(await same('a cursor it never gave', (api, through) => failure(api.listMessages({ cursor: 'bm9wZQ' }), through)), {
    code: 'BAD_REQUEST',
    message: 'cursor: not one that a message list gave, got "bm9wZQ"',
  });

  // Timeline: received, the stages (attachments, threading), queued, the attempt with the reply; held, or waiting for the next attempt.
  const timeline = (await same('timeline of a message tried', (api) => api.showMessage(tried))).timeline;
  assert.deepEqual(
    timeline.map((s) => s.event),
    ['received', 'stage', 'stage', 'queued', 'attempt', 'waiting'],
  );
  assert.equal(timeline[0]!.source, 'cli');
  assert.match(timeline[2]!.summary, /^threading: Started conversation \[ref:[2-9A-Z]{6}\]\.$/);
  assert.deepEqual(timeline[3]!.recipients, ['customer@example.org']);
  const attempt = timeline[4]!;
  assert.equal(attempt.attempts, 1);
  assert.equal(attempt.permanent, false);
  assert.match(attempt.reply!, /ECONNREFUSED|refused/i);
  assert.equal(attempt.reply, (await local.showQueued(tried)).recipients[0]!.last?.message, 'the reply the queue entry keeps');
  const heldLine = (await same('timeline of a held message', (api) => api.showMessage(held))).timeline;
  assert.deepEqual(
    heldLine.map((s) => s.event),
    ['received', 'stage', 'stage', 'queued', 'held'],
  );
  assert.match(heldLine[4]!.summary, /desk.*no \[alias\.outgoing\]/);
  const inbound = (await same('timeline of a blocked message', (api) => api.showMessage(blocked[0]!))).timeline;
  assert.equal(inbound[0]!.source, 'smtp');
  assert.match(inbound.find((s) => s.stage === 'attachments')!.summary, /invoice\.pdf\.exe/);

  // Retry the held ones only: the one waiting for its hour is left alone.
  assert.deepEqual(await remote.retryQueued(undefined, { heldOnly: true }), { retried: 1 });
  assert.ok(Date.parse((await remote.showQueued(tried)).nextAttemptAt) > Date.now() + 3_000_000, 'not the one waiting');
  // No route still: the dispatcher holds it again, and then it is the one to retry once more.
  for (let entry: QueueEntry | undefined; entry?.held === undefined; await sleep(50)) entry = await remote.showQueued(held);
  assert.deepEqual(await local.retryQueued(undefined, { heldOnly: true }), { retried: 1 }, 'held again');

  // Quarantine: the same filters to list and to act on.
  const all = await same('quarantine list', (api) => api.listQuarantine({}));
  assert.equal(all.length, 3);
  const programs = await same('by file name pattern, any case', (api) => api.listQuarantine({ fileName: '*.PDF.exe' }));
  assert.deepEqual(programs.map((r) => r.messageId).sort(), [blocked[0]!, blocked[1]!].sort());
  await same('by rule', (api) => api.listQuarantine({ rule: all[0]!.rule.slice(0, 8).toUpperCase() }));
  assert.deepEqual(await same('nothing older than the first', (api) => api.listQuarantine({ olderThan: '2000-01-01T00:00:00Z' })), []);
  assert.deepEqual(await same('a bulk action without a filter', (api, through) => failure(api.bulkQuarantine('delete', {}), through)), {
    code: 'BAD_REQUEST',
    message: 'a bulk restore or delete needs at least one filter: message, rule, file name or older than',
  });
  const restored = await remote.bulkQuarantine('restore', { fileName: 'invoice.pdf.exe', messageId: blocked[1]! });
  assert.deepEqual(restored, { done: programs.filter((r) => r.messageId === blocked[1]), failed: [] });
  assert.ok(
    (await bytesOf(await remote.rawMessage(blocked[1]!))).equals(readFileSync(fixture('attachments', 'double-extension.eml'))),
    'restored byte for byte',
  );
  const deleted = await local.bulkQuarantine('delete', { olderThan: new Date(Date.now() + 60_000).toISOString() });
  assert.deepEqual(
    deleted.done.map((r) => r.id).sort(),
    all
      .filter((r) => r.messageId !== blocked[1])
      .map((r) => r.id)
      .sort(),
  );
  assert.deepEqual(await same('quarantine empty', (api) => api.listQuarantine({})), []);
  assert.deepEqual(await remote.bulkQuarantine('delete', { rule: 'exe' }), { done: [], failed: [] }, 'nothing left to match');
});

test("the timeline of a message that left the queue: queued with it, each recipient's last reply, the outcome with its notification", () => {
  const meta: MessageMeta = {
    id: '01KA0000000000000000000000',
    version: 1,
    receivedAt: '2026-03-01T08:00:00.000Z',
    size: 100,
    receivedSize: 90,
    envelope: { mailFrom: 'sales@example.com', rcptTo: ['a@example.org', 'b@example.org', 'c@example.org'] },
    source: { kind: 'submission', alias: 'sales', remoteAddress: '192.0.2.7', user: 'ann' },
    to: ['a@example.org'],
    cc: [],
    _AttachmentFileNames: [],
    attachments: [],
    findings: { masking: { summary: ['Nothing to mask.'] }, attachments: { summary: [] } },
    tags: [],
    direction: 'outbound',
    delivery: {
      kind: 'outbound',
      status: 'partly_delivered',
      finishedAt: '2026-03-01T09:00:00.000Z',
      attempts: 2,
      dsnId: '01KA0000000000000000000001',
      recipients: [
        {
          address: 'a@example.org',
          status: 'delivered',
          attempts: 1,
          deliveredAt: '2026-03-01T08:00:05.000Z',
          route: 'sales',
          last: { at: '2026-03-01T08:00:05.000Z', code: 250, message: '2.0.0 Ok: queued as X', permanent: false },
        },
        {
          address: 'b@example.org',
          status: 'failed',
          attempts: 2,
          last: { at: '2026-03-01T09:00:00.000Z', code: 550, message: '5.1.1 no such user', permanent: true },
        },
        {
          address: 'c@example.org',
          status: 'failed',
          attempts: 2,
          last: { at: '2026-03-01T09:00:00.000Z', code: 550, message: '5.1.1 no such user', permanent: true },
        },
      ],
    },
  };
  const steps = messageTimeline(meta);
  assert.deepEqual(
    steps.map((s) => [s.event, s.at, s.summary]),
    [
      ['received', meta.receivedAt, 'received by submission for alias sales from 192.0.2.7 as ann, 90 bytes'],
      ['stage', meta.receivedAt, 'masking: Nothing to mask.'],
      ['stage', meta.receivedAt, 'attachments: nothing recorded'],
      ['queued', meta.receivedAt, 'queued (outbound) for a@example.org, b@example.org, c@example.org'],
      ['attempt', '2026-03-01T08:00:05.000Z', 'attempt 1 for a@example.org: accepted via sales: 250 2.0.0 Ok: queued as X'],
      ['attempt', '2026-03-01T09:00:00.000Z', 'attempt 2 for b@example.org, c@example.org: refused for good: 550 5.1.1 no such user'],
      [
        'partly_delivered',
        '2026-03-01T09:00:00.000Z',
        'partly delivered after 2 attempts: delivered to a@example.org; failed for b@example.org, c@example.org; notification 01KA0000000000000000000001 sent back',
      ],
    ],
  );
  assert.deepEqual(steps[5], {
    event: 'attempt',
    at: '2026-03-01T09:00:00.000Z',
    recipients: ['b@example.org', 'c@example.org'],
    attempts: 2,
    code: 550,
    reply: '5.1.1 no such user',
    permanent: true,
    summary: 'attempt 2 for b@example.org, c@example.org: refused for good: 550 5.1.1 no such user',
  });
  assert.equal(JSON.stringify(JSON.parse(JSON.stringify(steps))), JSON.stringify(steps), 'plain JSON');
  // A route failure no recipient's reply repeats (connection refused before any RCPT) is a step of its own.
  const entry: QueueEntry = {
    id: meta.id,
    kind: 'relay',
    mailFrom: '',
    requestedRecipients: ['a@example.org'],
    recipients: [{ address: 'a@example.org', status: 'pending', attempts: 0 }],
    queuedAt: meta.receivedAt,
    attempts: 1,
    nextAttemptAt: '2026-03-01T08:10:00.000Z',
    lastError: { at: '2026-03-01T08:00:01.000Z', message: 'downstream: connect ECONNREFUSED', permanent: false },
  };
  const { delivery: _, ...queued } = meta;
  assert.deepEqual(
    messageTimeline(queued, entry)
      .slice(3)
      .map((s) => [s.event, s.summary]),
    [
      ['queued', 'queued (relay downstream) for a@example.org'],
      ['attempt', 'attempt for the route: to be tried again: downstream: connect ECONNREFUSED'],
      ['waiting', 'next attempt due 2026-03-01T08:10:00.000Z'],
    ],
  );
});

test('a quarantine file name pattern: * and ? only, the whole name, any case', () => {
  const fits = (pattern: string, name: string) => fileNamePattern(pattern).test(name);
  assert.ok(fits('*.exe', 'Invoice.PDF.EXE'));
  assert.ok(fits('report-?.zip', 'report-7.zip'));
  assert.ok(!fits('*.exe', 'setup.exe.txt'), 'the whole name');
  assert.ok(!fits('a.b', 'aXb'), 'a dot is a dot');
  assert.ok(fits('[x](y)+.txt', '[x](y)+.txt'), 'other characters stand for themselves');
  assert.ok(fits('*', 'line\nbreak'));
});
