/**
 * Delivery-exception tagging (Cisco guide, "Delivery Exceptions" and its appendix): bounces and
 * auto-replies are tagged `email-permanent-undeliverable` or `email-temporary-undeliverable`
 * and put in the exception queue instead of reaching agents.
 *
 * Two kinds of evidence: the guide's phrases (in the sender address before `@`, or in the
 * subject), and, beyond the guide, the structure of machine-generated mail (RFC 3464 delivery
 * status reports, RFC 5965 feedback reports, RFC 3834 `Auto-Submitted`, `X-Autoreply`,
 * `X-Autorespond`, `Precedence`, `X-Failed-Recipients`, an empty return path), because phrases
 * such as "Admin" or "system" misfire on ordinary mail. How a failure type is chosen when the
 * evidence disagrees is documented on `decide` (delivery-exception-rules.ts).
 *
 * Streaming: only the root node's headers and the small `message/delivery-status` part are
 * read (the latter capped); every chunk passes through unchanged.
 */
import libmime from 'libmime';
import { decodedHead, headAddresses, headerHead } from './header-text.js';
import type { MimeNode, SplitterChunk } from '@zone-eu/mailsplit';
import type { MessageContext, Stage } from './stage.js';
import { ChunkStage, type ChunkHandler } from './stage-chain.js';
import { DELIVERY_STATUS_CAP, decodeTransfer, parseDeliveryStatus, type DeliveryStatusReport } from './delivery-status.js';
import { addressMatches, decide, subjectMatches, type DeliveryExceptionRules, type Evidence, type MatchPlace, type StructuralSignal } from './delivery-exception-rules.js';
import { describeOutcome } from './delivery-exception-report.js';
import { deliveryExceptionRules, type DeliveryExceptionsSection } from './delivery-exception-policy.js';

export { deliveryExceptionsSectionSchema, type DeliveryExceptionsSection } from './delivery-exception-policy.js';
export type { DeliveryExceptionFindings } from './delivery-exception-report.js';

/** The stage's fixed name: the key of its findings. */
export const DELIVERY_EXCEPTIONS = 'delivery_exceptions';
/** Tags set on a delivery exception (Cisco: activity subtypes "Email-permanent/temporary undeliverable"). */
export const PERMANENT_TAG = 'email-permanent-undeliverable';
export const TEMPORARY_TAG = 'email-temporary-undeliverable';
/** Tag of messages routed to the exception queue (Cisco: "sent to the exception queue"). */
export const EXCEPTION_QUEUE_TAG = 'exception-queue';

/** Delivery-status parts read per message; a real report has one. */
const MAX_STATUS_PARTS = 4;

/**
 * The delivery-exception stage for a department. How the two policy files combine:
 * - phrases: the predefined ones, then the partition's, then the department's;
 * - `remove` in the partition file removes a phrase for every department (Cisco guide:
 *   deleting a system-provided phrase deletes it from all departments), including a
 *   department phrase of the same name; a department's `remove` applies to that department
 *   only and to predefined phrases and its own, never to the partition's;
 * - switches (`enabled`, `use_predefined`, each of `structural_signals`) must be on in both
 *   files: either file can turn a check off, neither can turn back on what the other turned off;
 * - `phrase_matches = "with_structural_signal"` in either file applies;
 * - `signal_failure`: the department's when it differs from the default, else the partition's.
 */
export function deliveryExceptionsStage(partition: DeliveryExceptionsSection | undefined, department: DeliveryExceptionsSection | undefined): Stage {
  const rules = deliveryExceptionRules(partition, department);
  return {
    name: DELIVERY_EXCEPTIONS,
    create(ctx: MessageContext): ChunkHandler | null {
      if (!rules) {
        ctx.findings[DELIVERY_EXCEPTIONS] = { summary: ['Delivery-exception checks are off in the policy (enabled = false).'], tagged: false };
        return null;
      }
      // Bounces and auto-replies come in; a reply going out that quotes "undeliverable" is not one.
      if (ctx.direction === 'outbound') return null;
      return new DeliveryExceptionScan(rules, ctx);
    },
  };
}

/** Reads the evidence as chunks pass and decides when the message ends. */
class DeliveryExceptionScan extends ChunkStage {
  private readonly ev: Evidence = { phraseMatches: [], signals: [] };
  private readonly problems: string[] = [];
  private failedRecipientsHeader: string[] = [];
  private sawRoot = false;
  private statusNode: MimeNode | undefined;
  private statusChunks: Buffer[] = [];
  private statusBytes = 0;
  private statusTruncated = false;
  private statusParts = 0;

  constructor(
    private readonly rules: DeliveryExceptionRules,
    private readonly ctx: MessageContext,
  ) {
    super();
  }

  protected transform(chunk: SplitterChunk): void {
    try {
      if (chunk.type === 'node') {
        this.closeStatusPart();
        this.onNode(chunk);
      } else if (chunk.type === 'body' && this.statusNode && chunk.node === this.statusNode) {
        this.collect(chunk.value);
      }
    } catch (err) {
      this.problem(err);
    }
    this.push(chunk);
  }

  protected override flush(): void {
    try {
      this.closeStatusPart();
      this.finish();
    } catch (err) {
      // Tagging is advice: a message we cannot judge is stored untagged, never lost.
      this.problem(err);
      this.ctx.findings[DELIVERY_EXCEPTIONS] = { summary: [`Not checked for delivery exceptions: ${this.problems.join('; ')}.`], tagged: false };
    }
  }

  private problem(err: unknown): void {
    const reason = err instanceof Error ? err.message : String(err);
    this.problems.push(reason);
    this.ctx.log.warn({ err, stage: DELIVERY_EXCEPTIONS }, 'delivery-exception check could not read part of the message');
  }

  private onNode(node: MimeNode): void {
    if (!this.sawRoot && node.root && !node.parentNode) {
      this.sawRoot = true;
      if (node.headers) this.readRootHeaders(node);
      return;
    }
    const type = node.contentType;
    // RFC 3464 section 2.1; RFC 6533 section 6.2 for the internationalised form.
    if ((type === 'message/delivery-status' || type === 'message/global-delivery-status') && !insideEmbeddedMessage(node)) {
      if (this.statusParts >= MAX_STATUS_PARTS) return;
      this.statusParts++;
      this.statusNode = node;
      this.signal('delivery_status', `a ${type} part`);
    } else if (type === 'message/feedback-report' && !insideEmbeddedMessage(node)) {
      this.signal('feedback_report', 'a message/feedback-report part');
    }
  }

  private readRootHeaders(node: MimeNode): void {
    const headers = node.headers as Exclude<MimeNode['headers'], false>;
    const first = (key: string) => headers.getFirst(key);

    const subject = first('subject');
    if (subject) this.ev.phraseMatches.push(...subjectMatches(this.rules, decodedHead(subject)));

    // Address phrases: the From address (Cisco guide), and the envelope sender, which is
    // where a bounce's real origin shows when From is dressed up.
    const checked = new Set<string>();
    const check = (address: string, where: MatchPlace) => {
      const key = address.toLowerCase();
      if (!address || checked.has(key)) return;
      checked.add(key);
      this.ev.phraseMatches.push(...addressMatches(this.rules, address, where));
    };
    for (const line of headers.get('from')) for (const address of headAddresses(line.slice(line.indexOf(':') + 1))) check(address, 'From address');
    check(this.ctx.envelope.mailFrom, 'envelope sender (MAIL FROM)');
    const returnPath = first('return-path');
    const returnAddress = /<([^>]*)>/.exec(returnPath)?.[1]?.trim() ?? returnPath.trim();
    if (returnPath && returnAddress) check(returnAddress, 'Return-Path');

    // RFC 5321 section 4.5.5 / RFC 3834 section 3.3: bounces and auto-replies use the null
    // reverse path. The envelope is only known for mail that came in over SMTP; for fetched
    // mail the delivering server recorded it in Return-Path.
    if (this.ctx.source.kind === 'smtp' && this.ctx.envelope.mailFrom === '') this.signal('empty_return_path', 'MAIL FROM:<>');
    else if (returnPath && returnAddress === '') this.signal('empty_return_path', 'Return-Path: <>');

    // RFC 3834 section 5: any value but "no" marks automatic mail.
    const autoSubmitted = first('auto-submitted');
    const token = autoSubmitted.toLowerCase().split(/[\s;(]/)[0] ?? '';
    if (token && token !== 'no') this.signal('auto_submitted', `Auto-Submitted: ${autoSubmitted}`);
    for (const [key, signal] of [['x-autoreply', 'x_autoreply'], ['x-autorespond', 'x_autorespond']] as const) {
      const value = first(key);
      if (value && !/^(no|false|0)$/i.test(value)) this.signal(signal, `${key === 'x-autoreply' ? 'X-Autoreply' : 'X-Autorespond'}: ${value}`);
    }
    const precedence = first('precedence');
    if (/^(bulk|junk|auto_reply)$/i.test(precedence)) this.signal('precedence', `Precedence: ${precedence}`);
    // Exim and Gmail name the recipients that failed permanently on their bounces.
    const failed = headers.get('x-failed-recipients').flatMap((line) => headAddresses(line.slice(line.indexOf(':') + 1)));
    if (failed.length) {
      this.failedRecipientsHeader = failed;
      this.signal('x_failed_recipients', `X-Failed-Recipients: ${failed.join(', ')}`);
    }

    const contentType = libmime.parseHeaderValue(headerHead(first('content-type')));
    const reportType = String(contentType.params['report-type'] ?? '').toLowerCase();
    if (contentType.value.toLowerCase() === 'multipart/report' && /^(global-)?delivery-status$/.test(reportType)) {
      this.signal('delivery_status', `Content-Type: multipart/report; report-type=${reportType}`);
    }
    // RFC 5965 section 3: an abuse report from a mailbox provider's feedback loop.
    if (contentType.value.toLowerCase() === 'multipart/report' && reportType === 'feedback-report') {
      this.signal('feedback_report', 'Content-Type: multipart/report; report-type=feedback-report');
    }
  }

  private signal(signal: StructuralSignal, evidence: string): void {
    if (!this.rules.signals.has(signal) || this.ev.signals.some((s) => s.signal === signal)) return;
    this.ev.signals.push({ signal, evidence });
  }

  private collect(value: Buffer): void {
    const room = DELIVERY_STATUS_CAP - this.statusBytes;
    if (room <= 0) {
      this.statusTruncated = true;
      return;
    }
    const piece = value.length > room ? value.subarray(0, room) : value;
    if (piece !== value) this.statusTruncated = true;
    // Copy: the splitter may reuse its buffers once the chunk has moved on.
    this.statusChunks.push(Buffer.from(piece));
    this.statusBytes += piece.length;
  }

  private closeStatusPart(): void {
    const node = this.statusNode;
    if (!node) return;
    this.statusNode = undefined;
    const text = decodeTransfer(Buffer.concat(this.statusChunks), node.encoding).toString('utf8');
    this.statusChunks = [];
    this.statusBytes = 0;
    const report = parseDeliveryStatus(text, this.statusTruncated);
    this.statusTruncated = false;
    this.ev.deliveryStatus = mergeReports(this.ev.deliveryStatus, report);
  }

  private finish(): void {
    if (!this.rules.signals.has('delivery_status')) delete this.ev.deliveryStatus;
    const decision = decide(this.rules, this.ev);
    const outcome = describeOutcome(this.ev, decision, this.failedRecipientsHeader, this.ctx.dryRun);
    if (this.problems.length) outcome.summary.push(`Parts of the message could not be read: ${this.problems.join('; ')}.`);
    if (decision.failure) {
      this.ctx.tags.add(decision.failure === 'permanent' ? PERMANENT_TAG : TEMPORARY_TAG);
      this.ctx.tags.add(EXCEPTION_QUEUE_TAG);
    }
    this.ctx.findings[DELIVERY_EXCEPTIONS] = outcome;
  }
}

/** True when the node belongs to a message attached inside this one (a returned original). */
function insideEmbeddedMessage(node: MimeNode): boolean {
  for (let p = node.parentNode; p; p = p.parentNode) {
    if (p.contentType === 'message/rfc822' || p.contentType === 'message/global') return true;
  }
  return false;
}

function mergeReports(a: DeliveryStatusReport | undefined, b: DeliveryStatusReport): DeliveryStatusReport {
  if (!a) return b;
  return { reportingMta: a.reportingMta ?? b.reportingMta, recipients: [...a.recipients, ...b.recipients], truncated: a.truncated || b.truncated };
}
