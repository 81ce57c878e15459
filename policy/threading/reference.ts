/**
 * Conversation references: the short token mailgate writes into the subject of mail it sends
 * and looks for in what comes back (Enate "Inbound Email": "Look for [the] reference in Subject
 * or first 5000 characters of Body"). Six characters of an alphabet without look-alikes (no 0/O,
 * 1/I/L), so a customer who types it from a printout gets it right: 32^6, about a billion.
 */
import { randomInt } from 'node:crypto';

/** The token's characters: digits and capitals, less those read as one another. */
export const REFERENCE_ALPHABET = '23456789ABCDEFGHJKMNPQRSTUVWXYZ';
/** Characters in a token. */
export const REFERENCE_LENGTH = 6;
/** The partition's format when it sets none. */
export const DEFAULT_REFERENCE_FORMAT = '[ref:{ref}]';

/** A new random token, e.g. `K7P2QX`. */
export function newReference(): string {
  let ref = '';
  for (let i = 0; i < REFERENCE_LENGTH; i++) ref += REFERENCE_ALPHABET[randomInt(REFERENCE_ALPHABET.length)];
  return ref;
}

/** Whether `value` is a token (as `messages list --thread` takes it). */
export function isReference(value: string): boolean {
  return value.length === REFERENCE_LENGTH && [...value].every((c) => REFERENCE_ALPHABET.includes(c));
}

/** Writes and finds references in one partition's format (`[partition] reference_format`). */
export class ReferenceFormat {
  readonly format: string;
  readonly #pattern: RegExp;

  constructor(format: string = DEFAULT_REFERENCE_FORMAT) {
    const [before, after] = format.split('{ref}') as [string, string];
    this.format = format;
    // Letter case of the literal parts is a mail client's or a person's to change ("RE: [REF:...]").
    this.#pattern = new RegExp(`${escape(before)}([${REFERENCE_ALPHABET}]{${REFERENCE_LENGTH}})${escape(after)}`, 'gi');
  }

  /** The reference as written into a subject, e.g. `[ref:K7P2QX]`. */
  write(ref: string): string {
    return this.format.replace('{ref}', ref);
  }

  /** Every token written in `text` in this format, in order, upper-cased, each once. */
  find(text: string): string[] {
    const found = new Set<string>();
    for (const m of text.matchAll(this.#pattern)) {
      const ref = m[1]!.toUpperCase();
      if (isReference(ref)) found.add(ref);
    }
    return [...found];
  }

  /** `subject` with the reference added at its end, unless it is in it already. */
  subjectWith(subject: string, ref: string): string {
    if (this.find(subject).includes(ref)) return subject;
    return subject.trim() ? `${subject.trimEnd()} ${this.write(ref)}` : this.write(ref);
  }
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
