/**
 * Unparsable-mail wrapping (Genesys seed, "Handling Unparsable E-Mails"; Emplifi seed,
 * "PCEmail Quarantine Test"). This stage runs first and only watches: it fails the message with
 * an {@link UnparsableMessage} as soon as it sees why the message cannot be processed. Ingest
 * then stores a wrapping message instead (wrapping-message.ts) with the original attached,
 * byte for byte. Failures of the MIME splitter or of any later stage are wrapped as well
 * (`parser_exception`), so no message is lost because a stage could not cope with it.
 * Wrapping is no way around attachment blocking: ingest judges the original by the
 * attachment rules first (policy/attachments/original.ts) and, when they block anything in it,
 * the original is quarantined or deleted as a whole instead of attached.
 *
 * The reasons and their codes are in unparsable.ts ({@link unparsableReasons}).
 */
import { z } from 'zod';
import type { Stage } from '../chain/stage.js';
import { MimeChecker, wrappingFindings, defaultMimeLimits, type MimeLimits } from '../mime/mime-check.js';

export { UnparsableMessage, unparsableReasons, unparsableFrom, type UnparsableReason } from '../mime/unparsable.js';
export { defaultMimeLimits, quarantineTestMarkers, type MimeLimits } from '../mime/mime-check.js';
export { wrappingMessage, type WrappingMessageOptions } from './wrapping-message.js';

const is = (phrase: string) => ({ error: phrase });
const positive = (unit: string) => z.int(is(`a positive integer (${unit})`)).min(1, is(`a positive integer (${unit})`));

/**
 * `[wrapping]`: the limits beyond which a message counts as unparsable and is wrapped. In a
 * department's file the same keys can only make the limits stricter (see {@link wrappingStage}).
 */
export const wrappingSectionSchema = z
  .object({
    /**
     * Largest header section of the message or of one MIME part, in bytes (default 1048576,
     * mailsplit's maxHeadSize). The MIME splitter also stops at its own 1 MiB bound, counting
     * at least 64 bytes per line, so a larger value has no effect.
     */
    max_header_size: positive('bytes').default(defaultMimeLimits.maxHeaderSize),
    /** Longest header line in octets, line end excluded (default 998, RFC 5322 2.1.1). */
    max_header_line: positive('octets').default(defaultMimeLimits.maxHeaderLine),
    /**
     * Most MIME parts in one message (default 1000, as mailsplit and Haraka). The MIME splitter
     * stops at 1000 whatever this says, so a larger value has no effect.
     */
    max_parts: positive('parts').default(defaultMimeLimits.maxParts),
    /** Deepest nesting of MIME parts, counting embedded messages; the message itself is 0 (default 50). */
    max_depth: positive('levels').default(defaultMimeLimits.maxDepth),
    /**
     * Wrap a multipart that never reaches its closing boundary (`boundary_unterminated`).
     * Default true, as the issue asks; mail clients show such a message, and truncated bounces
     * often end this way (41 of the 632 sisimai bounces), so `false` stores them as received.
     */
    wrap_unterminated_multipart: z.boolean(is('true or false')).default(true),
    /**
     * Treat a subject containing `[mailgate quarantine test message]` or
     * `[pcemail quarantine test message]` (any case) as a fatal failure, so that admins can
     * check the wrapping path end to end (Emplifi seed). Default true.
     */
    quarantine_test: z.boolean(is('true or false')).default(true),
  })
  .strict();

/** `[wrapping]` after defaults. */
export type WrappingSection = z.infer<typeof wrappingSectionSchema>;

const defaults: WrappingSection = wrappingSectionSchema.parse({});

/**
 * The wrapping stage. The partition's limits apply to every message; a department's section
 * can make them stricter, never looser (each limit is the smaller of the two), since these
 * limits protect the whole gateway. Note that a department section that leaves a key out gets
 * its default: to raise a limit above its default, raise it in the department files too. The
 * quarantine test marker counts unless either file turns it off; unterminated multiparts are
 * wrapped if either file asks for it.
 */
export function wrappingStage(partition: WrappingSection | undefined, department: WrappingSection | undefined): Stage {
  const p = partition ?? defaults;
  const d = department ?? p;
  const limits: MimeLimits = {
    maxHeaderSize: Math.min(p.max_header_size, d.max_header_size),
    maxHeaderLine: Math.min(p.max_header_line, d.max_header_line),
    maxParts: Math.min(p.max_parts, d.max_parts),
    maxDepth: Math.min(p.max_depth, d.max_depth),
  };
  const quarantineTest = p.quarantine_test && d.quarantine_test;
  // Stricter wins here too: either file can ask for unterminated multiparts to be wrapped.
  const wrapUnterminated = p.wrap_unterminated_multipart || d.wrap_unterminated_multipart;
  return {
    name: 'wrapping',
    create(ctx) {
      const checker = new MimeChecker(limits, { quarantineTest, wrapUnterminated });
      checker.onDone = (failure) => wrappingFindings(ctx, checker.result, failure);
      return checker;
    },
  };
}
