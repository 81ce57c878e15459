/**
 * Synchronous, incremental Content-Transfer-Encoding decoders (RFC 2045 sections 6.7, 6.8),
 * so a stage can look at decoded bytes chunk by chunk inside its own transform without the
 * asynchronous hand-offs of a decoder stream. They keep at most a few bytes between chunks.
 */

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
