/**
 * The original of a wrapping message under the attachment policy (issue 17; Cisco guide,
 * "Blocking Attachments"): wrapping must never be a way around attachment blocking. Ingest
 * asks {@link blockedOriginal} before it writes a wrapping message; when the scan
 * (policy/attachments/original-scan.ts) finds anything the rules block, the whole original is
 * blocked with the policy's action, and the wrapping message carries a placeholder in its
 * place (wrapping-message.ts).
 */
import type { Readable } from 'node:stream';
import type { SideRecord, Store } from '../../storage/store.js';
import type { QuarantineRecord } from '../../storage/records.js';
import type { Direction, Stage, StageFindings } from '../chain/stage.js';
import type { AttachmentFinding } from './stage.js';
import type { OriginalFinding } from './original-scan.js';
import { ORIGINAL_FILE_NAME, blockedOriginalRule, type BlockedOriginal } from '../wrapping/wrapping-message.js';

/** What ingest does with an original the rules block: what the wrapping message says, and what it commits. */
export interface OriginalBlock {
  /** `quarantined as <id>` or `deleted`. */
  outcome: string;
  /** For the wrapping message (wrapping-message.ts): its text, its placeholder, and where the kept part goes. */
  wrapping: BlockedOriginal;
  /** Writes what the quarantine still holds; after the wrapping message is written. */
  close(): Promise<void>;
  /** The attachments findings of the wrapping message, as the stage writes them for a blocked part. */
  findings(): StageFindings;
  /** The quarantine record, to become visible with the wrapping message. */
  sideRecords(): SideRecord[];
}

/**
 * What the attachment rules say of the original of a wrapping message, without acting on it
 * (ingest acts through {@link blockedOriginal}; `mailgate policy test` only reports): the
 * finding, the action the policy would take, and the rule in words. Undefined when nothing is
 * blocked, when there is no attachments stage, or when it does not scan mail going this way.
 */
export async function originalVerdict(
  stages: readonly Stage[],
  direction: Direction,
  original: () => Readable,
): Promise<{ finding: OriginalFinding; action: 'quarantine' | 'delete'; rule: string } | undefined> {
  for (const stage of stages) {
    const blocks = stage.wrappedOriginal?.blocks;
    if (!blocks) continue;
    const verdict = await blocks(direction, original);
    return verdict && { ...verdict, rule: blockedOriginalRule(verdict.finding) };
  }
  return undefined;
}

/**
 * Whether the attachment rules block anything in the original of a wrapping message, read as
 * received (from the spool, before masking, which could hide what the sender sent). When
 * they do, the whole original is blocked with the policy's action: kept in quarantine as one
 * item, `<id>.1` (the part that would have carried it, which restore puts back into the
 * wrapping message), or deleted; either way the wrapping message says so (Cisco guide,
 * "Blocking Attachments"). Undefined when nothing is blocked, when there is no attachments
 * stage, or when it does not scan mail going this way.
 */
export async function blockedOriginal(opts: {
  store: Store;
  stages: readonly Stage[];
  /** The message's id: the quarantine id is `<id>.1`. */
  id: string;
  direction: Direction;
  department?: string | undefined;
  /** The original from its first byte, as received. */
  original: () => Readable;
}): Promise<OriginalBlock | undefined> {
  const verdict = await originalVerdict(opts.stages, opts.direction, opts.original);
  if (!verdict) return undefined;
  const { finding, action, rule } = verdict;
  const { store, id } = opts;
  const quarantine = action === 'quarantine' ? store.createQuarantineSpool(`${id}.1`) : undefined;
  let size = 0;
  const outcome = quarantine ? `quarantined as ${quarantine.id}` : 'deleted';
  return {
    outcome,
    wrapping: {
      finding,
      ...(quarantine ? { quarantineId: quarantine.id, keep: (bytes: Buffer) => quarantine.write(bytes) } : {}),
      kept: (bytes: number) => void (size = bytes),
    },
    close: async () => quarantine?.close(),
    findings: () => ({
      summary: [`"${ORIGINAL_FILE_NAME}" ${outcome}: ${rule}.`],
      attachments: [
        {
          fileName: ORIGINAL_FILE_NAME,
          contentType: 'application/octet-stream',
          blocked: true,
          rule,
          evidence: finding.evidence,
          action: quarantine ? 'quarantined' : 'deleted',
          ...(quarantine ? { quarantineId: quarantine.id } : {}),
        } satisfies AttachmentFinding,
      ],
      action,
    }),
    sideRecords: () => {
      if (!quarantine) return [];
      const record: QuarantineRecord = {
        id: quarantine.id,
        messageId: id,
        fileName: ORIGINAL_FILE_NAME,
        contentType: 'application/octet-stream',
        size,
        storedBytes: quarantine.bytes,
        rule,
        evidence: finding.evidence,
        date: new Date().toISOString(),
        ...(opts.department ? { department: opts.department } : {}),
      };
      return [{ type: 'quarantine', record }];
    },
  };
}
