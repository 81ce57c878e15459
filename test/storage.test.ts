import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Level } from 'level';
import { tempDir, projectRoot } from './helpers/paths.js';
import { LevelStore, SCHEMA_VERSION, CHUNK_SIZE, type StoreLogger } from '../storage/leveldb/store.js';
import { newMessageId, idTime, isMessageId } from '../storage/ids.js';
import { createIdGenerator, idFloor } from '../storage/ids.js';
import { GroupCommit } from '../storage/leveldb/group-commit.js';
import { chunkRange, quarantineRange, runMigrations, type RootDb } from '../storage/leveldb/layout.js';
import { deletionOps } from '../storage/leveldb/retention.js';
import type { MessageMeta } from '../storage/records.js';

function sampleMeta(id: string, over: Partial<MessageMeta> = {}): MessageMeta {
  return {
    id,
    version: 1,
    receivedAt: new Date(idTime(id)).toISOString(),
    size: 0,
    receivedSize: 0,
    envelope: { mailFrom: 'sender@example.org', rcptTo: ['info@example.com'] },
    source: { kind: 'smtp', remoteAddress: '192.0.2.1', helo: 'mx.example.org', secure: true },
    subject: 'Hello',
    from: 'Sender <sender@example.org>',
    to: ['info@example.com'],
    cc: [],
    messageId: `${id}@example.org`,
    _AttachmentFileNames: ['a.pdf'],
    attachments: [{ fileName: 'a.pdf', contentType: 'application/pdf', size: 10 }],
    findings: { phrases: { summary: ['matched'], matched: ['urgent'] } },
    tags: ['test'],
    ...over,
  };
}

/** Feeds `bytes` in uneven pieces so chunk boundaries fall mid-write. */
function pieces(bytes: Buffer, size = 10_007): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) parts.push(bytes.subarray(i, i + size));
  return Readable.from(parts, { objectMode: false });
}

async function storeMessage(store: LevelStore, bytes: Buffer, over: Partial<MessageMeta> = {}, id = newMessageId()): Promise<MessageMeta> {
  const writer = store.createMessageWriter(id);
  await pipeline(pieces(bytes), writer);
  const meta = sampleMeta(id, { receivedSize: bytes.length, ...over });
  await writer.commit(meta);
  return { ...meta, size: bytes.length };
}

async function readAll(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(part as Buffer);
  return Buffer.concat(parts);
}

async function withStore(fn: (store: LevelStore, dir: string) => Promise<void>, logger?: StoreLogger): Promise<void> {
  const { dir, cleanup } = await tempDir('mailgate-storage-');
  const store = await LevelStore.open(dir, logger ? { logger } : {});
  try {
    await fn(store, dir);
  } finally {
    await store.close();
    await cleanup();
  }
}

function collectingLogger(): StoreLogger & { entries: object[] } {
  const entries: object[] = [];
  const log = (obj: object) => {
    entries.push(obj);
  };
  return { entries, info: log, warn: log, error: log };
}

test('bytes round trip unchanged at chunk boundaries', () =>
  withStore(async (store) => {
    for (const size of [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 1024 * 1024]) {
      const bytes = randomBytes(size);
      const meta = await storeMessage(store, bytes);
      assert.deepEqual(await readAll(store.openRaw(meta.id)), bytes, `size ${size}`);
      const chunks = await store.sublevels.chunks.keys(chunkRange(meta.id)).all();
      assert.equal(chunks.length, Math.ceil(size / CHUNK_SIZE), `chunks for size ${size}`);
    }
    // One write far bigger than a chunk is split too.
    const big = randomBytes(3 * CHUNK_SIZE + 5);
    const writer = store.createMessageWriter(newMessageId());
    writer.end(big);
    await writer.commit(sampleMeta(writer.id));
    assert.equal(writer.bytesWritten, big.length);
    assert.deepEqual(await readAll(store.openRaw(writer.id)), big);
  }));

test('metadata round trip; size is what was stored', () =>
  withStore(async (store) => {
    const meta = await storeMessage(store, Buffer.from('Subject: x\r\n\r\nbody\r\n'), { size: 999, source: { kind: 'imap', alias: 'sales' } });
    assert.deepEqual(await store.getMessage(meta.id), meta);
    assert.equal((await store.getMessage(meta.id))?.size, 20);
    assert.equal(await store.getMessage(newMessageId()), undefined);
  }));

test('listMessages: newest first, limit, since, alias', () =>
  withStore(async (store) => {
    const base = Date.UTC(2024, 0, 1);
    let clock = base;
    const nextId = createIdGenerator(() => clock);
    const made: MessageMeta[] = [];
    for (let i = 0; i < 6; i++) {
      clock = base + i * 1000;
      const alias = i === 5 ? undefined : i % 2 === 0 ? 'sales' : 'support';
      made.push(await storeMessage(store, Buffer.from(`message ${i}`), { source: { kind: 'smtp', ...(alias ? { alias } : {}) } }, nextId()));
    }
    const ids = (list: MessageMeta[]) => list.map((m) => m.id);
    const newestFirst = ids([...made].reverse());
    assert.deepEqual(ids(await store.listMessages()), newestFirst);
    assert.deepEqual(ids(await store.listMessages({ limit: 2 })), newestFirst.slice(0, 2));
    assert.deepEqual(await store.listMessages({ limit: 0 }), []);
    assert.deepEqual(ids(await store.listMessages({ since: new Date(base + 2500) })), newestFirst.slice(0, 3));
    assert.deepEqual(ids(await store.listMessages({ since: new Date(base + 3000) })), newestFirst.slice(0, 3), 'since is inclusive');
    const sales = made.filter((m) => m.source.alias === 'sales');
    assert.deepEqual(ids(await store.listMessages({ alias: 'sales' })), ids(sales.reverse()));
    assert.deepEqual(ids(await store.listMessages({ alias: 'sales', limit: 1 })), [made[4]?.id]);
    assert.deepEqual(ids(await store.listMessages({ alias: 'support', since: new Date(base + 2000) })), [made[3]?.id]);
    assert.deepEqual(await store.listMessages({ alias: 'sale' }), [], 'alias is matched whole');
    assert.deepEqual((await store.listMessages({ alias: 'sales', limit: 1 }))[0], made[4]);
  }));

test('ids are sortable, monotonic and carry their time', () => {
  const before = Date.now();
  const ids = Array.from({ length: 20_000 }, () => newMessageId());
  for (let i = 1; i < ids.length; i++) assert.ok((ids[i - 1] ?? '') < (ids[i] ?? ''), `id ${i} sorts after id ${i - 1}`);
  for (const id of ids) assert.ok(isMessageId(id) && id.length === 26, id);
  const first = idTime(ids[0] ?? '');
  assert.ok(first >= before && first <= Date.now() + 1);
  // A clock that stands still or steps back still gives increasing ids.
  const times = [5000, 5000, 4000, 6000];
  const gen = createIdGenerator(() => times.shift() ?? 0);
  const stepped = [gen(), gen(), gen(), gen()];
  assert.deepEqual([...stepped].sort(), stepped);
  assert.equal(new Set(stepped).size, 4);
  assert.equal(idTime(stepped[3] ?? ''), 6000);
  assert.ok(idFloor(6000) <= (stepped[3] ?? '') && idFloor(6001) > (stepped[3] ?? ''));
});

test('ids drawn in different milliseconds get fresh, distinct random parts, across many refills of the random pool', () => {
  let clock = Date.UTC(2024, 0, 1);
  const gen = createIdGenerator(() => clock++);
  const ids = Array.from({ length: 5000 }, () => gen());
  for (let i = 1; i < ids.length; i++) assert.ok((ids[i - 1] ?? '') < (ids[i] ?? ''), `id ${i} sorts after id ${i - 1}`);
  const randomParts = ids.map((id) => id.slice(10));
  assert.equal(new Set(randomParts).size, ids.length, 'no random part repeats');
  // All 80 bits are random: the first and the last character of the random part take every value.
  for (const at of [0, 15]) assert.equal(new Set(randomParts.map((r) => r[at])).size, 32, `character ${at} of the random part`);
  // Two generators do not share a stream of random values.
  const other = createIdGenerator(() => Date.UTC(2024, 0, 1));
  assert.notEqual(other().slice(10), randomParts[0]);
});

test('abort removes written chunks and the pending mark', () =>
  withStore(async (store) => {
    const writer = store.createMessageWriter(newMessageId());
    await new Promise<void>((resolve, reject) => writer.write(randomBytes(3 * CHUNK_SIZE + 10), (err) => (err ? reject(err) : resolve())));
    assert.equal((await store.sublevels.chunks.keys(chunkRange(writer.id)).all()).length, 3);
    assert.deepEqual(await store.sublevels.pending.keys().all(), [writer.id]);
    await writer.abort();
    await writer.abort();
    assert.deepEqual(await store.sublevels.chunks.keys().all(), []);
    assert.deepEqual(await store.sublevels.pending.keys().all(), []);
    await assert.rejects(writer.commit(sampleMeta(writer.id)), /aborted/);
    assert.equal(await store.getMessage(writer.id), undefined);
    // Aborting in the middle of a pipeline stops it.
    const second = store.createMessageWriter(newMessageId());
    const source = new Readable({
      read() {
        this.push(randomBytes(CHUNK_SIZE));
      },
    });
    const piped = pipeline(source, second).then(
      () => undefined,
      (err: unknown) => err,
    );
    await once(second, 'drain');
    await second.abort();
    assert.equal(((await piped) as { code?: string } | undefined)?.code, 'ERR_STREAM_PREMATURE_CLOSE');
    assert.deepEqual(await store.sublevels.chunks.keys().all(), []);
  }));

test('a crash mid-write is swept at the next open', async () => {
  const { dir, cleanup } = await tempDir('mailgate-storage-');
  try {
    let store = await LevelStore.open(dir);
    const kept = await storeMessage(store, randomBytes(100_000));
    const writer = store.createMessageWriter(newMessageId());
    await new Promise<void>((resolve, reject) => writer.write(randomBytes(5 * CHUNK_SIZE), (err) => (err ? reject(err) : resolve())));
    assert.equal((await store.sublevels.chunks.keys(chunkRange(writer.id)).all()).length, 5);
    await store.close(); // no commit: as if the process died here
    const logger = collectingLogger();
    store = await LevelStore.open(dir, { logger });
    try {
      assert.ok(
        logger.entries.some((e) => (e as { swept?: number }).swept === 1),
        JSON.stringify(logger.entries),
      );
      assert.deepEqual(await store.sublevels.chunks.keys(chunkRange(writer.id)).all(), []);
      assert.deepEqual(await store.sublevels.pending.keys().all(), []);
      assert.deepEqual(
        (await store.listMessages()).map((m) => m.id),
        [kept.id],
      );
      assert.equal((await readAll(store.openRaw(kept.id))).length, 100_000);
    } finally {
      await store.close();
    }
  } finally {
    await cleanup();
  }
});

test('a crash in the middle of a deletion is finished at the next open: no chunk of any generation, no quarantined byte is left', async () => {
  const { dir, cleanup } = await tempDir('mailgate-storage-');
  try {
    let store = await LevelStore.open(dir);
    const kept = await storeMessage(store, randomBytes(100_000));
    const gone = await storeMessage(store, randomBytes(3 * CHUNK_SIZE));
    const rewrite = await store.rewriteMessage(gone.id);
    await pipeline(pieces(randomBytes(2 * CHUNK_SIZE)), rewrite);
    await rewrite.commit(gone);
    await store.sublevels.quarantineChunks.put(`${gone.id}.1!00000000`, randomBytes(100));
    // The deletion's synced batch, and then the process dies before the bytes are cleared.
    await store.commitBatch(deletionOps(store.sublevels, gone, []));
    const left = async (s: LevelStore) => [
      ...(await s.sublevels.chunks.keys({ gte: gone.id, lt: `${gone.id}~` }).all()),
      ...(await s.sublevels.quarantineChunks.keys(quarantineRange(gone.id)).all()),
    ];
    assert.equal((await left(store)).length, 3, 'the second generation and the quarantined bytes are still there');
    await store.close();
    store = await LevelStore.open(dir);
    try {
      assert.deepEqual(await left(store), []);
      assert.deepEqual(await store.sublevels.pending.keys().all(), []);
      assert.equal(await store.getMessage(gone.id), undefined);
      assert.equal((await readAll(store.openRaw(kept.id))).length, 100_000);
    } finally {
      await store.close();
    }
  } finally {
    await cleanup();
  }
});

test('a locked data directory gives STORE_LOCKED', () =>
  withStore(async (store, dir) => {
    // In one process classic-level reports the lock the same way as across processes.
    const raw = new Level(dir);
    const err = await raw.open().then(
      () => undefined,
      (e: unknown) => e as { code?: string; cause?: { code?: string } },
    );
    assert.equal(err?.code, 'LEVEL_DATABASE_NOT_OPEN');
    assert.equal(err?.cause?.code, 'LEVEL_LOCKED');
    await assert.rejects(LevelStore.open(dir), { code: 'STORE_LOCKED' });
    await store.close();
    // Held by another process, as when the gateway runs.
    const holder = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { Level } from 'level'; const db = new Level(process.argv[1]); await db.open(); console.log('ready'); process.stdin.on('end', () => db.close()); process.stdin.resume();`,
        dir,
      ],
      { cwd: projectRoot, stdio: ['pipe', 'pipe', 'inherit'] },
    );
    try {
      const [line] = (await once(holder.stdout, 'data')) as [Buffer];
      assert.equal(line.toString().trim(), 'ready');
      await assert.rejects(LevelStore.open(dir), (e: { code?: string; message?: string }) => e.code === 'STORE_LOCKED' && /in use/.test(e.message ?? ''));
    } finally {
      holder.stdin.end();
      await once(holder, 'exit');
    }
  }));

test('group commit: 50 concurrent commits share synced batches', () =>
  withStore(async (store) => {
    const before = store.stats.syncedBatches;
    const bodies = Array.from({ length: 50 }, (_, i) => randomBytes(1000 + i * 3000));
    const metas = await Promise.all(bodies.map((body) => storeMessage(store, body, { source: { kind: 'smtp', alias: 'bulk' } })));
    const batches = store.stats.syncedBatches - before;
    assert.ok(batches < 50, `expected fewer than 50 synced batches, got ${batches}`);
    assert.equal((await store.listMessages({ alias: 'bulk' })).length, 50);
    for (const [i, meta] of metas.entries()) assert.deepEqual(await readAll(store.openRaw(meta.id)), bodies[i]);
  }));

test('GroupCommit rejects every caller of a failed batch and carries on', async () => {
  const written: number[][] = [];
  let fail = true;
  const gc = new GroupCommit<number>(async (ops) => {
    await new Promise((r) => setTimeout(r, 5));
    if (fail) {
      fail = false;
      throw new Error('disk full');
    }
    written.push(ops);
  });
  const results = await Promise.allSettled([gc.commit([1]), gc.commit([2]), gc.commit([3, 4])]);
  assert.deepEqual(
    results.map((r) => r.status),
    ['rejected', 'rejected', 'rejected'],
  );
  await Promise.all([gc.commit([5]), gc.commit([6])]);
  const late = gc.commit([7]);
  await gc.idle();
  await late;
  assert.deepEqual(written.flat(), [5, 6, 7]);
  assert.equal(gc.batches, 3);
});

test('openRaw of an unknown id errors with MESSAGE_NOT_FOUND', () =>
  withStore(async (store) => {
    await assert.rejects(readAll(store.openRaw(newMessageId())), { code: 'MESSAGE_NOT_FOUND' });
  }));

test('migration 8 indexes the Message-IDs of messages stored before reply threading, so a reply to one finds it', async () => {
  const { dir, cleanup } = await tempDir('mailgate-storage-');
  try {
    const store = await LevelStore.open(dir);
    const old = await storeMessage(store, Buffer.from('Subject: old\r\n\r\nold\r\n'), { messageId: 'old@example.org' });
    await store.close();
    // As a layout-7 store left it: no by-message-id index.
    const raw: RootDb = new Level<string, string>(dir);
    await raw.open();
    await raw.sublevel('by-message-id').clear();
    await raw.put('schema', '7');
    await raw.close();
    const reopened = await LevelStore.open(dir);
    try {
      assert.deepEqual(
        (await reopened.findByMessageId('old@example.org')).map((m) => m.id),
        [old.id],
      );
    } finally {
      await reopened.close();
    }
  } finally {
    await cleanup();
  }
});

test('schema version is written; a newer layout refuses to open', async () => {
  const { dir, cleanup } = await tempDir('mailgate-storage-');
  try {
    await (await LevelStore.open(dir)).close();
    const raw: RootDb = new Level<string, string>(dir);
    await raw.open();
    assert.equal(await raw.get('schema'), String(SCHEMA_VERSION));
    await raw.put('schema', String(SCHEMA_VERSION + 1));
    await raw.close();
    await assert.rejects(
      LevelStore.open(dir),
      (e: { code?: string; message?: string }) => e.code === 'STORE_SCHEMA_TOO_NEW' && (e.message ?? '').includes(`version ${SCHEMA_VERSION + 1}`),
    );
    // The refused open released the lock.
    await raw.open();
    await raw.close();
  } finally {
    await cleanup();
  }
});

test('migrations run in order from the stored version', async () => {
  const { dir, cleanup } = await tempDir('mailgate-storage-');
  const db: RootDb = new Level<string, string>(dir);
  try {
    await db.open();
    const ran: number[] = [];
    const step = (version: number) => ({
      version,
      description: `step ${version}`,
      up: async () => {
        ran.push(version);
      },
    });
    const quiet = collectingLogger();
    assert.equal(await runMigrations(db, dir, quiet, [step(1), step(2)]), 2);
    assert.equal(await runMigrations(db, dir, quiet, [step(1), step(2), step(3)]), 3);
    assert.deepEqual(ran, [1, 2, 3]);
    assert.equal(await db.get('schema'), '3');
    await assert.rejects(runMigrations(db, dir, quiet, [step(1), step(3)]), /out of order/);
  } finally {
    await db.close();
    await cleanup();
  }
});
