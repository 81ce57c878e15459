/**
 * Reading an RFC 3464 `message/delivery-status` body: the machine-readable part of a bounce.
 * Pure functions over a small, already size-bounded piece of text.
 */
import type { FailureType } from './delivery-exception-phrases.js';

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
  action?: string;
  /** The enhanced status code, e.g. `5.1.1` (RFC 3463). */
  status?: string;
  /** Diagnostic-Code, shortened. */
  diagnosticCode?: string;
  /** What this recipient's block means for delivery, when it reports a failure or delay. */
  failure?: FailureType;
}

/** What a delivery-status part says. */
export interface DeliveryStatusReport {
  /** Reporting-MTA of the per-message block, without its type (`dns;`). */
  reportingMta?: string;
  recipients: RecipientStatus[];
  /** True when recipients beyond MAX_RECIPIENTS or bytes beyond the cap were left out. */
  truncated: boolean;
}

/**
 * The failure a recipient block reports: RFC 3463 class 5 is permanent and class 4 transient;
 * without a usable status, `Action: failed` is permanent and `Action: delayed` temporary
 * (RFC 3464 section 2.3.3). `delivered`, `relayed` and `expanded` report no failure.
 */
export function recipientFailure(r: RecipientStatus): FailureType | undefined {
  const action = r.action ?? '';
  if (action === 'delayed') return 'temporary';
  if (action && action !== 'failed') return undefined;
  const cls = /^([245])\.\d{1,3}\.\d{1,3}/.exec(r.status ?? '')?.[1];
  if (cls === '5') return 'permanent';
  if (cls === '4') return 'temporary';
  if (cls === '2') return undefined;
  return action === 'failed' ? 'permanent' : undefined;
}

const RECIPIENT_FIELDS = new Set(['original-recipient', 'final-recipient', 'action', 'status', 'remote-mta', 'diagnostic-code', 'last-attempt-date', 'will-retry-until', 'final-log-id']);

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
    const colon = field.indexOf(':');
    if (colon <= 0) continue;
    const key = field.slice(0, colon).trim().toLowerCase();
    const value = field.slice(colon + 1).trim();
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
    else if (key === 'status') current.status = /\d\.\d{1,3}\.\d{1,3}/.exec(value)?.[0] ?? value.slice(0, 20);
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

/** Undoes a part's Content-Transfer-Encoding on a small buffer. */
export function decodeTransfer(raw: Buffer, encoding: string | false): Buffer {
  const enc = (encoding || '').toLowerCase();
  if (enc === 'base64') return Buffer.from(raw.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64');
  if (enc === 'quoted-printable') {
    const text = raw.toString('latin1').replace(/=\r?\n/g, '');
    return Buffer.from(text.replace(/=([0-9A-Fa-f]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1');
  }
  return raw;
}
