/**
 * Synchronous, incremental Content-Transfer-Encoding decoders (RFC 2045 sections 6.7, 6.8),
 * so a stage can look at decoded bytes chunk by chunk inside its own transform without the
 * asynchronous hand-offs of a decoder stream. They keep at most a few bytes between chunks.
 * And a quoted-printable decoder stream that reads as libqp reads, chunk by chunk.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** Decodes one part's body, chunk by chunk. */
export interface BodyDecoder {
  /** Decoded bytes of this chunk (may hold back a few bytes for the next). */
  push(chunk: Buffer): Buffer;
  /** Whatever was held back, at the end of the body. */
  end(): Buffer;
}

/** A decoder for the part's transfer encoding; anything but base64 and quoted-printable passes through. */
export function bodyDecoder(encoding: string | false): BodyDecoder {
  switch ((encoding || '').toLowerCase()) {
    case 'base64':
      return new Base64Decoder();
    case 'quoted-printable':
      return new QuotedPrintableDecoder();
    default:
      return { push: (c) => c, end: () => Buffer.alloc(0) };
  }
}

class Base64Decoder implements BodyDecoder {
  #rest = '';
  push(chunk: Buffer): Buffer {
    const text = this.#rest + chunk.toString('latin1').replace(/[^A-Za-z0-9+/]/g, '');
    const usable = text.length - (text.length % 4);
    this.#rest = text.slice(usable);
    return Buffer.from(text.slice(0, usable), 'base64');
  }
  end(): Buffer {
    const rest = this.#rest;
    this.#rest = '';
    return rest.length > 1 ? Buffer.from(rest, 'base64') : Buffer.alloc(0);
  }
}

class QuotedPrintableDecoder implements BodyDecoder {
  #rest = Buffer.alloc(0);
  push(chunk: Buffer): Buffer {
    const data = this.#rest.length ? Buffer.concat([this.#rest, chunk]) : chunk;
    // Keep back an '=' sequence cut by the chunk boundary (at most "=\r" or "=X").
    let cut = data.length;
    const eq = data.lastIndexOf(0x3d, data.length - 1);
    if (eq >= 0 && data.length - eq < 3) cut = eq;
    this.#rest = Buffer.from(data.subarray(cut));
    return decodeQp(data.subarray(0, cut));
  }
  end(): Buffer {
    const rest = this.#rest;
    this.#rest = Buffer.alloc(0);
    return decodeQp(rest);
  }
}

function decodeQp(data: Buffer): Buffer {
  const out = Buffer.allocUnsafe(data.length);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    const c = data[i]!;
    if (c !== 0x3d) {
      out[o++] = c;
      continue;
    }
    const a = data[i + 1];
    const b = data[i + 2];
    if (a === 0x0d && b === 0x0a) i += 2; // soft line break
    else if (a === 0x0a) i += 1;
    else if (a !== undefined && b !== undefined && isHex(a) && isHex(b)) {
      out[o++] = parseInt(String.fromCharCode(a, b), 16);
      i += 2;
    } else out[o++] = c;
  }
  return out.subarray(0, o);
}

function isHex(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

/** Raw text the stream decoder holds back at most, waiting to see what follows it. */
const QP_HELD = 64 * 1024;
const isBlank = (code: number) => code === 0x20 || code === 0x09;
// A hex digit's value ("A" and "a" alike), for a character isHex accepted.
const hexValue = (c: number) => (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57);

/**
 * Quoted-printable decoding as libqp decodes (mailsplit's `getDecoder()`), as a stream that
 * holds at most 64 KiB: libqp's own Decoder keeps the whole part and decodes it when the part
 * ends, so a 20 MB part sat in memory and then held the event loop for one long decode (a
 * 1 MiB line: 35 ms). The same two passes, on as much as is settled: white space at the end of
 * a line removed (RFC 2045 6.7 rule 3) and soft line breaks joined, then `=XX` escapes.
 * Held back until more arrives: an escape or soft line break cut by the chunk boundary, and
 * white space a line end would remove. Past 64 KiB of that (a line of nothing but blanks and
 * `=`), the start of it is decoded as it stands.
 */
export class QuotedPrintableDecodeStream extends Transform {
  /** Raw input not yet settled. */
  #raw = '';
  /** Text after the first pass whose escape is cut in two ("=" or "=X" at its end). */
  #joined = '';

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
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
    const out = this.#decode(data.slice(0, cut), false);
    done(null, out.length ? out : undefined);
  }

  override _flush(done: TransformCallback): void {
    const out = this.#decode(this.#raw, true);
    this.#raw = '';
    done(null, out.length ? out : undefined);
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
