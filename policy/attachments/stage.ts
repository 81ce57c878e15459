/**
 * The `attachments` stage: blocks attachments by extension, by content and by what archives
 * and attached messages hold (Cisco guide, "Blocked File Extensions"). A blocked part is
 * replaced in the stored message by a short text part naming the file and the rule; with
 * `action = "quarantine"` the original part (raw header block and encoded body, exactly as
 * received) is kept in the quarantine store under `<message id>.<n>`, and restore puts it
 * back byte for byte (quarantine.ts).
 *
 * Streaming: a part judged by its name is replaced at once and its bytes go straight to the
 * quarantine. Otherwise its first chunks wait until a few decoded bytes show what it is; an
 * archive or attached message is then spooled to the store (not memory) until its end and
 * played back if it passes.
 */
import libmime from 'libmime';
import { Headers, type MimeNode, type SplitterChunk } from '@zone-eu/mailsplit';
import type { Direction, MessageContext, Stage, StageFindings } from '../chain/stage.js';
import { ChunkStage } from '../chain/stage-chain.js';
import { attachmentRules, attachmentsSectionSchema, type AttachmentRules, type AttachmentsSection } from './rules.js';
import { PartInspector, type PartVerdict } from './part-inspector.js';
import { visible } from './names.js';
import { blockedInOriginal } from './original-scan.js';
import type { QuarantineRecord } from '../../storage/records.js';
import type { QuarantineSpool } from '../../storage/store.js';

export { attachmentsSectionSchema, type AttachmentsSection };

/** Header on a replacement part naming the removed file (RFC 2047 encoded when not ASCII). */
export const BLOCKED_FILE_HEADER = 'X-Mailgate-Blocked-File';
/** Header on a replacement part giving the removed part's content type. */
export const BLOCKED_TYPE_HEADER = 'X-Mailgate-Blocked-Type';
/** Header on a replacement part giving the quarantine id, so restore can find the place. */
export const QUARANTINE_ID_HEADER = 'X-Mailgate-Quarantine-Id';

const STAGE = 'attachments';
// A body that decodes to nothing for this long (whitespace) is judged without a sniff.
const MAX_HELD_BYTES = 256 * 1024;

/** One attachment as the findings list it. */
export interface AttachmentFinding {
  fileName: string;
  contentType: string;
  /** Every name the part gave, when it gave more than one. */
  names?: string[];
  blocked: boolean;
  rule?: string;
  evidence: string[];
  quarantineId?: string;
  /** What happened: quarantined, deleted, or (dry run) would be. */
  action?: string;
}

/** The attachments stage, with its rules (the original of a wrapping message is judged by them through `wrappedOriginal.blocks`). */
export interface AttachmentsStage extends Stage {
  readonly rules: AttachmentRules;
  /** Whether mail going this way is judged at all (`scan = "inbound"` leaves outbound mail alone). */
  scans(direction: Direction): boolean;
}

/** The stage; partition rules supersede department rules (see policy/attachments/rules.ts). */
export function attachmentsStage(partition: AttachmentsSection | undefined, department: AttachmentsSection | undefined): AttachmentsStage {
  const rules = attachmentRules(partition, department);
  const scans = (direction: Direction) => !(direction === 'outbound' && rules.scan === 'inbound');
  return {
    name: STAGE,
    rules,
    scans,
    // Wrapping is no way around attachment blocking (policy/attachments/original.ts).
    wrappedOriginal: {
      blocks: async (direction, original) => {
        if (!scans(direction)) return undefined;
        const finding = await blockedInOriginal(original(), rules);
        return finding ? { finding, action: rules.action } : undefined;
      },
    },
    create(ctx) {
      if (!scans(ctx.direction)) {
        ctx.findings[STAGE] = { summary: ['Outbound mail is not scanned for attachments (scan = "inbound").'], attachments: [] };
        return null;
      }
      if (!ctx.dryRun && !ctx.store) throw new Error('the attachments stage needs the store outside a dry run');
      return new AttachmentBlocker(ctx, rules);
    },
  };
}

type Mode = 'sniff' | 'block' | 'defer' | 'pass';

interface Part {
  node: MimeNode;
  inspector: PartInspector;
  mode: Mode;
  /** Raw header block as received. */
  original: Buffer;
  held: SplitterChunk[];
  heldBytes: number;
  rawBodyBytes: number;
  spool?: QuarantineSpool;
  verdict?: PartVerdict;
}

class AttachmentBlocker extends ChunkStage {
  readonly #ctx: MessageContext;
  readonly #rules: AttachmentRules;
  readonly #found: AttachmentFinding[] = [];
  #part: Part | undefined;
  #n = 0;

  constructor(ctx: MessageContext, rules: AttachmentRules) {
    super();
    this.#ctx = ctx;
    this.#rules = rules;
  }

  protected transform(chunk: SplitterChunk): void | Promise<void> {
    const part = this.#part;
    if (!part) return this.#outside(chunk);
    if (chunk.type !== 'body' || chunk.node !== part.node) return this.#finish().then(() => this.#outside(chunk));
    part.rawBodyBytes += chunk.value.length;
    // The body of an attachment already let through passes at once, without a promise.
    if (part.mode === 'pass') return void this.push(chunk);
    return this.#body(part, chunk);
  }

  protected override async flush(): Promise<void> {
    await this.#finish();
    this.#record();
  }

  /** A chunk with no attachment open: most pass at once; an attachment's node opens one. */
  #outside(chunk: SplitterChunk): void | Promise<void> {
    if (chunk.type !== 'node') return void this.push(chunk);
    const inspector = new PartInspector(chunk, this.#rules);
    if (!inspector.isAttachment) return void this.push(chunk);
    return this.#start(chunk, inspector);
  }

  /** Holds or replaces an attachment's node: it is not passed on as it is. */
  async #start(node: MimeNode, inspector: PartInspector): Promise<void> {
    const part: Part = { node, inspector, mode: 'sniff', original: node.getHeaders(), held: [], heldBytes: 0, rawBodyBytes: 0 };
    this.#part = part;
    if (inspector.nameVerdict) await this.#block(part, inspector.nameVerdict);
  }

  /** A body chunk of an attachment still being judged, blocked or deferred. */
  async #body(part: Part, chunk: SplitterChunk & { type: 'data' | 'body' }): Promise<void> {
    if (part.mode === 'block') part.inspector.count(chunk.value);
    else {
      part.inspector.push(chunk.value);
      await part.inspector.room();
    }
    if (part.mode === 'block' || part.mode === 'defer') {
      if (part.spool) await part.spool.write(chunk.value);
      else if (this.#ctx.dryRun || part.mode === 'defer') this.push(chunk); // dry run: output unchanged
      return;
    }
    part.held.push(chunk);
    part.heldBytes += chunk.value.length;
    if (part.inspector.sniffed || part.heldBytes > MAX_HELD_BYTES) await this.#afterSniff(part);
  }

  async #afterSniff(part: Part): Promise<void> {
    const verdict = part.inspector.sniffVerdict;
    if (verdict) return this.#block(part, verdict);
    if (part.inspector.needsWholeBody) {
      part.mode = 'defer';
      if (!this.#ctx.dryRun) {
        part.spool = this.#newSpool();
        await part.spool.write(part.original);
        for (const c of part.held) if (c.type === 'body') await part.spool.write(c.value);
      } else this.#release(part);
      part.held = [];
      return;
    }
    part.mode = 'pass';
    this.#release(part);
  }

  #release(part: Part): void {
    this.push(part.node);
    for (const c of part.held) this.push(c);
    part.held = [];
  }

  async #block(part: Part, verdict: PartVerdict): Promise<void> {
    part.mode = 'block';
    part.verdict = verdict;
    if (this.#ctx.dryRun) return this.#release(part);
    if (this.#rules.action === 'quarantine') {
      part.spool = this.#newSpool();
      await part.spool.write(part.original);
      for (const c of part.held) if (c.type === 'body') await part.spool.write(c.value);
    }
    part.held = [];
    this.#replace(part, verdict);
  }

  async #finish(): Promise<void> {
    const part = this.#part;
    if (!part) return;
    this.#part = undefined;
    if (part.mode === 'sniff') {
      // The body ended before the first bytes decided anything: judge it whole (it is small).
      const verdict = await part.inspector.end();
      if (verdict.rule) await this.#block(part, verdict);
      else {
        this.#release(part);
        return this.#note(part, verdict);
      }
    }
    if (part.mode === 'pass') return this.#note(part, { rule: undefined, evidence: [] });
    if (part.mode === 'block') part.inspector.endCount();
    if (part.mode === 'defer') {
      const verdict = await part.inspector.end();
      part.verdict = verdict;
      if (!verdict.rule) {
        if (part.spool) {
          await part.spool.close();
          this.push(part.node);
          // Playing a spooled part back hands on many chunks: wait for the next stage between them.
          for await (const value of part.spool.replay(part.original.length)) await this.push({ node: part.node, type: 'body', value });
          await part.spool.discard();
        }
        return this.#note(part, verdict);
      }
      if (!this.#ctx.dryRun) {
        if (this.#rules.action === 'delete') {
          await part.spool?.discard();
          delete part.spool;
        }
        this.#replace(part, verdict);
      }
    }
    // Blocked: keep the quarantined bytes and make the record visible with the message.
    const verdict = part.verdict!;
    if (part.spool) {
      await part.spool.close();
      const record = this.#quarantineRecord(part, part.spool, verdict);
      this.#ctx.sideRecords.push({ type: 'quarantine', record });
    }
    this.#note(part, verdict);
  }

  /** A quarantine spool for the next part; its bytes belong to the message: kept by its commit, removed by its abort. */
  #newSpool(): QuarantineSpool {
    return this.#ctx.store!.createQuarantineSpool(`${this.#ctx.id}.${++this.#n}`);
  }

  #fileName(part: Part): string {
    return part.inspector.names[0]?.normalised || part.node.filename || 'unnamed';
  }

  /** Emits the text part that stands where the blocked part was. */
  #replace(part: Part, verdict: PartVerdict): void {
    const placeholder = placeholderPart({
      fileName: this.#fileName(part),
      contentType: part.node.contentType || 'application/octet-stream',
      rule: verdict.rule ?? '',
      quarantineId: part.spool?.id,
    });
    const lines = [...placeholder.headerLines];
    const headers = part.node.headers;
    if (part.node.root && headers) {
      // A single-part message that is itself the file: keep the message's own headers.
      const kept = headers
        .getList()
        .filter((l) => !l.key.startsWith('content-'))
        .map((l) => l.line);
      lines.unshift(...kept);
    }
    part.node.headers = new Headers(Buffer.from(lines.join('\r\n') + '\r\n\r\n'));
    this.push(part.node);
    this.push({ node: part.node, type: 'body', value: Buffer.from(placeholder.text) });
  }

  #quarantineRecord(part: Part, spool: QuarantineSpool, verdict: PartVerdict): QuarantineRecord {
    return {
      id: spool.id,
      messageId: this.#ctx.id,
      fileName: this.#fileName(part),
      contentType: part.node.contentType || 'application/octet-stream',
      size: part.inspector.decodedSize,
      storedBytes: spool.bytes,
      rule: verdict.rule ?? '',
      evidence: verdict.evidence,
      date: new Date().toISOString(),
      ...(this.#ctx.department ? { department: this.#ctx.department } : {}),
    };
  }

  #note(part: Part, verdict: PartVerdict): void {
    const names = [...new Set(part.inspector.names.map((n) => n.given))];
    const blocked = Boolean(verdict.rule);
    const action = !blocked
      ? undefined
      : this.#ctx.dryRun
        ? `would be ${this.#rules.action === 'quarantine' ? 'quarantined' : 'deleted'}`
        : this.#rules.action === 'quarantine'
          ? 'quarantined'
          : 'deleted';
    this.#found.push({
      fileName: visible(this.#fileName(part)),
      contentType: part.node.contentType || 'application/octet-stream',
      ...(names.length > 1 ? { names } : {}),
      blocked,
      ...(verdict.rule ? { rule: verdict.rule } : {}),
      evidence: verdict.evidence,
      ...(blocked && part.spool && !this.#ctx.dryRun ? { quarantineId: part.spool.id } : {}),
      ...(action ? { action } : {}),
    });
  }

  #record(): void {
    const summary = this.#found.map((a) => (a.blocked ? `"${a.fileName}" ${a.action}: ${a.rule}.` : `"${a.fileName}" allowed.`));
    if (summary.length === 0) summary.push('No attachments.');
    const findings: StageFindings = { summary, attachments: this.#found, action: this.#rules.action };
    this.#ctx.findings[STAGE] = findings;
  }
}

/**
 * The text part that stands where a blocked file was: header lines (naming the file, its type
 * and its quarantine id, which restore looks for) and the text, without a last line end.
 * Also stands for the original of a wrapping message when that is blocked (ingest.ts).
 */
export function placeholderPart(blocked: { fileName: string; contentType: string; rule: string; quarantineId?: string | undefined }): {
  headerLines: string[];
  text: string;
} {
  const { fileName, quarantineId: qid } = blocked;
  const text =
    `The attachment "${fileName}" was removed by the mail gateway: ${blocked.rule}.\r\n` +
    (qid ? `It is kept in quarantine as ${qid}; an administrator can restore it (mailgate quarantine restore ${qid}).` : 'It was deleted.');
  const ascii = /^[\x20-\x7e\r\n]*$/.test(text);
  const headerLines = [
    'Content-Type: text/plain; charset=utf-8',
    `Content-Transfer-Encoding: ${ascii ? '7bit' : '8bit'}`,
    'Content-Disposition: inline',
    `${BLOCKED_FILE_HEADER}: ${headerText(fileName)}`,
    `${BLOCKED_TYPE_HEADER}: ${blocked.contentType}`,
    ...(qid ? [`${QUARANTINE_ID_HEADER}: ${qid}`] : []),
  ];
  return { headerLines, text };
}

function headerText(value: string): string {
  const clean = value.replace(/[\r\n]/g, ' ');
  return /^[\x20-\x7e]*$/.test(clean) ? clean : libmime.encodeWord(clean, 'Q', 52);
}
