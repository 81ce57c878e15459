/**
 * The patterns data masking looks for: the built-ins (payment cards, US social security
 * numbers, IBANs, bank account numbers) with the checks that keep them from masking ordinary
 * numbers, and the admin's own regular expressions. Compiled once per policy, used for every
 * message. Cisco guide, "Data Masking for Email": patterns are regular expressions with a mask
 * character such as `*`, `^` or `#`.
 */

/** The built-in patterns, in the order they win when two overlap. */
export const builtinNames = ['card', 'iban', 'ssn', 'bank_account'] as const;
export type BuiltinName = (typeof builtinNames)[number];

/** One compiled pattern, ready for the masker. */
export interface MaskingPattern {
  /** Name shown in the findings (`card`, `ssn`, or the admin's name). */
  readonly name: string;
  /** Global regex; the masker sets `lastIndex` itself. */
  readonly regex: RegExp;
  readonly maskChar: string;
  /** How many trailing letters or digits of a match stay readable. */
  readonly visibleTrailing: number;
  readonly inbound: boolean;
  readonly outbound: boolean;
  /**
   * Checks a candidate and answers how many of its leading characters are a real match
   * (the whole candidate, a shorter prefix, or 0 for none). Absent: every match counts.
   */
  readonly accept?: (candidate: string) => number;
  /**
   * A text without a match of this has no match of `regex` either: the masker skips the
   * pattern then. Only where that is provable, as for the default bank-account cue.
   */
  readonly hint?: RegExp;
}

/** Settings every pattern has, built-in or not. */
export interface PatternSettings {
  maskChar: string;
  visibleTrailing: number;
  inbound: boolean;
  outbound: boolean;
}

/**
 * Default for `bank_account_pattern`: digits right after the words "account", "acct" or "a/c"
 * (optionally "number", "no", "nr", "#", ":"), with at most 8 white-space characters between
 * the pieces of the cue. A bare 6-17 digit run is too common (phone numbers, order numbers) to
 * mask without such a cue.
 *
 * Linear time on any text: the look-behind runs only where a digit is (`(?=\d)` first) and
 * its white space is bounded. Unbounded `\s*` runs side by side in a look-behind tried at
 * every position took more than 10 s on 4 KiB of blank lines, stalling the gateway.
 */
export const defaultBankAccountPattern =
  String.raw`(?=\d)(?<=\b(?:account|acct|a/c)\.?(?:\s{0,8}(?:number|num|no\.?|nr\.?|#))?\s{0,8}[:#]?\s{0,8})\d(?:[ -]?\d){5,16}(?!\d)`;

// 13-19 digits, single spaces or dashes (or no-break spaces from HTML mail) between them.
const CARD = String.raw`(?<!\d)\d(?:[ \u00a0-]?\d){12,18}(?!\d)`;
// Area 000, 666 and 900-999, group 00 and serial 0000 are never issued (SSA). Written with the
// same separator twice; nine bare digits are too often something else.
const SSN = String.raw`(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])`;
// Country code, two check digits, up to 30 letters or digits, printed in groups of four or not.
const IBAN = String.raw`(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])`;

/** Luhn check (ISO/IEC 7812-1 annex B) over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return digits.length > 0 && sum % 10 === 0;
}

/** ISO 13616 check: the IBAN with its first four characters moved to the end, read as a number, mod 97 is 1. */
export function ibanValid(iban: string): boolean {
  const compact = iban.replace(/[ \u00a0]/g, '').toUpperCase();
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$/.test(compact)) return false;
  const rearranged = compact.slice(4) + compact.slice(0, 4);
  let rest = 0;
  for (const ch of rearranged) {
    const code = ch.charCodeAt(0);
    const value = code >= 65 ? String(code - 55) : ch;
    for (const digit of value) rest = (rest * 10 + (digit.charCodeAt(0) - 48)) % 97;
  }
  return rest === 1;
}

/**
 * The longest prefix of a candidate that passes `valid`: the whole candidate, or one that ends
 * before a separator (`4111 1111 1111 1111 2` is a card followed by a 2). 0 when none does.
 */
function longestValidPrefix(candidate: string, valid: (prefix: string) => boolean): number {
  if (valid(candidate)) return candidate.length;
  for (let i = candidate.length - 1; i > 0; i--) {
    if (/[ \u00a0-]/.test(candidate[i]!) && !/[ \u00a0-]/.test(candidate[i - 1]!) && valid(candidate.slice(0, i))) return i;
  }
  return 0;
}

const cardValid = (s: string) => {
  const digits = s.replace(/\D/g, '');
  return digits.length >= 13 && digits.length <= 19 && luhnValid(digits);
};

/** A compiled built-in. */
export function builtinPattern(name: BuiltinName, settings: PatternSettings, bankAccountPattern = defaultBankAccountPattern): MaskingPattern {
  switch (name) {
    case 'card':
      return { name, regex: new RegExp(CARD, 'g'), ...settings, accept: (c) => longestValidPrefix(c, cardValid) };
    case 'ssn':
      return { name, regex: new RegExp(SSN, 'g'), ...settings };
    case 'iban':
      return { name, regex: new RegExp(IBAN, 'g'), ...settings, accept: (c) => longestValidPrefix(c, ibanValid) };
    case 'bank_account':
      // Case-insensitive so that "Account No." and "ACCOUNT" both cue it.
      return {
        name,
        regex: new RegExp(bankAccountPattern, 'gi'),
        ...settings,
        // The default's look-behind needs its cue word in the text, and the text is all it can see:
        // without the word no position can match, and the look-behind is not tried at every digit.
        ...(bankAccountPattern === defaultBankAccountPattern ? { hint: /account|acct|a\/c/i } : {}),
      };
  }
}

/** An admin's pattern; the regex and flags were checked by the schema (see regexProblem). */
export function customPattern(name: string, source: string, flags: string, settings: PatternSettings): MaskingPattern {
  return { name, regex: new RegExp(source, flags + 'g'), ...settings };
}

/** Flags an admin may give: the masker adds `g` itself, `y` and `d` make no sense here. */
export const allowedFlags = /^(?!.*(.).*\1)[imsuv]*$/;

// Texts probed for an empty match: a pattern that matches nothing at some position would
// "mask" nothing forever and, worse, shows the admin wrote something other than meant.
const emptyProbes = ['', 'a', 'A', '0', ' ', 'x 1', '\n'];

/**
 * Why a regular expression cannot be used as a masking pattern, or undefined when it can:
 * it does not compile, or it can match the empty string.
 */
export function regexProblem(source: string, flags = ''): string | undefined {
  let re: RegExp;
  try {
    re = new RegExp(source, flags + 'g');
  } catch (err) {
    return `a JavaScript regular expression (${(err as Error).message})`;
  }
  for (const probe of emptyProbes) {
    re.lastIndex = 0;
    let m: RegExpExecArray | null;
    while ((m = re.exec(probe)) !== null) {
      if (m[0].length === 0) return 'a regular expression that cannot match the empty string';
      if (re.lastIndex >= probe.length) break;
    }
  }
  return undefined;
}
