/**
 * Synchronous, incremental Content-Transfer-Encoding decoders (RFC 2045 sections 6.7, 6.8),
 * so a stage can look at decoded bytes chunk by chunk without the asynchronous hand-offs of a
 * decoder stream. They give the very bytes mailsplit's decoder streams give (libbase64, and
 * libqp read chunk by chunk), so what a stage judges or masks is what a mail client decodes.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** Decodes one part's body, chunk by chunk. */
export interface BodyDecoder {
  /** Decoded bytes of this chunk (may hold back a few bytes for the next). */
  push(chunk: Buffer): Buffer;
  /** Whatever was held back, at the end of the body. */
  end(): Buffer;
}

/**
 * A decoder for the part's transfer encoding, giving the very bytes mailsplit's (and so
 * mailparser's and the Joiner's) decoders give: what the attachments stage sniffs must be what
 * a mail client will open. A lenient decoder of our own that dropped `=` read base64 padded
 * line by line as garbage, where libbase64 decodes each padded run: content sniffing could be
 * passed that way. Anything but base64 and quoted-printable passes through.
 */
export function bodyDecoder(encoding: string | false): BodyDecoder {
  return mailsplitBodyDecoder(encoding ? encoding.toLowerCase() : false);
}

/** Raw text the stream decoder holds back at most, waiting to see what follows it. */
const QP_HELD = 64 * 1024;
const isBlank = (code: number) => code === 0x20 || code === 0x09;
function isHex(c: number | undefined): boolean {
  return c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));
}
// A hex digit's value ("A" and "a" alike), for a character isHex accepted.
const hexValue = (c: number) => (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57);

/**
 * Quoted-printable decoding as libqp decodes (mailsplit's `getDecoder()`), chunk by chunk,
 * holding at most 64 KiB: libqp's own Decoder keeps the whole part and decodes it when the
 * part ends, so a 20 MB part sat in memory and then held the event loop for one long decode (a
 * 1 MiB line: 35 ms). The same two passes, on as much as is settled: white space at the end of
 * a line removed (RFC 2045 6.7 rule 3) and soft line breaks joined, then `=XX` escapes.
 * Held back until more arrives: an escape or soft line break cut by the chunk boundary, and
 * white space a line end would remove. Past 64 KiB of that (a line of nothing but blanks and
 * `=`), the start of it is decoded as it stands.
 */
export class QuotedPrintableBodyDecoder implements BodyDecoder {
  /** Raw input not yet settled. */
  #raw = '';
  /** Text after the first pass whose escape is cut in two ("=" or "=X" at its end). */
  #joined = '';

  push(chunk: Buffer): Buffer {
    const data = this.#raw + chunk.toString('latin1');
    let cut = data.length;
    for (let before = -1; cut !== before && data.length - cut <= QP_HELD; ) {
      before = cut;
      // A CR may be the first half of the line end that makes "= \r\n" a soft line break.
      if (data.charCodeAt(cut - 1) === 0x0d) cut--;
      while (cut > 0 && isBlank(data.charCodeAt(cut - 1))) cut--;
      const eq = data.lastIndexOf('=', cut - 1);
      if (eq >= 0 && cut - eq < 3) cut = eq;
    }
    cut = Math.max(cut, data.length - QP_HELD);
    this.#raw = data.slice(cut);
    return this.#decode(data.slice(0, cut), false);
  }

  end(): Buffer {
    const out = this.#decode(this.#raw, true);
    this.#raw = '';
    return out;
  }

  #decode(text: string, final: boolean): Buffer {
    const joined =
      this.#joined +
      text
        // A line's trailing white space; the lead group keeps the regex linear (as libqp's).
        .replace(final ? /(^|[^ \t])[ \t]+(?=[\n\r]|$)/g : /(^|[^ \t])[ \t]+(?=[\n\r])/g, '$1')
        .replace(final ? /=(?:\r?\n|$)/g : /=\r?\n/g, '');
    let end = joined.length;
    if (!final) {
      const eq = joined.lastIndexOf('=', end - 1);
      if (eq >= 0 && end - eq < 3) end = eq;
    }
    this.#joined = joined.slice(end);
    return decodeEscapes(joined, end);
  }
}

/** {@link QuotedPrintableBodyDecoder} as a stream, in place of libqp's Decoder. */
export class QuotedPrintableDecodeStream extends Transform {
  readonly #decoder = new QuotedPrintableBodyDecoder();

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const out = this.#decoder.push(chunk);
    done(null, out.length ? out : undefined);
  }

  override _flush(done: TransformCallback): void {
    const out = this.#decoder.end();
    done(null, out.length ? out : undefined);
  }
}

/** `=XX` escapes of the first `end` characters decoded, every other character its byte (as libqp). */
function decodeEscapes(text: string, end: number): Buffer {
  const out = Buffer.allocUnsafe(end);
  let o = 0;
  for (let i = 0; i < end; i++) {
    const code = text.charCodeAt(i);
    const hi = text.charCodeAt(i + 1);
    const lo = text.charCodeAt(i + 2);
    if (code === 0x3d && i < end - 2 && isHex(hi) && isHex(lo)) {
      out[o++] = hexValue(hi) * 16 + hexValue(lo);
      i += 2;
    } else out[o++] = code;
  }
  return out.subarray(0, o);
}

/**
 * Base64 decoding as libbase64's Decoder (mailsplit's `getDecoder()`) decodes, chunk by chunk:
 * characters outside the alphabet are skipped, and a padding character ends a run, so a body
 * that pads every line decodes line by line. Unlike {@link bodyDecoder}, which skips `=` and
 * reads such a body as one run.
 */
export class Base64BodyDecoder implements BodyDecoder {
  /** Characters after the last padding that do not make a quartet yet. */
  #rest = '';

  push(chunk: Buffer): Buffer {
    let b64 = this.#rest + chunk.toString('latin1');
    this.#rest = '';
    if (/[^a-zA-Z0-9+/=]/.test(b64)) b64 = b64.replace(/[^a-zA-Z0-9+/=]/g, '');
    // Up to the last padding character the runs are complete; quartets count from there on.
    const lastPad = b64.lastIndexOf('=');
    const padded = b64.slice(0, lastPad + 1);
    let tail = b64.slice(lastPad + 1);
    const keep = tail.length < 4 ? tail.length : tail.length % 4;
    this.#rest = tail.slice(tail.length - keep);
    tail = tail.slice(0, tail.length - keep);
    return padded.length + tail.length ? base64Runs(padded + tail) : Buffer.alloc(0);
  }

  end(): Buffer {
    const rest = this.#rest;
    this.#rest = '';
    return rest ? base64Runs(rest) : Buffer.alloc(0);
  }
}

/** libbase64's `decode` for a string of base64 characters and `=`: each run ended by padding decoded on its own. */
function base64Runs(str: string): Buffer {
  const pad = str.indexOf('=');
  if (pad < 0 || !/[a-zA-Z0-9+/]/.test(str.slice(pad))) return Buffer.from(str, 'base64');
  const out = Buffer.alloc(Math.floor((str.length * 3) / 4));
  let length = 0;
  for (let start = 0; start <= str.length; ) {
    let end = str.indexOf('=', start);
    if (end < 0) end = str.length;
    if (end > start) length += out.write(str.substring(start, end), length, 'base64');
    start = end + 1;
  }
  return Buffer.from(out.subarray(0, length));
}

/**
 * A decoder that gives, chunk for chunk, the bytes mailsplit's `node.getDecoder()` gives for
 * the part's transfer encoding (with {@link QuotedPrintableBodyDecoder} for libqp's).
 * Anything but base64 and quoted-printable passes through.
 */
export function mailsplitBodyDecoder(encoding: string | false): BodyDecoder {
  switch (encoding) {
    case 'base64':
      return new Base64BodyDecoder();
    case 'quoted-printable':
      return new QuotedPrintableBodyDecoder();
    default:
      return { push: (c) => c, end: () => Buffer.alloc(0) };
  }
}
