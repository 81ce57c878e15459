/**
 * The filters of a message search (storage/store.ts ListOptions) that no index answers: tag,
 * text, attachments, wrapped. Every store checks them message by message the same way, so
 * they are written once here; the time range, the alias and the paging bound are each
 * store's own (key ranges in LevelDB, a WHERE clause in PostgreSQL).
 */
import type { MessageMeta } from './records.js';
import type { ListOptions } from './store.js';

/**
 * Whether `meta` passes the filters of `opts` that an index cannot answer (tag, text,
 * attachments, wrapped): every store checks these the same way.
 */
export function matchesContent(meta: MessageMeta, opts: ListOptions): boolean {
  if (opts.tag !== undefined && !meta.tags.includes(opts.tag)) return false;
  if (opts.thread !== undefined && meta.conversation !== opts.thread) return false;
  if (opts.hasAttachment !== undefined && meta.attachments.length > 0 !== opts.hasAttachment) return false;
  if (opts.wrapped !== undefined && (meta._WrappingMessageReason !== undefined) !== opts.wrapped) return false;
  if (opts.text !== undefined) {
    const wanted = opts.text.toLowerCase();
    const fields = [meta.subject ?? '', meta.from ?? '', ...meta.to];
    if (!fields.some((f) => f.toLowerCase().includes(wanted))) return false;
  }
  return true;
}

/** Whether `opts` has a filter that {@link matchesContent} must check message by message. */
export function filtersContent(opts: ListOptions): boolean {
  return opts.tag !== undefined || opts.thread !== undefined || opts.text !== undefined || opts.hasAttachment !== undefined || opts.wrapped !== undefined;
}
