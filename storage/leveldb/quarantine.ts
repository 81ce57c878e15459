/**
 * Quarantined attachments: records in the `quarantine` sublevel (`<message id>.<n>`), the
 * original part's bytes in `quarantineChunks` (see layout.ts and quarantine-spool.ts). The
 * attachments stage writes them, and ingest for the original of a wrapping message that the
 * rules block (`original-message.eml`, the part that would have carried it); these functions
 * list, read and delete them (Cisco guide: "Viewing / Deleting Blocked Attachments"); restoring
 * one into its message is the attachments stage's business (policy/attachments/quarantine.ts).
 */
import { Readable } from 'node:stream';
import type { Store } from './store.js';
import { storeErrors } from '../../lib/errors.js';
import { quarantineChunkRange } from './quarantine-spool.js';

/** One quarantined attachment. */
export interface QuarantineRecord {
  /** Quarantine id, `<message id>.<n>`. */
  id: string;
  /** The message the attachment was removed from. */
  messageId: string;
  /** The attachment's file name (normalised: invisible characters and trailing dots removed). */
  fileName: string;
  /** Its declared content type. */
  contentType: string;
  /** Size of the decoded attachment in bytes (what `quarantine export` writes). */
  size: number;
  /** Bytes kept: the part's raw header block and encoded body. */
  storedBytes: number;
  /** The rule that blocked it. */
  rule: string;
  /** What the stage found (names, sniffed type, archive entries). */
  evidence: string[];
  /** ISO 8601 time it was quarantined. */
  date: string;
  /** Department of the message, when known. */
  department?: string;
}

/** Quarantined attachments, newest message first; only one message's with `messageId`. */
export async function listQuarantine(store: Store, opts: { messageId?: string } = {}): Promise<QuarantineRecord[]> {
  const q = store.sublevels.quarantine;
  const range = opts.messageId ? { gte: `${opts.messageId}.`, lt: `${opts.messageId}/` } : {};
  const records = (await q.values({ ...range, reverse: true }).all()) as QuarantineRecord[];
  return records;
}

/** One record, or undefined. */
export async function getQuarantined(store: Store, id: string): Promise<QuarantineRecord | undefined> {
  return (await store.sublevels.quarantine.get(id)) as QuarantineRecord | undefined;
}

/** The original part's bytes (raw header block and encoded body, as received). */
export function openQuarantined(store: Store, id: string): Readable {
  async function* bytes(): AsyncGenerator<Buffer> {
    if (!(await getQuarantined(store, id))) throw storeErrors.quarantineNotFound(id);
    for await (const chunk of store.sublevels.quarantineChunks.values(quarantineChunkRange(id))) yield chunk;
  }
  return Readable.from(bytes(), { objectMode: false });
}

/** Removes a quarantined attachment for good. The placeholder text stays in the message. */
export async function deleteQuarantined(store: Store, id: string): Promise<QuarantineRecord> {
  const record = await getQuarantined(store, id);
  if (!record) throw storeErrors.quarantineNotFound(id);
  await store.commitBatch([{ type: 'del', sublevel: store.sublevels.quarantine, key: id }]);
  await store.sublevels.quarantineChunks.clear(quarantineChunkRange(id));
  return record;
}
