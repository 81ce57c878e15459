/**
 * Copying one store into another through the storage interface alone (`mailgate storage copy`,
 * issue 16: moving a LevelDB store into PostgreSQL), so any two implementations can be copied
 * either way, and checking afterwards that the copy holds what the original does.
 *
 * Messages are streamed: one chunk of a message (or of a quarantined attachment) is in memory
 * at a time per message in flight, never a whole message. Each message is committed with its
 * quarantined attachments as `quarantine` side records, their bytes written through quarantine
 * spools under the same ids, so the copy has them exactly as a message received there would.
 * The queue follows the messages (an entry whose message is not there yet would be sent as
 * missing); the other records have no order among them.
 */
import { pipeline } from 'node:stream/promises';
import type { AuditEntry, MessageMeta } from './records.js';
import type { Store } from './store.js';

/** What a copy moved, and what a check counts on each side. */
export interface StoreCounts {
  messages: number;
  /** Stored bytes of the messages. */
  messageBytes: number;
  quarantined: number;
  queue: number;
  aliasStates: number;
  fetched: number;
  tokenCaches: number;
  autoReplies: number;
  audit: number;
}

/** Where a copy is, for a progress line. */
export interface CopyProgress {
  /** What is being copied: `messages`, `queue`, `alias states`, ... */
  phase: string;
  /** Copied so far. */
  counts: StoreCounts;
}

export interface CopyOptions {
  /** Called at most every `progressEveryMs` while copying (and not at all for a copy quicker than that). */
  onProgress?: (progress: CopyProgress) => void;
  /** Default 5000. */
  progressEveryMs?: number;
}

// Messages (or audit entries) listed at a time: all a page holds in memory.
const PAGE = 200;
// Messages (and small records) written at once: commits a database can group, few chunks in memory.
const MESSAGES_IN_FLIGHT = 4;
const RECORDS_IN_FLIGHT = 16;

/** Zero of everything. */
function noCounts(): StoreCounts {
  return { messages: 0, messageBytes: 0, quarantined: 0, queue: 0, aliasStates: 0, fetched: 0, tokenCaches: 0, autoReplies: 0, audit: 0 };
}

/** Every committed message's metadata, newest first, a page at a time. */
function allMessages(store: Store): AsyncIterable<MessageMeta> {
  return byPages((page) => store.listMessages(page));
}

/** Every audit entry, newest first, a page at a time: a long-kept log never sits in memory whole. */
function allAudit(store: Store): AsyncIterable<AuditEntry> {
  return byPages((page) => store.listAudit(page));
}

/** What LIST gives, page after page, each starting below the last id of the one before. */
async function* byPages<T extends { id: string }>(list: (page: { limit: number; before?: string }) => Promise<T[]>): AsyncIterable<T> {
  let before: string | undefined;
  for (;;) {
    const page = await list({ limit: PAGE, ...(before === undefined ? {} : { before }) });
    yield* page;
    if (page.length < PAGE) return;
    before = page[page.length - 1]!.id;
  }
}

/** What STORE holds, by kind of record, the kinds it has none of left out: empty when the store is. */
export async function storeContents(store: Store): Promise<string[]> {
  const held: string[] = [];
  if ((await store.listMessages({ limit: 1 })).length) held.push('messages');
  if ((await store.listQuarantine()).length) held.push('quarantined attachments');
  if ((await store.listQueue()).length) held.push('queue entries');
  if (Object.keys(await store.listAliasStates()).length) held.push('alias states');
  if (await hasAny(store.listFetched())) held.push('fetched keys');
  if (await hasAny(store.listTokenCaches())) held.push('token caches');
  if (await hasAny(store.listAutoReplies())) held.push('auto-replies');
  if ((await store.listAudit({ limit: 1 })).length) held.push('audit entries');
  return held;
}

/** Copies everything in SOURCE into TARGET (which should be empty: see storeContents) and resolves to what was copied. */
export async function copyStore(source: Store, target: Store, opts: CopyOptions = {}): Promise<StoreCounts> {
  const counts = noCounts();
  let phase = 'messages';
  const every = opts.progressEveryMs ?? 5000;
  const timer = opts.onProgress && setInterval(() => opts.onProgress!({ phase, counts: { ...counts } }), every);
  try {
    await inFlight(allMessages(source), MESSAGES_IN_FLIGHT, async (meta) => {
      const { size, quarantined } = await copyMessage(source, target, meta);
      counts.messages++;
      counts.messageBytes += size;
      counts.quarantined += quarantined;
    });

    phase = 'queue';
    const queue = await source.listQueue();
    for (let i = 0; i < queue.length; i += PAGE) {
      const entries = queue.slice(i, i + PAGE);
      await target.putQueueEntries(entries);
      counts.queue += entries.length;
    }

    phase = 'alias states';
    for (const [alias, state] of Object.entries(await source.listAliasStates())) {
      await target.putAliasState(alias, state);
      counts.aliasStates++;
    }

    phase = 'fetched keys';
    await inFlight(source.listFetched(), RECORDS_IN_FLIGHT, async ({ key, record }) => {
      await target.putFetched(key, record);
      counts.fetched++;
    });

    phase = 'token caches';
    for await (const { alias, sealed } of source.listTokenCaches()) {
      await target.writeTokenCache(alias, sealed);
      counts.tokenCaches++;
    }

    phase = 'auto-replies';
    await inFlight(source.listAutoReplies(), RECORDS_IN_FLIGHT, async ({ alias, sender, at }) => {
      // The claim is the only way in: on an empty target nothing was recorded at or after `at`, so it records.
      if (await target.claimAutoReply(alias, sender, at, at)) counts.autoReplies++;
    });

    phase = 'audit';
    // Each keeps its id, and every store lists by id (the contract), so the order of the copy does not matter.
    await inFlight(allAudit(source), RECORDS_IN_FLIGHT, async (entry) => {
      await target.appendAudit(entry);
      counts.audit++;
    });
    return counts;
  } finally {
    if (timer) clearInterval(timer);
  }
}

/** One message: its quarantined attachments' bytes into spools, its bytes into a writer, then one commit with them as side records. */
async function copyMessage(source: Store, target: Store, meta: MessageMeta): Promise<{ size: number; quarantined: number }> {
  const records = await source.listQuarantine({ messageId: meta.id });
  const writer = target.createMessageWriter(meta.id);
  try {
    for (const record of records) {
      const spool = target.createQuarantineSpool(record.id);
      for await (const chunk of source.openQuarantined(record.id)) await spool.write(chunk as Buffer);
      await spool.close();
    }
    await pipeline(source.openRaw(meta.id), writer);
    await writer.commit(
      meta,
      records.map((record) => ({ type: 'quarantine' as const, record })),
    );
    return { size: writer.bytesWritten, quarantined: records.length };
  } catch (err) {
    await writer.abort().catch(() => {});
    throw err;
  }
}

/** What {@link compareStores} found. */
export interface StoreComparison {
  source: StoreCounts;
  target: StoreCounts;
  /** Each difference in a sentence (at most `limit` of them; `more` says how many were left out). */
  differences: string[];
  more: number;
}

/**
 * Compares SOURCE and TARGET through the interface: the count of every kind of record, and per
 * message that the target has it with the same stored size (and per quarantined attachment,
 * the same stored bytes).
 */
export async function compareStores(source: Store, target: Store, opts: { limit?: number } = {}): Promise<StoreComparison> {
  const limit = opts.limit ?? 20;
  const differences: string[] = [];
  let more = 0;
  const differ = (sentence: string) => (differences.length < limit ? differences.push(sentence) : more++);
  const [sourceCounts, targetCounts] = [noCounts(), noCounts()];

  for await (const meta of allMessages(source)) {
    sourceCounts.messages++;
    sourceCounts.messageBytes += meta.size;
    const copy = await target.getMessage(meta.id);
    if (!copy) differ(`message ${meta.id} is missing from the target`);
    else if (copy.size !== meta.size) differ(`message ${meta.id} has ${copy.size} bytes in the target, ${meta.size} in the source`);
  }
  for await (const meta of allMessages(target)) {
    targetCounts.messages++;
    targetCounts.messageBytes += meta.size;
  }

  const targetQuarantine = new Map((await target.listQuarantine()).map((r) => [r.id, r]));
  const sourceQuarantine = await source.listQuarantine();
  for (const record of sourceQuarantine) {
    const copy = targetQuarantine.get(record.id);
    if (!copy) differ(`quarantined attachment ${record.id} is missing from the target`);
    else if (copy.storedBytes !== record.storedBytes) {
      differ(`quarantined attachment ${record.id} has ${copy.storedBytes} bytes in the target, ${record.storedBytes} in the source`);
    }
  }
  sourceCounts.quarantined = sourceQuarantine.length;
  targetCounts.quarantined = targetQuarantine.size;

  for (const [counts, store] of [
    [sourceCounts, source],
    [targetCounts, target],
  ] as const) {
    counts.queue = (await store.listQueue()).length;
    counts.aliasStates = Object.keys(await store.listAliasStates()).length;
    counts.fetched = await countOf(store.listFetched());
    counts.tokenCaches = await countOf(store.listTokenCaches());
    counts.autoReplies = await countOf(store.listAutoReplies());
    counts.audit = await countOf(allAudit(store));
  }
  for (const key of Object.keys(sourceCounts) as (keyof StoreCounts)[]) {
    if (sourceCounts[key] !== targetCounts[key]) differ(`${COUNT_NAMES[key]}: ${sourceCounts[key]} in the source, ${targetCounts[key]} in the target`);
  }
  return { source: sourceCounts, target: targetCounts, differences, more };
}

/** How each count reads in a sentence. */
export const COUNT_NAMES: Readonly<Record<keyof StoreCounts, string>> = {
  messages: 'messages',
  messageBytes: 'bytes of messages',
  quarantined: 'quarantined attachments',
  queue: 'queue entries',
  aliasStates: 'alias states',
  fetched: 'fetched keys',
  tokenCaches: 'token caches',
  autoReplies: 'auto-replies',
  audit: 'audit entries',
};

async function hasAny(items: AsyncIterable<unknown>): Promise<boolean> {
  for await (const _ of items) return true;
  return false;
}

async function countOf(items: AsyncIterable<unknown>): Promise<number> {
  let n = 0;
  for await (const _ of items) n++;
  return n;
}

/** Runs WORK on each item with at most LIMIT at once, in order of the items; rejects with the first failure once those started have settled. */
async function inFlight<T>(items: AsyncIterable<T> | Iterable<T>, limit: number, work: (item: T) => Promise<void>): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: { err: unknown } | undefined;
  for await (const item of items) {
    if (failure) break;
    const p: Promise<void> = work(item).then(
      () => void running.delete(p),
      (err: unknown) => {
        running.delete(p);
        failure ??= { err };
      },
    );
    running.add(p);
    if (running.size >= limit) await Promise.race(running);
  }
  await Promise.all(running);
  if (failure) throw failure.err;
}
