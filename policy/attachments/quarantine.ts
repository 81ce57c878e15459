/**
 * Quarantined attachments as the attachments stage sees them: the decoded file (what
 * `quarantine export` writes) and restoring one into its message, byte for byte as received
 * (Cisco guide: "Restoring Blocked Attachments").
 */
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Joiner, Splitter, type SplitterChunk } from '@zone-eu/mailsplit';
import type { Store } from '../../storage/store.js';
import type { QuarantineRecord } from '../../storage/records.js';
import { storeErrors } from '../../lib/errors.js';
import { SummaryCollector, attachmentFileNames } from '../chain/summary.js';
import { ChunkStage, StageChain } from '../chain/stage-chain.js';
import { bodyDecoder, type BodyDecoder } from '../mime/transfer-decode.js';

/** The attachment's decoded content (the file as the sender attached it), transfer encoding undone. */
export function openQuarantinedContent(store: Store, id: string): Readable {
  async function* content(): AsyncGenerator<Buffer> {
    const splitter = new Splitter({ ignoreEmbedded: true });
    const source = store.openQuarantined(id);
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

/**
 * Puts a quarantined attachment back into its message, byte for byte as received, in place
 * of the text part that replaced it. The message's new bytes are swapped in at once with its
 * metadata updated and the quarantine record removed (storage/store.ts MessageRewrite).
 */
export async function restoreQuarantined(store: Store, id: string): Promise<QuarantineRecord> {
  const record = await store.getQuarantined(id);
  if (!record) throw storeErrors.quarantineNotFound(id);
  const meta = await store.getMessage(record.messageId);
  if (!meta) throw storeErrors.messageNotFound(record.messageId, id);
  const writer = await store.rewriteMessage(record.messageId);
  const summary = new SummaryCollector();
  const replacer = new PlaceholderReplacer(store, id);
  try {
    const stages = new StageChain([
      { name: 'restore', handler: replacer },
      { name: 'summary', handler: summary },
    ]);
    await pipeline([store.openRaw(record.messageId), new Splitter(), stages, new Joiner(), writer]);
    if (!replacer.replaced) throw storeErrors.quarantinePlaceNotFound(record.messageId, id);
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
  await writer.commit(updated, { restoredQuarantineId: id });
  return record;
}

/**
 * Passes the message through, except the part whose quarantine-id header names `qid`: that
 * node and its body give way to the original part, re-split so the summary sees it.
 */
class PlaceholderReplacer extends ChunkStage {
  replaced = false;
  #skipping: object | undefined;

  readonly #store: Store;
  readonly #qid: string;

  constructor(store: Store, qid: string) {
    super();
    this.#store = store;
    this.#qid = qid;
  }

  protected transform(chunk: SplitterChunk): void | Promise<void> {
    if (chunk.type === 'body' && chunk.node === this.#skipping) return;
    this.#skipping = undefined;
    if (chunk.type === 'node' && !this.replaced && chunk.headers && chunk.headers.getFirst('x-mailgate-quarantine-id') === this.#qid) {
      this.replaced = true;
      this.#skipping = chunk;
      return this.#original(chunk);
    }
    this.push(chunk);
  }

  async #original(placeholder: SplitterChunk & { type: 'node' }): Promise<void> {
    // As a part of its own it parses as a root node; give it the placeholder's place in the tree.
    const splitter = new Splitter({ ignoreEmbedded: true });
    const source = this.#store.openQuarantined(this.#qid);
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
