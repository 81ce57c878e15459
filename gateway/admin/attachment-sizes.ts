/**
 * The decoded size of each attachment of a stored message (the file as the sender attached
 * it, which is what `quarantine list` gives for a blocked one). The metadata keeps the encoded
 * part's size only: the attachments stage lets an allowed attachment through undecoded once
 * its first bytes are judged, and decoding every one at ingest would cost every message what
 * one `messages show` costs here.
 */
import type { Readable } from 'node:stream';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Splitter, type SplitterChunk } from '@zone-eu/mailsplit';
import { SummaryCollector } from '../../policy/chain/summary.js';
import { ChunkStage, StageChain } from '../../policy/chain/stage-chain.js';
import { bodyDecoder, type BodyDecoder } from '../../policy/mime/transfer-decode.js';
import { QUARANTINE_ID_HEADER } from '../../policy/attachments/stage.js';

/** One attachment as read back from the stored bytes. */
export interface StoredAttachment {
  /** Bytes of decoded content; absent for a blocked one (its part is the notice that replaced it). */
  decodedSize?: number;
  /** A blocked attachment's quarantine id, as its notice names it. */
  quarantineId?: string;
}

/**
 * The attachments of the message `raw` holds, in the order of its metadata's `attachments`:
 * the summary collector that wrote that list decides here too which parts are attachments.
 */
export async function storedAttachments(raw: Readable): Promise<StoredAttachment[]> {
  const summary = new SummaryCollector();
  const sizes = new DecodedSizes(summary);
  const chain = new StageChain([
    { name: 'summary', handler: summary },
    { name: 'sizes', handler: sizes },
  ]);
  const discard = new Writable({ objectMode: true, write: (_chunk, _enc, done) => done() });
  await pipeline(raw, new Splitter(), chain, discard);
  return sizes.found;
}

/** Decodes the body of each part the summary collector (the stage before) took for an attachment, counting the bytes. */
class DecodedSizes extends ChunkStage {
  readonly found: StoredAttachment[] = [];
  #open: { entry: StoredAttachment & { decodedSize: number }; decoder: BodyDecoder } | undefined;

  readonly #summary: SummaryCollector;

  constructor(summary: SummaryCollector) {
    super();
    this.#summary = summary;
  }

  protected transform(chunk: SplitterChunk): void {
    if (chunk.type === 'node') {
      this.#close();
      const listed = this.#summary.summary.attachments;
      if (listed.length > this.found.length) {
        if (listed[listed.length - 1]!.blocked) {
          const qid = chunk.headers ? chunk.headers.getFirst(QUARANTINE_ID_HEADER.toLowerCase()) : '';
          this.found.push(qid ? { quarantineId: qid } : {});
        } else {
          const entry = { decodedSize: 0 };
          this.found.push(entry);
          this.#open = { entry, decoder: bodyDecoder(chunk) };
        }
      }
    } else if (chunk.type === 'body' && this.#open) {
      this.#open.entry.decodedSize += this.#open.decoder.push(chunk.value).length;
    }
    this.push(chunk);
  }

  protected override flush(): void {
    this.#close();
  }

  #close(): void {
    if (!this.#open) return;
    this.#open.entry.decodedSize += this.#open.decoder.end().length;
    this.#open = undefined;
  }
}
