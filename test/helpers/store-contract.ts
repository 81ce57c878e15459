/**
 * The contract of the storage interface (storage/store.ts): what every store must do, told
 * through the interface alone, so the PostgreSQL store can run the same tests as the LevelDB
 * one. `storeContract` registers node:test tests against a factory of fresh, empty stores;
 * with `reopen`, also what must survive closing the store and opening it again.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { buffer } from 'node:stream/consumers';
import type { Readable, Writable } from 'node:stream';
import { createIdGenerator, newMessageId } from '../../storage/ids.js';
import { storeErrors } from '../../lib/errors.js';
import type { AliasState, DeliveryRecord, FetchedKey, MessageMeta, QuarantineRecord, QueueEntry } from '../../storage/records.js';
import { NOTICE_MAX_BYTES, type MessageWriter, type Notice, type SideRecord, type Store } from '../../storage/store.js';

/** How the contract gets stores. */
export interface StoreFactory {
  /** A fresh, empty store. The contract closes it. */
  open(): Promise<Store>;
  /** The same store opened again after `closed` was closed; the contract closes it. */
  reopen?(closed: Store): Promise<Store>;
}

// Bigger than any chunk or page a store is likely to cut bytes into, and not a multiple of one.
const BIG = 3 * 64 * 1024 + 4321;

/** Registers the contract's tests, each title starting with `name`. */
export function storeContract(name: string, factory: StoreFactory): void {
  const contract = (title: string, fn: (store: Store) => Promise<void>) =>
    test(`${name}: ${title}`, async () => {
      const store = await factory.open();
      try {
        await fn(store);
      } finally {
        await store.close();
      }
    });

  contract('a committed message reads back byte for byte, with its metadata and size', async (store) => {
    for (const bytes of [Buffer.alloc(0), Buffer.from('Subject: hi\r\n\r\nbody\r\n'), randomBytes(BIG)]) {
      const id = newMessageId();
      const writer = store.createMessageWriter(id);
      assert.equal(writer.id, id);
      await writeInPieces(writer, bytes, [1, 4096, 999, 70_000]);
      writer.end();
      assert.equal(writer.bytesWritten, bytes.length);
      await writer.commit(sampleMeta(id, { size: 12345 }));
      const meta = await store.getMessage(id);
      assert.deepEqual(meta, sampleMeta(id, { size: bytes.length }), 'the size recorded is the bytes stored');
      assert.ok((await buffer(store.openRaw(id))).equals(bytes), `${bytes.length} bytes read back as written`);
      assert.ok((await buffer(store.openRaw(id))).equals(bytes), 'and again');
    }
  });

  contract("the store knows its own failures (STORE_* errors, a full disk), through causes, and not a message's", async (store) => {
    const refused = storeErrors.storeUnavailable(new Error('a write failed'));
    assert.equal(store.isStoreFailure(refused), true);
    assert.equal(store.isStoreFailure(new Error('outside', { cause: refused })), true, 'through a cause');
    assert.equal(store.isStoreFailure(Object.assign(new Error('write failed'), { code: 'ENOSPC' })), true, 'a full disk');
    assert.equal(store.isStoreFailure(Object.assign(new Error('MIME nesting too deep'), { code: 'MIME_TOO_DEEP' })), false);
    assert.equal(store.isStoreFailure(new Error('unexpected end of the message')), false);
  });

  contract('nothing of a message is visible before its commit, nor after an abort', async (store) => {
    const id = newMessageId();
    const writer = store.createMessageWriter(id);
    await writeInPieces(writer, randomBytes(BIG), [65_536]);
    assert.equal(await store.getMessage(id), undefined);
    assert.deepEqual(await store.listMessages(), []);
    await assert.rejects(buffer(store.openRaw(id)), { code: 'MESSAGE_NOT_FOUND' });
    await writer.abort();
    await writer.abort(); // safe twice
    await assert.rejects(writer.commit(sampleMeta(id)), 'an aborted writer cannot commit');
    assert.equal(await store.getMessage(id), undefined);
    await assert.rejects(buffer(store.openRaw(newMessageId())), { code: 'MESSAGE_NOT_FOUND' });
  });

  contract('every kind of side record becomes visible with its message', async (store) => {
    const queued = await storeQueued(store, Buffer.from('queued\r\n'));
    const id = newMessageId();
    const spool = store.createQuarantineSpool(`${id}.1`);
    const part = randomBytes(BIG);
    await spool.write(part);
    await spool.close();
    const record = quarantineRecord(`${id}.1`, id, part.length);
    const delivery = deliveryRecord('failed');
    const fetchedKey: FetchedKey = { alias: 'sales', key: '1700000000:42' };
    const sides: SideRecord[] = [
      { type: 'queue-entry', entry: queueEntry(id) },
      { type: 'quarantine', record },
      { type: 'fetched', key: fetchedKey, record: { id } },
      { type: 'queue-finished', id: queued, delivery },
    ];
    await storeMessage(store, Buffer.from('with all of them\r\n'), sides, id);
    assert.deepEqual(await store.getQueueEntry(id), queueEntry(id));
    assert.deepEqual(await store.getQuarantined(record.id), record);
    assert.ok((await buffer(store.openQuarantined(record.id))).equals(part));
    assert.deepEqual(await store.getFetched([fetchedKey]), [{ id }]);
    assert.equal(await store.getQueueEntry(queued), undefined, 'the finished message left the queue');
    assert.deepEqual((await store.getMessage(queued))?.delivery, delivery, 'with its outcome recorded on it');
    assert.deepEqual(
      (await store.listQueue()).map((e) => e.id),
      [id],
    );
  });

  contract('an aborted message leaves no side record, and its quarantine spools leave no bytes', async (store) => {
    const earlier = await storeQueued(store, Buffer.from('queued\r\n'));
    for (const size of [10, BIG]) {
      const id = newMessageId();
      const writer = store.createMessageWriter(id);
      await writeInPieces(writer, randomBytes(size), [8192]);
      const spool = store.createQuarantineSpool(`${id}.1`);
      await spool.write(randomBytes(size));
      await spool.close();
      // Abandoned before its commit: the side records it would have carried never appear.
      await writer.abort();
      assert.equal(await store.getMessage(id), undefined);
      assert.equal(await store.getQuarantined(`${id}.1`), undefined);
      await assert.rejects(buffer(store.openQuarantined(`${id}.1`)), { code: 'QUARANTINE_NOT_FOUND' });
      assert.deepEqual(await store.listQuarantine({ messageId: id }), []);
    }
    assert.deepEqual(
      (await store.listQueue()).map((e) => e.id),
      [earlier],
    );
    assert.equal((await store.getMessage(earlier))?.delivery, undefined);
    assert.deepEqual(await store.getFetched([{ alias: 'sales', key: 'never' }]), [undefined]);
  });

  contract('a commit that fails leaves neither the message nor its side records; a new writer can then store it', async (store) => {
    const earlier = await storeQueued(store, Buffer.from('queued\r\n'));
    const id = newMessageId();
    const key: FetchedKey = { alias: 'sales', key: '7:7' };
    const sides: SideRecord[] = [
      { type: 'queue-entry', entry: queueEntry(id) },
      { type: 'fetched', key, record: { id } },
      { type: 'queue-finished', id: earlier, delivery: deliveryRecord('delivered') },
    ];
    const writer = store.createMessageWriter(id);
    writer.end(Buffer.from('refused\r\n'));
    // The metadata of another message: refused, and nothing may be written.
    await assert.rejects(writer.commit(sampleMeta(newMessageId()), sides));
    await writer.abort();
    assert.equal(await store.getMessage(id), undefined);
    assert.equal(await store.getQueueEntry(id), undefined);
    assert.deepEqual(await store.getFetched([key]), [undefined]);
    assert.ok(await store.getQueueEntry(earlier), 'the other message is still queued');
    assert.equal((await store.getMessage(earlier))?.delivery, undefined);

    await storeMessage(store, Buffer.from('stored after all\r\n'), sides, id);
    assert.ok(await store.getQueueEntry(id));
    assert.deepEqual(await store.getFetched([key]), [{ id }]);
    assert.equal(await store.getQueueEntry(earlier), undefined);
  });

  contract('concurrent commits all land, each with its own side records', async (store) => {
    const ids = await Promise.all(
      Array.from({ length: 40 }, async (_, i) => {
        const id = newMessageId();
        const bytes = i % 5 === 0 ? randomBytes(70_000) : Buffer.from(`message ${i}\r\n`);
        await storeMessage(store, bytes, [{ type: 'queue-entry', entry: queueEntry(id) }], id);
        return id;
      }),
    );
    assert.equal((await store.listMessages({ limit: 1000 })).length, 40);
    assert.deepEqual((await store.listQueue()).map((e) => e.id).sort(), [...ids].sort());
  });

  contract('listing: newest first, by alias, since a time, by tag, at most a limit', async (store) => {
    const start = Date.parse('2026-03-01T08:00:00Z');
    let now = start;
    const nextId = createIdGenerator(() => now);
    const made: MessageMeta[] = [];
    const plan = [
      { alias: 'sales', tags: [] },
      { alias: 'support', tags: ['exception-queue'] },
      { alias: 'sales', tags: ['exception-queue'] },
      { alias: undefined, tags: [] },
      { alias: 'sales', tags: [] },
    ];
    for (const [i, p] of plan.entries()) {
      now = start + i * 3_600_000;
      const id = nextId();
      const meta = sampleMeta(id, { tags: p.tags, source: { kind: 'smtp', ...(p.alias ? { alias: p.alias } : {}) }, size: 2 });
      const writer = store.createMessageWriter(id);
      writer.end(Buffer.from(`${i}\n`));
      await writer.commit(meta);
      made.push(meta);
    }
    const ids = (list: MessageMeta[]) => list.map((m) => m.id);
    const newestFirst = ids([...made].reverse());
    assert.deepEqual(ids(await store.listMessages()), newestFirst);
    assert.deepEqual(await store.listMessages(), [...made].reverse(), 'the metadata as committed');
    assert.deepEqual(ids(await store.listMessages({ limit: 2 })), newestFirst.slice(0, 2));
    assert.deepEqual(ids(await store.listMessages({ alias: 'sales' })), [made[4]!.id, made[2]!.id, made[0]!.id]);
    assert.deepEqual(ids(await store.listMessages({ alias: 'sales', limit: 1 })), [made[4]!.id]);
    assert.deepEqual(await store.listMessages({ alias: 'nobody' }), []);
    assert.deepEqual(ids(await store.listMessages({ since: new Date(start + 2 * 3_600_000) })), newestFirst.slice(0, 3));
    assert.deepEqual(ids(await store.listMessages({ alias: 'sales', since: new Date(start + 1) })), [made[4]!.id, made[2]!.id]);
    assert.deepEqual(ids(await store.listMessages({ tag: 'exception-queue' })), [made[2]!.id, made[1]!.id]);
    assert.deepEqual(ids(await store.listMessages({ tag: 'exception-queue', limit: 1 })), [made[2]!.id]);
    assert.deepEqual(ids(await store.listMessages({ tag: 'exception-queue', alias: 'support' })), [made[1]!.id]);
    assert.deepEqual(ids(await store.listMessages({ tag: 'exception-queue', since: new Date(start + 2 * 3_600_000) })), [made[2]!.id]);
    assert.deepEqual(await store.listMessages({ limit: 0 }), []);
  });

  contract('searching: until, text in subject/From/To in any case, attachments, wrapped, each with alias and time, and paging', async (store) => {
    const start = Date.parse('2026-03-02T08:00:00Z');
    let now = start;
    const nextId = createIdGenerator(() => now);
    const made: MessageMeta[] = [];
    const attachment = { fileName: 'invoice.pdf', contentType: 'application/pdf', size: 10 };
    const plan: Partial<MessageMeta>[] = [
      { subject: 'Invoice 17', from: 'Billing <billing@example.org>', source: { kind: 'smtp', alias: 'sales' }, attachments: [attachment] },
      { subject: 'Hello', from: 'ann@example.org', to: ['Sales@Example.com'], source: { kind: 'imap', alias: 'support' } },
      { subject: 'Re: INVOICE 17', from: 'bob@example.net', source: { kind: 'smtp', alias: 'sales' }, _WrappingMessageReason: 'header_nul: x' },
      { subject: 'Lunch', from: 'carol@example.org', source: { kind: 'smtp' }, attachments: [{ ...attachment, blocked: true }] },
      { subject: 'Invoice 18', from: 'billing@example.org', source: { kind: 'smtp', alias: 'sales' } },
    ];
    for (const [i, over] of plan.entries()) {
      now = start + i * 3_600_000;
      const id = nextId();
      const meta = sampleMeta(id, { to: ['sales@example.com'], ...over, size: 2 });
      const writer = store.createMessageWriter(id);
      writer.end(Buffer.from(`${i}\n`));
      await writer.commit(meta);
      made.push(meta);
    }
    const ids = (list: MessageMeta[]) => list.map((m) => m.id);
    const of = (...i: number[]) => i.map((n) => made[n]!.id);
    const hour = (n: number) => new Date(start + n * 3_600_000);
    assert.deepEqual(ids(await store.listMessages({ until: hour(2) })), of(1, 0), 'until is exclusive');
    assert.deepEqual(ids(await store.listMessages({ since: hour(1), until: hour(3) })), of(2, 1));
    assert.deepEqual(await store.listMessages({ since: hour(3), until: hour(3) }), [], 'an empty range');
    assert.deepEqual(ids(await store.listMessages({ alias: 'sales', until: hour(4) })), of(2, 0));
    assert.deepEqual(ids(await store.listMessages({ text: 'invoice' })), of(4, 2, 0), 'subject, any case');
    assert.deepEqual(ids(await store.listMessages({ text: 'BILLING@' })), of(4, 0), 'From');
    assert.deepEqual(ids(await store.listMessages({ text: 'sales@example.COM' })), of(4, 3, 2, 1, 0), 'To');
    assert.deepEqual(ids(await store.listMessages({ text: 'ann', alias: 'support' })), of(1));
    assert.deepEqual(await store.listMessages({ text: 'nowhere' }), []);
    assert.deepEqual(ids(await store.listMessages({ hasAttachment: true })), of(3, 0), 'a blocked attachment counts');
    assert.deepEqual(ids(await store.listMessages({ hasAttachment: false })), of(4, 2, 1));
    assert.deepEqual(ids(await store.listMessages({ wrapped: true })), of(2));
    assert.deepEqual(ids(await store.listMessages({ wrapped: false, alias: 'sales' })), of(4, 0));
    assert.deepEqual(ids(await store.listMessages({ text: 'invoice', hasAttachment: false, since: hour(1) })), of(4, 2), 'filters together');
    assert.deepEqual(ids(await store.listMessages({ text: 'invoice', limit: 1 })), of(4));

    // Paging: `before` continues below the last id seen, with or without other filters.
    assert.deepEqual(ids(await store.listMessages({ before: made[3]!.id })), of(2, 1, 0));
    assert.deepEqual(ids(await store.listMessages({ before: made[3]!.id, limit: 2 })), of(2, 1));
    assert.deepEqual(ids(await store.listMessages({ before: made[2]!.id, alias: 'sales' })), of(0));
    assert.deepEqual(ids(await store.listMessages({ before: made[4]!.id, text: 'invoice', limit: 1 })), of(2));
    assert.deepEqual(ids(await store.listMessages({ before: made[2]!.id, until: hour(4) })), of(1, 0), 'the lower of before and until');
    assert.deepEqual(ids(await store.listMessages({ before: made[4]!.id, until: hour(1) })), of(0));
    const pages: string[][] = [];
    for (let before: string | undefined; ;) {
      const page = await store.listMessages({ limit: 2, ...(before ? { before } : {}) });
      if (page.length === 0) break;
      pages.push(ids(page));
      before = page[page.length - 1]!.id;
      if (pages.length === 1) {
        // Mail arriving between two pages does not shift the next page.
        now = start + 10 * 3_600_000;
        const id = nextId();
        const writer = store.createMessageWriter(id);
        writer.end(Buffer.from('late\n'));
        await writer.commit(sampleMeta(id, { size: 5 }));
      }
    }
    assert.deepEqual(pages, [of(4, 3), of(2, 1), of(0)]);
  });

  contract('a rewrite swaps new bytes in at once, with the metadata and without the restored quarantine record', async (store) => {
    const id = newMessageId();
    const part = randomBytes(5000);
    const spool = store.createQuarantineSpool(`${id}.1`);
    await spool.write(part);
    await spool.close();
    const record = quarantineRecord(`${id}.1`, id, part.length);
    const old = randomBytes(BIG);
    await storeMessage(store, old, [{ type: 'quarantine', record }], id);

    // Abandoned: the old bytes stay, and so does the record.
    const abandoned = await store.rewriteMessage(id);
    await writeInPieces(abandoned, randomBytes(BIG), [65_536]);
    await abandoned.abandon();
    assert.ok((await buffer(store.openRaw(id))).equals(old));
    assert.deepEqual(await store.getQuarantined(record.id), record);

    const rewrite = await store.rewriteMessage(id);
    const fresh = randomBytes(BIG + 5000);
    await writeInPieces(rewrite, fresh, [1000, 65_536]);
    rewrite.end();
    assert.ok((await buffer(store.openRaw(id))).equals(old), 'the old bytes until the commit');
    const meta = { ...sampleMeta(id), tags: ['restored'] };
    await rewrite.commit(meta, { restoredQuarantineId: record.id });
    assert.ok((await buffer(store.openRaw(id))).equals(fresh), 'the new bytes after');
    assert.deepEqual(await store.getMessage(id), { ...meta, size: fresh.length });
    assert.equal(await store.getQuarantined(record.id), undefined);
    assert.deepEqual(await store.listQuarantine(), []);

    // Rewrites of one message take turns: the second starts once the first is done.
    const first = await store.rewriteMessage(id);
    let secondStarted = false;
    const second = store.rewriteMessage(id).then((r) => ((secondStarted = true), r));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(secondStarted, false, 'the second rewrite waits for the first');
    first.end(Buffer.from('first\r\n'));
    await first.commit(sampleMeta(id));
    const next = await second;
    next.end(Buffer.from('second\r\n'));
    await next.commit(sampleMeta(id));
    assert.equal((await buffer(store.openRaw(id))).toString(), 'second\r\n');
    assert.equal((await store.getMessage(id))?.size, 8);
  });

  contract('quarantine: list newest message first, get, open byte for byte, delete', async (store) => {
    const kept: QuarantineRecord[] = [];
    const bytes = new Map<string, Buffer>();
    for (const parts of [1, 2]) {
      const id = newMessageId();
      const sides: SideRecord[] = [];
      for (let n = 1; n <= parts; n++) {
        const spool = store.createQuarantineSpool(`${id}.${n}`);
        assert.equal(spool.id, `${id}.${n}`);
        const part = randomBytes(n === 2 ? BIG : 300);
        await writeInPieces({ write: (b: Buffer) => spool.write(b) }, part, [7, 65_536]);
        assert.equal(spool.bytes, part.length);
        await spool.close();
        const record = quarantineRecord(spool.id, id, part.length);
        sides.push({ type: 'quarantine', record });
        kept.push(record);
        bytes.set(record.id, part);
      }
      await storeMessage(store, Buffer.from('placeholder\r\n'), sides, id);
    }
    const [a, b1, b2] = kept as [QuarantineRecord, QuarantineRecord, QuarantineRecord];
    const listed = await store.listQuarantine();
    assert.deepEqual(
      listed.map((r) => r.messageId),
      [b1.messageId, b1.messageId, a.messageId],
      'newest message first',
    );
    assert.deepEqual(listed.map((r) => r.id).sort(), [a.id, b1.id, b2.id].sort());
    assert.deepEqual((await store.listQuarantine({ messageId: b1.messageId })).map((r) => r.id).sort(), [b1.id, b2.id]);
    assert.deepEqual(await store.getQuarantined(b2.id), b2);
    for (const r of kept) assert.ok((await buffer(store.openQuarantined(r.id))).equals(bytes.get(r.id)!), r.id);

    assert.deepEqual(await store.deleteQuarantined(b2.id), b2);
    assert.equal(await store.getQuarantined(b2.id), undefined);
    await assert.rejects(buffer(store.openQuarantined(b2.id)), { code: 'QUARANTINE_NOT_FOUND' });
    await assert.rejects(store.deleteQuarantined(b2.id), { code: 'QUARANTINE_NOT_FOUND' });
    assert.deepEqual(
      (await store.listQuarantine()).map((r) => r.id),
      [b1.id, a.id],
    );
    assert.ok((await buffer(store.openRaw(b1.messageId))).equals(Buffer.from('placeholder\r\n')), 'the message keeps its placeholder');
  });

  contract('a quarantine record with a NUL in its file name and evidence commits with its message and reads back as it was', async (store) => {
    const id = newMessageId();
    const spool = store.createQuarantineSpool(`${id}.1`);
    await spool.write(Buffer.from('MZ'));
    await spool.close();
    // A NUL decoded from an RFC 2231 file name (%00) or an archive entry's name: the message must still be stored.
    const record = { ...quarantineRecord(spool.id, id, 2), fileName: 'invoice\x00.exe', evidence: ['name invoice\x00.exe', 'entry a\x00b'] };
    await storeMessage(store, Buffer.from('placeholder\r\n'), [{ type: 'quarantine', record }], id);
    assert.deepEqual(await store.getQuarantined(record.id), record);
    assert.deepEqual(await store.listQuarantine({ messageId: id }), [record]);
  });

  contract('quarantine spool: replays from an offset, and a discard removes the bytes', async (store) => {
    const id = newMessageId();
    const writer = store.createMessageWriter(id);
    const spool = store.createQuarantineSpool(`${id}.1`);
    const part = randomBytes(BIG);
    await writeInPieces({ write: (b: Buffer) => spool.write(b) }, part, [333, 65_536, 1]);
    await spool.close();
    assert.ok(Buffer.concat(await collect(spool.replay())).equals(part));
    assert.ok(Buffer.concat(await collect(spool.replay(70_000))).equals(part.subarray(70_000)));
    assert.ok(Buffer.concat(await collect(spool.replay(part.length))).equals(Buffer.alloc(0)));
    await spool.discard();
    assert.deepEqual(Buffer.concat(await collect(spool.replay())), Buffer.alloc(0), 'nothing left to replay');
    // A part that passed leaves nothing behind when its message commits.
    writer.end(Buffer.from('passed\r\n'));
    await writer.commit(sampleMeta(id));
    assert.deepEqual(await store.listQuarantine(), []);
    assert.equal((await buffer(store.openRaw(id))).toString(), 'passed\r\n');
  });

  contract('queue: put, get, list oldest first, update, finish with the outcome on the message', async (store) => {
    const [a, b, c] = [newMessageId(), newMessageId(), newMessageId()];
    await storeMessage(store, Buffer.from('a\r\n'), [{ type: 'queue-entry', entry: queueEntry(a) }], a);
    await storeMessage(store, Buffer.from('b\r\n'), [], b);
    assert.equal(await store.getQueueEntry(b), undefined);
    // Several at once (`queue retry` on a stopped gateway), an entry whose message is gone among them.
    await store.putQueueEntries([queueEntry(c), { ...queueEntry(b), attempts: 2 }]);
    assert.deepEqual(
      (await store.listQueue()).map((e) => e.id),
      [a, b, c],
      'oldest first',
    );
    assert.equal((await store.getQueueEntry(b))?.attempts, 2);
    await store.putQueueEntries([{ ...queueEntry(b), attempts: 3, held: 'no route' }]);
    assert.deepEqual(await store.getQueueEntry(b), { ...queueEntry(b), attempts: 3, held: 'no route' });
    await store.putQueueEntries([]);

    const delivered = deliveryRecord('delivered');
    await store.finishQueueEntry(a, delivered);
    assert.equal(await store.getQueueEntry(a), undefined);
    assert.deepEqual(await store.getMessage(a), { ...sampleMeta(a, { size: 3 }), delivery: delivered });
    // No stored message to record on (c was never stored): the entry still goes.
    await store.finishQueueEntry(c, deliveryRecord('dropped'));
    assert.equal(await store.getMessage(c), undefined);
    assert.deepEqual(
      (await store.listQueue()).map((e) => e.id),
      [b],
    );
  });

  contract('alias state: get, put, list, replace', async (store) => {
    assert.equal(await store.getAliasState('sales'), undefined);
    assert.deepEqual(await store.listAliasStates(), {});
    const inactive: AliasState = {
      status: 'inactive',
      failures: 3,
      lastError: 'AUTHENTICATIONFAILED',
      lastErrorKind: 'auth',
      reason: 'the mailbox refused the login',
      changedAt: '2026-03-01T08:00:00.000Z',
      changedBy: 'retriever',
      retryAt: '2026-03-01T09:00:00.000Z',
      configHash: 'abc',
    };
    const active: AliasState = { status: 'active', failures: 0, changedAt: '2026-03-01T10:00:00.000Z', changedBy: 'admin' };
    await store.putAliasState('sales', inactive);
    await store.putAliasState('support', active);
    assert.deepEqual(await store.getAliasState('sales'), inactive);
    assert.deepEqual(await store.listAliasStates(), { sales: inactive, support: active });
    await store.putAliasState('sales', active);
    assert.deepEqual(await store.getAliasState('sales'), active, 'replaced whole, not merged');
  });

  contract('fetched keys: in the order asked, per alias and key', async (store) => {
    const keys: FetchedKey[] = [
      { alias: 'sales', key: '1700000000:1' },
      { alias: 'sales', key: 'pop3:0000000100000002' },
      { alias: 'sales', key: '1700000000:1#billing@example.com' },
      { alias: 'support', key: '1700000000:1' },
    ];
    assert.deepEqual(await store.getFetched([]), []);
    assert.deepEqual(await store.getFetched(keys), [undefined, undefined, undefined, undefined]);
    const id = newMessageId();
    await store.putFetched(keys[1]!, { id, invalid: true });
    await storeMessage(store, Buffer.from('fetched\r\n'), [{ type: 'fetched', key: keys[2]!, record: { id } }]);
    assert.deepEqual(await store.getFetched(keys), [undefined, { id, invalid: true }, { id }, undefined]);
    assert.deepEqual(await store.getFetched([keys[2]!, keys[1]!, keys[2]!]), [{ id }, { id, invalid: true }, { id }]);
  });

  contract('token cache: read what was written, per alias, replaced whole', async (store) => {
    assert.equal(await store.readTokenCache('sales'), undefined);
    const sealed = randomBytes(3000);
    await store.writeTokenCache('sales', sealed);
    await store.writeTokenCache('support', Buffer.from('other'));
    assert.deepEqual(await store.readTokenCache('sales'), sealed);
    const rotated = randomBytes(10);
    await store.writeTokenCache('sales', rotated);
    assert.deepEqual(await store.readTokenCache('sales'), rotated);
    assert.deepEqual(await store.readTokenCache('support'), Buffer.from('other'));
  });

  contract('audit entries are kept with an id, listed newest first, limited and from a time on', async (store) => {
    assert.deepEqual(await store.listAudit(), []);
    const entry = (action: string, at: string) => ({ at, who: 'user alice', action, target: 'q1', from: '127.0.0.1', outcome: 'ok' });
    const first = await store.appendAudit(entry('sign-in', '2026-03-01T10:00:00.000Z'));
    assert.deepEqual({ ...first, id: undefined }, { ...entry('sign-in', '2026-03-01T10:00:00.000Z'), id: undefined });
    const second = await store.appendAudit(entry('restore', '2026-03-01T10:00:01.000Z'));
    const third = await store.appendAudit(entry('delete', '2026-03-01T10:00:02.000Z'));
    assert.deepEqual(await store.listAudit(), [third, second, first]);
    assert.deepEqual(await store.listAudit({ limit: 2 }), [third, second]);
    // `since` is the time the entry was recorded; all three were just now.
    assert.deepEqual(await store.listAudit({ since: new Date(Date.now() + 60_000) }), []);
    assert.equal((await store.listAudit({ since: new Date(Date.now() - 60_000) })).length, 3);
    // Paging: each page starts below the last id of the one before.
    assert.deepEqual(await store.listAudit({ before: third.id }), [second, first]);
    assert.deepEqual(await store.listAudit({ before: third.id, limit: 1 }), [second]);
    assert.deepEqual(await store.listAudit({ before: first.id }), []);
    assert.deepEqual(await store.listAudit({ before: third.id, since: new Date(Date.now() + 60_000) }), []);
  });

  contract('deleting a message removes its bytes (rewritten ones too), index entry and quarantined attachments; its fetched record stays', async (store) => {
    const id = newMessageId();
    const spool = store.createQuarantineSpool(`${id}.1`);
    await spool.write(randomBytes(BIG));
    await spool.close();
    const fetchedKey: FetchedKey = { alias: 'sales', key: '1700000000:7' };
    await storeMessage(
      store,
      randomBytes(BIG),
      [
        { type: 'quarantine', record: quarantineRecord(`${id}.1`, id, BIG) },
        { type: 'fetched', key: fetchedKey, record: { id } },
      ],
      id,
    );
    // A second generation of its bytes, as a restore from quarantine writes.
    const rewrite = await store.rewriteMessage(id);
    rewrite.end(randomBytes(BIG + 1));
    await rewrite.commit(sampleMeta(id));
    const other = await storeMessage(store, Buffer.from('another\r\n'), []);

    const deleted = await store.deleteMessage(id);
    assert.equal(deleted.id, id, 'the deleted metadata is given back');
    assert.equal(await store.getMessage(id), undefined);
    await assert.rejects(buffer(store.openRaw(id)), { code: 'MESSAGE_NOT_FOUND' });
    assert.deepEqual(
      (await store.listMessages()).map((m) => m.id),
      [other],
    );
    assert.deepEqual(
      (await store.listMessages({ alias: 'sales' })).map((m) => m.id),
      [other],
      'gone from the by-alias index',
    );
    assert.deepEqual(await store.listQuarantine({ messageId: id }), []);
    await assert.rejects(buffer(store.openQuarantined(`${id}.1`)), { code: 'QUARANTINE_NOT_FOUND' });
    assert.deepEqual(await store.getFetched([fetchedKey]), [{ id }], 'the mailbox message stays known as stored: it is not fetched again');
    await assert.rejects(store.deleteMessage(id), { code: 'MESSAGE_NOT_FOUND' });
    await store.compact();
    assert.ok((await buffer(store.openRaw(other))).equals(Buffer.from('another\r\n')), 'compaction leaves the others as they were');
  });

  contract('queue claims: due entries are claimed, saved and finished under the claim; what is not due, held or gone is not', async (store) => {
    // What every store does, shared by several nodes or not (test/postgres-queue-claims.test.ts: what only a shared one does).
    const claims = store.queueClaims;
    const [due, later, held] = [newMessageId(), newMessageId(), newMessageId()];
    const future = new Date(Date.now() + 3_600_000).toISOString();
    await storeMessage(store, Buffer.from('due\r\n'), [{ type: 'queue-entry', entry: queueEntry(due) }], due);
    await storeMessage(store, Buffer.from('later\r\n'), [{ type: 'queue-entry', entry: { ...queueEntry(later), nextAttemptAt: future } }], later);
    await storeMessage(store, Buffer.from('held\r\n'), [{ type: 'queue-entry', entry: { ...queueEntry(held), held: 'no route' } }], held);
    assert.deepEqual(
      (await claims.claimDue(10, 60_000)).map((c) => c.entry),
      [queueEntry(due)],
      'only the due one that is not held',
    );
    assert.deepEqual(await claims.renew([due], 60_000), [due]);
    // Who delivers what: recorded only where several nodes share the queue.
    assert.deepEqual(await claims.claims(), claims.shared ? [{ id: due, node: store.leases.node }] : []);
    assert.equal(await claims.saveClaimed({ ...queueEntry(due), attempts: 1, nextAttemptAt: future }, { release: true }), true);
    assert.equal((await store.getQueueEntry(due))?.attempts, 1, 'saved');
    assert.deepEqual(await claims.claimDue(10, 60_000), [], 'no longer due');
    assert.equal(await claims.claim(due, 60_000, { onlyIfDue: true }), undefined, 'nor claimed as due');
    assert.deepEqual(await claims.claim(due, 60_000), { ...queueEntry(due), attempts: 1, nextAttemptAt: future }, 'claimed by id, as saved');
    assert.equal(await claims.finishClaimed(due, deliveryRecord('delivered')), true);
    assert.equal(await store.getQueueEntry(due), undefined);
    assert.deepEqual((await store.getMessage(due))?.delivery, deliveryRecord('delivered'));
    assert.equal(await claims.claim(due, 60_000), undefined, 'gone from the queue');
    assert.equal((await claims.claim(held, 60_000))?.held, 'no route', 'a held one by id (an admin, a starting node)');
    await claims.release([held]);
    assert.deepEqual(
      (await store.listQueue()).map((e) => e.id),
      [later, held],
    );
  });

  contract('a message in the outbound queue is never deleted: refused with MESSAGE_QUEUED, skipped by age', async (store) => {
    const queued = await storeQueued(store, Buffer.from('still to send\r\n'));
    await assert.rejects(store.deleteMessage(queued), { code: 'MESSAGE_QUEUED' });
    const result = await store.deleteMessagesBefore(new Date(Date.now() + 60_000));
    assert.deepEqual(result, { messages: 0, quarantined: 0, bytes: 0, queued: 1 });
    assert.ok((await buffer(store.openRaw(queued))).equals(Buffer.from('still to send\r\n')));
    // Once it has left the queue, it is an old message like any other.
    await store.finishQueueEntry(queued, deliveryRecord('delivered'));
    assert.equal((await store.deleteMessage(queued)).id, queued);
  });

  contract('deleting by age: messages that arrived before the time go, oldest first; newer ones and queued ones stay', async (store) => {
    const start = Date.parse('2026-01-01T00:00:00Z');
    let now = start;
    const nextId = createIdGenerator(() => now);
    const days = (n: number) => n * 86_400_000;
    const old: string[] = [];
    for (let i = 0; i < 250; i++) {
      now = start + i * 60_000;
      old.push(await storeMessage(store, randomBytes(100), [], nextId()));
    }
    now = start + days(1);
    const oldQueued = nextId();
    await storeMessage(store, Buffer.from('queued\r\n'), [{ type: 'queue-entry', entry: queueEntry(oldQueued) }], oldQueued);
    now = start + days(40);
    const recent = await storeMessage(store, Buffer.from('recent\r\n'), [], nextId());

    const result = await store.deleteMessagesBefore(new Date(start + days(30)));
    assert.deepEqual(result, { messages: 250, quarantined: 0, bytes: 250 * 100, queued: 1 });
    assert.deepEqual(
      (await store.listMessages({ limit: 1000 })).map((m) => m.id),
      [recent, oldQueued],
    );
    for (const id of [old[0]!, old[249]!]) await assert.rejects(buffer(store.openRaw(id)), { code: 'MESSAGE_NOT_FOUND' });
    await store.compact();
    assert.ok((await buffer(store.openRaw(recent))).equals(Buffer.from('recent\r\n')));

    // A sweep stopped by shutdown stops between messages.
    const stop = new AbortController();
    stop.abort();
    assert.deepEqual(await store.deleteMessagesBefore(new Date(start + days(60)), { signal: stop.signal }), {
      messages: 0,
      quarantined: 0,
      bytes: 0,
      queued: 0,
    });
    assert.equal((await store.listMessages()).length, 2);
  });

  contract('audit entries recorded before a time are deleted, later ones kept', async (store) => {
    const entry = { at: '2026-03-01T10:00:00.000Z', who: 'user alice', action: 'delete', target: 'q1', from: '127.0.0.1', outcome: 'ok' };
    await store.appendAudit(entry);
    await store.appendAudit(entry);
    assert.equal(await store.deleteAuditBefore(new Date(Date.now() - 60_000)), 0, 'both were recorded just now');
    assert.equal((await store.listAudit()).length, 2);
    assert.equal(await store.deleteAuditBefore(new Date(Date.now() + 60_000)), 2);
    assert.deepEqual(await store.listAudit(), []);
    await store.compact();
    const later = await store.appendAudit(entry);
    assert.deepEqual(await store.listAudit(), [later]);
  });

  if (factory.reopen) {
    const reopen = factory.reopen;
    test(`${name}: a deleted message stays deleted after the store is opened again`, async () => {
      const store = await factory.open();
      let reopened: Store | undefined;
      try {
        const gone = await storeMessage(store, randomBytes(BIG), []);
        const kept = await storeMessage(store, Buffer.from('kept\r\n'), []);
        await store.deleteMessage(gone);
        await store.close();
        reopened = await reopen(store);
        assert.equal(await reopened.getMessage(gone), undefined);
        await assert.rejects(buffer(reopened.openRaw(gone)), { code: 'MESSAGE_NOT_FOUND' });
        assert.deepEqual(
          (await reopened.listMessages()).map((m) => m.id),
          [kept],
        );
      } finally {
        await store.close();
        await reopened?.close();
      }
    });
  }

  contract('messages are found by their Message-ID, oldest first, and listed by conversation', async (store) => {
    const commit = async (over: Partial<MessageMeta>) => {
      const id = newMessageId();
      const writer = store.createMessageWriter(id);
      writer.end(Buffer.from('x\r\n'));
      await writer.commit(sampleMeta(id, over));
      return id;
    };
    const first = await commit({ messageId: 'abc@example.org', conversation: 'K7P2QX' });
    const copy = await commit({ messageId: 'abc@example.org', source: { kind: 'imap', alias: 'support' } });
    const reply = await commit({ messageId: 'reply@example.com', conversation: 'K7P2QX', inReplyTo: first });
    await commit({ messageId: 'abc@example.org.other', conversation: 'OTHER2' });
    assert.deepEqual(
      (await store.findByMessageId('abc@example.org')).map((m) => m.id),
      [first, copy],
    );
    assert.equal((await store.findByMessageId('reply@example.com'))[0]?.inReplyTo, first);
    assert.deepEqual(await store.findByMessageId('abc@example'), [], 'a prefix of a Message-ID is not it');
    assert.deepEqual(await store.findByMessageId('nobody@example.org'), []);
    assert.deepEqual(
      (await store.listMessages({ thread: 'K7P2QX' })).map((m) => m.id),
      [reply, first],
    );
    assert.deepEqual(
      (await store.listMessages({ thread: 'K7P2QX', limit: 1 })).map((m) => m.id),
      [reply],
    );
    assert.deepEqual(
      (await store.listMessages({ thread: 'K7P2QX', before: reply })).map((m) => m.id),
      [first],
    );
    assert.deepEqual(await store.listMessages({ thread: 'K7P2QX', alias: 'support' }), []);
    assert.deepEqual(await store.listMessages({ thread: 'NONE00' }), []);
    // A deleted message (retention, `messages delete`) is found neither way.
    await store.deleteMessage(first);
    assert.deepEqual(
      (await store.findByMessageId('abc@example.org')).map((m) => m.id),
      [copy],
    );
    assert.deepEqual(
      (await store.listMessages({ thread: 'K7P2QX' })).map((m) => m.id),
      [reply],
    );
  });

  contract('an auto-reply is claimed once per sender and alias until the interval has passed', async (store) => {
    const t0 = new Date('2026-03-01T10:00:00.000Z');
    const day = 24 * 3600_000;
    const at = (ms: number) => new Date(t0.getTime() + ms);
    assert.equal(await store.claimAutoReply('sales', 'Ann@example.org', t0, at(-day)), true, 'the first one goes');
    assert.equal(await store.claimAutoReply('sales', 'ann@example.org', at(3600_000), at(3600_000 - day)), false, 'not again within a day, whatever the case');
    assert.equal(await store.claimAutoReply('support', 'ann@example.org', at(3600_000), at(3600_000 - day)), true, 'another alias answers on its own');
    assert.equal(await store.claimAutoReply('sales', 'bob@example.org', at(3600_000), at(3600_000 - day)), true, 'another sender too');
    const together = await Promise.all([1, 2, 3].map(() => store.claimAutoReply('sales', 'carl@example.org', t0, at(-day))));
    assert.deepEqual(together.filter(Boolean).length, 1, 'claims made together: one wins');
    assert.equal(await store.claimAutoReply('sales', 'ann@example.org', at(day + 1), at(1)), true, 'after the interval, again');
  });

  // The list methods `mailgate storage copy` reads a store with (storage/copy.ts).

  contract('every fetched key is listed once with its record, those of side records and of putFetched alike', async (store) => {
    assert.deepEqual(await all(store.listFetched()), []);
    const id = newMessageId();
    const keys: FetchedKey[] = [
      { alias: 'sales', key: '1700000000:1' },
      { alias: 'sales', key: '1700000000:1#billing@example.com' },
      { alias: 'support', key: 'pop3:0000000100000002' },
    ];
    await store.putFetched(keys[0]!, { id, invalid: true });
    await storeMessage(store, Buffer.from('fetched\r\n'), [{ type: 'fetched', key: keys[1]!, record: { id } }], id);
    await store.putFetched(keys[2]!, { id });
    await store.putFetched(keys[2]!, { id, invalid: true });
    const byKey = (a: { key: FetchedKey }, b: { key: FetchedKey }) => `${a.key.alias} ${a.key.key}`.localeCompare(`${b.key.alias} ${b.key.key}`);
    assert.deepEqual((await all(store.listFetched())).sort(byKey), [
      { key: keys[0]!, record: { id, invalid: true } },
      { key: keys[1]!, record: { id } },
      { key: keys[2]!, record: { id, invalid: true } },
    ]);
  });

  contract('every token cache is listed once, as last written', async (store) => {
    assert.deepEqual(await all(store.listTokenCaches()), []);
    const rotated = randomBytes(2000);
    await store.writeTokenCache('sales', randomBytes(10));
    await store.writeTokenCache('support', Buffer.from('other'));
    await store.writeTokenCache('sales', rotated);
    const listed = (await all(store.listTokenCaches())).sort((a, b) => a.alias.localeCompare(b.alias));
    assert.deepEqual(
      listed.map(({ alias, sealed }) => ({ alias, sealed: Buffer.from(sealed) })),
      [
        { alias: 'sales', sealed: rotated },
        { alias: 'support', sealed: Buffer.from('other') },
      ],
    );
  });

  contract('every auto-reply is listed with the time of its last answer, per alias and sender', async (store) => {
    assert.deepEqual(await all(store.listAutoReplies()), []);
    const t0 = new Date('2026-03-01T10:00:00.000Z');
    const later = new Date('2026-03-03T10:00:00.000Z');
    await store.claimAutoReply('sales', 'ann@example.org', t0, new Date(0));
    await store.claimAutoReply('support', 'ann@example.org', t0, new Date(0));
    await store.claimAutoReply('sales', 'ann@example.org', later, new Date(later.getTime() - 86_400_000));
    await store.claimAutoReply('sales', 'bob@example.org', new Date(t0.getTime() + 1000), new Date(t0.getTime() + 1000 - 86_400_000));
    assert.equal(await store.claimAutoReply('sales', 'bob@example.org', later, t0), false, 'bob was answered after t0');
    const listed = (await all(store.listAutoReplies())).sort((a, b) => `${a.alias} ${a.sender}`.localeCompare(`${b.alias} ${b.sender}`));
    assert.deepEqual(
      listed.map((r) => ({ ...r, at: r.at.toISOString() })),
      [
        { alias: 'sales', sender: 'ann@example.org', at: later.toISOString() },
        { alias: 'sales', sender: 'bob@example.org', at: new Date(t0.getTime() + 1000).toISOString() },
        { alias: 'support', sender: 'ann@example.org', at: t0.toISOString() },
      ],
      'a refused claim changes nothing',
    );
  });

  contract('an audit entry given its id keeps it, and lists in its place by that id', async (store) => {
    const entry = { at: '2025-01-01T10:00:00.000Z', who: 'user alice', action: 'restore', target: 'q1', from: '127.0.0.1', outcome: 'ok' };
    const now = await store.appendAudit({ ...entry, action: 'delete' });
    // An id made a year ago (a copied store's oldest entry) sorts before one made now.
    const old = createIdGenerator(() => new Date('2025-01-01T10:00:00.000Z').getTime())();
    const copied = await store.appendAudit({ ...entry, id: old });
    assert.deepEqual(copied, { ...entry, id: old });
    assert.deepEqual(await store.listAudit(), [now, copied]);
    assert.deepEqual(await store.listAudit({ since: new Date('2026-01-01T00:00:00.000Z') }), [now], 'its time is that of its id');
  });
  contract(
    "a notice reaches this node's handlers with its topic, sender and payload; a stopped handler hears no more; one too long is refused",
    async (store) => {
      const heard: Notice[] = [];
      const stop = store.onNotice((n) => heard.push(n));
      const other: Notice[] = [];
      const stopOther = store.onNotice((n) => other.push(n));
      // A shared store listens on a connection of its own, made on the first handler: notices
      // sent before it listens are missed (as documented), so the first is sent until one lands.
      for (let n = 0; !heard.some((h) => h.topic === 'ping'); n++) {
        if (n === 300) assert.fail('no notice ever came back');
        await store.notify('ping', { n });
        await new Promise((r) => setTimeout(r, 20));
      }
      await store.notify('alias-status', { alias: 'support', status: 'inactive', holder: 'node-b' });
      while (!heard.some((h) => h.topic === 'alias-status')) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(
        heard.find((h) => h.topic === 'alias-status'),
        { topic: 'alias-status', from: store.leases.node, payload: { alias: 'support', status: 'inactive', holder: 'node-b' } },
      );
      stop();
      const before = heard.length;
      await store.notify('last', {});
      while (!other.some((h) => h.topic === 'last')) await new Promise((r) => setTimeout(r, 20));
      assert.equal(heard.length, before, 'the stopped handler heard nothing more');
      stopOther();
      await assert.rejects(store.notify('big', { text: 'x'.repeat(NOTICE_MAX_BYTES) }), RangeError);
    },
  );
  contract(
    "a lone node holds the mailboxes it balances for, confirms them, and gives them back (every store: LevelDB's one node, a fleet's first)",
    async (store) => {
      const { leases } = store;
      const mailboxes = ['imap|imap.example.com|993|support||INBOX', 'pop3|pop.example.com|995|sales||INBOX'];
      const held = await leases.balance(mailboxes, 30_000);
      assert.deepEqual(
        held.map((l) => [l.mailbox, l.holder]),
        mailboxes.map((m) => [m, leases.node]),
      );
      assert.ok(held.every((l) => l.expiresAt.getTime() > Date.now() - 60_000 && Number.isInteger(l.epoch)));
      for (const lease of held) assert.equal(await leases.confirm(lease), true);
      assert.deepEqual(
        (await leases.balance(mailboxes, 30_000)).map((l) => [l.mailbox, l.epoch]),
        held.map((l) => [l.mailbox, l.epoch]),
        'renewed at the same epoch',
      );
      assert.deepEqual(
        (await leases.release([mailboxes[0]!])).map((l) => l.mailbox),
        [mailboxes[0]],
      );
      assert.deepEqual(
        (await leases.list()).filter((l) => l.held).map((l) => [l.mailbox, l.holder]),
        [[mailboxes[1], leases.node]],
      );
      assert.deepEqual(
        (await leases.nodes()).map((n) => [n.name, n.live]),
        [[leases.node, true]],
      );
      // What the node says of its configuration stays with its row across lease rounds.
      await leases.announce({ fingerprint: 'abc', aliases: { support: 'h1' } });
      await leases.balance([mailboxes[1]!], 30_000);
      assert.deepEqual(
        (await leases.nodes()).map((n) => n.config),
        [{ fingerprint: 'abc', aliases: { support: 'h1' } }],
      );
      assert.deepEqual(
        (await leases.release()).map((l) => l.mailbox),
        [mailboxes[1]],
      );
    },
  );

  test(`${name}: close waits for a commit in flight, is safe twice, and refuses writes after`, async () => {
    const store = await factory.open();
    let reopened: Store | undefined;
    try {
      const id = newMessageId();
      const writer = store.createMessageWriter(id);
      writer.end(Buffer.from('in flight\r\n'));
      const committing = writer.commit(sampleMeta(id), [{ type: 'queue-entry', entry: queueEntry(id) }]);
      const closing = store.close();
      await committing;
      await closing;
      await store.close();
      await assert.rejects(async () => storeMessage(store, Buffer.from('too late\r\n'), []), 'no message after close');
      if (!factory.reopen) return;
      reopened = await factory.reopen(store);
      assert.equal((await buffer(reopened.openRaw(id))).toString(), 'in flight\r\n', 'the commit in flight was durable');
      assert.ok(await reopened.getQueueEntry(id));
    } finally {
      await store.close();
      await reopened?.close();
    }
  });

  if (factory.reopen) {
    const reopen = factory.reopen.bind(factory);
    test(`${name}: after a reopen, committed messages and records are there and unfinished ones are not`, async () => {
      const store = await factory.open();
      let reopened: Store | undefined;
      try {
        const id = newMessageId();
        const spool = store.createQuarantineSpool(`${id}.1`);
        await spool.write(Buffer.from('part'));
        await spool.close();
        const record = quarantineRecord(`${id}.1`, id, 4);
        await storeMessage(
          store,
          Buffer.from('kept\r\n'),
          [
            { type: 'queue-entry', entry: queueEntry(id) },
            { type: 'quarantine', record },
          ],
          id,
        );
        await store.putAliasState('sales', { status: 'active', failures: 0, changedAt: '2026-03-01T10:00:00.000Z', changedBy: 'admin' });
        await store.putFetched({ alias: 'sales', key: '1:1' }, { id });
        await store.writeTokenCache('sales', Buffer.from('sealed'));
        await store.claimAutoReply('sales', 'ann@example.org', new Date(), new Date(Date.now() - 3600_000));
        // Never committed: the store closes with it half written, as a stop in the middle would leave it.
        const unfinished = newMessageId();
        const writer = store.createMessageWriter(unfinished);
        await writeInPieces(writer, randomBytes(BIG), [65_536]);
        const orphan = store.createQuarantineSpool(`${unfinished}.1`);
        await orphan.write(randomBytes(BIG));
        await orphan.close();
        await store.close();

        reopened = await reopen(store);
        assert.equal((await buffer(reopened.openRaw(id))).toString(), 'kept\r\n');
        assert.deepEqual(await reopened.getQueueEntry(id), queueEntry(id));
        assert.deepEqual(await reopened.getQuarantined(record.id), record);
        assert.equal((await buffer(reopened.openQuarantined(record.id))).toString(), 'part');
        assert.equal((await reopened.getAliasState('sales'))?.changedBy, 'admin');
        assert.deepEqual(await reopened.getFetched([{ alias: 'sales', key: '1:1' }]), [{ id }]);
        assert.deepEqual(await reopened.readTokenCache('sales'), Buffer.from('sealed'));
        assert.equal(
          await reopened.claimAutoReply('sales', 'ann@example.org', new Date(), new Date(Date.now() - 3600_000)),
          false,
          'an auto-reply is remembered',
        );
        assert.equal(await reopened.getMessage(unfinished), undefined);
        assert.deepEqual(await reopened.listQuarantine({ messageId: unfinished }), []);
        assert.deepEqual(
          (await reopened.listMessages()).map((m) => m.id),
          [id],
        );
      } finally {
        await store.close();
        await reopened?.close();
      }
    });
  }
}

/** Stores `bytes` as a new message (id given or new) with `sides`; resolves with its id once committed. */
async function storeMessage(store: Store, bytes: Buffer, sides: readonly SideRecord[], id = newMessageId()): Promise<string> {
  const writer: MessageWriter = store.createMessageWriter(id);
  try {
    await writeInPieces(writer, bytes, [65_536]);
    writer.end();
    await writer.commit(sampleMeta(id, { size: bytes.length }), sides);
  } catch (err) {
    await writer.abort().catch(() => {});
    throw err;
  }
  return id;
}

/** Stores `bytes` as a new message, queued with it; resolves with its id once committed. */
function storeQueued(store: Store, bytes: Buffer): Promise<string> {
  const id = newMessageId();
  return storeMessage(store, bytes, [{ type: 'queue-entry', entry: queueEntry(id) }], id);
}

/** Writes `bytes` in pieces of `sizes` (cycled), waiting for each: as a sender's data arrives. */
async function writeInPieces(target: Writable | { write(b: Buffer): Promise<void> }, bytes: Buffer, sizes: readonly number[]): Promise<void> {
  const put = (piece: Buffer): Promise<void> =>
    'writable' in target
      ? new Promise((resolve, reject) => (target as Writable).write(piece, (err) => (err ? reject(err) : resolve())))
      : (target as { write(b: Buffer): Promise<void> }).write(piece);
  for (let offset = 0, i = 0; offset < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, bytes.length - offset);
    // A copy: the store must not keep the caller's buffer, which a sender reuses.
    const scratch = Buffer.from(bytes.subarray(offset, offset + n));
    await put(scratch);
    scratch.fill(0xee);
    offset += n;
  }
}

async function all<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

async function collect(source: AsyncIterable<Buffer> | Readable): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const chunk of source) out.push(chunk as Buffer);
  return out;
}

/** A message's record as ingest would commit it; the store records the size it was given the bytes of. */
export function sampleMeta(id: string, over: Partial<MessageMeta> = {}): MessageMeta {
  return {
    id,
    version: 1,
    receivedAt: '2026-03-01T08:00:00.000Z',
    size: 0,
    receivedSize: 0,
    envelope: { mailFrom: 'sender@example.org', rcptTo: ['sales@example.com'] },
    source: { kind: 'smtp', alias: 'sales' },
    subject: 'Order 1234',
    to: ['sales@example.com'],
    cc: [],
    _AttachmentFileNames: [],
    attachments: [],
    findings: {},
    tags: [],
    ...over,
  };
}

/** An outbound queue entry for message ID, one recipient pending. */
export function queueEntry(id: string): QueueEntry {
  return {
    id,
    kind: 'outbound',
    alias: 'sales',
    mailFrom: 'sales@example.com',
    requestedRecipients: ['customer@example.org'],
    recipients: [{ address: 'customer@example.org', status: 'pending', attempts: 0 }],
    queuedAt: '2026-03-01T08:00:00.000Z',
    attempts: 0,
    nextAttemptAt: '2026-03-01T08:00:00.000Z',
  };
}

function deliveryRecord(status: DeliveryRecord['status']): DeliveryRecord {
  return {
    kind: 'outbound',
    status,
    finishedAt: '2026-03-01T09:00:00.000Z',
    attempts: 1,
    recipients: [{ address: 'customer@example.org', status: status === 'delivered' ? 'delivered' : 'failed', attempts: 1 }],
  };
}

function quarantineRecord(id: string, messageId: string, size: number): QuarantineRecord {
  return {
    id,
    messageId,
    fileName: 'invoice.exe',
    contentType: 'application/octet-stream',
    size,
    storedBytes: size,
    rule: 'blocked extension .exe',
    evidence: ['name invoice.exe'],
    date: '2026-03-01T08:00:00.000Z',
  };
}
