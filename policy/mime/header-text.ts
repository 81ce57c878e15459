/**
 * Reading header values that may be huge. A header section may hold up to a mebibyte, all of
 * it one folded Subject of encoded words or one To of 20000 addresses, and libmime's
 * decodeWords and nodemailer's addressparser are synchronous: 300 KiB of encoded words took
 * 80 ms to decode, once in every stage that looked at the subject, all in one event-loop turn.
 * Stages that only read a value (listings, phrase matching, the quarantine marker) read its
 * first {@link HEADER_READ_LIMIT} characters; masking, which must see all of it, decodes it in
 * slices and yields between them.
 */
import libmime from 'libmime';
import addressparser from 'nodemailer/lib/addressparser';

/** Most characters of one header value read for listings and matching (16 KiB). */
export const HEADER_READ_LIMIT = 16 * 1024;

const ENCODED_WORD = String.raw`=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=`;

/**
 * Where to cut `value` at or before `limit` so that no encoded word is cut in two: before the
 * last white space, else after the last `?=`, else at the limit. Never at `from` or before.
 */
function cutBefore(value: string, from: number, limit: number): number {
  if (limit >= value.length) return value.length;
  const space = Math.max(value.lastIndexOf(' ', limit), value.lastIndexOf('\t', limit));
  if (space > from) return space;
  const wordEnd = value.lastIndexOf('?=', limit - 2);
  if (wordEnd > from) return wordEnd + 2;
  return limit;
}

/** At most the first `limit` characters of a header value, cut where no encoded word is cut. */
export function headerHead(value: string, limit = HEADER_READ_LIMIT): string {
  return value.length <= limit ? value : value.slice(0, cutBefore(value, 0, limit));
}

/** RFC 2047 encoded words decoded; the text as it is where they cannot be. */
function decodeWords(value: string): string {
  try {
    return libmime.decodeWords(value);
  } catch {
    return value;
  }
}

/** The decoded text of at most the first `limit` characters of a header value (see {@link headerHead}). */
export function decodedHead(value: string, limit = HEADER_READ_LIMIT): string {
  return decodeWords(headerHead(value, limit));
}

/**
 * Addresses of at most the first `limit` characters of an address header value, groups
 * flattened; the entry the cut runs through is left out. Bare words (`MAILER-DAEMON`) count.
 */
export function headAddresses(value: string, limit = HEADER_READ_LIMIT): string[] {
  let text = value;
  if (value.length > limit) {
    const comma = value.lastIndexOf(',', limit);
    text = comma > 0 ? value.slice(0, comma) : '';
  }
  const out: string[] = [];
  for (const entry of addressparser(text, { flatten: true })) {
    if ('address' in entry && entry.address) out.push(entry.address.trim());
  }
  return out;
}

/**
 * The whole value decoded, `slice` characters at a time with a turn of the event loop between
 * slices, for masking. Cut as {@link headerHead} cuts; white space between two encoded words
 * at a cut is dropped, as decoding drops it. A character whose bytes a sender split between
 * two encoded words right at a cut reads as U+FFFD: only in a value longer than `slice`.
 */
export async function decodedWhole(value: string, slice = HEADER_READ_LIMIT): Promise<string> {
  if (value.length <= slice) return decodeWords(value);
  const wordEnds = new RegExp(`${ENCODED_WORD}$`);
  const wordAt = new RegExp(ENCODED_WORD, 'y');
  let out = '';
  let at = 0;
  while (at < value.length) {
    const end = cutBefore(value, at, at + slice);
    const piece = value.slice(at, end);
    out += decodeWords(piece);
    let next = end;
    while (next < value.length && (value[next] === ' ' || value[next] === '\t')) next++;
    wordAt.lastIndex = next;
    // (An encoded word is at most 75 characters, RFC 2047 section 2; 1000 is plenty.)
    if (next > end && !(wordEnds.test(piece.slice(-1000)) && wordAt.test(value))) out += value.slice(end, next);
    at = next;
    if (at < value.length) await new Promise((resolve) => setImmediate(resolve));
  }
  return out;
}
