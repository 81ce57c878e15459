/**
 * `[retention]` in `mailgate.toml` (issue 14: "the store grows forever today; an admin's first
 * question after a full disk"): how long messages, quarantined attachments and the audit log
 * are kept. The sweep that applies it is gateway/retention/. Kept apart from schema.ts so that
 * file stays small; the same conventions apply (custom messages say what was expected).
 */
import { z } from 'zod';
import { age as fieldAge } from './fields.js';

const DAY_MS = 86_400_000;
const age = fieldAge('"90d"');

/** `[retention]`: what is older is deleted by the daily sweep; absent keys keep what they cover forever (but `audit`). */
export const retentionSchema = z
  .strictObject({
    /** Messages older than this are deleted with their bytes, indexes and quarantined attachments; never one still in the outbound queue. Default: kept forever. */
    messages: age.optional(),
    /** Quarantined attachments older than this are deleted (the notice stays in the message); they go with their message at the latest. Default: as `messages`. */
    quarantine: age.optional(),
    /** Audit log entries older than this are deleted. Default: 365d. */
    audit: age.default(365 * DAY_MS),
  })
  .prefault({})
  .transform((r) => ({ ...r, quarantine: r.quarantine ?? r.messages }));
