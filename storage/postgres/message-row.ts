/**
 * A message's row in `messages`: its metadata as JSON and the columns the console, the CLI
 * and retention filter on, all taken from the metadata. PostgreSQL's text and JSONB cannot hold
 * a NUL character, which hostile mail can put in a decoded header: NULs become U+FFFD in the
 * stored metadata (the same look as any other undecodable byte), and a Message-ID with one is
 * not indexed, as LevelDB's index leaves it out.
 */
import type { MessageMeta } from '../records.js';

// As LevelDB's by-Message-ID index (storage/leveldb/layout.ts): longer ones are not indexed (and a btree entry must stay small).
const MAX_INDEXED_MESSAGE_ID = 500;

/** The values of the `messages` columns, in the order of {@link MESSAGE_COLUMNS}. */
export type MessageRow = [
  id: string,
  receivedAt: string,
  alias: string | null,
  sourceKind: string,
  messageId: string | null,
  conversation: string | null,
  tags: string[],
  size: number,
  meta: string,
];

/** The columns a row fills, for INSERT and UPDATE. */
export const MESSAGE_COLUMNS = ['id', 'received_at', 'alias', 'source_kind', 'message_id', 'conversation', 'tags', 'size', 'meta'] as const;

/** The row of META (already carrying the stored size). Throws TypeError for an alias with NUL (LevelDB refuses it too). */
export function messageRow(meta: MessageMeta): MessageRow {
  if (meta.source.alias?.includes('\x00')) throw new TypeError(`message ${meta.id}: alias contains NUL`);
  let json = JSON.stringify(meta);
  // Rare: only then pay for the replacer's walk over every value.
  if (json.includes('\\u0000')) json = JSON.stringify(meta, (_key, value: unknown) => (typeof value === 'string' ? value.replaceAll('\x00', '\ufffd') : value));
  const clean = (s: string) => s.replaceAll('\x00', '\ufffd');
  return [
    meta.id,
    meta.receivedAt,
    meta.source.alias ?? null,
    clean(meta.source.kind),
    indexedMessageId(meta.messageId) ?? null,
    meta.conversation && !meta.conversation.includes('\x00') ? meta.conversation : null,
    meta.tags.map(clean),
    meta.size,
    json,
  ];
}

/** The Message-ID as the index holds it, or undefined when it is not indexed. */
export function indexedMessageId(messageId: string | undefined): string | undefined {
  if (!messageId || messageId.length > MAX_INDEXED_MESSAGE_ID || messageId.includes('\x00')) return undefined;
  return messageId;
}

/** Whether S can be looked up at all (PostgreSQL text holds no NUL: such an id or key names nothing stored). */
export function storable(s: string): boolean {
  return !s.includes('\x00');
}
