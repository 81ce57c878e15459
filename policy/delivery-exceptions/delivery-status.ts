/**
 * Reading an RFC 3464 `message/delivery-status` body: the machine-readable part of a bounce.
 * Pure functions over a small, already size-bounded piece of text.
 */
import libmime, { type ParsedHeaderValue } from 'libmime';
import { headerHead } from '../mime/header-text.js';
import { transferDecoder } from '../mime/transfer-decode.js';
import type { FailureType } from './phrases.js';

/** Most bytes of a delivery-status part we keep. Real ones are a few hundred bytes per recipient. */
export const DELIVERY_STATUS_CAP = 64 * 1024;
/** Most recipients we list from one report (a report for thousands of recipients is itself suspect). */
const MAX_RECIPIENTS = 100;
/** Longest diagnostic text we keep per recipient. */
const MAX_DIAGNOSTIC = 300;

/** One recipient's block of a delivery-status report (RFC 3464 section 2.3). */
export interface RecipientStatus {
  /** Final-Recipient without its address type (`rfc822;`). */
  finalRecipient?: string;
  /** Original-Recipient without its address type, when the MTA gave one. */
  originalRecipient?: string;
  /** Action: failed, delayed, delivered, relayed or expanded (lower case). */
  action?: string | undefined;
  /** The enhanced status code, e.g. `5.1.1` (RFC 3463). */
  status?: string;
  /** Diagnostic-Code, shortened. */
  diagnosticCode?: string;
  /** What this recipient's block means for delivery, when it reports a failure or delay. */
  failure?: FailureType | undefined;
}

/** What a delivery-status part says. */
export interface DeliveryStatusReport {
  /** Reporting-MTA of the per-message block, without its type (`dns;`). */
  reportingMta?: string | undefined;
  recipients: RecipientStatus[];
  /** True when recipients beyond MAX_RECIPIENTS or bytes beyond the cap were left out. */
  truncated: boolean;
}

/**
 * The failure a recipient block reports. RFC 3464 section 2.3.3: `failed` means the reporting
 * MTA "has abandoned any attempts to deliver", so it is final (permanent) whatever the status
 * class: `Action: failed` with `Status: 4.4.7` is an MTA that gave up. `delayed` is temporary;
 * `delivered`, `relayed` and `expanded` report no failure. Without a usable action, the status
 * class decides (RFC 3463 section 3.1: 5 permanent, 4 persistent transient); real reports also
 * write `failure`, `error` or `bounced` for `failed`, and an SMTP reply code (`553 ...`) in
 * place of the enhanced status code.
 */
export function recipientFailure(r: RecipientStatus): FailureType | undefined {
  const action = r.action ?? '';
  if (action === 'delayed') return 'temporary';
  if (FAILED_ACTIONS.has(action)) return 'permanent';
  if (SUCCESS_ACTIONS.has(action)) return undefined;
  const cls = statusClass(r.status);
  if (cls === '5') return 'permanent';
  if (cls === '4') return 'temporary';
  return undefined;
}

/**
 * RFC 3464 section 2.3.3: the recipient's message arrived, was relayed on, or was expanded;
 * `deliverable` is Postfix's answer to an address verification (`sendmail -bv`).
 */
const SUCCESS_ACTIONS: ReadonlySet<string> = new Set(['delivered', 'relayed', 'expanded', 'deliverable']);
/** `failed`, and what real reports write for it. */
const FAILED_ACTIONS: ReadonlySet<string> = new Set(['failed', 'failure', 'fail', 'error', 'bounced', 'bounce']);

/** RFC 3464 section 2.3.3: delivered, relayed and expanded are successes; so is a 2.x.x status. */
export function recipientSucceeded(r: RecipientStatus): boolean {
  return SUCCESS_ACTIONS.has(r.action ?? '') || (!r.action && /^2\./.test(r.status ?? ''));
}

/** The class digit of an enhanced status code (`5.1.1`) or, failing that, of an SMTP reply code (`553 ...`). */
function statusClass(status: string | undefined): string | undefined {
  if (!status) return undefined;
  return /^([245])\.\d{1,3}\.\d{1,3}/.exec(status)?.[1] ?? /^([245])\d\d\b/.exec(status)?.[1];
}

const RECIPIENT_FIELDS = new Set([
  'original-recipient',
  'final-recipient',
  'action',
  'status',
  'remote-mta',
  'diagnostic-code',
  'last-attempt-date',
  'will-retry-until',
  'final-log-id',
]);

/** `rfc822; a@b` -> `a@b` (RFC 3464 section 2.1.2: address-type ";" generic-address). */
const withoutType = (value: string) => value.replace(/^[^;]*;\s*/, '').trim();

/**
 * Parses the decoded text of a delivery-status part. Tolerant of what real MTAs send: groups
 * separated by several blank lines or by none at all (a new recipient block then starts where
 * a recipient field repeats), folded lines, and LF or CRLF line ends.
 */
export function parseDeliveryStatus(text: string, truncatedInput = false): DeliveryStatusReport {
  const report: DeliveryStatusReport = { recipients: [], truncated: truncatedInput };
  let current: RecipientStatus | undefined;
  const seen = new Set<string>();
  const finish = () => {
    if (current && (current.finalRecipient || current.action || current.status)) {
      current.failure = recipientFailure(current);
      if (report.recipients.length < MAX_RECIPIENTS) report.recipients.push(current);
      else report.truncated = true;
    }
    current = undefined;
    seen.clear();
  };
  for (const field of unfoldedFields(inlineBase64(text))) {
    if (field === '') {
      finish();
      continue;
    }
    const pair = nameAndValue(field);
    if (!pair) continue;
    const [key, value] = pair;
    if (key === 'reporting-mta' && !current) {
      report.reportingMta ??= withoutType(value);
      continue;
    }
    if (!RECIPIENT_FIELDS.has(key)) continue;
    // No blank line between blocks: a recipient field seen twice starts the next recipient.
    // (Field order varies: Postfix writes Final-Recipient before Original-Recipient.)
    if (seen.has(key)) finish();
    current ??= {};
    seen.add(key);
    if (key === 'final-recipient') current.finalRecipient = withoutType(value);
    else if (key === 'original-recipient') current.originalRecipient = withoutType(value);
    else if (key === 'action') current.action = value.toLowerCase().split(/[\s(]/)[0];
    else if (key === 'status') current.status = /[245]\.\d{1,3}\.\d{1,3}/.exec(value)?.[0] ?? value.slice(0, 20);
    else if (key === 'diagnostic-code') current.diagnosticCode = value.length > MAX_DIAGNOSTIC ? `${value.slice(0, MAX_DIAGNOSTIC)}...` : value;
  }
  finish();
  return report;
}

/**
 * Some Outlook-relayed Postfix bounces carry a `Content-Transfer-Encoding: base64` line among
 * the per-message fields, with the recipient blocks base64-encoded after it (MimeKit's
 * bounce.txt). Decode that tail in place so its fields are read like the rest.
 */
function inlineBase64(text: string): string {
  const m = /^content-transfer-encoding:[ \t]*base64[ \t]*$/im.exec(text);
  if (!m) return text;
  const tail = text
    .slice(m.index + m[0].length)
    .split(/\r?\n/)
    .filter((line) => /^[A-Za-z0-9+/=]+$/.test(line.trim()))
    .join('');
  return `${text.slice(0, m.index)}\n\n${Buffer.from(tail, 'base64').toString('utf8')}`;
}

/** A field as its lower-case name and trimmed value; undefined for a line that is not one. */
function nameAndValue(field: string): [string, string] | undefined {
  const colon = field.indexOf(':');
  if (colon <= 0) return undefined;
  return [field.slice(0, colon).trim().toLowerCase(), field.slice(colon + 1).trim()];
}

/** Header-style fields with continuation lines joined; a blank line yields ''. */
function* unfoldedFields(text: string): Generator<string> {
  let field: string | undefined;
  for (const line of text.split(/\r?\n/)) {
    if (/^[ \t]/.test(line) && field !== undefined && line.trim() !== '') {
      field += ` ${line.trim()}`;
      continue;
    }
    if (field !== undefined) yield field;
    field = line.trim() === '' ? undefined : line;
    if (field === undefined) yield '';
  }
  if (field !== undefined) yield field;
}

/** Undoes a part's Content-Transfer-Encoding on a small buffer, as mailsplit decodes a parsed part (base64 padded line by line included). */
function decodeTransfer(raw: Buffer, encoding: string | false): Buffer {
  if (!encoding) return raw;
  const decoder = transferDecoder(encoding);
  return Buffer.concat([decoder.push(raw), decoder.end()]);
}

/** Content types of a delivery-status part (RFC 3464; the global one, RFC 6533). */
export const STATUS_TYPES: ReadonlySet<string> = new Set(['message/delivery-status', 'message/global-delivery-status']);

/** A parsed Content-Type that is a delivery report: multipart/report of report-type (global-)delivery-status. */
export function isDeliveryReport(ct: ParsedHeaderValue): boolean {
  return ct.value.toLowerCase() === 'multipart/report' && /^(global-)?delivery-status$/i.test(ct.params['report-type'] ?? '');
}

/** A message attached to another (message/rfc822) that is a delivery report, and what it reports. */
export interface AttachedReport {
  /** The report's recipient blocks, when its delivery-status part was within the bytes read. */
  report?: DeliveryStatusReport;
}

/**
 * Whether the first bytes of an attached message are a delivery report (a multipart/report of
 * report-type delivery-status, or a bare message/delivery-status), and its parsed status part
 * when that is within them. A forwarded bounce: a virus scanner or relay that wraps the bounce
 * it passes on as `originalmail.eml`. Only the attached message's own top level is looked at.
 */
export function attachedReport(bytes: Buffer, truncated: boolean): AttachedReport | undefined {
  const text = bytes.toString('latin1');
  const { fields, body } = splitHeader(text);
  const ct = libmime.parseHeaderValue(headerHead(fields.get('content-type') ?? ''));
  const type = ct.value.toLowerCase();
  const statusText = (part: string, encoding: string | undefined) => decodeTransfer(Buffer.from(part, 'latin1'), encoding || false).toString('utf8');
  if (STATUS_TYPES.has(type)) {
    return { report: parseDeliveryStatus(statusText(body, fields.get('content-transfer-encoding')?.trim().toLowerCase()), truncated) };
  }
  if (!isDeliveryReport(ct)) return undefined;
  const boundary = String(ct.params.boundary ?? '');
  if (!boundary) return {};
  const delimiter = `--${boundary}`;
  const parts = body.split(delimiter);
  for (let i = 1; i < parts.length; i++) {
    const part = parts[i]!;
    if (part.startsWith('--')) break;
    const inner = splitHeader(part.replace(/^[ \t]*\r?\n/, ''));
    const innerType = libmime.parseHeaderValue(headerHead(inner.fields.get('content-type') ?? '')).value.toLowerCase();
    if (STATUS_TYPES.has(innerType)) {
      // A part followed by another delimiter was read whole, whatever came after it.
      const encoding = inner.fields.get('content-transfer-encoding')?.trim().toLowerCase();
      return { report: parseDeliveryStatus(statusText(inner.body, encoding), truncated && i === parts.length - 1) };
    }
  }
  return {};
}

/** A header block's fields (lower-case names, first occurrence, unfolded) and the body after it. */
function splitHeader(text: string): { fields: Map<string, string>; body: string } {
  const end = /\r?\n\r?\n/.exec(text);
  const head = end ? text.slice(0, end.index) : text;
  const body = end ? text.slice(end.index + end[0].length) : '';
  const fields = new Map<string, string>();
  for (const field of unfoldedFields(head)) {
    const pair = nameAndValue(field);
    if (pair && !fields.has(pair[0])) fields.set(pair[0], pair[1]);
  }
  return { fields, body };
}

/** What an abuse report (RFC 5965 section 3.1, the message/feedback-report part) says. */
export interface FeedbackReport {
  /** abuse, fraud, virus, other, not-spam (RFC 5965 section 7.3). */
  feedbackType?: string;
  /** The recipients who complained (Original-Rcpt-To), at most MAX_RECIPIENTS. */
  complainants: string[];
  /** Original-Mail-From: our sender the complaint is about. */
  originalMailFrom?: string;
  /** Source-IP: the address the reported message came from. */
  sourceIp?: string;
}

/** Parses the decoded text of a message/feedback-report part. */
export function parseFeedbackReport(text: string): FeedbackReport {
  const report: FeedbackReport = { complainants: [] };
  for (const field of unfoldedFields(text)) {
    const pair = nameAndValue(field);
    if (!pair) continue;
    const key = pair[0];
    const value = pair[1].replace(/^<(.*)>$/, '$1');
    if (key === 'feedback-type') report.feedbackType ??= value.toLowerCase();
    else if (key === 'original-rcpt-to' && report.complainants.length < MAX_RECIPIENTS) report.complainants.push(value);
    else if (key === 'original-mail-from') report.originalMailFrom ??= value;
    else if (key === 'source-ip') report.sourceIp ??= value;
  }
  return report;
}

/** Content types of the machine-readable part of a read receipt (RFC 8098 section 3, RFC 6533 section 6). */
export const DISPOSITION_TYPES: ReadonlySet<string> = new Set(['message/disposition-notification', 'message/global-disposition-notification']);

/** A parsed Content-Type that is a read receipt: multipart/report of report-type (global-)disposition-notification. */
export function isDispositionReport(ct: ParsedHeaderValue): boolean {
  return ct.value.toLowerCase() === 'multipart/report' && /^(global-)?disposition-notification$/i.test(ct.params['report-type'] ?? '');
}

/** What a message disposition notification says (RFC 8098 section 3.2, the message/disposition-notification part). */
export interface DispositionNotification {
  /** displayed, deleted, dispatched or processed (RFC 8098 section 3.2.6.2), lower case. */
  disposition?: string;
  /** How it was sent: action and sending modes, e.g. `manual-action/MDN-sent-manually` (section 3.2.6.1). */
  mode?: string;
  /** Final-Recipient: who read (or deleted) the message, without its address type. */
  finalRecipient?: string;
  /** Original-Message-ID: the Message-ID of the message the receipt is about, ours when an agent asked for it. */
  originalMessageId?: string;
  /** Reporting-UA: the mail client that sent the receipt. */
  reportingUa?: string;
}

/** Parses the decoded text of a message/disposition-notification part. */
export function parseDispositionNotification(text: string): DispositionNotification {
  const mdn: DispositionNotification = {};
  for (const field of unfoldedFields(text)) {
    const pair = nameAndValue(field);
    if (!pair) continue;
    const key = pair[0];
    const value = pair[1].slice(0, MAX_DIAGNOSTIC);
    if (key === 'disposition') {
      // disposition-mode ";" disposition-type ["/" modifier...]
      const [mode, type] = value.split(';').map((s) => s.trim());
      if (mode) mdn.mode ??= mode;
      if (type) mdn.disposition ??= type.split('/')[0]!.trim().toLowerCase();
    } else if (key === 'final-recipient') mdn.finalRecipient ??= withoutType(value);
    else if (key === 'original-message-id') mdn.originalMessageId ??= value;
    else if (key === 'reporting-ua') mdn.reportingUa ??= value;
  }
  return mdn;
}
