/**
 * The `[attachments]` policy section and how the partition and department sections combine.
 * Cisco guide, "Blocked File Extensions": a department blocks a list of extensions or all
 * attachments, scans inbound or inbound and outbound mail (never outbound only), and
 * quarantines or deletes what it blocks; file types blocked or allowed at the partition
 * level supersede the department's rules ("About Blocked File Extensions").
 */
import { z } from 'zod';
import { contentKinds, type ContentKind } from './file-sniff.js';
import type { ZipLimits } from './zip-listing.js';

const extension = z
  .string()
  .transform((v) => v.trim().toLowerCase())
  .pipe(z.string().regex(/^\.?[^./\\\s]+(\.[^./\\\s]+)*$/, 'expected a file extension such as ".exe" or "exe"'))
  .transform((v) => (v.startsWith('.') ? v : `.${v}`));

const OUTBOUND_ONLY =
  'outbound-only scanning is not allowed (Cisco guide: "You cannot block only the outgoing attachments"); use "inbound" or "inbound_and_outbound"';

/** The `[attachments]` section of a partition or department policy file. */
export const attachmentsSectionSchema = z
  .object({
    /** Extensions to block, with or without the dot, any case: [".exe", "vbs", ".JS"]. Default none. */
    blocked_extensions: z.array(extension).default([]),
    /**
     * Extensions never blocked. In the partition file this overrides every department's
     * blocked list and `block_all_attachments`; in a department file it only makes
     * exceptions to that department's own rules. Default none.
     */
    allowed_extensions: z.array(extension).default([]),
    /** Block every attachment whatever its extension; overrides `blocked_extensions`. Default false. */
    block_all_attachments: z.boolean().default(false),
    /** Which mail is scanned: "inbound" or "inbound_and_outbound". Outbound only is refused. Default "inbound". */
    scan: z
      .enum(['inbound', 'inbound_and_outbound'], {
        error: (issue) => (issue.input === 'outbound' ? OUTBOUND_ONLY : 'expected "inbound" or "inbound_and_outbound"'),
      })
      .default('inbound'),
    /** What happens to a blocked attachment: "quarantine" (kept, restorable) or "delete" (gone). Default "quarantine". */
    action: z.enum(['quarantine', 'delete']).default('quarantine'),
    /** Archives inside archives (and messages inside messages) inspected down to this depth; one nested deeper is blocked as uninspectable. Default 3. */
    zip_max_depth: z.number().int().min(1).max(16).default(3),
    /** An archive with more entries than this is blocked as uninspectable. Default 10000. */
    zip_max_entries: z.number().int().min(1).default(10_000),
    /** An archive entry that declares it expands more than this many times is blocked as a zip bomb. Default 1000. */
    zip_max_ratio: z.number().positive().default(1000),
    /** Most bytes inflated per attachment to look inside nested archives. Default 268435456 (256 MiB). */
    zip_max_inflated_bytes: z
      .number()
      .int()
      .positive()
      .default(256 * 1024 * 1024),
  })
  .strict();

/** A parsed `[attachments]` section. */
export type AttachmentsSection = z.output<typeof attachmentsSectionSchema>;

/** Why something is blocked, in words an admin reads in listings and the placeholder text. */
export type BlockRule = string;

/** The combined rules for one department, compiled once per policy load. */
export interface AttachmentRules {
  action: 'quarantine' | 'delete';
  scan: 'inbound' | 'inbound_and_outbound';
  /**
   * The rule when `block_all_attachments` blocks an attachment with this extension, else
   * undefined (off, or the extension is on an allowed list).
   */
  blockAllRule(ext: string): BlockRule | undefined;
  limits: ZipLimits;
  /** The rule that blocks this extension (`.exe`), or undefined when it is allowed. */
  extensionRule(ext: string): BlockRule | undefined;
  /** Content kinds blocked whatever their name, because the list names one of their extensions. */
  blockedKinds: ReadonlyMap<ContentKind['id'], BlockRule>;
}

/** Combines the partition's and the department's sections (either may be missing). */
export function attachmentRules(partition: AttachmentsSection | undefined, department: AttachmentsSection | undefined): AttachmentRules {
  const defaults = attachmentsSectionSchema.parse({});
  const p = partition ?? defaults;
  const d = department ?? defaults;
  // Settings are the department's (Cisco: department-level settings); a department without
  // its own section follows the partition file.
  const settings = department ?? partition ?? defaults;
  const pBlocked = new Set(p.blocked_extensions);
  const pAllowed = new Set(p.allowed_extensions);
  const dBlocked = new Set(d.blocked_extensions);
  const dAllowed = new Set(d.allowed_extensions);
  const level = department ? 'department' : 'partition';

  const extensionRule = (ext: string): BlockRule | undefined => {
    if (!ext) return undefined;
    if (pBlocked.has(ext)) return `blocked extension ${ext} (partition policy)`;
    if (pAllowed.has(ext) || (department && dAllowed.has(ext))) return undefined;
    if (department && dBlocked.has(ext)) return `blocked extension ${ext} (department policy)`;
    return undefined;
  };
  const blockedKinds = new Map<ContentKind['id'], BlockRule>();
  for (const kind of contentKinds) {
    const named = kind.extensions.find((ext) => extensionRule(ext) !== undefined);
    if (named) blockedKinds.set(kind.id, `${kind.label} content, blocked as ${named} (${extensionRule(named)})`);
  }
  return {
    action: settings.action,
    scan: settings.scan,
    blockAllRule: (ext) => {
      if (!settings.block_all_attachments) return undefined;
      // Allowed lists supersede block-all (partition: "supersede the department rules").
      if (ext && !pBlocked.has(ext) && (pAllowed.has(ext) || dAllowed.has(ext))) return undefined;
      return `block_all_attachments (${level} policy)`;
    },
    limits: {
      maxDepth: settings.zip_max_depth,
      maxEntries: settings.zip_max_entries,
      maxRatio: settings.zip_max_ratio,
      maxInflatedBytes: settings.zip_max_inflated_bytes,
    },
    extensionRule,
    blockedKinds,
  };
}
