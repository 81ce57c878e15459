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
 * UTF-16) cannot be cut that way: iconv-lite reads and writes them (multibyte.ts), and
 * a masked part keeps its charset there too. Only a charset libmime decodes and iconv-lite
 * cannot write would be decoded by libmime and written back as UTF-8, with the Content-Type
 * charset updated and the findings saying so; every charset libmime reads today is covered
 * above, so that is a fallback.
 */
import { isAscii } from 'node:buffer';
import { StringDecoder } from 'node:string_decoder';
import libmime from 'libmime';
import { decode } from 'libmime/lib/charset.js';
import { multiByteCodec } from './multibyte.js';

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

/** A byte-to-character table and its reverse, worked out once per charset. */
interface ByteTable {
  /** The character of each byte, as UTF-16LE code units (two bytes a byte). */
  readonly utf16: Buffer;
  /** The byte of each character below U+0800 that has one, else -1 (private-use ones aside). */
  readonly low: Int16Array;
  /** The same for characters from U+0800 on. */
  readonly high: ReadonlyMap<number, number>;
  /** Bytes 0x00-0x7f are the ASCII characters, both ways: ASCII text needs no table. */
  readonly ascii: boolean;
}

/** Characters below this are looked up in an array (Latin, Greek, Cyrillic, Hebrew, Arabic), the rest in a map. */
const LOW = 0x800;

function byteTable(table: readonly string[]): ByteTable {
  const utf16 = Buffer.alloc(512);
  const low = new Int16Array(LOW).fill(-1);
  const high = new Map<number, number>();
  table.forEach((ch, b) => {
    const code = ch.charCodeAt(0);
    utf16.writeUInt16LE(code, 2 * b);
    if (code < LOW) low[code] = b;
    else if (code < PUA || code > PUA + 0xff) high.set(code, b);
  });
  let ascii = true;
  for (let b = 0; b < 0x80; b++) if (table[b]!.charCodeAt(0) !== b || low[b] !== b) ascii = false;
  return { utf16, low, high, ascii };
}

/** A single-byte reading of a part: keeps no state, so one serves every part in its charset. */
class ByteCodec implements TextCodec {
  readonly #table: ByteTable;

  constructor(table: ByteTable) {
    this.#table = table;
  }

  decode(bytes: Buffer): string {
    if (this.#table.ascii && isAscii(bytes)) return bytes.toString('latin1');
    const utf16 = this.#table.utf16;
    const out = Buffer.allocUnsafe(2 * bytes.length);
    for (let i = 0; i < bytes.length; i++) {
      const at = 2 * bytes[i]!;
      out[2 * i] = utf16[at]!;
      out[2 * i + 1] = utf16[at + 1]!;
    }
    return out.toString('utf16le');
  }

  end(): string {
    return '';
  }

  encode(text: string): Buffer {
    // Only characters below 0x80 take one UTF-8 byte each.
    if (this.#table.ascii && Buffer.byteLength(text, 'utf8') === text.length) return Buffer.from(text, 'latin1');
    const { low, high } = this.#table;
    const out = Buffer.allocUnsafe(text.length);
    for (let i = 0; i < text.length; i++) {
      const code = text.charCodeAt(i);
      const byte = code < LOW ? low[code]! : code >= PUA && code <= PUA + 0xff ? code - PUA : (high.get(code) ?? -1);
      out[i] = byte < 0 ? 0x3f : byte;
    }
    return out;
  }
}

/** ASCII below 0x80, everything else kept as it is. */
function asciiTable(): string[] {
  return Array.from({ length: 256 }, (_, b) => (b < 0x80 ? String.fromCharCode(b) : pua(b)));
}

/** The ASCII table, for parts read as ASCII and for raw messages. */
const asciiBytes = byteTable(asciiTable());

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
  #ascii = true;
  #escape: number[] | undefined;

  constructor() {
    super(asciiBytes);
  }

  override decode(bytes: Buffer): string {
    let out = '';
    for (const b of bytes) {
      if (this.#escape) {
        this.#escape.push(b);
        out += pua(b);
        // ESC, intermediate bytes 0x20-0x2F, then one final byte (ISO 2022).
        if (b < 0x20 || b > 0x2f) {
          const seq = String.fromCharCode(...this.#escape);
          this.#ascii = seq === '(B' || seq === '(J';
          this.#escape = undefined;
        }
      } else if (b === 0x1b) {
        this.#escape = [];
        out += pua(b);
      } else {
        out += (this.#ascii && b < 0x80) || b === 0x0a || b === 0x0d ? String.fromCharCode(b) : pua(b);
      }
    }
    return out;
  }
}

class Utf8Codec implements TextCodec {
  readonly #decoder = new StringDecoder('utf8');
  decode(bytes: Buffer): string {
    return this.#decoder.write(bytes);
  }
  end(): string {
    return this.#decoder.end();
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
  const bytes = (table: ByteTable): CharsetPlan => {
    const codec = new ByteCodec(table);
    return { kind: 'keep', codec: () => codec };
  };
  const ascii = () => bytes(asciiBytes);
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
  if (table) return bytes(byteTable(table));
  const codec = multiByteCodec(canonical);
  if (codec) return { kind: 'keep', codec };
  return { kind: 'to-utf8', charset: canonical };
}

/** Every byte read as text without changing any: ASCII is matched, everything else is kept. For raw messages. */
export function rawByteCodec(): TextCodec {
  return new ByteCodec(asciiBytes);
}

/** The UTF-8 codec, for parts libmime has turned into UTF-8. */
export function utf8Codec(): TextCodec {
  return new Utf8Codec();
}
