/**
 * Multi-byte charsets whose second bytes can look like ASCII (Shift_JIS, GBK, GB18030, Big5,
 * CP949, UTF-16, UTF-32), read and written back by iconv-lite, so a masked part keeps its
 * charset. A part with nothing masked is only read through here (to find out) and then passed
 * through as it came (part.ts); writing back matters for the parts that are masked.
 *
 * Written anew, every byte that was not masked must still be the byte it was, and iconv-lite
 * does not give that on its own: Shift_JIS has characters with two codes (NEC and IBM rows,
 * 0x8790 and 0x81E0 are both U+2252) and a user-defined area it decodes to private use and
 * encodes as "?"; invalid bytes decode to U+FFFD. So each decoded run is encoded again and
 * compared: where it does not give its own bytes back, the run is read character by character
 * and each character that would not come back is kept as raw bytes, one supplementary
 * private-use character (U+F0000 + byte) per byte, which no pattern masks and `encode` writes
 * back as that byte.
 */
import iconv from 'iconv-lite';
import type { TextCodec } from './charsets.js';
import { isHighSurrogate } from './text-masker.js';

/** A raw byte kept as U+F0000 + byte: its UTF-16 high surrogate and the range of its low one. */
const RAW = /\udb80[\udc00-\udcff]/;
const RAW_ALL = /\udb80[\udc00-\udcff]/g;

/**
 * Bytes below 0x30 are never part of a multi-byte character in these charsets (lead bytes are
 * 0x81 and up, second bytes 0x40 and up, GB18030's digits 0x30-0x39): a run can be cut right
 * after one and decoded on its own. iconv-lite's streaming DBCS decoder is not used: it sizes
 * its output by the chunk and drops the end of it when a character started in the chunk before
 * (libmime works around the same bug the same way).
 */
const SAFE_CUT = 0x30;
/** Longest run held while waiting for a safe cut; beyond it the run is cut anyway (see decode). */
const RUN_LIMIT = 64 * 1024;

/** Pieces a run that does not come back whole is checked in, before going character by character. */
const PIECE = 64;

/**
 * A run of bytes as text that `encodeKeepingRaw` turns back into the very same bytes. Fast when
 * iconv-lite gives the run back as it was. Else the run is checked again in pieces of about
 * PIECE bytes (cut where `cuts` says a character cannot straddle), and only a piece that does
 * not come back is read character by character: each character `lengths` bytes long (the
 * shortest first); one that fits none of them, or would not come back, is kept as raw bytes,
 * `lengths[0]` of them. One bad byte in 64 KiB of text costs a piece, not the run.
 */
function losslessText(run: Buffer, charset: string, lengths: readonly number[], cuts: (run: Buffer) => number[], ascii = false): string {
  const text = iconv.decode(run, charset, { stripBOM: false });
  if (!RAW.test(text) && iconv.encode(text, charset).equals(run)) return text;
  if (run.length > PIECE) {
    const at = cuts(run);
    if (at.length > 0) {
      let out = '';
      let from = 0;
      for (const to of [...at, run.length]) {
        if (to > from) out += losslessText(run.subarray(from, to), charset, lengths, () => [], ascii);
        from = to;
      }
      return out;
    }
  }
  return byCharacter(run, charset, lengths, ascii);
}

/** The slow reading (see losslessText), with one decoder for every character; `ascii`: bytes below 0x80 are ASCII. */
function byCharacter(run: Buffer, charset: string, lengths: readonly number[], ascii: boolean): string {
  const decoder = iconv.getDecoder(charset, { stripBOM: false });
  const decode = (bytes: Buffer) => decoder.write(bytes) + (decoder.end() ?? '');
  let out = '';
  for (let i = 0; i < run.length;) {
    if (ascii && run[i]! < 0x80) {
      // A stretch of ASCII is itself, at once.
      let end = i + 1;
      while (end < run.length && run[end]! < 0x80) end++;
      out += run.toString('latin1', i, end);
      i = end;
      continue;
    }
    let taken = 0;
    for (const length of lengths) {
      if (i + length > run.length) break;
      const bytes = run.subarray(i, i + length);
      const ch = decode(bytes);
      // An unfinished character decodes to U+FFFD, half a surrogate pair to itself: take more bytes.
      if (ch.includes('\ufffd') || [...ch].length !== 1 || (ch.length === 1 && isHighSurrogate(ch.charCodeAt(0)))) continue;
      out += !RAW.test(ch) && iconv.encode(ch, charset).equals(bytes) ? ch : rawBytes(bytes);
      taken = length;
      break;
    }
    if (!taken) {
      taken = Math.min(lengths[0]!, run.length - i);
      out += rawBytes(run.subarray(i, i + taken));
    }
    i += taken;
  }
  return out;
}

const allAscii = Buffer.from(Array.from({ length: 0x80 }, (_, b) => b));

/** Whether every byte below 0x80 is the ASCII character, alone and back (Shift_JIS is, in iconv-lite). */
function asciiCompatible(charset: string): boolean {
  return iconv.decode(allAscii, charset) === allAscii.toString('latin1') && iconv.encode(allAscii.toString('latin1'), charset).equals(allAscii);
}

/** Places about PIECE bytes apart right after a byte below SAFE_CUT, where a run can be cut. */
function safeCuts(run: Buffer): number[] {
  const at: number[] = [];
  let last = 0;
  for (let i = 0; i < run.length - 1; i++) {
    if (run[i]! < SAFE_CUT && i + 1 - last >= PIECE) {
      at.push(i + 1);
      last = i + 1;
    }
  }
  return at;
}

const rawBytes = (bytes: Buffer) => String.fromCharCode(...[...bytes].flatMap((b) => [0xdb80, 0xdc00 + b]));

/** The text in `charset`, with raw bytes (see losslessText) written back as themselves. */
function encodeKeepingRaw(text: string, charset: string): Buffer {
  if (!RAW.test(text)) return iconv.encode(text, charset);
  const out: Buffer[] = [];
  let at = 0;
  for (const m of text.matchAll(RAW_ALL)) {
    if (m.index > at) out.push(iconv.encode(text.slice(at, m.index), charset));
    out.push(Buffer.of(m[0].charCodeAt(1) - 0xdc00));
    at = m.index + 2;
  }
  if (at < text.length) out.push(iconv.encode(text.slice(at), charset));
  return Buffer.concat(out);
}

/** Shift_JIS, GBK, Big5 and the other iconv-lite charsets, read a run at a time. */
class RunCodec implements TextCodec {
  #pending = Buffer.alloc(0);

  /** `ascii`: whether the charset's bytes below 0x80 are ASCII (asciiCompatible), worked out once per charset. */
  readonly #charset: string;
  readonly #ascii: boolean;

  constructor(charset: string, ascii: boolean) {
    this.#charset = charset;
    this.#ascii = ascii;
  }

  decode(bytes: Buffer): string {
    let cut = bytes.length;
    while (cut > 0 && bytes[cut - 1]! >= SAFE_CUT) cut--;
    if (cut === 0) {
      // A run this long with no byte below 0x30 is no text: cut it where it is. A character cut
      // in two is kept as raw bytes and its halves come back as they were.
      if (this.#pending.length + bytes.length <= RUN_LIMIT) {
        this.#pending = Buffer.concat([this.#pending, bytes]);
        return '';
      }
      cut = bytes.length;
    }
    const run = this.#pending.length ? Buffer.concat([this.#pending, bytes.subarray(0, cut)]) : bytes.subarray(0, cut);
    this.#pending = Buffer.from(bytes.subarray(cut));
    return this.#text(run);
  }

  end(): string {
    const rest = this.#pending;
    this.#pending = Buffer.alloc(0);
    return rest.length ? this.#text(rest) : '';
  }

  encode(text: string): Buffer {
    return encodeKeepingRaw(text, this.#charset);
  }

  #text(run: Buffer): string {
    return losslessText(run, this.#charset, [1, 2, 3, 4], safeCuts, this.#ascii);
  }
}

/**
 * UTF-16 and UTF-32, a code unit at a time. Without a byte order in the charset name, the
 * order is read from a BOM or guessed as iconv-lite guesses it for the whole part (from its
 * first 100 characters, as libmime does), and the masked text is written back in that order;
 * a BOM is kept as a character and so written back too.
 */
class WideCodec implements TextCodec {
  #charset: string | undefined;
  #head: Buffer[] = [];
  #headLength = 0;
  #pending = Buffer.alloc(0);
  readonly #unit: number;

  readonly #family: 'utf-16' | 'utf-32';

  constructor(family: 'utf-16' | 'utf-32', order: 'le' | 'be' | undefined) {
    this.#family = family;
    this.#unit = family === 'utf-16' ? 2 : 4;
    if (order) this.#charset = `${family}${order}`;
  }

  decode(bytes: Buffer): string {
    if (!this.#charset) {
      this.#head.push(Buffer.from(bytes));
      this.#headLength += bytes.length;
      // 100 characters, as iconv-lite looks at for the whole part.
      if (this.#headLength < 100 * this.#unit) return '';
      bytes = this.#releaseHead();
    }
    return this.#aligned(bytes);
  }

  end(): string {
    const text = this.#charset ? '' : this.#aligned(this.#releaseHead());
    const rest = this.#pending;
    this.#pending = Buffer.alloc(0);
    return text + (rest.length ? losslessText(rest, this.#charset!, this.#lengths(), () => []) : '');
  }

  /** Whole code units as text; a part of one waits for the rest. */
  #aligned(bytes: Buffer): string {
    const all = this.#pending.length ? Buffer.concat([this.#pending, bytes]) : bytes;
    let cut = all.length - (all.length % this.#unit);
    // A surrogate pair stays whole (it could be a character that looks like a raw byte).
    if (this.#unit === 2 && cut >= 2 && isHighSurrogate(this.#charset === 'utf-16le' ? all.readUInt16LE(cut - 2) : all.readUInt16BE(cut - 2))) cut -= 2;
    this.#pending = Buffer.from(all.subarray(cut));
    return cut ? losslessText(all.subarray(0, cut), this.#charset!, this.#lengths(), (run) => this.#unitCuts(run)) : '';
  }

  encode(text: string): Buffer {
    return encodeKeepingRaw(text, this.#charset ?? `${this.#family}le`);
  }

  /** The bytes held so far, once the byte order is chosen from them. */
  #releaseHead(): Buffer {
    const head = Buffer.concat(this.#head);
    this.#head = [];
    const guessed = iconv.decode(head, this.#family);
    this.#charset = `${this.#family}${guessed === iconv.decode(head, `${this.#family}le`) ? 'le' : 'be'}`;
    return head;
  }

  /** Every PIECE bytes, on a code unit and not inside a surrogate pair. */
  #unitCuts(run: Buffer): number[] {
    const at: number[] = [];
    for (let i = PIECE; i < run.length; i += PIECE) {
      const unit = this.#unit === 2 ? (this.#charset === 'utf-16le' ? run.readUInt16LE(i - 2) : run.readUInt16BE(i - 2)) : 0;
      at.push(isHighSurrogate(unit) ? i - 2 : i);
    }
    return at;
  }

  #lengths(): number[] {
    return this.#unit === 2 ? [2, 4] : [4];
  }
}

const wideCodecs: ReadonlyMap<unknown, readonly ['utf-16' | 'utf-32', 'le' | 'be' | undefined]> = new Map([
  [iconv.getCodec('utf-16'), ['utf-16', undefined]],
  [iconv.getCodec('utf-16le'), ['utf-16', 'le']],
  [iconv.getCodec('utf-16be'), ['utf-16', 'be']],
  [iconv.getCodec('utf-32'), ['utf-32', undefined]],
  [iconv.getCodec('utf-32le'), ['utf-32', 'le']],
  [iconv.getCodec('utf-32be'), ['utf-32', 'be']],
] as const);

/**
 * A codec factory for a charset iconv-lite reads and writes, or undefined when it cannot write
 * it (the part is then written back as UTF-8, see charsets.ts).
 */
export function multiByteCodec(charset: string): (() => TextCodec) | undefined {
  if (!iconv.encodingExists(charset)) return undefined;
  const wide = wideCodecs.get(iconv.getCodec(charset));
  if (wide) return () => new WideCodec(wide[0], wide[1]);
  const ascii = asciiCompatible(charset);
  return () => new RunCodec(charset, ascii);
}
