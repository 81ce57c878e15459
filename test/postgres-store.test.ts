/**
 * What the PostgreSQL store does beyond the contract (test/store-contract-postgres.test.ts):
 * a large message streamed in and out in 256 KiB rows, never whole in memory; a writer killed
 * mid-message leaving nothing visible and its rows swept when its node opens the store again;
 * a commit while PostgreSQL is down refused with an error ingest answers 451 for, and the same
 * store committing again once PostgreSQL is back; the checks made at open.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { buffer } from 'node:stream/consumers';
import { projectRoot, tempDir } from './helpers/paths.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { queueEntry, sampleMeta } from './helpers/store-contract.js';
import { PgStore, type PgStoreOptions } from '../storage/postgres/store.js';
import { CHUNK_SIZE } from '../storage/postgres/chunks.js';
import { newMessageId } from '../storage/ids.js';
import type { MessageMeta } from '../storage/records.js';
import type { SideRecord } from '../storage/store.js';
import type { Writable } from 'node:stream';

let postgres: TestPostgres;
let dir: string;
let removeDir: () => Promise<void>;

before(async () => {
  postgres = await startPostgres({ fsync: false });
  ({ dir, cleanup: removeDir } = await tempDir('mailgate-pg-store-'));
});
after(async () => {
  await postgres?.stop();
  await removeDir?.();
});

/** A fresh database with the schema, and a store on it as NODE. */
async function freshStore(node = 'node-a', over: Partial<PgStoreOptions> = {}): Promise<{ store: PgStore; url: string; database: string }> {
  const url = await postgres.createDatabase();
  const store = await PgStore.open({ url, dir, node, createIfEmpty: true, maxConnections: 4, ...over });
  return { store, url, database: new URL(url).pathname.slice(1) };
}

async function count(database: string, sql: string): Promise<number> {
  const { rows } = await postgres.query(sql, database);
  return Number((rows[0] as { n: string }).n);
}

function write(writer: Writable, piece: Buffer): Promise<void> {
  return new Promise((resolve, reject) => writer.write(piece, (err) => (err ? reject(err) : resolve())));
}

function meta(id: string): MessageMeta {
  return sampleMeta(id, { receivedAt: new Date().toISOString(), subject: 'Large order' });
}

test('a 5 MB message streams into 256 KiB rows while it arrives and reads back in pieces of at most one row', async () => {
  const { store, database } = await freshStore();
  try {
    const id = newMessageId();
    const writer = store.createMessageWriter(id);
    const size = 5 * 1000 * 1000;
    const sent = createHash('sha256');
    // Pieces made as they are sent: the test holds no more of the message than the store does.
    for (let at = 0; at < size; at += 64 * 1024) {
      const piece = randomBytes(Math.min(64 * 1024, size - at));
      sent.update(piece);
      await write(writer, piece);
    }
    // Before the commit, all but the chunk being filled (and the one whose insert is in flight) are already rows.
    const rowsBefore = await count(database, `SELECT count(*) AS n FROM message_chunks WHERE message = '${id}'`);
    assert.ok(rowsBefore >= Math.floor(size / CHUNK_SIZE) - 1, `${rowsBefore} chunk rows stored while the message was still arriving`);
    assert.equal(await store.getMessage(id), undefined, 'nothing visible before the commit');
    writer.end();
    await writer.commit(sampleMeta(id));
    assert.equal(await count(database, `SELECT count(*) AS n FROM message_chunks WHERE message = '${id}'`), Math.ceil(size / CHUNK_SIZE));
    assert.equal(await count(database, 'SELECT count(*) AS n FROM unfinished'), 0, 'the mark went with the commit');
    assert.equal((await store.getMessage(id))?.size, size);

    const read = createHash('sha256');
    let pieces = 0;
    let largest = 0;
    for await (const piece of store.openRaw(id)) {
      pieces++;
      largest = Math.max(largest, (piece as Buffer).length);
      read.update(piece as Buffer);
    }
    assert.equal(read.digest('hex'), sent.digest('hex'), 'read back byte for byte');
    assert.ok(largest <= CHUNK_SIZE, `pieces of at most ${CHUNK_SIZE} bytes (largest ${largest})`);
    assert.equal(pieces, Math.ceil(size / CHUNK_SIZE));
  } finally {
    await store.close();
  }
});

test('a writer killed mid-message leaves nothing visible; its node sweeps its rows at the next open, another node leaves fresh ones alone', async () => {
  const { store, url, database } = await freshStore('node-b');
  await store.close();
  const child = spawn(process.execPath, [path.join(projectRoot, 'dist', 'test', 'helpers', 'pg-crash-writer.js'), url, dir, 'crasher'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = once(child, 'exit');
  try {
    // Killed once a few chunks of the message are rows, whenever that is.
    while ((await count(database, 'SELECT count(*) AS n FROM message_chunks')) < 3) {
      assert.equal(child.exitCode, null, 'the writer is still running');
      await sleep(20);
    }
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
  assert.ok((await count(database, 'SELECT count(*) AS n FROM quarantine_chunks')) >= 2, 'the spool wrote its rows');
  assert.equal(await count(database, "SELECT count(*) AS n FROM unfinished WHERE node = 'crasher'"), 2, 'a message mark and a spool mark');

  // Another node does not take a mark that may be a live write of a node still running.
  const other = await PgStore.open({ url, dir, node: 'node-b' });
  try {
    assert.deepEqual(await other.listMessages(), [], 'nothing of the killed message is visible');
    assert.deepEqual(await other.listQuarantine(), []);
    assert.equal(await count(database, 'SELECT count(*) AS n FROM unfinished'), 2, 'fresh marks of another node stay');
  } finally {
    await other.close();
  }
  const restarted = await PgStore.open({ url, dir, node: 'crasher' });
  try {
    assert.equal(await count(database, 'SELECT count(*) AS n FROM message_chunks'), 0, 'its chunks swept');
    assert.equal(await count(database, 'SELECT count(*) AS n FROM quarantine_chunks'), 0, "its spool's bytes swept");
    assert.equal(await count(database, 'SELECT count(*) AS n FROM unfinished'), 0, 'and the marks');
    assert.deepEqual(await restarted.listMessages(), []);
  } finally {
    await restarted.close();
  }
});

test('a message whose rows were swept while it was written (another process of the same node opened) fails its commit instead of being stored short', async () => {
  const { store, url } = await freshStore('node-c');
  try {
    const id = newMessageId();
    const writer = store.createMessageWriter(id);
    const bytes = randomBytes(3 * CHUNK_SIZE);
    for (let at = 0; at < bytes.length; at += 64 * 1024) await write(writer, Buffer.from(bytes.subarray(at, at + 64 * 1024)));
    await (await PgStore.open({ url, dir, node: 'node-c' })).close();
    writer.end();
    await assert.rejects(writer.commit(sampleMeta(id)), /swept/);
    await writer.abort();
    assert.equal(await store.getMessage(id), undefined);
    await assert.rejects(buffer(store.openRaw(id)), { code: 'MESSAGE_NOT_FOUND' });
  } finally {
    await store.close();
  }
});

test("a relayed message's queue entries go in with its row in one statement: a row that cannot go in leaves no entry", async () => {
  const { store } = await freshStore('node-r');
  try {
    const id = newMessageId();
    const entry = queueEntry(id);
    const commit = async (sides: SideRecord[]) => {
      const writer = store.createMessageWriter(id);
      writer.end(Buffer.from('Subject: reply\r\n\r\nthanks\r\n'));
      await writer.commit(meta(id), sides);
    };
    await commit([]);
    // The same id again (its row is there): the statement fails whole, entry and all.
    await assert.rejects(commit([{ type: 'queue-entry', entry }]), { code: '23505' });
    assert.equal(await store.getQueueEntry(id), undefined);
    assert.deepEqual(await store.listQueue(), []);
  } finally {
    await store.close();
  }
});

test('a commit while PostgreSQL is down is refused as a store failure; once it is back the same store commits again', async () => {
  const warnings: string[] = [];
  const logger = { info() {}, warn: (_obj: object, msg?: string) => void warnings.push(msg ?? ''), error() {} };
  const { store } = await freshStore('node-d', { logger });
  try {
    const before = newMessageId();
    const first = store.createMessageWriter(before);
    first.end(Buffer.from('Subject: before\r\n\r\nstored before the restart\r\n'));
    await first.commit(sampleMeta(before));

    await postgres.stopServer('fast');
    try {
      const id = newMessageId();
      const writer = store.createMessageWriter(id);
      writer.end(Buffer.from('Subject: refused\r\n\r\nwhile the database is down\r\n'));
      const err = await writer.commit(sampleMeta(id)).then(
        () => assert.fail('the commit succeeded without a database'),
        (e: unknown) => e,
      );
      assert.equal(store.isStoreFailure(err), true, `ingest answers 451 for: ${String(err)}`);
      await writer.abort().catch(() => {});
    } finally {
      await postgres.startServer();
    }

    const after = newMessageId();
    const writer = store.createMessageWriter(after);
    writer.end(Buffer.from('Subject: after\r\n\r\nstored after the restart\r\n'));
    await writer.commit(sampleMeta(after));
    assert.equal((await buffer(store.openRaw(after))).toString(), 'Subject: after\r\n\r\nstored after the restart\r\n');
    assert.equal(
      (await buffer(store.openRaw(before))).toString(),
      'Subject: before\r\n\r\nstored before the restart\r\n',
      'what was committed before is there',
    );
    assert.deepEqual(
      (await store.listMessages()).map((m) => m.id),
      [after, before],
    );
  } finally {
    await store.close();
  }
});

test('a large message aborted while PostgreSQL is down leaves no rows once it is back, without a restart of the store', async () => {
  const { store, database } = await freshStore('node-f');
  let closed = false;
  try {
    const id = newMessageId();
    const writer = store.createMessageWriter(id);
    for (let at = 0; at < 3 * CHUNK_SIZE; at += 64 * 1024) await write(writer, randomBytes(64 * 1024));
    await postgres.stopServer('fast');
    try {
      // The sender went away mid-message while the database was down: the rows cannot go yet.
      await assert.rejects(writer.abort());
    } finally {
      await postgres.startServer();
    }
    assert.ok((await count(database, `SELECT count(*) AS n FROM message_chunks WHERE message = '${id}'`)) >= 1, 'its chunks are still there');
    const next = newMessageId();
    const other = store.createMessageWriter(next);
    other.end(Buffer.from('Subject: next\r\n\r\nthe next message\r\n'));
    await other.commit(sampleMeta(next));
    // The retry runs in the background after that commit; close waits for it.
    await store.close();
    closed = true;
    assert.equal(await count(database, `SELECT count(*) AS n FROM message_chunks WHERE message = '${id}'`), 0, 'the aborted chunks are gone');
    assert.equal(await count(database, 'SELECT count(*) AS n FROM unfinished'), 0, 'and its mark');
  } finally {
    if (!closed) await store.close();
  }
});

test('open refuses an empty database unless asked to create the schema, a newer schema, and synchronous_commit off, naming the database without its password', async () => {
  const url = await postgres.createDatabase();
  const database = new URL(url).pathname.slice(1);
  const withPassword = url.replace('mailgate@', 'mailgate:s3cret@');
  await assert.rejects(PgStore.open({ url: withPassword, dir, node: 'n' }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'STORE_SCHEMA_TOO_OLD');
    assert.doesNotMatch(err.message, /s3cret/);
    assert.match(err.message, /storage migrate/);
    return true;
  });
  await (await PgStore.open({ url, dir, node: 'n', createIfEmpty: true })).close();

  await postgres.query(`ALTER DATABASE "${database}" SET synchronous_commit = off`);
  await assert.rejects(PgStore.open({ url, dir, node: 'n' }), { code: 'STORE_UNSAFE_COMMIT' });
  await postgres.query(`ALTER DATABASE "${database}" RESET synchronous_commit`);

  await postgres.query("INSERT INTO mailgate_schema (version, description, applied_by) VALUES (99, 'from the future', 'n')", database);
  await assert.rejects(PgStore.open({ url, dir, node: 'n' }), { code: 'STORE_SCHEMA_TOO_NEW' });
});

test("isStoreFailure: connection errors and the SQLSTATEs of an unreachable, full, shutting-down or read-only database; not a query's own error", async () => {
  const { store } = await freshStore('node-e');
  try {
    const sqlstate = (sql: string) =>
      postgres.query(sql).then(
        () => assert.fail(`${sql} succeeded`),
        (e: unknown) => e,
      );
    const readOnly = await sqlstate('BEGIN READ ONLY; CREATE TABLE t (x int); COMMIT');
    assert.equal((readOnly as { code?: string }).code, '25006');
    assert.equal(store.isStoreFailure(readOnly), true, 'a read-only database (a standby)');
    const shutdown = await sqlstate('SELECT pg_terminate_backend(pg_backend_pid())');
    assert.equal(store.isStoreFailure(shutdown), true, `a connection the server ended: ${String(shutdown)}`);
    assert.equal(store.isStoreFailure(await sqlstate('SELECT 1/0')), false, 'division by zero is a bug, not the database failing');
    assert.equal(store.isStoreFailure(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })), true);
    assert.equal(store.isStoreFailure(new Error('Connection terminated unexpectedly')), true);
    assert.equal(store.isStoreFailure(new Error('outer', { cause: new Error('timeout exceeded when trying to connect') })), true);
  } finally {
    await store.close();
  }
});
