/**
 * The streams behind the masking stage: `MaskingStream` masks the bytes of one text through a
 * charset codec, and `MessageMasker` walks the mailsplit chunks of a message, masks the
 * subject and each text/plain and text/html part, so a number split by a quoted-printable
 * soft line break or by a chunk boundary is seen whole. A part kept in its charset is masked
 * by function calls (part.ts) and passed through as it came when nothing in it is
 * masked; a part turned into UTF-8 goes through
 * transfer decoder -> charset decoder -> MaskingStream -> transfer encoder.
 * An attached message that mailsplit left whole (message/rfc822 not marked inline) is split
 * and masked the same way, inside its part. No part is held whole: at most 256 KiB of one
 * while nothing in it is masked.
 */
import { Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import libmime from 'libmime';
import { Joiner, Splitter, type MimeNode, type SplitterChunk } from '@zone-eu/mailsplit';
import type { MaskingPattern } from './patterns.js';
import { rawByteCodec, utf8Codec, type CharsetPlan, type TextCodec } from './charsets.js';
import { TextPartMasking, type PartBody } from './part.js';
import { RawMessageMasker } from './raw.js';
import { HtmlMasker, TextMasker, isHighSurrogate, maskInSlices, maskWhole, type MaskCounts, type Masker } from './text-masker.js';
import { HEADER_READ_LIMIT, decodedWhole } from '../mime/header-text.js';
import { ContentFieldGuard } from '../mime/content-field-guard.js';
import { ChunkStage, StageChain } from '../chain/stage-chain.js';
import { QuotedPrintableDecodeStream } from '../mime/transfer-decode.js';

/**
 * Bytes in, masked bytes out, in the codec's charset, a slice at a time (maskInSlices): for
 * parts turned into UTF-8 and for raw messages.
 */
export class MaskingStream extends Transform {
  readonly #codec: TextCodec;
  readonly #masker: Masker;

  constructor(codec: TextCodec, masker: Masker) {
    super();
    this.#codec = codec;
    this.#masker = masker;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    let text: string;
    try {
      text = this.#codec.decode(chunk);
    } catch (err) {
      return done(err as Error);
    }
    const put = (masked: string) => {
      const out = this.#codec.encode(masked);
      if (out.length) this.push(out);
    };
    maskInSlices(this.#masker, text, put).then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    try {
      const out = this.#codec.encode(this.#masker.write(this.#codec.end()) + this.#masker.end());
      done(null, out.length ? out : undefined);
    } catch (err) {
      done(err as Error);
    }
  }
}

/**
 * A message's raw bytes masked as text (raw.ts): for a message that could not be
 * parsed, and for an attached message nested too deep to split.
 */
export function rawMessageStream(patterns: readonly MaskingPattern[], counts: MaskCounts, window: number): MaskingStream {
  return new MaskingStream(rawByteCodec(), new RawMessageMasker(new TextMasker(patterns, counts, window)));
}

/** A part whose body was rewritten in another charset than it came in. */
export interface CharsetChange {
  part: string;
  from: string;
  to: string;
}

/** A part being masked: the node mailsplit gave, and how its body is masked. */
interface OpenPart {
  readonly node: MimeNode;
  readonly body: PartBody;
}

/** A part masked through a pipeline of streams: parts turned into UTF-8, attached messages. */
class StreamedBody implements PartBody {
  readonly reEncoded = true;
  lastByte = -1;
  readonly #input: Writable;
  readonly #finished: Promise<void>;

  constructor(streams: Transform[], out: (value: Buffer) => void) {
    const sink = new Writable({
      write: (value: Buffer, _enc, cb) => {
        this.lastByte = value[value.length - 1]!;
        out(value);
        cb();
      },
    });
    this.#input = streams[0]!;
    this.#finished = pipeline([...streams, sink]);
    // Awaited in end(); this keeps an early failure from counting as unhandled meanwhile.
    this.#finished.catch(() => undefined);
  }

  async write(raw: Buffer): Promise<void> {
    const written = new Promise<void>((resolve, reject) => this.#input.write(raw, (err) => (err ? reject(err) : resolve())));
    written.catch(() => undefined);
    try {
      // A write a stream of the part holds when that stream is destroyed is never called
      // back (a Transform waiting for its reader keeps the callback): the part's failure
      // ends the wait. An attached message with 1001 parts hung its message for good.
      await Promise.race([written, this.#finished]);
    } catch (err) {
      // The write failed because a stream of the part failed: report that stream's error.
      await this.#finished;
      throw err;
    }
  }

  async end(): Promise<void> {
    this.#input.end();
    await this.#finished;
  }
}

/** Headers that carry the subject: Outlook copies it into Thread-Topic. */
const subjectHeaders = ['Subject', 'Thread-Topic'];
/** Transfer encodings that carry any byte; a part turned into UTF-8 in another keeps it. */
const eightBitSafe = new Set(['base64', 'quoted-printable', '8bit', 'binary']);
/** Attached messages inside attached messages split and masked part by part, at most. */
const maxNesting = 8;

/** The IMAP-style number of a part (`1.2`); a message that is one part is `1`. */
function partLabel(node: MimeNode): string {
  return (node.partNr || []).filter((n) => typeof n === 'number').join('.') || '1';
}

/**
 * A masked subject as a header value: as it is when printable ASCII, else encoded words in
 * UTF-8 whatever charset it came in (each word carries its own). A huge one is encoded a
 * slice at a time, each slice its own run of encoded words, a turn of the event loop between.
 */
async function encodedValue(text: string, mode: 'B' | 'Q'): Promise<string> {
  if (/^[\x20-\x7e]*$/.test(text)) return text;
  if (text.length <= HEADER_READ_LIMIT) return libmime.encodeWords(text, mode, 52);
  const words: string[] = [];
  for (let at = 0; at < text.length;) {
    let end = Math.min(at + HEADER_READ_LIMIT, text.length);
    // Never cut a surrogate pair: its halves would be encoded apart.
    if (end < text.length && isHighSurrogate(text.charCodeAt(end - 1))) end--;
    words.push(libmime.encodeWord(text.slice(at, end), mode, 52));
    at = end;
    await new Promise((resolve) => setImmediate(resolve));
  }
  return words.join(' ');
}

/** The masking stage's handler of mailsplit chunks (stage-chain.ts). */
export class MessageMasker extends ChunkStage {
  readonly counts: MaskCounts = {};
  readonly #depth: number = 0;
  textParts = 0;
  subjectMasked = false;
  readonly charsetChanges: CharsetChange[] = [];
  #part: OpenPart | undefined;

  readonly #patterns: readonly MaskingPattern[];
  readonly #window: number;
  readonly #planCharset: (charset: string | false) => CharsetPlan;
  readonly #onEnd: (result: MessageMasker) => void;

  constructor(
    patterns: readonly MaskingPattern[],
    window: number,
    planCharset: (charset: string | false) => CharsetPlan,
    onEnd: (result: MessageMasker) => void,
    /** Set for an attached message: counts are shared with the outer message, depth limits nesting. */
    nested?: { counts: MaskCounts; depth: number },
  ) {
    super();
    this.#patterns = patterns;
    this.#window = window;
    this.#planCharset = planCharset;
    this.#onEnd = onEnd;
    if (nested) {
      this.counts = nested.counts;
      this.#depth = nested.depth;
    }
  }

  protected transform(chunk: SplitterChunk): void | Promise<void> {
    // Chunks outside the text parts (multipart boundaries, attachments' bodies) pass at once.
    if (!this.#part && chunk.type !== 'node') return void this.push(chunk);
    return this.#handle(chunk);
  }

  protected override async flush(): Promise<void> {
    await this.#endPart();
    this.#onEnd(this);
  }

  async #handle(chunk: SplitterChunk): Promise<void> {
    const part = this.#part;
    if (part && chunk.type === 'body' && chunk.node === part.node) {
      await part.body.write(chunk.value);
      return;
    }
    await this.#endPart();
    if (chunk.type !== 'node') {
      this.push(chunk);
      return;
    }
    if (!chunk.parentNode || chunk.parentNode.rfc822) await this.#maskSubject(chunk);
    if (!chunk.multipart && (chunk.contentType === 'text/plain' || chunk.contentType === 'text/html')) this.#openText(chunk);
    // mailsplit splits an attached message only when it is inline: the others arrive as one body.
    else if (chunk.contentType === 'message/rfc822' && chunk.messageNode === false) this.#openStreamed(chunk, this.#messageStreams(chunk));
    else this.push(chunk);
  }

  async #maskSubject(node: MimeNode): Promise<void> {
    if (!node.headers) return;
    const headers = node.headers;
    for (const key of subjectHeaders) {
      const lines = headers.get(key);
      for (let i = 0; i < lines.length; i++) {
        const line = lines[i]!;
        const raw = line.slice(line.indexOf(':') + 1).replace(/\r?\n(?=[ \t])/g, '');
        const text = (await decodedWhole(raw)).trim();
        const masked = text.length > HEADER_READ_LIMIT ? await this.#maskLong(text) : maskWhole(text, this.#patterns, this.counts);
        if (masked === text) continue;
        if (key === 'Subject') this.subjectMasked = true;
        headers.update(key, await encodedValue(masked, /=\?[^?]*\?B\?/i.test(raw) ? 'B' : 'Q'), i);
      }
    }
  }

  /** Masks a huge subject (all of a header section can be one) in slices, a turn of the event loop between them. */
  async #maskLong(text: string): Promise<string> {
    const masker = new TextMasker(this.#patterns, this.counts, this.#window);
    let out = '';
    for (let at = 0; at < text.length; at += HEADER_READ_LIMIT) {
      out += masker.write(text.slice(at, at + HEADER_READ_LIMIT));
      await new Promise((resolve) => setImmediate(resolve));
    }
    return out + masker.end();
  }

  /** A text part: masked in its charset by function calls, or turned into UTF-8 through streams (see charsets.ts). */
  #openText(node: MimeNode): void {
    this.textParts++;
    const plan = this.#planCharset(node.charset);
    const html = node.contentType === 'text/html';
    if (plan.kind === 'keep') {
      // Headers stay as they are: the Joiner may write them now.
      this.push(node);
      const settings = { node, html, codec: plan.codec, patterns: this.#patterns, window: this.#window, counts: this.counts };
      const body = new TextPartMasking(settings, (value) => this.push({ node, type: 'body', value }));
      this.#part = { node, body };
      return;
    }
    this.charsetChanges.push({ part: partLabel(node), from: plan.charset, to: 'UTF-8' });
    node.setCharset('utf-8');
    // UTF-8 does not fit in 7bit: such a part becomes quoted-printable.
    const encoding = eightBitSafe.has(node.encoding || '') ? false : 'quoted-printable';
    const text = new TextMasker(this.#patterns, this.counts, this.#window);
    const masker = new MaskingStream(utf8Codec(), html ? new HtmlMasker(text) : text);
    this.#openStreamed(node, { streams: [libmime.createDecodeStream(plan.charset), masker], encoding });
  }

  /**
   * An attached message is split and masked like the outer one. Beyond `maxNesting` levels
   * its bytes are masked as raw text instead (ASCII only, nothing decoded; raw.ts).
   */
  #messageStreams(node: MimeNode): { streams: Transform[]; encoding: false } {
    if (this.#depth >= maxNesting) {
      return { streams: [rawMessageStream(this.#patterns, this.counts, this.#window)], encoding: false };
    }
    const label = partLabel(node);
    const inner = new MessageMasker(
      this.#patterns,
      this.#window,
      this.#planCharset,
      (child) => {
        this.textParts += child.textParts;
        for (const c of child.charsetChanges) this.charsetChanges.push({ ...c, part: `${label}.${c.part}` });
      },
      { counts: this.counts, depth: this.#depth + 1 },
    );
    // mailsplit types its streams narrower than Transform; they are Transforms.
    const stages = new StageChain([{ name: 'masking', handler: inner }]);
    return { streams: [new ContentFieldGuard(), new Splitter() as unknown as Transform, stages, new Joiner() as unknown as Transform], encoding: false };
  }

  #openStreamed(node: MimeNode, body: { streams: Transform[]; encoding: string | false }): void {
    // libqp's decoder (mailsplit's for quoted-printable) holds the whole part: see transfer-decode.ts.
    const decoder = node.encoding === 'quoted-printable' ? new QuotedPrintableDecodeStream() : (node.getDecoder() as Transform);
    const streams: Transform[] = [decoder, ...body.streams, node.getEncoder(body.encoding) as Transform];
    // Headers are final now (charset, transfer encoding): the Joiner writes them on sight.
    this.push(node);
    this.#part = { node, body: new StreamedBody(streams, (value) => this.push({ node, type: 'body', value })) };
  }

  async #endPart(): Promise<void> {
    const part = this.#part;
    if (!part) return;
    this.#part = undefined;
    await part.body.end();
    // A message that is one text part ends with its body: keep the final line break of a
    // body written anew (one passed through ends as it came).
    if (!part.node.parentNode && part.body.reEncoded && part.body.lastByte !== 0x0a) this.push({ node: part.node, type: 'body', value: Buffer.from('\r\n') });
  }
}
