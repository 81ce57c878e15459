/**
 * Delivery-exception tagging (Cisco guide, "Delivery Exceptions" and its appendix): bounces and
 * auto-replies are tagged `email-permanent-undeliverable` or `email-temporary-undeliverable`
 * and put in the exception queue instead of reaching agents; abuse complaints (RFC 5965
 * feedback reports) are tagged `feedback-report` and go there too, as do read receipts (RFC 8098
 * disposition notifications, Genesys), tagged `disposition-notification`.
 *
 * Two kinds of evidence: the guide's phrases (in the From address before `@`, or in the
 * subject), and, beyond the guide, the structure of machine-generated mail (RFC 3464 delivery
 * status reports, RFC 5965 feedback reports, RFC 3834 `Auto-Submitted`, `X-Autoreply`,
 * `X-Autorespond`, `Precedence: auto_reply`, `X-Failed-Recipients`, an empty return path),
 * because phrases such as "Admin" or "system" misfire on ordinary mail. Once a message is a
 * delivery exception, its failure type comes from the most specific evidence: a report's
 * per-recipient status, then the words of the bounce, and the phrase's type only when nothing
 * else tells (`decide` in policy/delivery-exceptions/rules.ts).
 *
 * Streaming: the root node's headers are read, and small capped pieces of the body: the
 * `message/delivery-status` and `message/feedback-report` parts, the human-readable text of a
 * message the headers already mark, and the head of an attached message that may be a
 * forwarded report. Every chunk passes through unchanged.
 */
import libmime from 'libmime';
import { decodedHead, headAddresses, headerHead } from '../mime/header-text.js';
import type { MimeNode, SplitterChunk } from '@zone-eu/mailsplit';
import type { MessageContext, Stage } from '../chain/stage.js';
import { ChunkStage, type ChunkHandler } from '../chain/stage-chain.js';
import { bodyDecoder } from '../mime/transfer-decode.js';
import {
  DELIVERY_STATUS_CAP,
  DISPOSITION_TYPES,
  STATUS_TYPES,
  attachedReport,
  isDeliveryReport,
  isDispositionReport,
  parseDeliveryStatus,
  parseDispositionNotification,
  parseFeedbackReport,
  type DeliveryStatusReport,
} from './delivery-status.js';
import { BOUNCE_TEXT_CAP, bounceTextVerdict, htmlText } from './text.js';
import { addressMatches, decide, subjectMatches, type DeliveryExceptionRules, type Evidence, type StructuralSignal } from './rules.js';
import { describeOutcome } from './report.js';
import { deliveryExceptionRules, type DeliveryExceptionsSection } from './policy.js';

export { deliveryExceptionsSectionSchema, type DeliveryExceptionsSection } from './policy.js';
export type { DeliveryExceptionFindings } from './report.js';

/** The stage's fixed name: the key of its findings. */
export const DELIVERY_EXCEPTIONS = 'delivery_exceptions';
/** Tags set on a delivery exception (Cisco: activity subtypes "Email-permanent/temporary undeliverable"). */
export const PERMANENT_TAG = 'email-permanent-undeliverable';
export const TEMPORARY_TAG = 'email-temporary-undeliverable';
/** Tag of an abuse complaint (RFC 5965): machine mail, but no bounce. */
export const FEEDBACK_REPORT_TAG = 'feedback-report';
/** Tag of a read receipt (RFC 8098 message disposition notification, Genesys): machine mail, but no bounce. */
export const DISPOSITION_NOTIFICATION_TAG = 'disposition-notification';
/** Tag of messages routed to the exception queue (Cisco: "sent to the exception queue"). */
export const EXCEPTION_QUEUE_TAG = 'exception-queue';

/** Delivery-status parts read per message; a real report has one. */
const MAX_STATUS_PARTS = 4;
/**
 * Bytes of an attached message read when the message forwarding it is machine mail, to find a
 * report in it; of any other attached message only its head is read, to say in the findings
 * that a person forwarded a report.
 */
const ATTACHED_CAP = 64 * 1024;
const ATTACHED_HEAD_CAP = 8 * 1024;

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
    // A truncated bounce (an unterminated multipart/report is common) is still a bounce.
    wrappedOriginal: { tagsFromHeader: true },
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

/** What a captured body is read for. */
type CaptureKind = 'status' | 'forwarded-status' | 'feedback' | 'disposition' | 'text' | 'html' | 'attached';

/** The body of one part, being read up to a cap. */
interface Capture {
  node: MimeNode;
  kind: CaptureKind;
  cap: number;
  chunks: Buffer[];
  bytes: number;
  truncated: boolean;
}

const MESSAGE_TYPES = new Set(['message/rfc822', 'message/global']);

/** Reads the evidence as chunks pass and decides when the message ends. */
class DeliveryExceptionScan extends ChunkStage {
  readonly #ev: Evidence = { phraseMatches: [], signals: [] };
  readonly #problems: string[] = [];
  #failedRecipientsHeader: string[] = [];
  #sawRoot = false;
  /** The root is itself a report: an attached message in it is the returned original. */
  #rootIsReport = false;
  /** The root headers mark the message as machine mail: a report it forwards counts. */
  #automatic = false;
  /** Read the human-readable text: something in the headers already marks the message. */
  #readText = false;
  /** A returned original, its headers or the report have begun: no more of the MTA's own text. */
  #textDone = false;
  #text = '';
  #capture: Capture | undefined;
  #statusParts = 0;
  readonly #forwardedReports: DeliveryStatusReport[] = [];
  #forwardedSeen = false;
  /** The delivery_status signal is on: report parts (own or forwarded) are worth reading. */
  readonly #readReports: boolean;

  readonly #rules: DeliveryExceptionRules;
  readonly #ctx: MessageContext;

  constructor(rules: DeliveryExceptionRules, ctx: MessageContext) {
    super();
    this.#rules = rules;
    this.#ctx = ctx;
    this.#readReports = rules.signals.has('delivery_status');
  }

  protected transform(chunk: SplitterChunk): void {
    try {
      if (chunk.type === 'node') {
        this.#closeCapture();
        this.#onNode(chunk);
      } else if (chunk.type === 'body' && this.#capture && chunk.node === this.#capture.node) {
        this.#collect(this.#capture, chunk.value);
      }
    } catch (err) {
      this.#problem(err);
    }
    this.push(chunk);
  }

  protected override flush(): void {
    try {
      this.#closeCapture();
      this.#finish();
    } catch (err) {
      // Tagging is advice: a message we cannot judge is stored untagged, never lost.
      this.#problem(err);
      this.#ctx.findings[DELIVERY_EXCEPTIONS] = { summary: [`Not checked for delivery exceptions: ${this.#problems.join('; ')}.`], tagged: false };
    }
  }

  #problem(err: unknown): void {
    const reason = err instanceof Error ? err.message : String(err);
    this.#problems.push(reason);
    this.#ctx.log.warn({ err, stage: DELIVERY_EXCEPTIONS }, 'delivery-exception check could not read part of the message');
  }

  #onNode(node: MimeNode): void {
    const type = node.contentType || '';
    if (!this.#sawRoot && node.root && !node.parentNode) {
      this.#sawRoot = true;
      if (node.headers) this.#readRootHeaders(node);
      // RFC 3464 section 2.1 puts the report in a multipart/report; some MTAs send the
      // message/delivery-status part as the whole message.
      if (STATUS_TYPES.has(type)) this.#statusPart(node, `a ${type} message`);
      else if (type === 'message/feedback-report') this.#feedbackPart(node, 'a message/feedback-report message');
      else if (!node.multipart) this.#textPart(node, type);
      return;
    }
    const depth = embeddedDepth(node);
    if (depth === 0) {
      if (STATUS_TYPES.has(type)) {
        this.#textDone = true;
        this.#statusPart(node, `a ${type} part`);
      } else if (type === 'message/feedback-report') {
        this.#textDone = true;
        this.#feedbackPart(node, 'a message/feedback-report part');
      } else if (DISPOSITION_TYPES.has(type)) {
        this.#textDone = true;
        this.#dispositionPart(node, `a ${type} part`);
      } else if (MESSAGE_TYPES.has(type)) {
        this.#textDone = true;
        // Not parsed inline by the splitter: read its bytes to see whether it is a report.
        if (this.#readReports && !this.#rootIsReport && !node.messageNode) this.#start(node, 'attached', this.#automatic ? ATTACHED_CAP : ATTACHED_HEAD_CAP);
      } else if (type === 'text/rfc822-headers') {
        this.#textDone = true;
      } else if (type === 'text/plain' || type === 'text/html') {
        this.#textPart(node, type);
      }
    } else if (depth === 1 && !this.#rootIsReport) {
      // Inside a message attached inline: a forwarded report, when it is one.
      const embeddedRoot = node.parentNode && MESSAGE_TYPES.has(node.parentNode.contentType || '');
      if (embeddedRoot && node.headers && isReportHead(node.headers.getFirst('content-type'))) this.#forwardedSeen = true;
      if (STATUS_TYPES.has(type)) {
        this.#forwardedSeen = true;
        if (this.#automatic && this.#readReports) this.#start(node, 'forwarded-status', DELIVERY_STATUS_CAP);
      }
    }
  }

  #statusPart(node: MimeNode, evidence: string): void {
    this.#signal('delivery_status', evidence);
    if (!this.#readReports || this.#statusParts >= MAX_STATUS_PARTS) return;
    this.#statusParts++;
    this.#start(node, 'status', DELIVERY_STATUS_CAP);
  }

  #feedbackPart(node: MimeNode, evidence: string): void {
    this.#signal('feedback_report', evidence);
    if (!this.#ev.feedback) this.#start(node, 'feedback', DELIVERY_STATUS_CAP);
  }

  #dispositionPart(node: MimeNode, evidence: string): void {
    this.#signal('disposition_notification', evidence);
    if (!this.#ev.disposition) this.#start(node, 'disposition', DELIVERY_STATUS_CAP);
  }

  /** The human-readable text of a bounce, when the message is one at all (see readRootHeaders). */
  #textPart(node: MimeNode, type: string): void {
    if (!this.#readText || this.#textDone || this.#text.length >= BOUNCE_TEXT_CAP) return;
    // A root without Content-Type is text/plain (RFC 2045 section 5.2).
    if (type && type !== 'text/plain' && type !== 'text/html') return;
    this.#start(node, type === 'text/html' ? 'html' : 'text', BOUNCE_TEXT_CAP - this.#text.length);
  }

  #readRootHeaders(node: MimeNode): void {
    const headers = node.headers as Exclude<MimeNode['headers'], false>;
    const first = (key: string) => headers.getFirst(key);

    const subject = first('subject');
    if (subject) this.#ev.phraseMatches.push(...subjectMatches(this.#rules, decodedHead(subject)));

    // Cisco guide: an address phrase "would then be compared against the from email address
    // of the incoming email". Not the envelope sender: a mailing service's VERP sender
    // (bounces+unknown-9f3a=...@esp.example) says nothing about the mail it carries.
    const checked = new Set<string>();
    for (const line of headers.get('from')) {
      for (const address of headAddresses(line.slice(line.indexOf(':') + 1))) {
        const key = address.toLowerCase();
        if (!address || checked.has(key)) continue;
        checked.add(key);
        this.#ev.phraseMatches.push(...addressMatches(this.#rules, address, 'From address'));
      }
    }

    // RFC 5321 section 4.5.5 / RFC 3834 section 3.3: bounces and auto-replies use the null
    // reverse path. The envelope is only known for mail that came in over SMTP; for fetched
    // mail the delivering server recorded it in Return-Path.
    const returnPath = first('return-path');
    const returnAddress = /<([^>]*)>/.exec(returnPath)?.[1]?.trim() ?? returnPath.trim();
    if (this.#ctx.source.kind === 'smtp' && this.#ctx.envelope.mailFrom === '') this.#signal('empty_return_path', 'MAIL FROM:<>');
    else if (returnPath && returnAddress === '') this.#signal('empty_return_path', 'Return-Path: <>');

    // RFC 3834 section 5: any value but "no" marks automatic mail.
    const autoSubmitted = first('auto-submitted');
    const token = autoSubmitted.toLowerCase().split(/[\s;(]/)[0] ?? '';
    if (token && token !== 'no') this.#signal('auto_submitted', `Auto-Submitted: ${autoSubmitted}`);
    for (const [key, signal] of [
      ['x-autoreply', 'x_autoreply'],
      ['x-autorespond', 'x_autorespond'],
    ] as const) {
      const value = first(key);
      if (value && !/^(no|false|0)$/i.test(value)) this.#signal(signal, `${key === 'x-autoreply' ? 'X-Autoreply' : 'X-Autorespond'}: ${value}`);
    }
    // Only auto_reply says what the message is. bulk and list mark mailing-list posts and
    // newsletters, junk is anyone's guess: none of them is a bounce (issue 17).
    const precedence = first('precedence').trim();
    if (/^auto_reply$/i.test(precedence)) this.#signal('precedence', `Precedence: ${precedence}`);
    const listHeader = ['list-id', 'list-unsubscribe', 'list-post'].find((key) => first(key));
    if (listHeader)
      this.#ev.listPost = `${listHeader.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase())}: ${headerHead(first(listHeader), 120)}`;
    else if (/^(bulk|list|junk)$/i.test(precedence)) this.#ev.listPost = `Precedence: ${precedence}`;
    // Exim and Gmail name the recipients that failed permanently on their bounces.
    const failed = headers.get('x-failed-recipients').flatMap((line) => headAddresses(line.slice(line.indexOf(':') + 1)));
    if (failed.length) {
      this.#failedRecipientsHeader = failed;
      this.#signal('x_failed_recipients', `X-Failed-Recipients: ${failed.join(', ')}`);
    }

    const contentType = libmime.parseHeaderValue(headerHead(first('content-type')));
    const type = contentType.value.toLowerCase();
    const reportType = String(contentType.params['report-type'] ?? '').toLowerCase();
    this.#rootIsReport = type === 'multipart/report' || STATUS_TYPES.has(type) || type === 'message/feedback-report' || DISPOSITION_TYPES.has(type);
    if (isDeliveryReport(contentType)) {
      this.#signal('delivery_status', `Content-Type: multipart/report; report-type=${reportType}`);
    }
    // RFC 5965 section 3: an abuse report from a mailbox provider's feedback loop.
    if (type === 'multipart/report' && reportType === 'feedback-report') {
      this.#signal('feedback_report', 'Content-Type: multipart/report; report-type=feedback-report');
    }
    // RFC 8098 section 3: a read receipt, which comes from the null sender like a bounce.
    if (isDispositionReport(contentType)) {
      this.#signal('disposition_notification', `Content-Type: multipart/report; report-type=${reportType}`);
    }

    // What the headers alone say: the message forwarding a report is itself machine mail
    // (its sender a mail system, or a structural sign), and whether the body is worth reading.
    this.#automatic = this.#ev.signals.length > 0 || this.#ev.phraseMatches.some((m) => m.where === 'From address');
    this.#readText = this.#rootIsReport || this.#ev.signals.length > 0 || this.#ev.phraseMatches.length > 0;
  }

  #signal(signal: StructuralSignal, evidence: string): void {
    if (!this.#rules.signals.has(signal) || this.#ev.signals.some((s) => s.signal === signal)) return;
    this.#ev.signals.push({ signal, evidence });
  }

  #start(node: MimeNode, kind: CaptureKind, cap: number): void {
    this.#capture = { node, kind, cap, chunks: [], bytes: 0, truncated: false };
  }

  #collect(c: Capture, value: Buffer): void {
    const room = c.cap - c.bytes;
    if (room <= 0) {
      c.truncated = true;
      return;
    }
    const piece = value.length > room ? value.subarray(0, room) : value;
    if (piece !== value) c.truncated = true;
    // Copy: the splitter may reuse its buffers once the chunk has moved on.
    c.chunks.push(Buffer.from(piece));
    c.bytes += piece.length;
  }

  #closeCapture(): void {
    const c = this.#capture;
    if (!c) return;
    this.#capture = undefined;
    // The decoder every other stage reads a part through, so the bytes judged are the ones a mail
    // client shows (base64 padded line by line included).
    const decoder = bodyDecoder(c.node);
    const body = Buffer.concat([...c.chunks.map((chunk) => decoder.push(chunk)), decoder.end()]);
    if (c.kind === 'attached') {
      const found = attachedReport(body, c.truncated);
      if (found) {
        this.#forwardedSeen = true;
        if (this.#automatic && found.report) this.#forwardedReports.push(found.report);
      }
      return;
    }
    if (c.kind === 'text' || c.kind === 'html') {
      // Latin-1 keeps every byte one character: the sentences looked for are ASCII.
      const text = body.toString('latin1');
      this.#text += `${c.kind === 'html' ? htmlText(text) : text}\n`;
      return;
    }
    const text = body.toString('utf8');
    if (c.kind === 'feedback') this.#ev.feedback = parseFeedbackReport(text);
    else if (c.kind === 'disposition') this.#ev.disposition = parseDispositionNotification(text);
    else if (c.kind === 'forwarded-status') this.#forwardedReports.push(parseDeliveryStatus(text, c.truncated));
    else this.#ev.deliveryStatus = mergeReports(this.#ev.deliveryStatus, parseDeliveryStatus(text, c.truncated));
  }

  #finish(): void {
    if (this.#forwardedSeen && this.#readReports) {
      const report = this.#forwardedReports.reduce<DeliveryStatusReport | undefined>((a, b) => mergeReports(a, b), undefined);
      this.#ev.forwardedReport = { counted: this.#automatic, ...(report ? { report } : {}) };
      if (this.#ev.forwardedReport.counted) this.#signal('delivery_status', 'a delivery status report in an attached message, forwarded by a mail system');
    }
    if (this.#text) {
      const verdict = bounceTextVerdict(this.#text);
      if (verdict) this.#ev.bounceText = verdict;
    }
    const decision = decide(this.#rules, this.#ev);
    const outcome = describeOutcome(this.#ev, decision, this.#failedRecipientsHeader, this.#ctx.dryRun);
    if (this.#problems.length) outcome.summary.push(`Parts of the message could not be read: ${this.#problems.join('; ')}.`);
    if (decision.failure) {
      this.#ctx.tags.add(decision.failure === 'permanent' ? PERMANENT_TAG : TEMPORARY_TAG);
      this.#ctx.tags.add(EXCEPTION_QUEUE_TAG);
    } else if (decision.feedbackReport) {
      this.#ctx.tags.add(FEEDBACK_REPORT_TAG);
      this.#ctx.tags.add(EXCEPTION_QUEUE_TAG);
    } else if (decision.dispositionNotification) {
      this.#ctx.tags.add(DISPOSITION_NOTIFICATION_TAG);
      this.#ctx.tags.add(EXCEPTION_QUEUE_TAG);
    }
    this.#ctx.findings[DELIVERY_EXCEPTIONS] = outcome;
  }
}

/** How many attached messages (message/rfc822, message/global) the node sits inside. */
function embeddedDepth(node: MimeNode): number {
  let depth = 0;
  for (let p = node.parentNode; p; p = p.parentNode) if (MESSAGE_TYPES.has(p.contentType || '')) depth++;
  return depth;
}

/** True for the Content-Type of a delivery report: multipart/report for delivery status, or the status itself. */
function isReportHead(value: string): boolean {
  const ct = libmime.parseHeaderValue(headerHead(value));
  return STATUS_TYPES.has(ct.value.toLowerCase()) || isDeliveryReport(ct);
}

function mergeReports(a: DeliveryStatusReport | undefined, b: DeliveryStatusReport): DeliveryStatusReport {
  if (!a) return b;
  return { reportingMta: a.reportingMta ?? b.reportingMta, recipients: [...a.recipients, ...b.recipients], truncated: a.truncated || b.truncated };
}
