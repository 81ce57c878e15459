/**
 * Quarantined attachments: records in the `quarantine` sublevel (`<message id>.<n>`), the
 * original part's bytes in `quarantineChunks` (see layout.ts and quarantine-spool.ts). The
 * attachments stage writes them, and ingest for the original of a wrapping message that the
 * rules block (`original-message.eml`, the part that would have carried it); these functions
 * list, read, delete and restore them (Cisco guide: "Viewing / Restoring / Deleting Blocked
 * Attachments").
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Joiner, Splitter, type SplitterChunk } from '@zone-eu/mailsplit';
import type { Store, StoreOp } from './store.js';
import { MailgateError } from '../gateway/errors.js';
import { SummaryCollector, attachmentFileNames } from '../policy/summary.js';
import { quarantineChunkRange } from './quarantine-spool.js';
import { ChunkStage, StageChain } from '../policy/stage-chain.js';
import { RewriteWriter } from './message-rewrite.js';
import { bodyDecoder, type BodyDecoder } from '../policy/transfer-decode.js';

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

const notFound = (id: string) => new MailgateError('QUARANTINE_NOT_FOUND', 550, '5.0.0', `No quarantined attachment with id ${id}`);

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
    if (!(await getQuarantined(store, id))) throw notFound(id);
    for await (const chunk of store.sublevels.quarantineChunks.values(quarantineChunkRange(id))) yield chunk;
  }
  return Readable.from(bytes(), { objectMode: false });
}

/** The attachment's decoded content (the file as the sender attached it), transfer encoding undone. */
export function openQuarantinedContent(store: Store, id: string): Readable {
  async function* content(): AsyncGenerator<Buffer> {
    const splitter = new Splitter({ ignoreEmbedded: true });
    const source = openQuarantined(store, id);
    source.once('error', (err) => splitter.destroy(err));
    source.pipe(splitter);
    let decoder: BodyDecoder | undefined;
    for await (const chunk of splitter as AsyncIterable<SplitterChunk>) {
      if (chunk.type === 'node') decoder ??= bodyDecoder(chunk);
      else if (chunk.type === 'body' && decoder) yield decoder.push(chunk.value);
    }
    if (decoder) yield decoder.end();
  }
  return Readable.from(content(), { objectMode: false });
}

/** Removes a quarantined attachment for good. The placeholder text stays in the message. */
export async function deleteQuarantined(store: Store, id: string): Promise<QuarantineRecord> {
  const record = await getQuarantined(store, id);
  if (!record) throw notFound(id);
  await store.commitBatch([{ type: 'del', sublevel: store.sublevels.quarantine, key: id }]);
  await store.sublevels.quarantineChunks.clear(quarantineChunkRange(id));
  return record;
}

/**
 * Puts a quarantined attachment back into its message, byte for byte as received, in place
 * of the text part that replaced it. The message is rewritten as a new generation of chunks
 * and swapped in with one synced batch (layout.ts), with its metadata updated and the
 * quarantine record removed.
 */
export async function restoreQuarantined(store: Store, id: string): Promise<QuarantineRecord> {
  const record = await getQuarantined(store, id);
  if (!record) throw notFound(id);
  const meta = await store.getMessage(record.messageId);
  if (!meta) throw new MailgateError('MESSAGE_NOT_FOUND', 550, '5.0.0', `The message ${record.messageId} of quarantined attachment ${id} is gone`);
  const writer = await RewriteWriter.start(store, record.messageId);
  const summary = new SummaryCollector();
  const replacer = new PlaceholderReplacer(store, id);
  try {
    const stages = new StageChain([
      { name: 'restore', handler: replacer },
      { name: 'summary', handler: summary },
    ]);
    await pipeline([store.openRaw(record.messageId), new Splitter(), stages, new Joiner(), writer]);
    if (!replacer.replaced) throw new MailgateError('QUARANTINE_PLACE_NOT_FOUND', 550, '5.0.0', `Message ${record.messageId} has no placeholder for ${id}`);
  } catch (err) {
    await writer.abandon();
    throw err;
  }
  const findings = { ...meta.findings };
  const stage = findings['attachments'];
  if (stage)
    findings['attachments'] = { ...stage, summary: [...stage.summary, `"${record.fileName}" restored from quarantine ${id} on ${new Date().toISOString()}.`] };
  const updated = {
    ...meta,
    size: writer.bytesWritten,
    attachments: summary.summary.attachments,
    _AttachmentFileNames: attachmentFileNames(summary.summary.attachments),
    findings,
  };
  const ops: StoreOp[] = [{ type: 'del', sublevel: store.sublevels.quarantine, key: id }];
  await writer.commit(updated, ops, id);
  return record;
}

/**
 * Passes the message through, except the part whose quarantine-id header names `qid`: that
 * node and its body give way to the original part, re-split so the summary sees it.
 */
class PlaceholderReplacer extends ChunkStage {
  replaced = false;
  #skipping: object | undefined;

  constructor(
    private readonly store: Store,
    private readonly qid: string,
  ) {
    super();
  }

  protected transform(chunk: SplitterChunk): void | Promise<void> {
    if (chunk.type === 'body' && chunk.node === this.#skipping) return;
    this.#skipping = undefined;
    if (chunk.type === 'node' && !this.replaced && chunk.headers && chunk.headers.getFirst('x-mailgate-quarantine-id') === this.qid) {
      this.replaced = true;
      this.#skipping = chunk;
      return this.#original(chunk);
    }
    this.push(chunk);
  }

  async #original(placeholder: SplitterChunk & { type: 'node' }): Promise<void> {
    // As a part of its own it parses as a root node; give it the placeholder's place in the tree.
    const splitter = new Splitter({ ignoreEmbedded: true });
    const source = openQuarantined(this.store, this.qid);
    source.pipe(splitter);
    source.once('error', (err) => splitter.destroy(err));
    for await (const chunk of splitter as AsyncIterable<SplitterChunk>) {
      if (chunk.type === 'node') {
        chunk.root = placeholder.root;
        chunk.parentNode = placeholder.parentNode;
      }
      await this.push(chunk);
    }
  }
}
