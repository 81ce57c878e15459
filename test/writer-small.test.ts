/**
 * The message writer and the spool with small messages: a message that never fills a 64 KiB
 * chunk reaches LevelDB only in its commit's synced batch, the pending mark goes with the
 * first full chunk, and stored chunk boundaries stay where readers expect them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { buffer } from 'node:stream/consumers';
import type { Writable } from 'node:stream';
import { Level } from 'level';
import { tempDir } from './helpers/paths.js';
import { LevelStore, CHUNK_SIZE, type StoreLogger } from '../storage/leveldb/store.js';
import type { SideRecord } from '../storage/store.js';
import { newMessageId, idTime } from '../storage/ids.js';
import { chunkRange } from '../storage/leveldb/layout.js';
import type { MessageMeta } from '../storage/records.js';
import { fileSpool, SPOOL_WRITE, type Spool } from '../ingest/spool.js';

/** One call of a write method of the database, as LevelDB got it (root keys, `!sublevel!key`). */
interface RecordedWrite {
  method: string;
  keys: string[];
  sync: boolean;
}

type WriteMethod = '_batch' | '_put' | '_del' | '_clear';

/**
 * Opens a store whose every LevelDB write is recorded. The store's write guard binds the write
 * methods when it is made, so patching the prototype for the open alone is enough.
 */
async function openRecorded(dir: string, logger?: StoreLogger): Promise<{ store: LevelStore; writes: RecordedWrite[] }> {
  const proto = Level.prototype as unknown as Record<WriteMethod, (this: unknown, ...args: unknown[]) => Promise<void>>;
  const originals = { _batch: proto._batch, _put: proto._put, _del: proto._del, _clear: proto._clear };
  const writes: RecordedWrite[] = [];
  for (const method of Object.keys(originals) as WriteMethod[]) {
    proto[method] = function (...args) {
      const keys = method === '_batch' ? (args[0] as { key: unknown }[]).map((op) => String(op.key)) : method === '_clear' ? [] : [String(args[0])];
      const options = (method === '_batch' ? args[1] : method === '_put' ? args[2] : args[1]) as { sync?: boolean } | undefined;
      writes.push({ method, keys, sync: options?.sync === true });
      return originals[method].apply(this, args);
    };
  }
  try {
    return { store: await LevelStore.open(dir, logger ? { logger } : {}), writes };
  } finally {
    Object.assign(proto, originals);
  }
}

async function withRecordedStore(fn: (store: LevelStore, writes: RecordedWrite[], dir: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = await tempDir('mailgate-writer-');
  const { store, writes } = await openRecorded(dir);
  try {
    await fn(store, writes, dir);
  } finally {
    await store.close();
    await cleanup();
  }
}

function sampleMeta(id: string): MessageMeta {
  return {
    id,
    version: 1,
    receivedAt: new Date(idTime(id)).toISOString(),
    size: 0,
    receivedSize: 0,
    envelope: { mailFrom: 'sender@example.org', rcptTo: ['info@example.com'] },
    source: { kind: 'smtp', alias: 'sales' },
    to: [],
    cc: [],
    _AttachmentFileNames: [],
    attachments: [],
    findings: {},
    tags: [],
  };
}

function write(writer: Writable, bytes: Buffer): Promise<void> {
  return new Promise((resolve, reject) => writer.write(bytes, (err) => (err ? reject(err) : resolve())));
}

function end(writer: Writable): Promise<void> {
  return new Promise((resolve) => writer.end(resolve));
}

/**
 * Hands `bytes` to `take` in pieces of `sizes` (cycled), all from one buffer that is scribbled
 * over as soon as each piece is taken: as a caller that reuses its buffer does.
 */
async function feedReusing(bytes: Buffer, sizes: readonly number[], take: (piece: Buffer) => Promise<void>): Promise<void> {
  const scratch = Buffer.alloc(Math.max(...sizes));
  let offset = 0;
  for (let i = 0; offset < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length] ?? 1, bytes.length - offset);
    bytes.copy(scratch, 0, offset, offset + n);
    await take(scratch.subarray(0, n));
    scratch.fill(0xee);
    offset += n;
  }
}

/** Every key in every sublevel of the store. */
async function storedKeys(store: LevelStore): Promise<string[]> {
  const keys: string[] = [];
  for (const [name, sublevel] of Object.entries(store.sublevels)) {
    for (const key of await (sublevel as { keys(): { all(): Promise<string[]> } }).keys().all()) keys.push(`${name}:${key}`);
  }
  return keys;
}

/** Every key of the database in `dir`, read directly (the store must be closed). */
async function rawKeys(dir: string): Promise<string[]> {
  const db = new Level<string, string>(dir);
  await db.open();
  try {
    return await db.keys().all();
  } finally {
    await db.close();
  }
}

const ODD_SIZES = [1, 70_000, 3, 65_535, 4096, 65_536, 7];

test('a message under 64 KiB reaches LevelDB only in its one synced commit batch', () =>
  withRecordedStore(async (store, writes) => {
    const bytes = randomBytes(CHUNK_SIZE - 1);
    const writer = store.createMessageWriter(newMessageId());
    const before = writes.length;
    await feedReusing(bytes, [1, 1000, 30_000, 7], (piece) => write(writer, piece));
    await end(writer);
    assert.deepEqual(writes.slice(before), [], 'writing costs no LevelDB write');
    assert.deepEqual(await storedKeys(store), []);
    await writer.commit(sampleMeta(writer.id));
    assert.deepEqual(
      writes.slice(before),
      [
        {
          method: '_batch',
          sync: true,
          keys: [`!chunks!${writer.id}!00000000`, `!messages!${writer.id}`, `!by-alias!sales\x00${writer.id}`],
        },
      ],
      'one synced batch, with no delete of a pending mark that was never written',
    );
    assert.deepEqual(await buffer(store.openRaw(writer.id)), bytes, 'the bytes as written, though the caller reused its buffer');
    assert.equal((await store.getMessage(writer.id))?.size, bytes.length);
    assert.deepEqual(await store.sublevels.pending.keys().all(), []);
  }));

test('an uncommitted small message leaves no key, and nothing of it after a crash', async () => {
  const { dir, cleanup } = await tempDir('mailgate-writer-');
  try {
    let store = await LevelStore.open(dir);
    const kept = store.createMessageWriter(newMessageId());
    kept.end(randomBytes(5000));
    await kept.commit(sampleMeta(kept.id));
    const small = store.createMessageWriter(newMessageId());
    await feedReusing(randomBytes(40_000), [4096, 1, 999], (piece) => write(small, piece));
    await end(small);
    const big = store.createMessageWriter(newMessageId());
    await write(big, randomBytes(2 * CHUNK_SIZE + 10));
    // Small itself, but with a part the attachments stage quarantined: the spool puts the pending mark.
    const blocked = store.createMessageWriter(newMessageId());
    await write(blocked, randomBytes(2000));
    const part = store.createQuarantineSpool(`${blocked.id}.1`);
    await part.write(randomBytes(3000));
    await part.close();
    const keys = await storedKeys(store);
    assert.deepEqual(keys.filter((k) => k.includes(blocked.id)).sort(), [`pending:${blocked.id}`, `quarantineChunks:${blocked.id}.1!00000000`]);
    assert.deepEqual(
      keys.filter((k) => k.includes(small.id)),
      [],
      'nothing of the small message is stored',
    );
    assert.deepEqual(keys.filter((k) => k.includes(big.id)).sort(), [`chunks:${big.id}!00000000`, `chunks:${big.id}!00000001`, `pending:${big.id}`]);
    await store.close(); // no commit: as if the process died here
    const raw = await rawKeys(dir);
    assert.deepEqual(
      raw.filter((k) => k.includes(small.id)),
      [],
      'not in the database either',
    );
    const swept: object[] = [];
    store = await LevelStore.open(dir, { logger: { info: (o) => swept.push(o), warn() {}, error() {} } });
    try {
      assert.ok(
        swept.some((e) => (e as { swept?: number }).swept === 2),
        `only the big and the quarantining message were unfinished: ${JSON.stringify(swept)}`,
      );
      assert.deepEqual(
        (await store.listMessages()).map((m) => m.id),
        [kept.id],
      );
      assert.deepEqual(
        (await storedKeys(store)).filter((k) => !k.includes(kept.id)),
        [],
      );
    } finally {
      await store.close();
    }
    assert.deepEqual(
      (await rawKeys(dir)).filter((k) => !k.includes(kept.id)),
      ['schema'],
    );
  } finally {
    await cleanup();
  }
});

test('odd-sized writes round trip byte for byte, in whole 64 KiB chunks and a partial last one', () =>
  withRecordedStore(async (store) => {
    for (const size of [CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE - 1, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 5]) {
      for (const sizes of [ODD_SIZES, [1], [CHUNK_SIZE + 1], [size]]) {
        if (sizes[0] === 1 && size > CHUNK_SIZE + 1) continue; // a byte at a time: slow, and the boundaries are already covered
        const bytes = randomBytes(size);
        const writer = store.createMessageWriter(newMessageId());
        await feedReusing(bytes, sizes, (piece) => write(writer, piece));
        await end(writer);
        await writer.commit(sampleMeta(writer.id));
        const what = `size ${size} in writes of ${sizes.join(', ')}`;
        assert.ok((await buffer(store.openRaw(writer.id))).equals(bytes), what);
        const chunks = await store.sublevels.chunks.iterator(chunkRange(writer.id)).all();
        const count = Math.ceil(size / CHUNK_SIZE);
        assert.deepEqual(
          chunks.map(([key]) => key),
          Array.from({ length: count }, (_, i) => `${writer.id}!${String(i).padStart(8, '0')}`),
          what,
        );
        assert.deepEqual(
          chunks.map(([, value]) => value.length),
          Array.from({ length: count }, (_, i) => (i < count - 1 ? CHUNK_SIZE : size - i * CHUNK_SIZE)),
          what,
        );
      }
    }
  }));

test('a 100 KB message reaches LevelDB only in its one synced commit batch, in two chunks', () =>
  withRecordedStore(async (store, writes) => {
    const bytes = randomBytes(102_400);
    const writer = store.createMessageWriter(newMessageId());
    const before = writes.length;
    await feedReusing(bytes, [1, 30_000, 65_536, 7], (piece) => write(writer, piece));
    await end(writer);
    assert.deepEqual(writes.slice(before), [], 'writing costs no LevelDB write');
    await writer.commit(sampleMeta(writer.id));
    assert.deepEqual(writes.slice(before), [
      {
        method: '_batch',
        sync: true,
        keys: [`!chunks!${writer.id}!00000000`, `!chunks!${writer.id}!00000001`, `!messages!${writer.id}`, `!by-alias!sales\x00${writer.id}`],
      },
    ]);
    assert.deepEqual(await buffer(store.openRaw(writer.id)), bytes, 'the bytes as written, though the caller reused its buffer');
    assert.deepEqual(await store.sublevels.pending.keys().all(), []);
  }));

test('the pending mark goes in the batch of the first two full chunks and is removed by the commit', () =>
  withRecordedStore(async (store, writes) => {
    const first = 2 * CHUNK_SIZE;
    const bytes = randomBytes(first + 10);
    const writer = store.createMessageWriter(newMessageId());
    const before = writes.length;
    await feedReusing(bytes.subarray(0, first - 1), [1, 30_000, 5], (piece) => write(writer, piece));
    assert.deepEqual(writes.slice(before), []);
    assert.deepEqual(await store.sublevels.pending.keys().all(), []);
    await write(writer, bytes.subarray(first - 1, first));
    assert.deepEqual(writes.slice(before), [
      { method: '_batch', sync: false, keys: [`!pending!${writer.id}`, `!chunks!${writer.id}!00000000`, `!chunks!${writer.id}!00000001`] },
    ]);
    assert.deepEqual(await store.sublevels.pending.keys().all(), [writer.id]);
    await write(writer, bytes.subarray(first));
    await end(writer);
    await writer.commit(sampleMeta(writer.id));
    assert.deepEqual(writes.slice(before + 1), [
      {
        method: '_batch',
        sync: true,
        keys: [`!chunks!${writer.id}!00000002`, `!messages!${writer.id}`, `!by-alias!sales\x00${writer.id}`, `!pending!${writer.id}`],
      },
    ]);
    assert.deepEqual(await store.sublevels.pending.keys().all(), []);
    assert.deepEqual(await buffer(store.openRaw(writer.id)), bytes);
  }));

test('one huge write is stored in bounded batches, the pending mark in the first', () =>
  withRecordedStore(async (store, writes) => {
    const bytes = randomBytes(20 * CHUNK_SIZE + 3);
    const writer = store.createMessageWriter(newMessageId());
    const before = writes.length;
    await write(writer, bytes);
    const batches = writes.slice(before);
    assert.deepEqual(
      batches.map((w) => w.keys.length),
      [17, 4],
      '16 chunks and the mark, then the other 4 chunks',
    );
    assert.equal(batches[0]?.keys[0], `!pending!${writer.id}`);
    await end(writer);
    await writer.commit(sampleMeta(writer.id));
    assert.deepEqual(await buffer(store.openRaw(writer.id)), bytes);
    assert.equal((await store.sublevels.chunks.keys(chunkRange(writer.id)).all()).length, 21);
  }));

test('abort removes everything: small messages without a write, quarantined parts, chunks and the mark', () =>
  withRecordedStore(async (store, writes) => {
    // Never filled a chunk: nothing to remove, no write.
    const small = store.createMessageWriter(newMessageId());
    await feedReusing(randomBytes(5000), ODD_SIZES, (piece) => write(small, piece));
    let before = writes.length;
    await small.abort();
    await small.abort();
    assert.deepEqual(writes.slice(before), [], 'aborting a small message writes nothing');
    await assert.rejects(small.commit(sampleMeta(small.id)), /aborted/);

    // Never filled a chunk, but a part of it was quarantined meanwhile (policy/attachments/stage.ts).
    const blocked = store.createMessageWriter(newMessageId());
    await write(blocked, randomBytes(3000));
    const part = store.createQuarantineSpool(`${blocked.id}.1`);
    await part.write(randomBytes(CHUNK_SIZE + 100));
    await part.close();
    const other = store.createQuarantineSpool(`${newMessageId()}.1`);
    await other.write(randomBytes(10));
    await other.close();
    await blocked.abort();
    assert.deepEqual(await store.sublevels.quarantineChunks.keys().all(), [`${other.id}!00000000`], "only the other message's part is left");
    assert.deepEqual(await store.sublevels.pending.keys().all(), [other.id.slice(0, -2)], "the blocked message's pending mark is gone, the other's stays");
    await other.discard();
    await store.sublevels.pending.del(other.id.slice(0, -2)); // as the other message's commit would

    // Filled chunks: they and the pending mark go.
    const big = store.createMessageWriter(newMessageId());
    await feedReusing(randomBytes(2 * CHUNK_SIZE + 100), ODD_SIZES, (piece) => write(big, piece));
    assert.equal((await store.sublevels.chunks.keys(chunkRange(big.id)).all()).length, 2);
    assert.deepEqual(await store.sublevels.pending.keys().all(), [big.id]);
    await big.abort();
    assert.deepEqual(await storedKeys(store), []);

    // After a commit that failed (here before reaching LevelDB: a record whose key it cannot encode).
    const badRecord = { type: 'quarantine', record: { id: null } } as unknown as SideRecord;
    for (const size of [4000, CHUNK_SIZE + 4000, 2 * CHUNK_SIZE + 4000]) {
      const writer = store.createMessageWriter(newMessageId());
      await write(writer, randomBytes(size));
      await end(writer);
      await assert.rejects(writer.commit(sampleMeta(writer.id), [badRecord]));
      before = writes.length;
      await writer.abort();
      if (size < 2 * CHUNK_SIZE) assert.deepEqual(writes.slice(before), [], 'nothing of a message under 128 KiB was stored: nothing to write');
      assert.equal(await store.getMessage(writer.id), undefined);
      assert.deepEqual(await storedKeys(store), [], `size ${size}: nothing is left`);
    }
  }));

async function spoolFiles(dir: string): Promise<string[]> {
  return (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.spool'));
}

async function spooled(spool: Spool): Promise<Buffer> {
  return buffer(spool.open());
}

test('spool: odd-sized writes read back byte for byte; nothing under 128 KiB reaches the file, and what does is encrypted', async () => {
  const { dir, cleanup } = await tempDir('mailgate-spool-');
  try {
    for (const size of [0, 1, 4000, CHUNK_SIZE, 102_400, SPOOL_WRITE - 1, SPOOL_WRITE, SPOOL_WRITE + 1, 3 * SPOOL_WRITE + 5]) {
      for (const sizes of [ODD_SIZES, [size || 1]]) {
        const spool = fileSpool(dir);
        const bytes = randomBytes(size);
        // Fresh pieces, as SpoolTee gives: the spool keeps the buffers it is given (the pipeline holds the same ones).
        for (let at = 0, i = 0; at < size; i++) {
          const n = sizes[i % sizes.length]!;
          await spool.write(bytes.subarray(at, at + n));
          at += n;
        }
        const what = `size ${size} in writes of ${sizes.join(', ')}`;
        const files = await spoolFiles(dir);
        if (size < SPOOL_WRITE) {
          assert.deepEqual(files, [], `${what}: no file under 128 KiB`);
        } else {
          assert.equal(files.length, 1, what);
          const file = `${dir}/${files[0]}`;
          const inFile = (await stat(file)).size;
          assert.ok(inFile >= SPOOL_WRITE && inFile <= size && size - inFile < SPOOL_WRITE, `${what}: ${inFile} bytes in the file, under 128 KiB in memory`);
          assert.ok(!(await readFile(file)).equals(bytes.subarray(0, inFile)), `${what}: the file is not the plain bytes`);
        }
        assert.ok((await spooled(spool)).equals(bytes), what);
        assert.ok((await spooled(spool)).equals(bytes), `${what}: read twice`);
        await spool.discard();
        await spool.discard();
        assert.deepEqual(await spoolFiles(dir), [], `${what}: discarded`);
        await assert.rejects(spool.write(Buffer.from('x')), /after discard/);
      }
    }
  } finally {
    await cleanup();
  }
});

test('spool: a discard during a write stops the write instead of looping', { timeout: 10_000 }, async () => {
  const { dir, cleanup } = await tempDir('mailgate-spool-');
  try {
    const spool = fileSpool(dir);
    await spool.write(randomBytes(1000));
    const writing = spool.write(randomBytes(3 * CHUNK_SIZE));
    const discarding = spool.discard();
    await assert.rejects(writing, /discarded while writing/);
    await discarding;
    assert.deepEqual(await spoolFiles(dir), []);
  } finally {
    await cleanup();
  }
});
