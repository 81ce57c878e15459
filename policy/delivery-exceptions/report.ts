/**
 * What the delivery-exception stage records on a message: sentences for the admin (`policy
 * test` prints them) and the details behind them (`messages show` prints those). Only matched
 * words, addresses and report fields are quoted, never the whole subject or body, which may
 * hold data the masking stage hides later.
 */
import type { StageFindings } from '../chain/stage.js';
import type { FailureType } from './phrases.js';
import type { DispositionNotification, FeedbackReport, RecipientStatus } from './delivery-status.js';
import type { BounceTextVerdict } from './text.js';
import type { DecidedBy, Decision, Evidence, PhraseMatch, SignalFound, StructuralSignal } from './rules.js';

/** The findings of the delivery-exception stage. */
export interface DeliveryExceptionFindings extends StageFindings {
  /** True when the message was tagged and put in the exception queue. */
  tagged: boolean;
  /** `email-permanent-undeliverable`, `email-temporary-undeliverable`, `feedback-report` or `disposition-notification`. */
  tag?: string;
  failure?: FailureType;
  exceptionQueue: boolean;
  /**
   * What decided the failure type: `delivery_status` (the report's per-recipient status),
   * `forwarded_delivery_status`, `x_failed_recipients`, `bounce_text` (the bounce's words),
   * `phrase`, or the structural signal that decided (`feedback_report` for an abuse complaint).
   */
  decidedBy?: DecidedBy;
  /** The fields or words behind `decidedBy`. */
  decidingEvidence?: string;
  phraseMatches: PhraseMatch[];
  signals: SignalFound[];
  /** Recipients a DSN (or X-Failed-Recipients) reports as failed or delayed. */
  failedRecipients: string[];
  deliveryStatus?: { reportingMta?: string | undefined; recipients: RecipientStatus[]; truncated: boolean };
  /** A report inside an attached message, and whether it counted. */
  forwardedReport?: { counted: boolean; recipients: RecipientStatus[] };
  bounceText?: BounceTextVerdict;
  feedbackReport?: FeedbackReport;
  /** What a read receipt (RFC 8098) says: the disposition, who, and about which message. */
  dispositionNotification?: DispositionNotification;
  /** The mailing-list header seen (List-Id...), which is no sign of a delivery exception. */
  listPost?: string;
  phrasesIgnored?: string;
}

const SIGNAL_LABEL: Record<StructuralSignal, string> = {
  delivery_status: 'a delivery status report (RFC 3464)',
  feedback_report: 'a feedback report (RFC 5965 abuse complaint)',
  disposition_notification: 'a message disposition notification (RFC 8098)',
  auto_submitted: 'the Auto-Submitted header (RFC 3834)',
  x_autoreply: 'the X-Autoreply header',
  x_autorespond: 'the X-Autorespond header',
  precedence: 'the Precedence header',
  empty_return_path: 'the empty return path',
  x_failed_recipients: 'the X-Failed-Recipients header',
};

const DECIDED_LABEL: Partial<Record<DecidedBy, string>> = {
  delivery_status: 'the delivery status report',
  forwarded_delivery_status: 'the delivery status report in the attached message',
  bounce_text: 'the text of the bounce',
  phrase: 'the phrase',
};

/** What a `decidedBy` value names, in words. */
const decidedLabel = (by: DecidedBy) => DECIDED_LABEL[by] ?? SIGNAL_LABEL[by as StructuralSignal];

/** Most recipients named in one summary sentence; all are in the details. */
const LISTED = 10;

const quote = (s: string) => JSON.stringify(s);
const capitalised = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

function describeMatch(m: PhraseMatch): string {
  const what = `${m.type === 'subject' ? 'Subject' : 'Address'} phrase ${quote(m.name)} (${m.origin}, ${m.failure})`;
  if (m.type === 'subject') return `${what} matched ${quote(m.matched)} in the subject.`;
  return `${what} matched ${quote(m.matched)} in the ${m.where} ${m.address ?? ''} (before the @).`;
}

function describeRecipient(r: RecipientStatus): string {
  const original = r.originalRecipient && r.originalRecipient !== r.finalRecipient ? ` (sent to ${r.originalRecipient})` : '';
  const who = `${r.finalRecipient ?? r.originalRecipient ?? 'a recipient'}${r.finalRecipient ? original : ''}`;
  const how = [r.action, r.status, r.failure].filter(Boolean).join(', ');
  return how ? `${who} (${how})` : who;
}

function describeDecision(d: Decision): string {
  const by = d.decidedBy!;
  return `decided by ${by} (${decidedLabel(by)}: ${d.decidingEvidence ?? ''})`;
}

/** The findings for one message, given what was read and what was decided. */
export function describeOutcome(ev: Evidence, decision: Decision, failedHeader: string[], dryRun: boolean): DeliveryExceptionFindings {
  const report = ev.deliveryStatus;
  // The address as the sender gave it (Original-Recipient, RFC 3464 section 2.3.1) is the one
  // an agent recognises; Final-Recipient may be an alias expansion.
  const failedBlocks = [...(report?.recipients ?? []), ...(ev.forwardedReport?.counted ? (ev.forwardedReport.report?.recipients ?? []) : [])];
  const failedFromReport = failedBlocks.filter((r) => r.failure).map((r) => r.originalRecipient ?? r.finalRecipient ?? '');
  const failedRecipients = [...new Set([...failedFromReport, ...failedHeader].filter(Boolean))];
  const summary: string[] = [];
  const tag = decision.failure
    ? `email-${decision.failure}-undeliverable`
    : decision.feedbackReport
      ? 'feedback-report'
      : decision.dispositionNotification
        ? 'disposition-notification'
        : undefined;
  const would = (done: string, todo: string) => (dryRun ? todo : done);

  if (decision.feedbackReport) {
    summary.push(
      `${would('Tagged', 'Would tag')} feedback-report and ${would('put it', 'would put it')} in the exception queue: an abuse complaint, not a bounce; ${describeDecision(decision)}.`,
    );
  } else if (decision.dispositionNotification) {
    summary.push(
      `${would('Tagged', 'Would tag')} disposition-notification and ${would('put it', 'would put it')} in the exception queue: a read receipt, not a bounce; ${describeDecision(decision)}.`,
    );
  } else if (decision.failure) {
    summary.push(
      `${would('Tagged', 'Would tag')} ${tag} and ${would('put it', 'would put it')} in the exception queue; failure type ${describeDecision(decision)}.`,
    );
  } else if (decision.successReport) {
    summary.push('Not a delivery exception: a delivery status report that says every recipient was delivered, relayed or expanded.');
  } else if (decision.phrasesIgnored) {
    summary.push(`Not a delivery exception: phrases matched, but ${decision.phrasesIgnored}.`);
  } else {
    summary.push('Not a delivery exception: no phrase matched and the message shows no sign of being machine-generated.');
  }

  for (const m of ev.phraseMatches) summary.push(describeMatch(m));
  for (const s of ev.signals) summary.push(`Machine-mail signal: ${SIGNAL_LABEL[s.signal]}: ${s.evidence}.`);
  if (ev.listPost) summary.push(`Mailing-list header ${ev.listPost}: a list post is no delivery exception by its list headers alone.`);
  if (report) {
    const listed = report.recipients.slice(0, LISTED).map(describeRecipient);
    const more = report.recipients.length > LISTED ? ` and ${report.recipients.length - LISTED} more` : '';
    const from = report.reportingMta ? ` from ${report.reportingMta}` : '';
    summary.push(
      listed.length ? `Delivery status report${from}: ${listed.join('; ')}${more}.` : `Delivery status report${from} with no readable recipient block.`,
    );
  } else if (failedHeader.length) {
    summary.push(`Failed recipients (X-Failed-Recipients): ${failedHeader.slice(0, LISTED).join(', ')}.`);
  }
  if (ev.forwardedReport) {
    const blocks = (ev.forwardedReport.report?.recipients ?? []).slice(0, LISTED).map(describeRecipient);
    const what = `An attached message is a delivery status report${blocks.length ? ` (${blocks.join('; ')})` : ''}`;
    summary.push(
      ev.forwardedReport.counted
        ? `${what}, forwarded by a mail system: it counts as this message's report.`
        : `${what}, forwarded by a person (the message itself shows no sign of machine mail): not counted, the forwarder is asking about it.`,
    );
  }
  if (ev.bounceText && decision.decidedBy !== 'bounce_text') {
    summary.push(`The text of the message reads as a ${ev.bounceText.failure} failure (${ev.bounceText.rule}: ${quote(ev.bounceText.matched)}).`);
  }
  if (ev.feedback) {
    const f = ev.feedback;
    const parts = [
      f.feedbackType && `Feedback-Type: ${f.feedbackType}`,
      f.complainants.length && `complaint from ${f.complainants.slice(0, LISTED).join(', ')}`,
      f.sourceIp && `Source-IP: ${f.sourceIp}`,
    ];
    const said = parts.filter(Boolean).join('; ');
    if (said) summary.push(`Feedback report: ${said}.`);
  }
  if (ev.disposition) {
    const d = ev.disposition;
    const parts = [
      d.disposition && `${d.disposition}${d.finalRecipient ? ` by ${d.finalRecipient}` : ''}`,
      d.originalMessageId && `about ${d.originalMessageId}`,
      d.reportingUa && `Reporting-UA: ${d.reportingUa}`,
    ];
    const said = parts.filter(Boolean).join('; ');
    if (said) summary.push(`Disposition notification: ${said}.`);
  }
  if (decision.failure && decision.decidedBy !== 'phrase') {
    const disagreeing = ev.phraseMatches.filter((m) => m.failure !== decision.failure);
    if (disagreeing.length) summary.push(`${capitalised(decidedLabel(decision.decidedBy!))} wins over the phrase failure type (${disagreeing[0]!.failure}).`);
  }

  return {
    summary,
    tagged: Boolean(tag),
    ...(tag ? { tag } : {}),
    ...(decision.failure ? { failure: decision.failure } : {}),
    exceptionQueue: Boolean(tag),
    ...(decision.decidedBy ? { decidedBy: decision.decidedBy } : {}),
    ...(decision.decidingEvidence ? { decidingEvidence: decision.decidingEvidence } : {}),
    phraseMatches: ev.phraseMatches,
    signals: ev.signals,
    failedRecipients,
    ...(report ? { deliveryStatus: report } : {}),
    ...(ev.forwardedReport ? { forwardedReport: { counted: ev.forwardedReport.counted, recipients: ev.forwardedReport.report?.recipients ?? [] } } : {}),
    ...(ev.bounceText ? { bounceText: ev.bounceText } : {}),
    ...(ev.feedback ? { feedbackReport: ev.feedback } : {}),
    ...(ev.disposition ? { dispositionNotification: ev.disposition } : {}),
    ...(ev.listPost ? { listPost: ev.listPost } : {}),
    ...(decision.phrasesIgnored ? { phrasesIgnored: decision.phrasesIgnored } : {}),
  };
}
