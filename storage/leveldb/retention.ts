/**
 * Deleting for good on LevelDB (the storage interface's retention methods): messages with
 * everything stored for them, old audit entries, and the compaction that gives their space
 * back. How a deletion survives a crash is in layout.ts; rewrites of a message and its deletion
 * take turns (message-rewrite.ts `lockMessage`).
 */
import type { MessageMeta } from '../records.js';
import type { DeletedMessages } from '../store.js';
import { storeErrors } from '../../lib/errors.js';
import { idFloor } from '../ids.js';
import { aliasKey, clearUnfinished, messageIdKey, quarantineRange, type RootDb, type StoreOp, type Sublevels } from './layout.js';
import { lockMessage } from './message-rewrite.js';
import type { LevelStore } from './store.js';

// Messages deleted per synced batch by a sweep: one sync per message would make a sweep of a
// year's mail as slow as taking it in.
const SWEEP_BATCH = 100;
// A character after every character of an id, a chunk key or a quarantine id: the end of a compaction range.
const AFTER_ANY_KEY = '~';

/**
 * The key ranges deletions emptied since the last compaction: message ids deleted (lowest and
 * highest; ids sort by time, so a sweep's are one range at the start) and audit ids below a bound.
 */
export class DeletedRanges {
  lowestId: string | undefined;
  highestId: string | undefined;
  auditBelow: string | undefined;

  addMessage(id: string): void {
    if (this.lowestId === undefined || id < this.lowestId) this.lowestId = id;
    if (this.highestId === undefined || id > this.highestId) this.highestId = id;
  }

  addAudit(below: string): void {
    if (this.auditBelow === undefined || below > this.auditBelow) this.auditBelow = below;
  }
}

/** What the deletions work on. */
interface Context {
  store: LevelStore;
  deleted: DeletedRanges;
}

/** Deletes message `id` (see Store.deleteMessage). */
export async function deleteMessage({ store, deleted }: Context, id: string): Promise<MessageMeta> {
  const release = await lockMessage(store, id);
  try {
    const { sublevels } = store;
    const meta = await sublevels.messages.get(id);
    if (!meta) throw storeErrors.messageNotFound(id);
    if (await sublevels.queue.has(id)) throw storeErrors.messageQueued(id);
    const quarantined = await sublevels.quarantine.keys(quarantineRange(id)).all();
    await store.commitBatch(deletionOps(sublevels, meta, quarantined));
    await clearDeleted(sublevels, [id], deleted);
    return meta;
  } finally {
    release();
  }
}

/** Deletes every message that arrived before `before`, but queued ones (see Store.deleteMessagesBefore). */
export async function deleteMessagesBefore({ store, deleted }: Context, before: Date, signal?: AbortSignal): Promise<DeletedMessages> {
  const { sublevels } = store;
  const done: DeletedMessages = { messages: 0, quarantined: 0, bytes: 0, queued: 0 };
  // Ids sort by arrival: the messages older than `before` are the keys below its floor.
  const below = idFloor(before);
  let after: string | undefined;
  for (;;) {
    if (signal?.aborted) return done;
    const page = await sublevels.messages.keys({ lt: below, ...(after !== undefined ? { gt: after } : {}), limit: SWEEP_BATCH }).all();
    if (page.length === 0) return done;
    after = page[page.length - 1];
    const releases = [];
    try {
      for (const id of page) releases.push(await lockMessage(store, id));
      const [metas, queued] = await Promise.all([sublevels.messages.getMany(page), sublevels.queue.getMany(page)]);
      const ops: StoreOp[] = [];
      const ids: string[] = [];
      for (const [i, id] of page.entries()) {
        const meta = metas[i];
        if (!meta) continue; // deleted meanwhile (`messages delete`)
        // Never a message still to be sent: it stays until it leaves the queue, then goes at a later sweep.
        if (queued[i]) {
          done.queued++;
          continue;
        }
        const quarantined = await sublevels.quarantine.keys(quarantineRange(id)).all();
        ops.push(...deletionOps(sublevels, meta, quarantined));
        ids.push(id);
        done.messages++;
        done.quarantined += quarantined.length;
        done.bytes += meta.size;
      }
      if (ops.length > 0) await store.commitBatch(ops);
      await clearDeleted(sublevels, ids, deleted);
    } finally {
      for (const release of releases) release();
    }
  }
}

/** Deletes the audit entries recorded before `before`; how many. */
export async function deleteAuditBefore({ store, deleted }: Context, before: Date): Promise<number> {
  const { audit } = store.sublevels;
  const below = idFloor(before);
  const ids = await audit.keys({ lt: below }).all();
  if (ids.length === 0) return 0;
  await store.commitBatch(ids.map((key) => ({ type: 'del', sublevel: audit, key })));
  deleted.addAudit(below);
  return ids.length;
}

/**
 * Compacts the key ranges deletions emptied since the last compaction, in every sublevel keyed
 * by message id (and the by-alias index, keyed by alias, whole: its keys are small), so LevelDB
 * drops the deleted values from its files instead of carrying them until it happens to
 * rewrite those files.
 */
export async function compactDeleted(db: RootDb, sublevels: Sublevels, deleted: DeletedRanges): Promise<void> {
  // classic-level has compactRange; `level`'s type, written for browsers too, does not say so.
  const compactRange = (db as unknown as { compactRange?: (start: string, end: string) => Promise<void> }).compactRange?.bind(db);
  if (!compactRange) return;
  const { lowestId, highestId, auditBelow } = deleted;
  deleted.lowestId = deleted.highestId = deleted.auditBelow = undefined;
  if (lowestId !== undefined && highestId !== undefined) {
    for (const sublevel of [sublevels.messages, sublevels.chunks, sublevels.generations, sublevels.quarantine, sublevels.quarantineChunks]) {
      await compactRange(sublevel.prefix + lowestId, sublevel.prefix + highestId + AFTER_ANY_KEY);
    }
    await compactRange(sublevels.byAlias.prefix, sublevels.byAlias.prefix + AFTER_ANY_KEY);
  }
  if (auditBelow !== undefined) await compactRange(sublevels.audit.prefix, sublevels.audit.prefix + auditBelow);
}

/** The synced batch of one deletion: the records go, the pending mark comes (layout.ts). Exported for LevelDB's own tests. */
export function deletionOps(sublevels: Sublevels, meta: MessageMeta, quarantined: readonly string[]): StoreOp[] {
  const { messages, byAlias, byMessageId, byConversation, generations, rewrites, quarantine, pending } = sublevels;
  const ops: StoreOp[] = [
    { type: 'del', sublevel: messages, key: meta.id },
    { type: 'del', sublevel: generations, key: meta.id },
    { type: 'del', sublevel: rewrites, key: meta.id },
    { type: 'put', sublevel: pending, key: meta.id, value: '' },
  ];
  if (meta.source.alias !== undefined) ops.push({ type: 'del', sublevel: byAlias, key: aliasKey(meta.source.alias, meta.id) });
  // The threading indexes (message-writer.ts writes them): a deleted message is no longer found by its Message-ID or conversation.
  const byId = messageIdKey(meta.messageId, meta.id);
  if (byId !== undefined) ops.push({ type: 'del', sublevel: byMessageId, key: byId });
  if (meta.conversation) ops.push({ type: 'del', sublevel: byConversation, key: aliasKey(meta.conversation, meta.id) });
  for (const key of quarantined) ops.push({ type: 'del', sublevel: quarantine, key });
  return ops;
}

/** After the batch: the bytes of the deleted messages (every generation, their quarantined parts), then their marks. */
async function clearDeleted(sublevels: Sublevels, ids: readonly string[], deleted: DeletedRanges): Promise<void> {
  for (const id of ids) {
    await clearUnfinished(sublevels, id);
    await sublevels.pending.del(id);
    deleted.addMessage(id);
  }
}
