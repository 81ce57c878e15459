/**
 * One text/plain or text/html part masked by plain function calls, kept in its charset:
 * transfer decoding, charset decoding, masking, charset encoding, transfer encoding. A stream
 * for each of those cost more than masking a 4 KB part.
 *
 * Most parts hold nothing to mask, and their bytes are best left as they came: the part's raw
 * chunks are held (up to 256 KiB) while a probe reads them. A part that ends with nothing
 * masked is handed on as it came, byte for byte. At the first match, or once more than that
 * is held, the part is re-encoded: the held chunks are read again from the start, this time
 * counting and writing, and the rest follows as it comes.
 */
import type { MimeNode } from '@zone-eu/mailsplit';
import type { MaskingPattern } from './patterns.js';
import type { TextCodec } from './charsets.js';
import { HtmlMasker, TextMasker, maskInSlices, type MaskCounts, type Masker } from './text-masker.js';
import { bodyDecoder, bodyEncoder, type BodyCoder } from '../mime/transfer-decode.js';

/** Bytes decoded in one turn of the event loop. */
const DECODE_SLICE = 16 * 1024;

/** Raw bytes of a part held while nothing in it is masked. */
export const PASS_THROUGH_LIMIT = 256 * 1024;

/** What a text part is read with. */
export interface TextPartSettings {
  /** The part, for its transfer decoder and encoder. */
  node: MimeNode;
  html: boolean;
  /** A codec for the part's charset (a fresh one for a codec that keeps state). */
  codec: () => TextCodec;
  patterns: readonly MaskingPattern[];
  window: number;
  /** The message's counts: what the part masks is added here, once. */
  counts: MaskCounts;
}

/**
 * Reads a body: decodes, masks, and, when it has somewhere to write, encodes the masked text
 * back. Without one it is a probe: it only finds out whether anything would be masked.
 */
class BodyMasking {
  readonly #decoder: BodyCoder;
  readonly #codec: TextCodec;
  readonly #masker: Masker;
  /** Where the masked bytes go, encoded again; none for a probe. */
  readonly #writer: { encoder: BodyCoder; out: (value: Buffer) => void } | undefined;

  constructor(settings: TextPartSettings, counts: MaskCounts, out?: (value: Buffer) => void) {
    this.#decoder = bodyDecoder(settings.node);
    this.#codec = settings.codec();
    const text = new TextMasker(settings.patterns, counts, settings.window);
    this.#masker = settings.html ? new HtmlMasker(text) : text;
    this.#writer = out && { encoder: bodyEncoder(settings.node), out };
  }

  async write(raw: Buffer): Promise<void> {
    const bytes = this.#decoder.push(raw);
    // Decoded a slice at a time, a turn of the event loop between: a multi-byte charset full of
    // bytes that are no characters is read character by character (multibyte.ts).
    for (let at = 0; at < bytes.length; at += DECODE_SLICE) {
      if (at > 0) await new Promise((resolve) => setImmediate(resolve));
      await this.#mask(this.#codec.decode(bytes.subarray(at, at + DECODE_SLICE)));
    }
  }

  async end(): Promise<void> {
    const bytes = this.#decoder.end();
    if (bytes.length) await this.#mask(this.#codec.decode(bytes));
    this.#put(this.#masker.write(this.#codec.end()) + this.#masker.end());
    if (!this.#writer) return;
    const tail = this.#writer.encoder.end();
    if (tail.length) this.#writer.out(tail);
  }

  #mask(text: string): Promise<void> {
    return maskInSlices(this.#masker, text, (masked) => this.#put(masked));
  }

  #put(masked: string): void {
    if (!this.#writer) return;
    const bytes = this.#codec.encode(masked);
    if (!bytes.length) return;
    const out = this.#writer.encoder.push(bytes);
    if (out.length) this.#writer.out(out);
  }
}

/** How a part's body is masked: raw body chunks in, bytes handed on. */
export interface PartBody {
  write(raw: Buffer): Promise<void>;
  end(): Promise<void>;
  /** Whether the body is written anew rather than passed through as it came. */
  readonly reEncoded: boolean;
  /** The last byte handed on when written anew; -1 before any. */
  readonly lastByte: number;
}

/** A text part in its charset, passed through as it came when nothing in it is masked. */
export class TextPartMasking implements PartBody {
  /** Raw chunks held while nothing is masked; undefined once the part is re-encoded. */
  #held: Buffer[] | undefined = [];
  #heldBytes = 0;
  /** What the probe masked: only whether it is empty matters, the real reading counts. */
  readonly #probeCounts: MaskCounts = {};
  #probe: BodyMasking | undefined;
  #real: BodyMasking | undefined;
  lastByte = -1;

  readonly #settings: TextPartSettings;
  readonly #out: (value: Buffer) => void;

  constructor(settings: TextPartSettings, out: (value: Buffer) => void) {
    this.#settings = settings;
    this.#out = out;
    this.#probe = new BodyMasking(settings, this.#probeCounts);
  }

  get reEncoded(): boolean {
    return this.#real !== undefined;
  }

  async write(raw: Buffer): Promise<void> {
    if (this.#real) return this.#real.write(raw);
    this.#held!.push(raw);
    this.#heldBytes += raw.length;
    if (this.#heldBytes > PASS_THROUGH_LIMIT) return this.#reEncode();
    await this.#probe!.write(raw);
    if (masked(this.#probeCounts)) await this.#reEncode();
  }

  async end(): Promise<void> {
    if (!this.#real) {
      await this.#probe!.end();
      if (!masked(this.#probeCounts)) {
        for (const raw of this.#held!) this.#out(raw);
        this.#held = undefined;
        return;
      }
      await this.#reEncode();
    }
    await this.#real!.end();
  }

  /** Reads the part again from its start, counting and writing this time. */
  async #reEncode(): Promise<void> {
    const held = this.#held!;
    this.#held = undefined;
    this.#probe = undefined;
    const real = new BodyMasking(this.#settings, this.#settings.counts, (value) => {
      this.lastByte = value[value.length - 1]!;
      this.#out(value);
    });
    this.#real = real;
    for (const raw of held) await real.write(raw);
  }
}

const masked = (counts: MaskCounts) => Object.keys(counts).length > 0;
