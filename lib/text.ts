/**
 * Small text helpers for what we write into header fields, SMTP replies and stored results,
 * where a line break or a control character would start a new field or a new reply line.
 */

/** A date as RFC 5322 section 3.3 writes it, in UTC: `Mon, 23 Nov 2026 10:00:00 +0000`. */
export function rfc5322Date(d: Date): string {
  // toUTCString is the same form (RFC 7231's IMF-fixdate) with "GMT" as the zone; RFC 5322 wants a numeric zone.
  return d.toUTCString().replace(/GMT$/, '+0000');
}

/**
 * Text on one line: line breaks, control characters and runs of white space become one
 * space, and the ends are trimmed; cut to `maxLength` characters when given.
 */
export function oneLine(text: string, maxLength?: number): string {
  const one = text.replace(/[\s\x00-\x1f\x7f]+/g, ' ').trim();
  return maxLength === undefined ? one : one.slice(0, maxLength);
}
