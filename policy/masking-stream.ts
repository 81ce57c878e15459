/**
 * The streams behind the masking stage: `MaskingStream` masks the bytes of one text through a
 * charset codec, and `MaskingTransform` walks the mailsplit chunks of a message, masks the
 * subject and runs each text/plain and text/html part through
 * transfer decoder -> [charset decoder] -> MaskingStream -> transfer encoder,
 * so a number split by a quoted-printable soft line break or by a chunk boundary is seen
 * whole. An attached message that mailsplit left whole (message/rfc822 not marked inline) is
 * split and masked the same way, inside its part. Nothing holds a part: each body chunk is
 * written through before the next is taken.
 */
import { Transform, Writable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import libmime from 'libmime';
import { Joiner, Splitter, type MimeNode, type SplitterChunk } from '@zone-eu/mailsplit';
import type { MaskingPattern } from './masking-patterns.js';
import { rawByteCodec, utf8Codec, type CharsetPlan, type TextCodec } from './masking-charsets.js';
import { HtmlMasker, TextMasker, maskWhole, type MaskCounts, type Masker } from './text-masker.js';

/** Bytes in, masked bytes out, in the codec's charset. */
export class MaskingStream extends Transform {
  constructor(
    private readonly codec: TextCodec,
    private readonly masker: Masker,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      const out = this.codec.encode(this.masker.write(this.codec.decode(chunk)));
      done(null, out.length ? out : undefined);
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      const out = this.codec.encode(this.masker.write(this.codec.end()) + this.masker.end());
      done(null, out.length ? out : undefined);
    } catch (err) {
      done(err as Error);
    }
  }
}

/** A part whose body was rewritten in another charset than it came in. */
export interface CharsetChange {
  part: string;
  from: string;
  to: string;
}

interface OpenPart {
  node: MimeNode;
  input: Writable;
  finished: Promise<void>;
  lastByte: number;
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

/** The masking stage's Transform over mailsplit chunks. */
export class MaskingTransform extends Transform {
  readonly counts: MaskCounts = {};
  private readonly depth: number = 0;
  textParts = 0;
  subjectMasked = false;
  readonly charsetChanges: CharsetChange[] = [];
  private part: OpenPart | undefined;

  constructor(
    private readonly patterns: readonly MaskingPattern[],
    private readonly window: number,
    private readonly planCharset: (charset: string | false) => CharsetPlan,
    private readonly onEnd: (result: MaskingTransform) => void,
    /** Set for an attached message: counts are shared with the outer message, depth limits nesting. */
    nested?: { counts: MaskCounts; depth: number },
  ) {
    super({ objectMode: true });
    if (nested) {
      this.counts = nested.counts;
      this.depth = nested.depth;
    }
  }

  override _transform(chunk: SplitterChunk, _enc: BufferEncoding, done: TransformCallback): void {
    this.handle(chunk).then(() => done(), done);
  }

  override _flush(done: TransformCallback): void {
    this.endPart().then(() => {
      this.onEnd(this);
      done();
    }, done);
  }

  private async handle(chunk: SplitterChunk): Promise<void> {
    const part = this.part;
    if (part && chunk.type === 'body' && chunk.node === part.node) {
      try {
        await new Promise<void>((resolve, reject) => part.input.write(chunk.value, (err) => (err ? reject(err) : resolve())));
      } catch (err) {
        // The write failed because a stream of the part failed: report that stream's error.
        await part.finished;
        throw err;
      }
      return;
    }
    await this.endPart();
    if (chunk.type !== 'node') {
      this.push(chunk);
      return;
    }
    if (!chunk.parentNode || chunk.parentNode.rfc822) this.maskSubject(chunk);
    if (!chunk.multipart && (chunk.contentType === 'text/plain' || chunk.contentType === 'text/html')) this.openPart(chunk, this.textStreams(chunk));
    // mailsplit splits an attached message only when it is inline: the others arrive as one body.
    else if (chunk.contentType === 'message/rfc822' && chunk.messageNode === false) this.openPart(chunk, this.messageStreams(chunk));
    else this.push(chunk);
  }

  private maskSubject(node: MimeNode): void {
    if (!node.headers) return;
    const headers = node.headers;
    for (const key of subjectHeaders) {
      headers.get(key).forEach((line, i) => {
        const raw = line.slice(line.indexOf(':') + 1).replace(/\r?\n(?=[ \t])/g, '');
        let text: string;
        try {
          text = libmime.decodeWords(raw).trim();
        } catch {
          text = raw.trim();
        }
        const masked = maskWhole(text, this.patterns, this.counts);
        if (masked === text) return;
        if (key === 'Subject') this.subjectMasked = true;
        // Encoded words are written in UTF-8 whatever charset they came in: each carries its own.
        const value = /^[\x20-\x7e]*$/.test(masked) ? masked : libmime.encodeWords(masked, /=\?[^?]*\?B\?/i.test(raw) ? 'B' : 'Q', 52);
        headers.update(key, value, i);
      });
    }
  }

  /** Decoded text -> masked text, in the part's charset (or UTF-8, see masking-charsets.ts). */
  private textStreams(node: MimeNode): { streams: Transform[]; encoding: string | false } {
    this.textParts++;
    const plan = this.planCharset(node.charset);
    const streams: Transform[] = [];
    let codec: TextCodec;
    let encoding: string | false = false;
    if (plan.kind === 'to-utf8') {
      streams.push(libmime.createDecodeStream(plan.charset));
      codec = utf8Codec();
      this.charsetChanges.push({ part: partLabel(node), from: plan.charset, to: 'UTF-8' });
      node.setCharset('utf-8');
      // UTF-8 does not fit in 7bit: such a part becomes quoted-printable.
      if (!eightBitSafe.has(node.encoding || '')) encoding = 'quoted-printable';
    } else {
      codec = plan.codec();
    }
    const text = new TextMasker(this.patterns, this.counts, this.window);
    streams.push(new MaskingStream(codec, node.contentType === 'text/html' ? new HtmlMasker(text) : text));
    return { streams, encoding };
  }

  /**
   * An attached message is split and masked like the outer one. Beyond `maxNesting` levels
   * its bytes are masked as raw text instead (ASCII only, nothing decoded).
   */
  private messageStreams(node: MimeNode): { streams: Transform[]; encoding: false } {
    if (this.depth >= maxNesting) {
      return { streams: [new MaskingStream(rawByteCodec(), new TextMasker(this.patterns, this.counts, this.window))], encoding: false };
    }
    const label = partLabel(node);
    const inner = new MaskingTransform(this.patterns, this.window, this.planCharset, (child) => {
      this.textParts += child.textParts;
      for (const c of child.charsetChanges) this.charsetChanges.push({ ...c, part: `${label}.${c.part}` });
    }, { counts: this.counts, depth: this.depth + 1 });
    // mailsplit types its streams narrower than Transform; they are Transforms.
    return { streams: [new Splitter() as unknown as Transform, inner, new Joiner() as unknown as Transform], encoding: false };
  }

  private openPart(node: MimeNode, body: { streams: Transform[]; encoding: string | false }): void {
    const streams: Transform[] = [node.getDecoder() as Transform, ...body.streams, node.getEncoder(body.encoding) as Transform];
    // Headers are final now (charset, transfer encoding): the Joiner writes them on sight.
    this.push(node);
    const open: OpenPart = { node, input: streams[0]!, finished: Promise.resolve(), lastByte: -1 };
    const sink = new Writable({
      write: (value: Buffer, _enc, cb) => {
        open.lastByte = value[value.length - 1]!;
        this.push({ node, type: 'body', value });
        cb();
      },
    });
    open.finished = pipeline([...streams, sink]);
    // Awaited in endPart; this keeps an early failure from counting as unhandled meanwhile.
    open.finished.catch(() => undefined);
    this.part = open;
  }

  private async endPart(): Promise<void> {
    const part = this.part;
    if (!part) return;
    this.part = undefined;
    part.input.end();
    await part.finished;
    // A message that is one text part ends with its body: keep the final line break.
    if (!part.node.parentNode && part.lastByte !== 0x0a) this.push({ node: part.node, type: 'body', value: Buffer.from('\r\n') });
  }
}
