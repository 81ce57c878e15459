/**
 * Faults around SMTP ingest (issue 6). The bar is RFC 5321 section 6.1, as Postfix keeps it:
 * once we answer 250 to DATA the message must survive, and a message we refuse leaves nothing
 * visible behind.
 *
 * On LevelDB by name, whatever MAILGATE_TEST_STORE says: the faults are injected below LevelDB
 * (its prototype, a full tmpfs under its files) and what a fault leaves is read in LevelDB's
 * layout (pending marks, chunk keys). PostgreSQL's own crash and fault behaviour is checked by
 * test/postgres-store.test.ts.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, rm, statfs, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { Level } from 'level';
import nodemailer from 'nodemailer';
import { loadConfigFile } from '../gateway/config/load.js';
import { startGateway } from '../gateway/gateway.js';
import { LevelStore } from '../storage/leveldb/store.js';
import { newMessageId } from '../storage/ids.js';
import type { MessageMeta } from '../storage/records.js';
import { spoolDir } from '../ingest/spool.js';
import { capturingLogger, spawnServe, startTestGateway, testConfigText, type TestGateway } from './helpers/gateway.js';
import { tempDir } from './helpers/paths.js';
import { rawSmtp } from './helpers/smtp-client.js';

const MiB = 1024 * 1024;

/** A message whose bytes we can recognise: unique subject and Message-ID, a body of `size` bytes. */
function message(tag: string, size = 2000): string {
  const head = `From: sender@example.org\r\nTo: support@example.com\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@faults.test>\r\n\r\n`;
  const line = `${tag} ${'x'.repeat(70)}\r\n`;
  return head + line.repeat(Math.max(1, Math.ceil(size / line.length)));
}

interface Outcome {
  code: number;
  response: string;
  id?: string;
}

/** Sends one message and reports the reply to DATA (or to whatever refused it). */
async function send(transport: ReturnType<typeof nodemailer.createTransport>, raw: string): Promise<Outcome> {
  try {
    const info = await transport.sendMail({ envelope: { from: 'sender@example.org', to: ['support@example.com'] }, raw });
    const id = /queued as (\S+)/.exec(info.response)?.[1];
    return { code: Number(info.response.slice(0, 3)), response: info.response, ...(id ? { id } : {}) };
  } catch (err) {
    const { responseCode, response, message: text } = err as { responseCode?: number; response?: string; message: string };
    return { code: responseCode ?? 0, response: response ?? text };
  }
}

function transport(port: number, extra: Record<string, unknown> = {}) {
  return nodemailer.createTransport({ host: '127.0.0.1', port, ignoreTLS: true, ...extra });
}

async function until<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Reopens the store the way the next start does (its sweep runs) and checks that it holds
 * exactly `expected` (id -> bytes), every one whole, and nothing left of anything else.
 */
async function assertStoreHolds(dataDir: string, expected: Map<string, string>): Promise<void> {
  const store = await LevelStore.open(dataDir);
  try {
    const listed = await store.listMessages({ limit: Infinity });
    assert.deepEqual(listed.map((m) => m.id).sort(), [...expected.keys()].sort(), 'the store lists exactly the messages that got a 250');
    for (const [id, raw] of expected) {
      const bytes = await buffer(store.openRaw(id));
      assert.ok(bytes.equals(Buffer.from(raw)), `message ${id} is stored byte for byte`);
    }
    assert.deepEqual(await store.sublevels.pending.keys().all(), [], 'no unfinished message is left after the sweep');
    const chunkOwners = new Set((await store.sublevels.chunks.keys().all()).map((k) => k.slice(0, k.indexOf('!'))));
    assert.deepEqual(
      [...chunkOwners].filter((id) => !expected.has(id)),
      [],
      'no chunks of a refused message are left',
    );
    assert.deepEqual(await store.sublevels.quarantineChunks.keys().all(), []);
  } finally {
    await store.close();
  }
}

/** Mounts a tmpfs of `size` bytes on `dir`; the reason when this container does not let us. */
function mountTmpfs(dir: string, size: number): string | undefined {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return (err as { stderr?: Buffer }).stderr?.toString().trim() || String(err);
  }
}

const LEVELDB = { store: 'leveldb' } as const;

/** A gateway in this process on a data directory of our choosing (startTestGateway picks its own). */
async function gatewayOn(t: TestContext, dir: string, dataDir: string) {
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, `data_dir = ${JSON.stringify(dataDir)}\n\n[admin]\nenabled = false\n\n[smtp]\nlisten = ["127.0.0.1:0"]\n`);
  const config = loadConfigFile(configFile);
  const log = capturingLogger();
  const store = await LevelStore.open(config.data_dir, { logger: log.logger });
  const gateway = await startGateway({ config, store, logger: log.logger, retriever: false });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await gateway.stop();
    await store.close();
  };
  t.after(stop);
  return { port: gateway.smtp.addresses[0]!.port, store, log, stop };
}

test('a full disk: 452 4.3.1, nothing half-written left, and mail is taken again once there is room, without a restart', async (t) => {
  const { dir, cleanup } = await tempDir();
  const disk = path.join(dir, 'disk');
  await mkdir(disk);
  const refused = mountTmpfs(disk, 24 * MiB);
  if (refused !== undefined) {
    await cleanup();
    t.skip(`cannot mount a tmpfs here (${refused}); the injected failures below still cover the replies`);
    return;
  }
  let stopGateway = async () => {};
  t.after(async () => {
    await stopGateway(); // its files are open until then
    execFileSync('umount', [disk]);
    await cleanup();
  });
  // Leave LevelDB about 3 MiB: its log fills well before its first table is written.
  const ballast = path.join(disk, 'ballast');
  const free = await statfs(disk);
  await writeFile(ballast, Buffer.alloc(free.bavail * free.bsize - 3 * MiB));
  const dataDir = path.join(disk, 'data');
  const gw = await gatewayOn(t, dir, dataDir);
  stopGateway = gw.stop;

  // Several senders, so that the disk fills while other messages are being written and committed.
  const acked = new Map<string, string>(); // id -> bytes
  const refusals: Outcome[] = [];
  let n = 0;
  const sender = async () => {
    const tr = transport(gw.port, { pool: true, maxConnections: 1, maxMessages: Infinity });
    try {
      while (refusals.length < 6 && n < 300) {
        const i = n++;
        // Every third message is over 64 KiB, so the spool (on the same disk) is written too.
        const raw = message(`full-${i}`, i % 3 === 0 ? 150_000 : 20_000);
        const outcome = await send(tr, raw);
        if (outcome.code === 250) acked.set(outcome.id!, raw);
        else refusals.push(outcome);
      }
    } finally {
      tr.close();
    }
  };
  // A sender whose commit was in flight when another write failed may wait for its answer
  // until the database is reopened, which needs room (storage/leveldb/store.ts, #durableWrite):
  // so the senders are awaited only once the admin has freed space, below.
  let sendersDone = false;
  const senders = Promise.all(Array.from({ length: 4 }, sender)).finally(() => (sendersDone = true));
  await until('the disk to fill up', async () => refusals.length >= 6 || sendersDone, 120_000);
  assert.ok(refusals.length > 0, `the disk filled up (${n} messages sent)`);

  // Still full: still 452.
  const stillFull = await send(transport(gw.port), message('still-full', 150_000));
  assert.equal(stillFull.code, 452, stillFull.response);

  // The admin frees space; the gateway reopens its database by itself and takes mail again.
  await rm(ballast);
  await senders;
  assert.ok(acked.size > 5, `some messages were taken before the disk was full (${acked.size})`);
  for (const r of refusals) assert.match(r.response, /^452 4\.3\.1 Insufficient system storage/, 'a full disk is answered 452 4.3.1, never 250 or 5xx');
  // Nothing of the refused messages is visible, and their spool files are gone.
  const listed = await gw.store.listMessages({ limit: Infinity });
  assert.deepEqual(listed.map((m) => m.id).sort(), [...acked.keys()].sort());
  assert.deepEqual(await readdir(spoolDir(dataDir)), [], 'no spool file is left behind');
  const more = new Map<string, string>();
  let attempt = 0;
  await until('a 250 after the disk has room again', async () => {
    const raw = message(`after-${attempt++}`, 150_000);
    const outcome = await send(transport(gw.port), raw);
    if (outcome.code !== 250) return undefined;
    more.set(outcome.id!, raw);
    return true;
  });
  for (let i = 0; i < 3; i++) {
    const raw = message(`more-${i}`, 90_000);
    const outcome = await send(transport(gw.port), raw);
    assert.equal(outcome.code, 250, outcome.response);
    more.set(outcome.id!, raw);
  }

  // A restart (the next open and its sweep) finds every acknowledged message whole, and nothing else.
  await gw.stop();
  const expected = new Map([...acked, ...more]);
  await assertStoreHolds(dataDir, expected);
  assert.ok(
    gw.log.entries.some((e) => e.msg === 'store reopened after a failed write; writes resume'),
    'the store reopened its database by itself',
  );
  t.diagnostic(`${acked.size} taken before the disk was full, ${refusals.length} refused with 452, ${n} sent`);
});

test('a store failure is answered 451, a full disk 452, and the store recovers by itself (failures injected at the LevelDB boundary)', async (t) => {
  // Injected below the store's write guard, where classic-level itself fails: the guard takes
  // the database's write methods when the store opens, so the prototype is patched around that.
  const proto = Level.prototype as unknown as { _batch: (this: unknown, ops: unknown[], options?: { sync?: boolean }) => Promise<void> };
  const original = proto._batch;
  let failNext: Error | undefined;
  proto._batch = function (ops, options) {
    const err = options?.sync ? failNext : undefined;
    if (err) {
      failNext = undefined;
      return Promise.reject(err);
    }
    return original.call(this, ops, options);
  };
  let gw: TestGateway;
  try {
    gw = await startTestGateway('', LEVELDB);
  } finally {
    proto._batch = original;
  }
  t.after(() => gw.cleanup());
  const levelError = (text: string) => Object.assign(new Error(`IO error: ${gw.config.data_dir}/000003.log: ${text}`), { code: 'LEVEL_IO_ERROR' });
  const expected = new Map<string, string>();
  let n = 0;
  const nextTaken = () =>
    until('a 250 once the store has reopened', async () => {
      const raw = message(`recovered-${n++}`);
      const outcome = await send(transport(gw.port), raw);
      if (outcome.code !== 250) return undefined;
      expected.set(outcome.id!, raw);
      return true;
    });

  failNext = levelError('Input/output error');
  const eio = await send(transport(gw.port), message('eio'));
  assert.match(eio.response, /^451 4\.3\.0 /, 'a store failure is temporary, 451');
  await nextTaken();

  failNext = levelError('No space left on device');
  const full = await send(transport(gw.port), message('enospc'));
  assert.match(full.response, /^452 4\.3\.1 /, 'LevelDB reporting a full disk is answered 452 4.3.1');
  await nextTaken();

  await gw.stop();
  await assertStoreHolds(gw.config.data_dir, expected);
});

test('a commit in flight when another write fails is confirmed or refused by what the reopened database holds (injected)', async (t) => {
  // The commit's synced write is made slow (its success reported 100 ms late), and a put fails
  // meanwhile, as when LevelDB tears its log under a full disk while a commit waits for fsync.
  // "written": the commit reached the database; "lost": it did not (it sat after the tear).
  const proto = Level.prototype as unknown as Record<'_batch' | '_put', (this: unknown, ...args: unknown[]) => Promise<void>>;
  const originals = { _batch: proto._batch, _put: proto._put };
  let slowCommit: 'written' | 'lost' | undefined;
  let failPut = false;
  proto._batch = async function (...args) {
    const mode = (args[1] as { sync?: boolean } | undefined)?.sync ? slowCommit : undefined;
    if (!mode) return originals._batch.apply(this, args);
    slowCommit = undefined;
    if (mode === 'written') await originals._batch.apply(this, args);
    await new Promise((r) => setTimeout(r, 100));
  };
  proto._put = function (...args) {
    if (!failPut) return originals._put.apply(this, args);
    failPut = false;
    return Promise.reject(Object.assign(new Error('IO error: 000003.log: No space left on device'), { code: 'LEVEL_IO_ERROR' }));
  };
  const { dir, cleanup } = await tempDir();
  const log = capturingLogger();
  let store: LevelStore;
  try {
    store = await LevelStore.open(path.join(dir, 'data'), { logger: log.logger });
  } finally {
    Object.assign(proto, originals);
  }
  let reopened: LevelStore | undefined;
  t.after(async () => {
    await store.close();
    await reopened?.close();
    await cleanup();
  });

  for (const mode of ['written', 'lost'] as const) {
    const id = newMessageId();
    const writer = store.createMessageWriter(id);
    writer.end(Buffer.from(`Subject: ${mode}\r\n\r\nbody\r\n`));
    slowCommit = mode;
    failPut = true;
    const meta: MessageMeta = {
      id,
      version: 1,
      receivedAt: new Date().toISOString(),
      size: 0,
      receivedSize: 0,
      envelope: { mailFrom: '', rcptTo: ['support@example.com'] },
      source: { kind: 'smtp' },
      to: [],
      cc: [],
      _AttachmentFileNames: [],
      attachments: [],
      findings: {},
      tags: [],
    };
    const commit = writer.commit(meta);
    await new Promise((r) => setTimeout(r, 30)); // the commit's batch is in flight
    await assert.rejects(store.sublevels.aliasState.put('someone', {} as never), { code: 'LEVEL_IO_ERROR' });
    if (mode === 'written') {
      await commit;
      assert.equal((await buffer(store.openRaw(id))).toString(), 'Subject: written\r\n\r\nbody\r\n');
      await log.waitFor((e) => e.msg === 'a commit in flight during a failed write survived the reopen');
    } else {
      await assert.rejects(commit, { code: 'STORE_WRITE_UNCERTAIN' });
      await writer.abort();
      assert.equal(await store.getMessage(id), undefined);
    }
  }
  const written = (await store.listMessages({})).map((m) => m.id);
  await store.close();
  // Both outcomes hold across a restart.
  reopened = await LevelStore.open(path.join(dir, 'data'));
  assert.deepEqual(
    (await reopened.listMessages({})).map((m) => m.id),
    written,
  );
  assert.equal(written.length, 1);
  assert.deepEqual(await reopened.sublevels.pending.keys().all(), []);
});

/** The SMTP commands of one transaction up to DATA, for clients that then misbehave. */
async function openData(port: number) {
  const s = await rawSmtp(port);
  assert.match(await s.command('EHLO client.test'), /^250/);
  assert.match(await s.command('MAIL FROM:<sender@example.org>'), /^250/);
  assert.match(await s.command('RCPT TO:<support@example.com>'), /^250/);
  assert.match(await s.command('DATA'), /^354/);
  return s;
}

test('a client that disconnects mid-DATA leaves nothing stored, and others are served meanwhile', async (t) => {
  // A real `mailgate serve`, so that a session that never finishes fails this test instead of hanging it.
  const { dir, cleanup } = await tempDir();
  const configFile = path.join(dir, 'mailgate.toml');
  await writeFile(configFile, testConfigText(dir, '', LEVELDB));
  const dataDir = path.join(dir, 'data');
  const { port, child, exited } = await spawnServe(configFile);
  t.after(async () => {
    child.kill('SIGKILL');
    await exited;
    await cleanup();
  });

  const bad = await openData(port);
  // Past the first 64 KiB, so that the store and the spool both hold some of it.
  void bad.write(message('cut-off', 400_000).slice(0, 300_000));
  await until('the cut-off message to reach the spool', async () => (await readdir(spoolDir(dataDir))).length > 0);

  const raw = message('meanwhile', 100_000);
  const good = await send(transport(port), raw);
  assert.equal(good.code, 250, good.response);
  bad.close();
  await until('the cut-off message to be discarded (its spool file removed)', async () => (await readdir(spoolDir(dataDir))).length === 0);
  const afterRaw = message('after');
  const after = await send(transport(port), afterRaw);
  assert.equal(after.code, 250, after.response);

  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
  assert.equal(code, 0, 'the gateway stops cleanly: no session is left waiting for the cut-off message');
  // Its chunks were removed while the gateway ran, not left for the next start's sweep.
  const log = capturingLogger();
  const store = await LevelStore.open(dataDir, { logger: log.logger });
  await store.close();
  assert.ok(
    log.entries.some((e) => e.swept === 0),
    'nothing unfinished was left for the sweep',
  );
  await assertStoreHolds(
    dataDir,
    new Map([
      [good.id!, raw],
      [after.id!, afterRaw],
    ]),
  );
});

test('RSET drops the transaction: only the message sent after it is stored', async (t) => {
  const gw = await startTestGateway('', LEVELDB);
  t.after(() => gw.cleanup());
  const s = await rawSmtp(gw.port);
  t.after(() => s.close());
  assert.match(await s.command('EHLO client.test'), /^250/);
  assert.match(await s.command('MAIL FROM:<dropped@example.org>'), /^250/);
  assert.match(await s.command('RCPT TO:<support@example.com>'), /^250/);
  assert.match(await s.command('RSET'), /^250/);
  assert.match(await s.command('DATA'), /^503 /, 'no transaction after RSET');

  const other = message('other client');
  const meanwhile = await send(transport(gw.port), other);
  assert.equal(meanwhile.code, 250, meanwhile.response);

  assert.match(await s.command('MAIL FROM:<kept@example.org>'), /^250/);
  assert.match(await s.command('RCPT TO:<support@example.com>'), /^250/);
  assert.match(await s.command('DATA'), /^354/);
  const raw = message('after-rset');
  const reply = await s.write(raw + '.\r\n');
  const id = /^250 .*queued as (\S+)/.exec(reply)?.[1];
  assert.ok(id, reply);
  const stored = await gw.store.getMessage(id);
  assert.deepEqual(stored?.envelope, { mailFrom: 'kept@example.org', rcptTo: ['support@example.com'] });
  s.close();
  await gw.stop();
  await assertStoreHolds(
    gw.config.data_dir,
    new Map([
      [meanwhile.id!, other],
      [id, raw],
    ]),
  );
});

test('an early talker (commands before the greeting) is cut off with 421 and nothing of it is stored', async (t) => {
  const gw = await startTestGateway('', LEVELDB);
  t.after(() => gw.cleanup());
  const socket = connect(gw.port, '127.0.0.1');
  t.after(() => socket.destroy());
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (text: string) => (received += text));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  // The whole transaction at once, without waiting for the 220 (a PIPELINING abuser or spam bot).
  socket.write(`EHLO early.test\r\nMAIL FROM:<early@example.org>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n${message('early talker')}.\r\nQUIT\r\n`);

  const raw = message('polite client');
  const polite = await send(transport(gw.port), raw);
  assert.equal(polite.code, 250, polite.response);
  await Promise.race([
    closed,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`early talker not disconnected; got ${JSON.stringify(received)}`)), 5000)),
  ]);
  // smtp-server holds the greeting back 100 ms and answers any command before it so (Postfix: smtpd_client_event_limit / postscreen's pregreet test).
  assert.match(received, /^421 .*You talk too soon/m, received);
  t.diagnostic(`the early talker got: ${JSON.stringify(received)}`);
  assert.doesNotMatch(received, /^250 .*queued/m);
  assert.deepEqual(
    (await gw.store.listMessages({})).map((m) => m.subject),
    ['polite client'],
  );
  await gw.stop();
  await assertStoreHolds(gw.config.data_dir, new Map([[polite.id!, raw]]));
});
