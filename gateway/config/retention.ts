/**
 * `[retention]` in `mailgate.toml` (issue 14: "the store grows forever today; an admin's first
 * question after a full disk"): how long messages, quarantined attachments and the audit log
 * are kept. The sweep that applies it is gateway/retention/. Kept apart from schema.ts so that
 * file stays small; the same conventions apply (custom messages say what was expected).
 */
import { z } from 'zod';
import { is } from './fields.js';

const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 } as const;
const AGE = 'an age such as "90d": a whole number and s, m, h, d or w (seconds, minutes, hours, days, weeks)';
const AGE_RE = /^([1-9]\d*)([smhdw])$/;

/** The milliseconds an age such as `90d`, `12h` or `2w` stands for, or undefined when it is none. */
export function ageMs(text: string): number | undefined {
  const m = AGE_RE.exec(text);
  if (!m) return undefined;
  const ms = Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** An age as written (`90d`), read as milliseconds. */
const age = z
  .string(is(AGE))
  .refine((v) => ageMs(v) !== undefined, is(AGE))
  .transform((v) => ageMs(v)!);

/** `[retention]`: what is older is deleted by the daily sweep; absent keys keep what they cover forever (but `audit`). */
export const retentionSchema = z
  .strictObject({
    /** Messages older than this are deleted with their bytes, indexes and quarantined attachments; never one still in the outbound queue. Default: kept forever. */
    messages: age.optional(),
    /** Quarantined attachments older than this are deleted (the notice stays in the message); they go with their message at the latest. Default: as `messages`. */
    quarantine: age.optional(),
    /** Audit log entries older than this are deleted. Default: 365d. */
    audit: age.default(365 * UNIT_MS.d),
  })
  .prefault({})
  .transform((r) => ({ ...r, quarantine: r.quarantine ?? r.messages }));
