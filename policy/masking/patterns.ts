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
  /**
   * Leaves protected text alone: URLs, Message-IDs and addresses in angle brackets, and the
   * header fields other than the subject where raw bytes are masked. Set for the built-ins; an
   * admin's own pattern matches everywhere (it says exactly what to mask).
   */
  readonly skipsProtected?: boolean;
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
export const defaultBankAccountPattern = String.raw`(?=\d)(?<=\b(?:account|acct|a/c)\.?(?:\s{0,8}(?:number|num|no\.?|nr\.?|#))?\s{0,8}[:#]?\s{0,8})\d(?:[ -]?\d){5,16}(?!\d)`;

// Where a number is not a card: glued to a letter, digit or underscore (an identifier such as
// `ref4111...` or a hex id), or continuing a decimal, a time, a path or a dashed number
// (`0.4111...`, `2024-4111...`). A space before it is fine: "Cards: 4111... 5555...".
const CARD_BEFORE = String.raw`(?<![A-Za-z0-9_]|\d[.,/:-])`;
// After it: no digit, underscore or decimal, and not the local part of an address
// (`4111...@example.com`). A letter may follow: adjacent encoded words in a subject decode
// with no space between them (RFC 2047 section 6.2), "1111café".
const CARD_AFTER = String.raw`(?![0-9_@]|[.,/:-]\d)`;
// ISO/IEC 7812 numbers are printed as one run or in fixed groups: 4-4-4-4 (with a last group
// of 1 to 4, so 13 to 16 digits, or a fifth group of 1 to 3 for 17 to 19: 4-4-4-4-3), and
// Amex's 4-6-5 (Diners' 4-6-4), the same separator throughout. A grouped number must not be
// the tail of a longer one in the same groups (`9400 1118 9922 3333 4444 55`, a tracking
// number). "IRQs 16 17 18 19 20 21" is no grouping a card is printed in.
const CARD = [
  String.raw`${CARD_BEFORE}\d{13,19}(?!\d)${CARD_AFTER}`,
  String.raw`${CARD_BEFORE}(?<!\d[ \u00a0])\d{4}([ \u00a0-])\d{4}\1\d{4}\1(?:\d{4}\1\d{1,3}|\d{1,4})(?!\d)${CARD_AFTER}`,
  String.raw`${CARD_BEFORE}(?<!\d[ \u00a0])\d{4}([ \u00a0-])\d{6}\2\d{4,5}(?!\d)${CARD_AFTER}`,
].join('|');
// Area 000, 666 and 900-999, group 00 and serial 0000 are never issued (SSA). Written with the
// same separator twice; nine bare digits are too often something else. Not part of a longer
// number: "+49 301 23 4567" and "123 45 6789 0" are phone numbers, not SSNs.
const SSN = String.raw`(?<![A-Za-z0-9_+-]|\d[ .,/:-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![A-Za-z0-9_-]|[ .,/:]\d)`;
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

/**
 * Issuer ranges that exist, with the lengths their cards have: ISO/IEC 7812 major industry
 * identifiers 1 to 6 (airlines, travel and entertainment, banking), narrowed to the ranges the
 * networks publish. A prefix is `from`..`to` over the first digits (both the same length).
 */
const issuers: readonly { from: string; to: string; lengths: readonly number[] }[] = [
  { from: '1', to: '1', lengths: [15] }, // UATP
  { from: '2200', to: '2205', lengths: [16, 17, 18, 19] }, // Mir, BORICA
  { from: '2221', to: '2720', lengths: [16] }, // Mastercard 2-series
  { from: '300', to: '305', lengths: [14, 15, 16, 17, 18, 19] }, // Diners Club
  { from: '3095', to: '3095', lengths: [14, 15, 16, 17, 18, 19] },
  { from: '36', to: '36', lengths: [14, 15, 16, 17, 18, 19] },
  { from: '38', to: '39', lengths: [14, 15, 16, 17, 18, 19] },
  { from: '31', to: '31', lengths: [19] }, // China T-Union
  { from: '34', to: '34', lengths: [15] }, // American Express
  { from: '37', to: '37', lengths: [15] },
  { from: '3528', to: '3589', lengths: [16, 17, 18, 19] }, // JCB
  { from: '4', to: '4', lengths: [13, 16, 19] }, // Visa
  { from: '50', to: '50', lengths: [12, 13, 14, 15, 16, 17, 18, 19] }, // Maestro, Verve, RuPay, Dankort
  { from: '51', to: '55', lengths: [16] }, // Mastercard
  { from: '56', to: '58', lengths: [12, 13, 14, 15, 16, 17, 18, 19] }, // Maestro
  { from: '60', to: '65', lengths: [16, 17, 18, 19] }, // Discover, UnionPay, RuPay, Troy, InstaPayment
  { from: '6304', to: '6304', lengths: [12, 13, 14, 15] }, // Maestro (16 to 19 digits: above)
  { from: '67', to: '67', lengths: [12, 13, 14, 15, 16, 17, 18, 19] }, // Maestro, Bancontact
];

/** Whether a run of digits has the prefix and length of a card some network issues. */
function issuedCardNumber(digits: string): boolean {
  return issuers.some((r) => {
    if (!r.lengths.includes(digits.length)) return false;
    const prefix = digits.slice(0, r.from.length);
    return prefix >= r.from && prefix <= r.to;
  });
}

/** 13 to 19 digits, a prefix some network issues, not one digit repeated (`0000 0000 0000 0000`), Luhn-valid. */
function cardNumberValid(digits: string): boolean {
  return digits.length >= 13 && digits.length <= 19 && !/^(\d)\1*$/.test(digits) && issuedCardNumber(digits) && luhnValid(digits);
}

const cardValid = (s: string) => cardNumberValid(s.replace(/\D/g, ''));

// "Account: 2024-03-12" is when an account was opened, not its number.
const datePattern = /^(?:\d{4}([ -])\d{2}\1\d{2}|\d{2}([ -])\d{2}\2\d{4})$/;

/** A compiled built-in. */
export function builtinPattern(name: BuiltinName, settings: PatternSettings, bankAccountPattern = defaultBankAccountPattern): MaskingPattern {
  switch (name) {
    case 'card':
      return { name, regex: new RegExp(CARD, 'g'), ...settings, skipsProtected: true, accept: (c) => longestValidPrefix(c, cardValid) };
    case 'ssn':
      return { name, regex: new RegExp(SSN, 'g'), ...settings, skipsProtected: true };
    case 'iban':
      return { name, regex: new RegExp(IBAN, 'g'), ...settings, skipsProtected: true, accept: (c) => longestValidPrefix(c, ibanValid) };
    case 'bank_account':
      // Case-insensitive so that "Account No." and "ACCOUNT" both cue it.
      return {
        name,
        regex: new RegExp(bankAccountPattern, 'gi'),
        ...settings,
        skipsProtected: true,
        // The default's look-behind needs its cue word in the text, and the text is all it can see:
        // without the word no position can match, and the look-behind is not tried at every digit.
        ...(bankAccountPattern === defaultBankAccountPattern ? { hint: /account|acct|a\/c/i, accept: (c) => (datePattern.test(c) ? 0 : c.length) } : {}),
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
