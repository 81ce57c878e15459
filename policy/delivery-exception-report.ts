/**
 * What the delivery-exception stage records on a message: sentences for the admin (`policy
 * test` prints them) and the details behind them. Only matched words, addresses and DSN fields
 * are quoted, never the whole subject, which may hold data the masking stage hides later.
 */
import type { StageFindings } from './stage.js';
import type { FailureType } from './delivery-exception-phrases.js';
import type { RecipientStatus } from './delivery-status.js';
import type { Decision, Evidence, PhraseMatch, SignalFound, StructuralSignal } from './delivery-exception-rules.js';

/** The findings of the delivery-exception stage. */
export interface DeliveryExceptionFindings extends StageFindings {
  /** True when the message was tagged and put in the exception queue. */
  tagged: boolean;
  tag?: string;
  failure?: FailureType;
  exceptionQueue: boolean;
  /** `phrase`, `delivery_status` or the structural signal that decided. */
  decidedBy?: string;
  phraseMatches: PhraseMatch[];
  signals: SignalFound[];
  /** Recipients a DSN (or X-Failed-Recipients) reports as failed or delayed. */
  failedRecipients: string[];
  deliveryStatus?: { reportingMta?: string; recipients: RecipientStatus[]; truncated: boolean };
  phrasesIgnored?: string;
}

const SIGNAL_LABEL: Record<StructuralSignal, string> = {
  delivery_status: 'a delivery status report (RFC 3464)',
  feedback_report: 'a feedback report (RFC 5965 abuse complaint)',
  auto_submitted: 'the Auto-Submitted header (RFC 3834)',
  x_autoreply: 'the X-Autoreply header',
  x_autorespond: 'the X-Autorespond header',
  precedence: 'the Precedence header',
  empty_return_path: 'the empty return path',
  x_failed_recipients: 'the X-Failed-Recipients header',
};

/** Most recipients named in one summary sentence; all are in the details. */
const LISTED = 10;

const quote = (s: string) => JSON.stringify(s);

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

/** The findings for one message, given what was read and what was decided. */
export function describeOutcome(ev: Evidence, decision: Decision, failedHeader: string[], dryRun: boolean): DeliveryExceptionFindings {
  const report = ev.deliveryStatus;
  // The address as the sender gave it (Original-Recipient, RFC 3464 section 2.3.1) is the one
  // an agent recognises; Final-Recipient may be an alias expansion.
  const failedFromReport = (report?.recipients ?? []).filter((r) => r.failure).map((r) => r.originalRecipient ?? r.finalRecipient ?? '');
  const failedRecipients = [...new Set([...failedFromReport, ...failedHeader].filter(Boolean))];
  const summary: string[] = [];
  const tag = decision.failure ? `email-${decision.failure}-undeliverable` : undefined;

  if (decision.failure) {
    let why: string;
    if (decision.decidedBy === 'phrase') {
      why = `the ${ev.phraseMatches.length === 1 ? 'phrase' : 'phrases'} ${[...new Set(ev.phraseMatches.map((m) => quote(m.name)))].join(', ')}`;
    } else if (decision.decidedBy === 'delivery_status' && failedFromReport.length) {
      why = `the delivery status report: ${failedFromReport.length} of ${report?.recipients.length ?? 0} recipients failed or delayed`;
    } else {
      const s = ev.signals.find((x) => x.signal === decision.decidedBy);
      why = `${SIGNAL_LABEL[decision.decidedBy as StructuralSignal]} (${s?.evidence ?? ''})`;
    }
    summary.push(`${dryRun ? 'Would tag' : 'Tagged'} ${tag} and ${dryRun ? 'would put it' : 'put it'} in the exception queue, decided by ${why}.`);
  } else if (decision.successReport) {
    summary.push('Not a delivery exception: a delivery status report that says every recipient was delivered, relayed or expanded.');
  } else if (decision.phrasesIgnored) {
    summary.push(`Not a delivery exception: phrases matched, but ${decision.phrasesIgnored}.`);
  } else {
    summary.push('Not a delivery exception: no phrase matched and the message shows no sign of being machine-generated.');
  }

  for (const m of ev.phraseMatches) summary.push(describeMatch(m));
  for (const s of ev.signals) summary.push(`Machine-mail signal: ${SIGNAL_LABEL[s.signal]}: ${s.evidence}.`);
  if (report) {
    const listed = report.recipients.slice(0, LISTED).map(describeRecipient);
    const more = report.recipients.length > LISTED ? ` and ${report.recipients.length - LISTED} more` : '';
    const from = report.reportingMta ? ` from ${report.reportingMta}` : '';
    summary.push(
      listed.length
        ? `Delivery status report${from}: ${listed.join('; ')}${more}.`
        : `Delivery status report${from} with no readable recipient block.`,
    );
  } else if (failedHeader.length) {
    summary.push(`Failed recipients (X-Failed-Recipients): ${failedHeader.slice(0, LISTED).join(', ')}.`);
  }
  if ((decision.decidedBy === 'delivery_status' && failedFromReport.length) || decision.decidedBy === 'x_failed_recipients') {
    const disagreeing = ev.phraseMatches.filter((m) => m.failure !== decision.failure);
    if (disagreeing.length) summary.push(`${decision.decidedBy === 'x_failed_recipients' ? 'X-Failed-Recipients' : "The report's status"} wins over the phrase failure type (${disagreeing[0]!.failure}).`);
  }

  return {
    summary,
    tagged: Boolean(decision.failure),
    ...(tag ? { tag, failure: decision.failure } : {}),
    exceptionQueue: Boolean(decision.failure),
    ...(decision.decidedBy ? { decidedBy: decision.decidedBy } : {}),
    phraseMatches: ev.phraseMatches,
    signals: ev.signals,
    failedRecipients,
    ...(report ? { deliveryStatus: report } : {}),
    ...(decision.phrasesIgnored ? { phrasesIgnored: decision.phrasesIgnored } : {}),
  };
}
