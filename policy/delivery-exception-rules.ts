/**
 * The matching half of delivery-exception tagging: compiled phrases, the signals read from a
 * message's structure, and the decision that turns both into a tag. No streams here; the stage
 * in delivery-exceptions.ts feeds it what it read from the root headers and the DSN part.
 */
import type { DeliveryExceptionPhrase, FailureType, PhraseType } from './delivery-exception-phrases.js';
import type { DeliveryStatusReport } from './delivery-status.js';

/** Signs of machine-generated mail read from the message's structure rather than its words. */
export const structuralSignals = [
  'delivery_status',
  'feedback_report',
  'auto_submitted',
  'x_autoreply',
  'x_autorespond',
  'precedence',
  'empty_return_path',
  'x_failed_recipients',
] as const;
export type StructuralSignal = (typeof structuralSignals)[number];

/** Which policy file a phrase came from. */
export type PhraseOrigin = 'predefined' | 'partition' | 'department';

/** A phrase ready to match. */
export interface CompiledPhrase extends DeliveryExceptionPhrase {
  readonly origin: PhraseOrigin;
  readonly re: RegExp;
}

/** Everything the stage needs per message, built once per policy (re)load. */
export interface DeliveryExceptionRules {
  readonly addressPhrases: readonly CompiledPhrase[];
  readonly subjectPhrases: readonly CompiledPhrase[];
  /** `alone`: a phrase match tags by itself (Cisco guide); otherwise it needs a structural signal too. */
  readonly phraseMatches: 'alone' | 'with_structural_signal';
  readonly signals: ReadonlySet<StructuralSignal>;
  /** Failure type when a structural signal other than a DSN status decides. */
  readonly signalFailure: FailureType;
}

/** Where a phrase was found. */
export type MatchPlace = 'subject' | 'From address' | 'envelope sender (MAIL FROM)' | 'Return-Path';

/** One phrase found in one place. */
export interface PhraseMatch {
  name: string;
  phrase: string;
  type: PhraseType;
  failure: FailureType;
  origin: PhraseOrigin;
  where: MatchPlace;
  /** The text that matched, as it appears in the message (only the matched words, never the whole subject). */
  matched: string;
  /** For address phrases: the address whose local part matched. */
  address?: string;
}

/** One structural signal found. */
export interface SignalFound {
  signal: StructuralSignal;
  /** The header value or envelope fact that showed it. */
  evidence: string;
}

/** What was read from the message. */
export interface Evidence {
  phraseMatches: PhraseMatch[];
  signals: SignalFound[];
  /** The parsed delivery-status part, when the message had one. */
  deliveryStatus?: DeliveryStatusReport;
}

/** What the stage decided. */
export interface Decision {
  failure?: FailureType;
  /** `delivery_status` (per-recipient DSN status), `phrase`, or the structural signal that decided. */
  decidedBy?: 'phrase' | StructuralSignal;
  /** Why phrase matches did not count, when they did not. */
  phrasesIgnored?: string;
  /** True when a DSN reported only successful deliveries (no failure, no delay). */
  successReport?: boolean;
}

// Characters that must be escaped in a RegExp built with the `u` flag (`-` must not be).
const SYNTAX = /[.*+?^${}()|[\]\\/]/;

/**
 * A case-insensitive, Unicode-aware matcher for a phrase. Whitespace in a phrase matches any run
 * of whitespace (folded subjects). In subject phrases `_` also matches a space: the guide's
 * `Automatisk_svar` and `ponse_automatique` are Q-encoded words seen undecoded, and we match
 * the decoded subject (RFC 2047 section 4.2: `_` stands for a space).
 */
export function phraseRegExp(phrase: string, type: PhraseType): RegExp {
  let src = '';
  for (const ch of phrase.normalize('NFC').trim()) {
    if (/\s/u.test(ch)) {
      if (!src.endsWith('\\s+')) src += '\\s+';
    } else if (ch === '_' && type === 'subject') src += '[_\\s]';
    else src += SYNTAX.test(ch) ? `\\${ch}` : ch;
  }
  return new RegExp(src, 'iu');
}

export function compilePhrase(p: DeliveryExceptionPhrase, origin: PhraseOrigin): CompiledPhrase {
  return Object.freeze({ name: p.name, type: p.type, phrase: p.phrase, failure: p.failure, origin, re: phraseRegExp(p.phrase, p.type) });
}

const anyOf = new WeakMap<readonly CompiledPhrase[], RegExp>();

/**
 * One expression that matches where any of `phrases` does: tried first, so that the usual
 * text, which holds none of them, costs one search instead of one per phrase (111 subject
 * phrases by default: 2.7 us a subject against 0.2). Phrase expressions are literals and
 * white-space runs (phraseRegExp), so the alternation matches exactly when one of them does.
 */
function anyPhrase(phrases: readonly CompiledPhrase[]): RegExp {
  let re = anyOf.get(phrases);
  if (!re) {
    re = phrases.length ? new RegExp(phrases.map((p) => `(?:${p.re.source})`).join('|'), 'iu') : /(?!)/;
    anyOf.set(phrases, re);
  }
  return re;
}

/** Subject phrases found in the decoded subject. */
export function subjectMatches(rules: DeliveryExceptionRules, subject: string): PhraseMatch[] {
  const text = subject.normalize('NFC');
  if (!anyPhrase(rules.subjectPhrases).test(text)) return [];
  const out: PhraseMatch[] = [];
  for (const p of rules.subjectPhrases) {
    const m = p.re.exec(text);
    if (m) out.push(match(p, 'subject', m[0]));
  }
  return out;
}

/** The part of an address before its last `@` (the whole thing when there is none). */
export function localPart(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : address.slice(0, at);
}

/**
 * Address phrases found in an address. Cisco guide: only the part before `@` is compared, so
 * `mail-postmaster.xyz@abc.com` matches `postmaster` and `exception@postmaster.com` does not.
 */
export function addressMatches(rules: DeliveryExceptionRules, address: string, where: MatchPlace): PhraseMatch[] {
  const local = localPart(address).normalize('NFC');
  if (!local || !anyPhrase(rules.addressPhrases).test(local)) return [];
  const out: PhraseMatch[] = [];
  for (const p of rules.addressPhrases) {
    const m = p.re.exec(local);
    if (m) out.push({ ...match(p, where, m[0]), address });
  }
  return out;
}

function match(p: CompiledPhrase, where: MatchPlace, matched: string): PhraseMatch {
  return { name: p.name, phrase: p.phrase, type: p.type, failure: p.failure, origin: p.origin, where, matched };
}

/**
 * Chooses the failure type. When signals disagree, the most specific evidence wins:
 * 1. a DSN's per-recipient status (RFC 3464/3463): the reporting MTA knows why delivery
 *    failed; permanent when any recipient failed permanently, else temporary;
 * 2. an `X-Failed-Recipients` header (Exim, Gmail): those recipients failed permanently;
 * 3. phrase matches (Cisco guide), when they count: the phrase's failure type, and permanent
 *    when matched phrases disagree (a permanent failure is the stronger claim; every match is
 *    recorded);
 * 4. a feedback report (RFC 5965, an abuse complaint): permanent, since the recipient asked
 *    not to get the mail and sending again will not change that;
 * 5. any other structural signal: `signal_failure` (default temporary: an auto-reply or a
 *    bounce without a readable status says nothing about permanence; the guide's own text
 *    calls an out-of-office reply temporary).
 * A DSN that reports only successful deliveries is a delivery confirmation: it lets phrases
 * count (it is machine mail), but is not a delivery exception by itself, whatever other
 * signals it carries.
 */
export function decide(rules: DeliveryExceptionRules, ev: Evidence): Decision {
  const statusFailures = (ev.deliveryStatus?.recipients ?? []).map((r) => r.failure).filter((f): f is FailureType => f !== undefined);
  if (statusFailures.length) {
    return { failure: statusFailures.includes('permanent') ? 'permanent' : 'temporary', decidedBy: 'delivery_status' };
  }
  // Exim and Gmail list on a bounce the recipients that failed for good (Exim spec, "Bounce
  // messages"); delay warnings never carry the header.
  if (ev.signals.some((s) => s.signal === 'x_failed_recipients')) return { failure: 'permanent', decidedBy: 'x_failed_recipients' };
  const structural = ev.signals.length > 0;
  if (ev.phraseMatches.length) {
    if (rules.phraseMatches === 'alone' || structural) {
      const failure = ev.phraseMatches.some((m) => m.failure === 'permanent') ? 'permanent' : 'temporary';
      return { failure, decidedBy: 'phrase' };
    }
  }
  const phrasesIgnored =
    ev.phraseMatches.length && rules.phraseMatches === 'with_structural_signal' && !structural
      ? 'phrase_matches = "with_structural_signal" and the message shows no sign of being machine-generated'
      : undefined;
  const ignored = phrasesIgnored ? { phrasesIgnored } : {};
  // A delivery report whose recipients were all delivered, relayed or expanded is a delivery
  // confirmation, not an exception, even though it is machine mail.
  const recipients = ev.deliveryStatus?.recipients ?? [];
  if (recipients.length && recipients.every(reportsSuccess)) return { ...ignored, successReport: true };
  const deciding = [...ev.signals].sort((a, b) => structuralSignals.indexOf(a.signal) - structuralSignals.indexOf(b.signal))[0];
  if (deciding) return { failure: deciding.signal === 'feedback_report' ? 'permanent' : rules.signalFailure, decidedBy: deciding.signal, ...ignored };
  return ignored;
}

/** RFC 3464 section 2.3.3: delivered, relayed and expanded are successes; so is a 2.x.x status. */
function reportsSuccess(r: { action?: string; status?: string }): boolean {
  return ['delivered', 'relayed', 'expanded'].includes(r.action ?? '') || (!r.action && /^2\./.test(r.status ?? ''));
}
