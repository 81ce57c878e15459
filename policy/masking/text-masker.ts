/**
 * The streaming masker: text goes in in pieces of any size, masked text comes out, and a match
 * that straddles two pieces is still found. It keeps a bounded tail between pieces and never
 * holds a whole part: at most `window` characters wait for what follows, plus `window`
 * characters already written kept as context for look-behinds such as `(?<!\d)`.
 *
 * The bound: a match is found wherever the pieces are cut as long as it is at most `window`
 * characters long (64 by default, `[masking] max_match_length`; a 19-digit card in groups is
 * 23, an IBAN in groups at most 42). A longer match is still found whole when
 * it arrives within one piece.
 */
import type { MaskingPattern } from './patterns.js';

/** How many matches each pattern masked, by pattern name. Never the values. */
export type MaskCounts = Record<string, number>;

/** The default window, in characters (see the module comment). */
export const defaultMaskWindow = 64;

interface Match {
  start: number;
  end: number;
  pattern: MaskingPattern;
  priority: number;
}

const maskable = /[\p{L}\p{N}]/u;

/**
 * The match with its letters and digits replaced by the mask character, except the last
 * `visibleTrailing` of them. Separators (spaces, dashes) keep their place, so
 * `4111 1111 1111 1111` reads `**** **** **** 1111` and the length of the text is unchanged
 * (one mask character per character).
 */
export function maskMatch(text: string, pattern: Pick<MaskingPattern, 'maskChar' | 'visibleTrailing'>): string {
  const chars = Array.from(text);
  let visible = pattern.visibleTrailing;
  for (let i = chars.length - 1; i >= 0; i--) {
    if (!maskable.test(chars[i]!)) continue;
    if (visible > 0) {
      visible--;
      continue;
    }
    chars[i] = pattern.maskChar;
  }
  return chars.join('');
}

/**
 * Text the built-in patterns leave alone (a digit changed there breaks something and protects
 * nothing): a URL, whose query often holds long numbers (the link would break), and a
 * Message-ID or address in angle brackets. Each runs up to white space, `<`, `>` or `"`.
 */
const PROTECTED = /(?:\b[A-Za-z][A-Za-z0-9+.-]{0,31}:\/\/|\bwww\.|\bmailto:)[^\s<>"]*|<[^\s<>@]*@[^\s<>]*>/gi;
/** What ends a protected run (see PROTECTED). */
const PROTECTED_END = /[\s<>"]/;
/** Whether a character (a UTF-16 code unit) ends a protected run: PROTECTED_END, without a regex. */
const endsProtected = (code: number) =>
  code === 0x20 ||
  (code >= 0x09 && code <= 0x0d) ||
  code === 0x3c ||
  code === 0x3e ||
  code === 0x22 ||
  (code > 0x7f && PROTECTED_END.test(String.fromCharCode(code)));
/** Cheap test: text without any of these holds no protected run. */
const mayHoldProtected = (s: string) => s.includes('://') || s.includes('<') || s.includes('www.') || s.includes('WWW.') || s.includes('mailto:');

type Span = [start: number, end: number];

/** Masks a stream of text written in pieces. One instance per text (a part, a subject). */
export class TextMasker {
  /** Text kept between pieces: `emitted` characters of context, then text not yet written out. */
  #buf = '';
  #emitted = 0;
  /** The start of `buf` is inside a protected run that began before it (a long URL). */
  #protectedAtStart = false;
  /** Ranges of `buf` the caller wrote as shielded (header fields, for the raw masker). */
  #shields: Span[] = [];

  readonly #patterns: readonly MaskingPattern[];
  readonly #window: number;

  constructor(
    patterns: readonly MaskingPattern[],
    readonly counts: MaskCounts,
    window = defaultMaskWindow,
  ) {
    this.#patterns = patterns;
    this.#window = window;
  }

  /**
   * Masks what can be decided so far and returns it; the rest waits for the next piece.
   * `shielded` text is left to the admin's own patterns: the built-ins find nothing in it.
   */
  write(text: string, shielded = false): string {
    if (shielded && text.length) {
      const last = this.#shields[this.#shields.length - 1];
      if (last && last[1] === this.#buf.length) last[1] += text.length;
      else this.#shields.push([this.#buf.length, this.#buf.length + text.length]);
    }
    this.#buf += text;
    return this.#drain(false);
  }

  /** Ends the text: masks and returns everything still held, and forgets the context. */
  end(): string {
    const out = this.#drain(true);
    this.#buf = '';
    this.#emitted = 0;
    this.#protectedAtStart = false;
    this.#shields = [];
    return out;
  }

  #drain(final: boolean): string {
    const buf = this.#buf;
    const emitted = this.#emitted;
    // Text closer than `window` to the end may still be the start of a match.
    const safe = final ? buf.length : buf.length - this.#window;
    if (safe <= emitted) return '';
    let spans: Span[] | undefined;
    const protectedSpans = () => (spans ??= this.#protectedSpans());
    const matches = this.#matches(emitted, safe, protectedSpans);
    let outEnd = safe;
    const last = matches[matches.length - 1];
    if (last && last.end > outEnd) outEnd = last.end;
    // Never cut a surrogate pair: its halves would be encoded apart.
    if (!final && outEnd > (last?.end ?? emitted) && isHighSurrogate(buf.charCodeAt(outEnd - 1))) outEnd--;
    let out = '';
    let at = emitted;
    for (const m of matches) {
      out += buf.slice(at, m.start) + maskMatch(buf.slice(m.start, m.end), m.pattern);
      this.counts[m.pattern.name] = (this.counts[m.pattern.name] ?? 0) + 1;
      at = m.end;
    }
    out += buf.slice(at, outEnd);
    const keepFrom = Math.max(0, outEnd - this.#window);
    if (keepFrom > 0) {
      // A protected run that crosses the cut goes on protecting after it.
      this.#protectedAtStart = this.#protectedAcross(keepFrom);
      if (this.#shields.length) this.#shields = this.#shields.filter(([, e]) => e > keepFrom).map(([s, e]) => [Math.max(0, s - keepFrom), e - keepFrom]);
    }
    this.#buf = buf.slice(keepFrom);
    this.#emitted = outEnd - keepFrom;
    return out;
  }

  /**
   * Whether a protected run starts before `at` and goes on after it. Only the word around `at`
   * (between the characters that end a run) is looked at: scanning all of `buf` at every cut
   * cost a quarter of the masking time of text with a link on every line.
   */
  #protectedAcross(at: number): boolean {
    const buf = this.#buf;
    let start = at;
    while (start > 0 && !endsProtected(buf.charCodeAt(start - 1))) start--;
    if (start === 0 && this.#protectedAtStart) return true;
    // A Message-ID's run starts with its "<".
    if (start > 0 && buf[start - 1] === '<') start--;
    let end = at;
    while (end < buf.length && !endsProtected(buf.charCodeAt(end))) end++;
    if (buf[end] === '>') end++;
    const word = buf.slice(start, end);
    if (!mayHoldProtected(word)) return false;
    // matchAll reads with a copy of the regex: the module's own keeps no state.
    for (const m of word.matchAll(PROTECTED)) if (start + m.index < at && start + m.index + m[0].length > at) return true;
    return false;
  }

  /** The protected runs in `buf` (see PROTECTED). */
  #protectedSpans(): Span[] {
    const buf = this.#buf;
    const spans: Span[] = [];
    if (this.#protectedAtStart) {
      const end = buf.search(PROTECTED_END);
      spans.push([0, end < 0 ? buf.length : end]);
    }
    if (mayHoldProtected(buf)) for (const m of buf.matchAll(PROTECTED)) spans.push([m.index, m.index + m[0].length]);
    return spans;
  }

  /** Matches starting in [from, before), none overlapping: the earliest wins, then the pattern listed first. */
  #matches(from: number, before: number, protectedSpans: () => Span[]): Match[] {
    const found: Match[] = [];
    this.#patterns.forEach((pattern, priority) => {
      if (pattern.hint && !pattern.hint.test(this.#buf)) return;
      const re = pattern.regex;
      re.lastIndex = from;
      let m: RegExpExecArray | null;
      while ((m = re.exec(this.#buf)) !== null && m.index < before) {
        if (m[0].length === 0) {
          re.lastIndex = m.index + 1;
          continue;
        }
        const length = pattern.accept ? pattern.accept(m[0]) : m[0].length;
        if (length > 0) {
          const start = m.index;
          const end = start + length;
          const overlaps = ([s, e]: Span) => s < end && e > start;
          if (!pattern.skipsProtected || !(this.#shields.some(overlaps) || protectedSpans().some(overlaps))) found.push({ start, end, pattern, priority });
          re.lastIndex = end;
        }
      }
    });
    if (found.length > 1) found.sort((a, b) => a.start - b.start || a.priority - b.priority || b.end - a.end);
    const chosen: Match[] = [];
    let end = from;
    for (const m of found) {
      if (m.start < end) continue;
      chosen.push(m);
      end = m.end;
    }
    return chosen;
  }
}

/** Whether a UTF-16 code unit is the first half of a surrogate pair: text is never cut after one. */
export const isHighSurrogate = (code: number) => code >= 0xd800 && code <= 0xdbff;

/** Characters masked in one turn of the event loop. */
const SLICE = 4 * 1024;

/**
 * Masks a piece of text a slice at a time, handing each masked slice to `put`, with a turn of
 * the event loop between slices: 64 KiB of dense HTML took the HTML masker 10 to 60 ms, and
 * pieces come as large as the splitter makes them.
 */
export async function maskInSlices(masker: Masker, text: string, put: (masked: string) => void): Promise<void> {
  for (let at = 0; ;) {
    let end = Math.min(at + SLICE, text.length);
    // Never cut a surrogate pair: its halves would be encoded apart.
    if (end < text.length && isHighSurrogate(text.charCodeAt(end - 1))) end--;
    put(masker.write(text.slice(at, end)));
    at = end;
    if (at >= text.length) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Masks the text of an HTML document, leaving markup alone: tags and their attributes (an
 * `href` holding a number stays as it is, or the link would break), comments and declarations.
 * Text between two tags is one run; a number split by a tag (`4111<b>1111...`) is not seen as
 * one. Character references (`&#52;`) are not decoded: `4&#49;11...` is not matched.
 */
export class HtmlMasker {
  #state: 'text' | 'tag' | 'comment' = 'text';
  #quote = '';
  /** Characters that cannot be classified yet (a `<` or `<!-` at the end of a piece). */
  #hold = '';

  readonly #text: TextMasker;

  constructor(text: TextMasker) {
    this.#text = text;
  }

  get counts(): MaskCounts {
    return this.#text.counts;
  }

  write(piece: string): string {
    const s = this.#hold + piece;
    this.#hold = '';
    let out = '';
    let i = 0;
    while (i < s.length) {
      if (this.#state === 'text') {
        const lt = s.indexOf('<', i);
        if (lt < 0) {
          out += this.#text.write(s.slice(i));
          break;
        }
        out += this.#text.write(s.slice(i, lt));
        const rest = s.slice(lt, lt + 4);
        if (rest.length < 2 || ('<!--'.startsWith(rest) && rest.length < 4)) {
          this.#hold = s.slice(lt);
          break;
        }
        if (!/^<[A-Za-z/!?]/.test(rest)) {
          // "a < b" is text (HTML parsing: a `<` not followed by a tag name).
          out += this.#text.write('<');
          i = lt + 1;
          continue;
        }
        out += this.#text.end();
        if (rest === '<!--') {
          this.#state = 'comment';
          out += '<!--';
          i = lt + 4;
        } else {
          this.#state = 'tag';
          out += '<';
          i = lt + 1;
        }
      } else if (this.#state === 'comment') {
        const close = s.indexOf('-->', i);
        if (close < 0) {
          // Keep a possible "--" start of the end marker for the next piece.
          const keep = s.endsWith('--') ? 2 : s.endsWith('-') ? 1 : 0;
          out += s.slice(i, s.length - keep);
          this.#hold = s.slice(s.length - keep);
          break;
        }
        out += s.slice(i, close + 3);
        this.#state = 'text';
        i = close + 3;
      } else {
        // Inside a tag: attribute values may hold `>` when quoted.
        let j = i;
        for (; j < s.length; j++) {
          const c = s[j]!;
          if (this.#quote) {
            if (c === this.#quote) this.#quote = '';
          } else if (c === '"' || c === "'") {
            this.#quote = c;
          } else if (c === '>') {
            break;
          }
        }
        if (j >= s.length) {
          out += s.slice(i);
          break;
        }
        out += s.slice(i, j + 1);
        this.#state = 'text';
        i = j + 1;
      }
    }
    return out;
  }

  end(): string {
    const rest = this.#hold;
    this.#hold = '';
    if (this.#state === 'text') return this.#text.write(rest) + this.#text.end();
    return this.#text.end() + rest;
  }
}

/** Either masker: plain text or HTML. */
export type Masker = {
  write(text: string): string;
  end(): string;
  readonly counts: MaskCounts;
};

/** Masks a whole short text at once (a subject line). */
export function maskWhole(text: string, patterns: readonly MaskingPattern[], counts: MaskCounts): string {
  const masker = new TextMasker(patterns, counts, Number.MAX_SAFE_INTEGER);
  return masker.write(text) + masker.end();
}
