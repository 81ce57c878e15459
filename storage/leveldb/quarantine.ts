/**
 * Quarantined attachments on LevelDB: records in the `quarantine` sublevel (`<message id>.<n>`),
 * the original part's bytes in `quarantineChunks` (see layout.ts and quarantine-spool.ts).
 * The attachments stage writes them with the message (a `quarantine` side record); these list,
 * read and delete them for LevelStore (Cisco guide: "Viewing / Deleting Blocked Attachments").
 */
import { Readable } from 'node:stream';
import type { QuarantineRecord } from '../records.js';
import { storeErrors } from '../../lib/errors.js';
import type { StoreOp, Sublevels } from './layout.js';
import { quarantineRange } from './layout.js';
import { quarantineChunkRange } from './quarantine-spool.js';

/** Quarantined attachments, newest message first; only one message's with `messageId`. */
export function listQuarantine(sublevels: Sublevels, opts: { messageId?: string } = {}): Promise<QuarantineRecord[]> {
  const range = opts.messageId ? quarantineRange(opts.messageId) : {};
  return sublevels.quarantine.values({ ...range, reverse: true }).all();
}

/** The original part's bytes (raw header block and encoded body, as received). */
export function openQuarantined(sublevels: Sublevels, id: string): Readable {
  async function* bytes(): AsyncGenerator<Buffer> {
    if (!(await sublevels.quarantine.get(id))) throw storeErrors.quarantineNotFound(id);
    for await (const chunk of sublevels.quarantineChunks.values(quarantineChunkRange(id))) yield chunk;
  }
  return Readable.from(bytes(), { objectMode: false });
}

/**
 * Removes a quarantined attachment for good: the record in a synced write (through `commit`),
 * then its bytes. The placeholder text stays in the message.
 */
export async function deleteQuarantined(sublevels: Sublevels, commit: (ops: StoreOp[]) => Promise<void>, id: string): Promise<QuarantineRecord> {
  const record = await sublevels.quarantine.get(id);
  if (!record) throw storeErrors.quarantineNotFound(id);
  await commit([{ type: 'del', sublevel: sublevels.quarantine, key: id }]);
  await sublevels.quarantineChunks.clear(quarantineChunkRange(id));
  return record;
}
