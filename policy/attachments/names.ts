/**
 * Every file name a MIME part presents, decoded and normalised the way an attacker's target
 * (Windows Explorer, a mail client's "save attachment") would read it. Senders who want a
 * blocked file through give different names in different places and count on the filter
 * reading only one, so we read all of them:
 *
 * - Content-Disposition `filename=` (plain or RFC 2047 encoded-words, which RFC 2231 forbids
 *   there but Outlook and Thunderbird decode anyway),
 * - Content-Disposition `filename*=` / `filename*0*=`... (RFC 2231 sections 3 and 4:
 *   continuations and charsets),
 * - Content-Type `name=` and `name*=` (RFC 2046 deprecated it; clients still honour it),
 *
 * from every Content-Disposition and Content-Type line (a repeated header is another place).
 */
import libmime from 'libmime';
import type { MimeNode } from '@zone-eu/mailsplit';

/** One name a part presents, where it was found, and what normalising it took. */
export interface PresentedName {
  /** Where: `filename`, `filename*`, `name`, `name*`. */
  source: string;
  /** The decoded name as given (control characters shown as \u escapes). */
  given: string;
  /** The name a user would see once invisible characters and trailing dots/spaces are gone. */
  normalised: string;
  /** Lower-case last extension with its dot (`.exe`), '' when there is none. */
  extension: string;
  /** What normalising found, e.g. `right-to-left override U+202E removed`. */
  evidence: string[];
}

// Unicode bidi controls make `invoice\u202Efdp.exe` display as `invoiceexe.pdf`
// (CVE-2011-xxxx style "RLO" trick); zero-width characters hide an extension's real spelling.
const INVISIBLE: Record<string, string> = {
  '\u202a': 'left-to-right embedding U+202A',
  '\u202b': 'right-to-left embedding U+202B',
  '\u202c': 'pop directional formatting U+202C',
  '\u202d': 'left-to-right override U+202D',
  '\u202e': 'right-to-left override U+202E',
  '\u2066': 'left-to-right isolate U+2066',
  '\u2067': 'right-to-left isolate U+2067',
  '\u2068': 'first strong isolate U+2068',
  '\u2069': 'pop directional isolate U+2069',
  '\u200e': 'left-to-right mark U+200E',
  '\u200f': 'right-to-left mark U+200F',
  '\u061c': 'arabic letter mark U+061C',
  '\u200b': 'zero width space U+200B',
  '\u200c': 'zero width non-joiner U+200C',
  '\u200d': 'zero width joiner U+200D',
  '\ufeff': 'zero width no-break space U+FEFF',
};
// The class lists joiners (U+200C, U+200D) one by one on purpose: each is a character to remove.
// eslint-disable-next-line no-misleading-character-class
const INVISIBLE_RE = new RegExp(`[${Object.keys(INVISIBLE).join('')}]`, 'g');

/** Normalises one decoded name: invisible characters out, trailing dots and spaces off (Windows drops them). */
export function normaliseName(source: string, given: string): PresentedName {
  const evidence: string[] = [];
  const found = new Set(given.match(INVISIBLE_RE) ?? []);
  for (const c of found) evidence.push(`${INVISIBLE[c]} removed from the name`);
  let name = given.replace(INVISIBLE_RE, '');
  // Other control characters (NUL, CR, TAB) are never part of a name a file system keeps.

  name = name.replace(/[\u0000-\u001f\u007f]/g, '');
  // A path in the name (`..\\..\\evil.exe`): only the last component is the file.
  name = name.slice(Math.max(name.lastIndexOf('/'), name.lastIndexOf('\\')) + 1);
  const trimmed = name.replace(/[.\s]+$/u, '');
  if (trimmed !== name) evidence.push('trailing dots or spaces stripped from the name');
  name = trimmed.trim();
  const dot = name.lastIndexOf('.');
  const extension = dot > 0 || (dot === 0 && name.length > 1) ? name.slice(dot).toLowerCase() : '';
  if (extension && name.slice(0, dot).includes('.')) evidence.push(`double extension: only the last one, ${extension}, counts`);
  return { source, given: visible(given), normalised: name, extension, evidence };
}

/** Every name the part presents, in header order, duplicates (same source and name) removed. */
export function presentedNames(node: MimeNode): PresentedName[] {
  const out: PresentedName[] = [];
  const seen = new Set<string>();
  const add = (source: string, given: string | undefined) => {
    if (given === undefined || given === '') return;
    const key = `${source}\x00${given}`;
    if (seen.has(key)) return;
    seen.add(key);
    out.push(normaliseName(source, given));
  };
  if (!node.headers) return out;
  for (const [header, param] of [
    ['content-disposition', 'filename'],
    ['content-type', 'name'],
  ] as const) {
    for (const line of node.headers.get(header)) {
      const params = splitParams(line.slice(line.indexOf(':') + 1));
      add(param, plainParam(params, param));
      add(`${param}*`, extendedParam(params, param));
    }
  }
  // mailsplit's own reading, in case its parser found a name ours did not.
  if (node.filename && !out.some((n) => n.given === visible(node.filename as string))) add('parsed', node.filename);
  return out;
}

/** `key=value` pairs of a structured header value, in order, quotes kept. */
function splitParams(value: string): [string, string][] {
  const params: [string, string][] = [];
  let i = value.indexOf(';');
  if (i < 0) return params;
  while (i < value.length) {
    i++; // past ';'
    let start = i;
    while (i < value.length && value[i] !== '=' && value[i] !== ';') i++;
    const key = value.slice(start, i).trim().toLowerCase();
    if (value[i] !== '=') continue;
    i++;
    while (value[i] === ' ' || value[i] === '\t') i++;
    start = i;
    if (value[i] === '"') {
      i++;
      while (i < value.length && value[i] !== '"') i += value[i] === '\\' ? 2 : 1;
      i++;
    } else {
      while (i < value.length && value[i] !== ';') i++;
    }
    params.push([key, value.slice(start, i).trim()]);
    while (i < value.length && value[i] !== ';') i++;
  }
  return params;
}

function unquote(v: string): string {
  return v.startsWith('"') ? v.slice(1, v.endsWith('"') && v.length > 1 ? -1 : undefined).replace(/\\(.)/g, '$1') : v;
}

/** The plain `param=` value, encoded-words decoded. */
function plainParam(params: [string, string][], name: string): string | undefined {
  const found = params.find(([k]) => k === name);
  if (!found) return undefined;
  const raw = unquote(found[1]);
  try {
    return libmime.decodeWords(raw);
  } catch {
    return raw;
  }
}

/** The RFC 2231 `param*` / `param*0*`... value, continuations joined and charset decoded (libmime does both). */
function extendedParam(params: [string, string][], name: string): string | undefined {
  const parts = params.filter(([k]) => k.startsWith(`${name}*`));
  if (parts.length === 0) return undefined;
  const synthetic = 'x; ' + parts.map(([k, v]) => `${k.replace(name, 'p')}=${v}`).join('; ');
  try {
    const parsed = libmime.parseHeaderValue(synthetic);
    const value = parsed.params['p'];
    return typeof value === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The name with invisible and control characters written as escapes, safe for logs and metadata. */
export function visible(name: string): string {
  return name.replace(
    /[\u0000-\u001f\u007f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0').toUpperCase()}`,
  );
}
