/**
 * How masking reads a text part's bytes and writes them back in the part's own charset.
 *
 * Most mail is UTF-8 or a single-byte charset (ISO-8859-x, windows-125x, KOI8-R...). For the
 * single-byte ones, and for the ones whose bytes below 0x80 are always ASCII (EUC-JP, EUC-KR,
 * ISO-2022-JP between its escapes, unknown charsets), every byte becomes exactly one character
 * and back, so the part keeps its charset and every byte that was not masked is the byte it
 * was, whatever libmime knows of the charset. Bytes that mean nothing on their own become
 * private-use characters, which no pattern masks.
 *
 * Multi-byte charsets whose second bytes can look like ASCII (Shift_JIS, GBK, GB18030, Big5,
 * UTF-16) cannot be cut that way, and libmime decodes but does not encode them: those parts
 * are decoded by libmime and written back as UTF-8, with the Content-Type charset updated.
 */
import { StringDecoder } from 'node:string_decoder';
import libmime from 'libmime';
import { decode } from 'libmime/lib/charset.js';

/** Turns a part's bytes into text and the masked text back into bytes. */
export interface TextCodec {
  decode(bytes: Buffer): string;
  /** What the decoder still holds at the end of the part. */
  end(): string;
  encode(text: string): Buffer;
}

/** What masking does with a part in a given charset. */
export type CharsetPlan =
  /** Bytes go through this codec and keep the part's charset. */
  | { kind: 'keep'; codec: () => TextCodec }
  /** libmime decodes the part (streaming); it is written back as UTF-8. */
  | { kind: 'to-utf8'; charset: string };

// A byte that is no character by itself is kept as U+E000 + byte: the masker never changes it.
const PUA = 0xe000;
const pua = (byte: number) => String.fromCharCode(PUA + byte);

class ByteCodec implements TextCodec {
  constructor(
    table: readonly string[],
    private readonly reverse: ReadonlyMap<string, number>,
  ) {
    this.codes = Uint16Array.from(table, (ch) => ch.charCodeAt(0));
  }

  private readonly codes: Uint16Array;

  decode(bytes: Buffer): string {
    const codes = new Uint16Array(bytes.length);
    for (let i = 0; i < bytes.length; i++) codes[i] = this.codes[bytes[i]!]!;
    let out = '';
    for (let i = 0; i < codes.length; i += 8192) out += String.fromCharCode(...codes.subarray(i, i + 8192));
    return out;
  }

  end(): string {
    return '';
  }

  encode(text: string): Buffer {
    const out = Buffer.allocUnsafe(text.length);
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      out[i] = code >= PUA && code <= PUA + 0xff ? code - PUA : (this.reverse.get(text[i]!) ?? 0x3f);
    }
    return out;
  }
}

/** ASCII below 0x80, everything else kept as it is. */
function asciiTable(): string[] {
  return Array.from({ length: 256 }, (_, b) => (b < 0x80 ? String.fromCharCode(b) : pua(b)));
}

function reverseOf(table: readonly string[]): Map<string, number> {
  const reverse = new Map<string, number>();
  table.forEach((ch, b) => {
    if (ch.charCodeAt(0) < PUA || ch.charCodeAt(0) > PUA + 0xff) reverse.set(ch, b);
  });
  return reverse;
}

/**
 * The byte-to-character table of a single-byte, ASCII-compatible charset, or undefined when
 * the charset is not one (a byte does not decode to one character on its own, or decoding
 * all bytes in a row gives something else than one by one).
 */
function singleByteTable(charset: string): string[] | undefined {
  const one = Array.from({ length: 256 }, (_, b) => decode(Buffer.from([b]), charset));
  const all = decode(Buffer.from(Array.from({ length: 256 }, (_, b) => b)), charset);
  if (one.some((ch) => ch.length !== 1) || one.join('') !== all) return undefined;
  for (let b = 0x20; b < 0x7f; b++) if (one[b] !== String.fromCharCode(b)) return undefined;
  const seen = new Set<string>();
  return one.map((ch, b) => {
    if (ch === '\ufffd' || seen.has(ch) || (b >= 0x80 && ch.charCodeAt(0) < 0x80)) return pua(b);
    seen.add(ch);
    return ch;
  });
}

/** ISO-2022-JP (RFC 1468): ASCII only after `ESC ( B` or `ESC ( J`; escapes and JIS bytes kept as they are. */
class Iso2022JpCodec extends ByteCodec {
  private ascii = true;
  private escape: number[] | undefined;

  constructor() {
    const table = asciiTable();
    super(table, reverseOf(table));
  }

  override decode(bytes: Buffer): string {
    let out = '';
    for (const b of bytes) {
      if (this.escape) {
        this.escape.push(b);
        out += pua(b);
        // ESC, intermediate bytes 0x20-0x2F, then one final byte (ISO 2022).
        if (b < 0x20 || b > 0x2f) {
          const seq = String.fromCharCode(...this.escape);
          this.ascii = seq === '(B' || seq === '(J';
          this.escape = undefined;
        }
      } else if (b === 0x1b) {
        this.escape = [];
        out += pua(b);
      } else {
        out += (this.ascii && b < 0x80) || b === 0x0a || b === 0x0d ? String.fromCharCode(b) : pua(b);
      }
    }
    return out;
  }
}

class Utf8Codec implements TextCodec {
  private readonly decoder = new StringDecoder('utf8');
  decode(bytes: Buffer): string {
    return this.decoder.write(bytes);
  }
  end(): string {
    return this.decoder.end();
  }
  encode(text: string): Buffer {
    return Buffer.from(text, 'utf8');
  }
}

/** Plans masking for a charset; tables are worked out once per charset and kept (up to 64). */
export function charsetPlanner(): (charset: string | false | undefined) => CharsetPlan {
  const cache = new Map<string, CharsetPlan>();
  return (charset) => {
    const key = (charset || 'us-ascii').trim().toLowerCase();
    let plan = cache.get(key);
    if (!plan) {
      plan = planFor(key);
      if (cache.size < 64) cache.set(key, plan);
    }
    return plan;
  };
}

function planFor(name: string): CharsetPlan {
  const utf8 = { kind: 'keep', codec: () => new Utf8Codec() } as const;
  const ascii = (): CharsetPlan => {
    const table = asciiTable();
    const reverse = reverseOf(table);
    return { kind: 'keep', codec: () => new ByteCodec(table, reverse) };
  };
  if (/^utf-?8$/.test(name)) return utf8;
  // RFC 2045: no charset means US-ASCII; 8-bit bytes in such a part stay untouched.
  if (/^(us-)?ascii$|^ansi_x3\.4-1968$|^7bit$/.test(name)) return ascii();
  if (/^iso-?2022-?jp/.test(name)) return { kind: 'keep', codec: () => new Iso2022JpCodec() };
  // Every byte of a multi-byte character is 0x80 or above in EUC: ASCII can be read as is.
  if (/^euc-?(jp|kr)$/.test(name)) return ascii();
  // A charset libmime cannot decode: only its ASCII is read, every byte is kept.
  if (!libmime.createDecodeStream(name).supported) return ascii();
  const canonical = libmime.normalizeCharset(name);
  if (/^utf-?8$/i.test(canonical)) return utf8;
  // libmime decodes these only whole, not as a stream: read them like their kin above.
  if (/^jis|^iso-?2022-?jp/i.test(canonical)) return { kind: 'keep', codec: () => new Iso2022JpCodec() };
  if (/^eucjp/i.test(canonical)) return ascii();
  const table = singleByteTable(canonical);
  if (table) {
    const reverse = reverseOf(table);
    return { kind: 'keep', codec: () => new ByteCodec(table, reverse) };
  }
  return { kind: 'to-utf8', charset: canonical };
}

/** Every byte read as text without changing any: ASCII is matched, everything else is kept. For raw messages. */
export function rawByteCodec(): TextCodec {
  const table = asciiTable();
  return new ByteCodec(table, reverseOf(table));
}

/** The UTF-8 codec, for parts libmime has turned into UTF-8. */
export function utf8Codec(): TextCodec {
  return new Utf8Codec();
}
