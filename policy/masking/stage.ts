/**
 * Data masking (Cisco guide, "Data Masking for Email"): card numbers, social security
 * numbers, IBANs, bank account numbers and the admin's own patterns are replaced by a mask
 * character in the subject and in text/plain and text/html parts before the message is
 * stored, so the original never reaches the store. Partition administrators define the
 * patterns; a department manages its own only when the partition allows it.
 *
 * The `[masking]` section:
 *
 * ```toml
 * [masking]
 * enabled = true
 * outbound = false                 # mask incoming mail only
 * builtin = ["card", "iban"]       # default: all four
 * [masking.card]
 * mask_char = "#"
 * visible_trailing = 4
 * [[masking.pattern]]
 * name = "customer-pin"
 * regex = '(?<=PIN:?\s*)\d{4,6}'
 * flags = "i"
 * ```
 */
import { Transform } from 'node:stream';
import { z } from 'zod';
import type { Direction, Stage } from '../chain/stage.js';
import { allowedFlags, builtinNames, builtinPattern, customPattern, defaultBankAccountPattern, regexProblem, type MaskingPattern } from './patterns.js';
import { charsetPlanner } from './charsets.js';
import { MessageMasker, rawMessageStream } from './stream.js';
import { defaultMaskWindow, type MaskCounts } from './text-masker.js';

const is = (phrase: string) => ({ error: phrase });

const MASK = 'one printable ASCII character such as "*", "^" or "#"';
const VISIBLE = 'an integer from 0 to 32';
const maskChar = z
  .string(is(MASK))
  .regex(/^[!-~]$/, is(MASK))
  .default('*');
const visibleTrailing = (byDefault: number) => z.int(is(VISIBLE)).min(0, is(VISIBLE)).max(32, is(VISIBLE)).default(byDefault);
const flag = z.boolean(is('true or false'));

/** Settings of one built-in pattern (`[masking.card]`, `[masking.ssn]`, `[masking.iban]`, `[masking.bank_account]`). */
const builtinSettings = (visibleByDefault: number) =>
  z
    .object({
      /** Character that replaces each masked letter or digit. Default `*`. */
      mask_char: maskChar,
      /** How many trailing letters or digits stay readable (`**** **** **** 1111`). */
      visible_trailing: visibleTrailing(visibleByDefault),
      /** Mask this pattern in incoming mail (also needs `[masking] inbound`). Default true. */
      inbound: flag.default(true),
      /** Mask this pattern in outgoing mail (also needs `[masking] outbound`). Default true. */
      outbound: flag.default(true),
    })
    .strict()
    .prefault({});

const NAME = 'a name of letters, digits, "_", "-" or "." (at most 64)';
const FLAGS = 'regular expression flags from "i", "m", "s", "u", "v", each at most once';

/** One `[[masking.pattern]]`: an admin's own regular expression. */
const patternSchema = z
  .object({
    /** Name shown in the findings (`customer-pin: 2 masked`). */
    name: z.string(is(NAME)).regex(/^[A-Za-z0-9_.-]{1,64}$/, is(NAME)),
    /** A JavaScript regular expression (source only, no slashes). It must not match the empty string. */
    regex: z.string(is('a JavaScript regular expression')),
    /** Flags such as "i" for case-insensitive; `g` is added by mailgate. Default none. */
    flags: z.string(is(FLAGS)).regex(allowedFlags, is(FLAGS)).default(''),
    /** Character that replaces each masked letter or digit. Default `*`. */
    mask_char: maskChar,
    /** How many trailing letters or digits stay readable. Default 0. */
    visible_trailing: visibleTrailing(0),
    /** Mask it in incoming mail. Default true. */
    inbound: flag.default(true),
    /** Mask it in outgoing mail. Default true. */
    outbound: flag.default(true),
  })
  .strict()
  .superRefine((p, ctx) => {
    const problem = regexProblem(p.regex, p.flags);
    if (problem) ctx.addIssue({ code: 'custom', path: ['regex'], message: problem, input: p.regex });
  });

/** The `[masking]` section of a partition or department policy file. */
export const maskingSectionSchema = z
  .object({
    /**
     * Turns masking on. Default false. In a department's file it turns on the built-ins it
     * lists; the department's own patterns apply without it (see compileMaskingPolicy).
     */
    enabled: flag.default(false),
    /** Mask incoming mail. Default true (once enabled). */
    inbound: flag.default(true),
    /** Mask outgoing mail. Default true (once enabled). */
    outbound: flag.default(true),
    /** Partition file only: departments may add their own patterns in their policy files. Default false; `policy check` warns about a department's patterns without it. */
    departments_manage_own: flag.default(false),
    /** Which built-in patterns are on: "card", "ssn", "iban", "bank_account". Default all. */
    builtin: z.array(z.enum(builtinNames, is('"card", "ssn", "iban" or "bank_account"'))).default([...builtinNames]),
    /** Regular expression for bank account numbers (matched case-insensitively). Default: 6-17 digits after "account", "acct" or "a/c". */
    bank_account_pattern: z.string(is('a JavaScript regular expression')).default(defaultBankAccountPattern),
    /** Longest match, in characters, found even when it straddles two pieces of a streamed part. Default 64. */
    max_match_length: z
      .int(is('an integer from 16 to 1024'))
      .min(16, is('an integer from 16 to 1024'))
      .max(1024, is('an integer from 16 to 1024'))
      .default(defaultMaskWindow),
    /** Payment card numbers: 13-19 digits with an issuer prefix and length that exist, Luhn-valid, as one run or printed in groups (patterns.ts). */
    card: builtinSettings(4),
    /** US social security numbers written 123-45-6789 or 123 45 6789 (never-issued numbers and longer numbers excluded). */
    ssn: builtinSettings(0),
    /** IBANs whose ISO 13616 check digits are right (mod 97). */
    iban: builtinSettings(4),
    /** Bank account numbers, as `bank_account_pattern` finds them. */
    bank_account: builtinSettings(4),
    /** The admin's own patterns. */
    pattern: z.array(patternSchema).default([]),
  })
  .strict()
  .superRefine((s, ctx) => {
    const problem = regexProblem(s.bank_account_pattern, 'i');
    if (problem) ctx.addIssue({ code: 'custom', path: ['bank_account_pattern'], message: problem, input: s.bank_account_pattern });
    const seen = new Set<string>(builtinNames);
    s.pattern.forEach((p, i) => {
      if (seen.has(p.name))
        ctx.addIssue({ code: 'custom', path: ['pattern', i, 'name'], message: 'a name not used by another pattern or a built-in', input: p.name });
      seen.add(p.name);
    });
  });

/** A validated `[masking]` section. */
export type MaskingSection = z.output<typeof maskingSectionSchema>;

/** What masking does for one partition and department, compiled once. */
export interface MaskingPolicy {
  /** Patterns for incoming mail, in the order they win when two overlap. */
  readonly inbound: readonly MaskingPattern[];
  readonly outbound: readonly MaskingPattern[];
  /** Longest match found across two pieces of a stream (`max_match_length`). */
  readonly window: number;
  /** Sentences for the findings about how the policy was put together. */
  readonly notes: readonly string[];
}

function sectionPatterns(s: MaskingSection): MaskingPattern[] {
  const out: MaskingPattern[] = [];
  for (const name of builtinNames) {
    if (!s.builtin.includes(name)) continue;
    const b = s[name];
    const settings = { maskChar: b.mask_char, visibleTrailing: b.visible_trailing, inbound: s.inbound && b.inbound, outbound: s.outbound && b.outbound };
    out.push(builtinPattern(name, settings, s.bank_account_pattern));
  }
  for (const p of s.pattern) {
    const settings = { maskChar: p.mask_char, visibleTrailing: p.visible_trailing, inbound: s.inbound && p.inbound, outbound: s.outbound && p.outbound };
    out.push(customPattern(p.name, p.regex, p.flags, settings));
  }
  return out;
}

/**
 * Combines the partition and department sections. The partition's patterns always apply when
 * it enables masking. A department's section counts only when the partition sets
 * `departments_manage_own` (Cisco guide: the partition administrator decides whether
 * departments manage their own configuration); its own `[[masking.pattern]]` entries are then
 * added to the partition's, and `enabled = true` in it also turns on the built-ins it lists. A
 * department cannot switch off what the partition masks, and on a name both use the
 * partition's wins.
 */
export function compileMaskingPolicy(partition: MaskingSection | undefined, department: MaskingSection | undefined): MaskingPolicy {
  const notes: string[] = [];
  let patterns: MaskingPattern[] = [];
  let window = partition?.max_match_length ?? defaultMaskWindow;
  if (partition?.enabled) patterns = sectionPatterns(partition);
  const problem = departmentMaskingProblem(partition, department);
  if (problem) notes.push(`The department's masking settings were not used: ${problem}.`);
  else if (department && (department.enabled || department.pattern.length)) {
    const names = new Set(patterns.map((p) => p.name));
    for (const p of sectionPatterns(department.enabled ? department : { ...department, builtin: [] })) {
      if (names.has(p.name)) {
        if (department.pattern.some((d) => d.name === p.name))
          notes.push(`The department's pattern "${p.name}" was not used: the partition has one of that name.`);
        continue;
      }
      patterns.push(p);
    }
    window = Math.max(window, department.max_match_length);
  }
  return { inbound: patterns.filter((p) => p.inbound), outbound: patterns.filter((p) => p.outbound), window, notes };
}

/**
 * Why a department's `[masking]` section cannot apply under this partition section, or
 * undefined when it applies (or has nothing to apply). For the findings and `policy check`.
 */
export function departmentMaskingProblem(partition: MaskingSection | undefined, department: MaskingSection | undefined): string | undefined {
  if (!department || !(department.enabled || department.pattern.length)) return undefined;
  if (partition?.departments_manage_own) return undefined;
  return 'the partition policy does not let departments manage their own patterns (departments_manage_own)';
}

/** The masking stage, with the policy it compiled (for `rawMasker`). */
export interface MaskingStage extends Stage {
  readonly policy: MaskingPolicy;
}

/** The `masking` stage for one partition and department policy. */
export function maskingStage(partition: MaskingSection | undefined, department: MaskingSection | undefined): MaskingStage {
  const policy = compileMaskingPolicy(partition, department);
  const planCharset = charsetPlanner();
  return {
    name: 'masking',
    policy,
    // Masking promises nothing unmasked is stored: the original of a wrapping message too.
    wrappedOriginal: { rawMasker: (direction, counts) => rawMasker(policy, direction, counts) },
    create(ctx) {
      const patterns = policy[ctx.direction];
      if (patterns.length === 0) {
        if (policy.inbound.length + policy.outbound.length > 0) {
          ctx.findings.masking = { summary: [`Masking is not enabled for ${ctx.direction} mail.`, ...policy.notes], direction: ctx.direction, masked: {} };
        } else if (policy.notes.length) {
          ctx.findings.masking = { summary: [...policy.notes], direction: ctx.direction, masked: {} };
        }
        return null;
      }
      return new MessageMasker(patterns, policy.window, planCharset, (result) => {
        ctx.findings.masking = findings(result, ctx.direction, ctx.dryRun, policy.notes);
      });
    },
  };
}

function findings(r: MessageMasker, direction: Direction, dryRun: boolean, notes: readonly string[]) {
  const counts: MaskCounts = r.counts;
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  const summary: string[] = [];
  const parts = `${r.textParts} text part${r.textParts === 1 ? '' : 's'}`;
  if (total === 0) {
    summary.push(`Checked the subject and ${parts} of this ${direction} message: nothing to mask.`);
  } else {
    const list = Object.entries(counts)
      .map(([name, n]) => `${name} ${n}`)
      .join(', ');
    summary.push(
      `${dryRun ? 'Would mask' : 'Masked'} ${total} match${total === 1 ? '' : 'es'} in this ${direction} message (${list}), checking the subject and ${parts}.`,
    );
  }
  if (r.subjectMasked) summary.push(dryRun ? 'The subject would be masked.' : 'The subject was masked.');
  for (const c of r.charsetChanges) {
    summary.push(`Part ${c.part} is in ${c.from}, which masking cannot write back: it ${dryRun ? 'would be' : 'is'} stored as UTF-8.`);
  }
  summary.push(...notes);
  return { summary, direction, masked: counts, total, textParts: r.textParts, subjectMasked: r.subjectMasked, charsetChanges: r.charsetChanges };
}

/**
 * Masks a raw byte stream read as text, for a message that could not be parsed (its original
 * is attached to a wrapping message). Bytes below 0x80 are read as ASCII, all others pass
 * untouched; nothing is decoded first, so a number inside base64 or split by a
 * quoted-printable soft line break is not seen. The built-ins leave header fields other than
 * the subject, MIME part headers, boundaries, URLs and Message-IDs alone, as the parsed path
 * does (raw.ts). Returns null when nothing is masked in that direction.
 */
export function rawMasker(policy: MaskingPolicy, direction: Direction, counts: MaskCounts = {}): Transform | null {
  const patterns = policy[direction];
  if (patterns.length === 0) return null;
  return rawMessageStream(patterns, counts, policy.window);
}
