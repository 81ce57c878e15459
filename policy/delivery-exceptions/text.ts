/**
 * Reading the failure type from the words of a bounce, for the MTAs that write no RFC 3464
 * report (qmail, older Exim and Postfix, Exchange's text, MDaemon, Yahoo, list servers...) and
 * for reports whose recipient blocks say nothing usable. Pure functions over a small, already
 * size-bounded piece of text: the human-readable part of a message the other evidence already
 * marks as machine mail. The text never tags a message by itself: a customer who pastes a
 * bounce into a question is asking a question.
 *
 * "Permanent" here is what issue 17 and RFC 3464 section 2.3.3 mean by `failed`: the MTA has
 * given up and returned the message; "temporary" is a delay warning, an MTA still trying.
 */
import type { FailureType } from './phrases.js';

/** What the text of a bounce says about the failure. */
export interface BounceTextVerdict {
  failure: FailureType;
  /** Which kind of wording decided, for the admin: e.g. `qmail: permanent error`. */
  rule: string;
  /** The words that matched, as they appear (at most 120 characters). */
  matched: string;
}

interface TextRule {
  rule: string;
  re: RegExp;
}

/** Most characters of bounce text read: the explanation comes first, the original after it. */
export const BOUNCE_TEXT_CAP = 32 * 1024;

// The MTA says in so many words that the failure is permanent, or that it gave up.
const permanentSentences: readonly TextRule[] = [
  // qmail-send: "This is a permanent error; I've given up. Sorry it didn't work out."
  { rule: 'qmail: permanent error', re: /\bThis is a permanent error;?\s+I'?ve given up\b/i },
  // qmail, after its queue lifetime: "I'm not going to try again; this message has been in the queue too long."
  { rule: 'qmail: gave up', re: /\bI'?m not going to try again\b/i },
  // Exim: "could not be delivered to one or more of its recipients. This is a permanent error."
  // Sendmail: "The following addresses had permanent fatal errors"; MDaemon: "PERMANENT fatal delivery errors".
  { rule: 'permanent error', re: /\bpermanent\s+(?:fatal\s+)?(?:delivery\s+)?(?:error|failure)s?\b/i },
  // Gmail: "Delivery to the following recipient failed permanently".
  { rule: 'failed permanently', re: /\b(?:failed|rejected|undeliverable)\s+permanently\b|\bpermanently\s+(?:failed|rejected|undeliverable)\b/i },
  // Exim: "retry timeout exceeded"; sendmail: "Message could not be delivered for 5 days", "Cannot send message for 5 days".
  {
    rule: 'gave up',
    re: /\bretry\s+time(?:out)?\s+(?:exceeded|expired)\b|\b(?:could\s+not|cannot|can't)\s+(?:be\s+)?(?:send|sent|deliver|delivered)(?:\s+message)?\s+(?:for|within)\s+(?:the\s+past\s+)?\d+\s+days?\b/i,
  },
  // InterScan: "Exceeded Maximum Delivery Attempts"; others: "has been in the queue too long", "giving up".
  {
    rule: 'gave up',
    re: /\bmaximum\s+(?:number\s+of\s+)?delivery\s+attempts\b|\bin\s+the\s+queue\s+too\s+long\b|\btoo\s+long\s+in\s+the\s+queue\b|\b(?:giving|gave|given)\s+up\b/i,
  },
];

// A delay warning: the message is still queued and the MTA keeps trying.
const warningSentences: readonly TextRule[] = [
  // Sendmail: "THIS IS A WARNING MESSAGE ONLY"; Postfix: "THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE."
  // OpenSMTPD: "A message is delayed ...", "this is only a temporary failure report", "You DO NOT NEED to re-send".
  {
    rule: 'delay warning',
    re: /\bTHIS\s+IS\s+A\s+WARNING\s+(?:MESSAGE\s+)?ONLY\b|\bDO\s+NOT\s+NEED\s+TO\s+RE-?SEND\b|\btemporary\s+failure\s+report\b|\bmessage\s+is\s+delayed\b/i,
  },
  // Sendmail: "Warning: message still undelivered after 4 hours", "Will keep trying until message is 5 days old";
  // Postfix subject text "still being retried"; Exim: "Delivery attempts will continue".
  {
    rule: 'delay warning',
    re: /\bstill\s+undelivered\b|\bstill\s+being\s+retried\b|\b(?<!not\s)will\s+(?:keep|continue)\s+(?:on\s+)?(?:trying|to\s+try|retrying)\b|\bdelivery\s+attempts\s+will\s+continue\b/i,
  },
  // Exim: "A message that you sent has not yet been delivered to one or more of its recipients".
  { rule: 'delay warning', re: /\bhas\s+not\s+yet\s+been\s+delivered\b|\bnot\s+(?:been\s+)?delivered\s+yet\b/i },
  // Exchange and Gmail: "Delivery is delayed to these recipients", "Delivery to the following recipient has been delayed".
  {
    rule: 'delay warning',
    re: /\bdelivery\s+(?:is|has\s+been)\s+delayed\b|\bdelivery\s+to\s+the\s+following\s+recipients?\s+(?:has|have)\s+been\s+delayed\b/i,
  },
];

// The message was not delivered, without a word on why or for how long. In a bounce that is
// not a warning this is the MTA returning the message: final.
const notDeliveredSentences: readonly TextRule[] = [
  {
    rule: 'not delivered',
    re: /\b(?:could\s+not|couldn't|cannot|can't|was\s+not|wasn't|were\s+not|has\s+not\s+been|have\s+not\s+been|unable\s+to|not\s+able\s+to)\s+(?:be\s+)?(?:deliver|delivered|sent)\b|\bundeliverable\b|\bdelivery\s+(?:has\s+)?failed\b|\bdelivery\s+to\s+the\s+following\s+recipients?\s+failed\b|\bfollowing\s+(?:address(?:es|\(es\))?|recipients?)\s+(?:failed|had\s+(?:permanent\s+)?(?:fatal\s+)?errors)\b|\bhas\s+been\s+returned\b|\breturned\s+(?:mail|to\s+sender)\b|\bfailed\s+(?:addresses|recipients?)\s+follow\b/i,
  },
  // Exchange: "Your message ... did not reach the following recipient(s)"; mail.ru, Dovecot:
  // "was rejected", "was automatically rejected"; a queue that stopped: "was aborted after 5.0 hour(s)".
  // DragonFly: "There was an error delivering your mail"; OpenSMTPD: "An error has occurred while attempting to deliver".
  { rule: 'not delivered', re: /\berror\s+(?:has\s+occurred\s+)?(?:while\s+)?(?:attempting\s+to\s+)?deliver(?:ing)?\b/i },
  { rule: 'not delivered', re: /\bdid\s+not\s+reach\b|\b(?:was|were|has\s+been|have\s+been)\s+(?:automatically\s+)?(?:rejected|refused|aborted)\b/i },
  // German, French, Spanish and Portuguese MTAs. The text is read byte for byte (Latin-1), so
  // an accented letter is one or two characters, whatever the charset.
  {
    rule: 'not delivered',
    re: /\bnicht\s+zugestellt\s+werden\b|\bn'a\s+pas\s+pu\s+.{1,2}tre\s+(?:remis|d.{1,2}livr|distribu)|\bno\s+(?:pudo|ha\s+podido)\s+ser\s+entregad|\bn.{1,2}o\s+pode\s+ser\s+(?:enviada|entregue)\b/i,
  },
  // Cisco guide: "an irreparable reason, such as an invalid email address". The reasons MTAs
  // give for an address that does not exist.
  {
    rule: 'unknown recipient',
    re: /\b(?:user|recipient|address|mailbox)\s+(?:unknown|not\s+known|not\s+found|does\s+not\s+exist|doesn't\s+exist)\b|\bunknown\s+(?:user|recipient|address|mailbox)\b|\bno\s+such\s+(?:user|recipient|address|mailbox)\b|\bno\s+(?:user|mailbox)\s+(?:here\s+)?by\s+that\s+name\b|\binvalid\s+(?:final\s+delivery\s+)?(?:user(?:id|name)?|recipient|mailbox|address)\b|\b(?:recipient\s+)?name\s+is\s+not\s+recogni[sz]ed\b|\bdomain\s+(?:does\s+not|doesn't)\s+exist\b|\bmalformed\s+(?:recipient\s+)?address\b|\bdoes(?:n't|\s+not)\s+have\s+an?\s+[\w.\- ]{0,60}\baccount\b/i,
  },
];

// RFC 3463 enhanced status codes in running text: "550 5.1.1", "#5.1.1" (qmail, Exchange),
// "(#5.1.1)". Not part of a longer dotted number (an IP address, a date) nor a version ("Exim 4.94.2").
const ENHANCED = /(?<![\w.])(?<!\b(?:Exim|Postfix|Sendmail|qmail|version|release|v)\s?)([45])\.[0-9]{1,3}\.[0-9]{1,3}(?![\w]|\.[0-9])/gi;
// SMTP reply codes where MTAs quote them: Postfix and qmail "said: 550", Exim "SMTP error ... :\n550 ...",
// Sendmail transcripts "<<< 550", InterScan ">>> 550", Exchange "#550", "smtp; 550", and at a line start.
const REPLY = /(?:^|said:|<<<|>>>|smtp;|#|\breason:|\berror:|\bresponse:|\breplied:)[ \t]*(?:\r?\n[ \t]*)?"?([45])[0-5][0-9](?=[ \t\-:]|$)/gim;

/**
 * Lines that start the returned original (or its headers): nothing after them is the MTA's
 * own text. A separator line ("------ This is a copy of the message ------") or one of the
 * sentences MTAs put before the original.
 */
const SEPARATOR = /^[ \t]*[-=*_|]{2}/;
const SEPARATOR_WORDS = /\b(?:original|copy\s+of|(?:returned\s+mail|message\s+text|message)\s+follows|header\s+of|forwarded\s+message|mensaje\s+original)\b/i;
const ORIGINAL_FOLLOWS =
  /^[ \t]*(?:original\s+message\s+follows|below\s+is\s+a\s+copy\s+of\s+the\s+original|a\s+copy\s+of\s+the\s+original\s+message|below\s+this\s+line\s+is\s+a\s+copy|below\s+the\s+next\s+line\s+is\s+a\s+copy)/i;
/** Characters of a line looked at for a separator: real ones are short, a hostile one is not read whole. */
const SEPARATOR_LINE = 200;

const clip = (s: string) => {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > 120 ? `${one.slice(0, 117)}...` : one;
};

function firstMatch(rules: readonly TextRule[], text: string): { rule: string; matched: string } | undefined {
  for (const r of rules) {
    const m = r.re.exec(text);
    if (m) return { rule: r.rule, matched: clip(m[0]) };
  }
  return undefined;
}

/**
 * Lines where an MTA quotes the original's subject (Exim: "The subject of the message is:",
 * Exchange and Domino: "Subject:"): the sender's words, which may say anything.
 */
const QUOTED_SUBJECT = /^[ \t]*(?:the\s+subject\s+of\s+the\s+message\s+is|subject)[ \t]*:.*$/gim;

/** The MTA's own words: the text up to where the returned original starts, quoted subjects left out. */
function ownText(text: string): string {
  // Line by line, each line looked at up to SEPARATOR_LINE characters: linear in the text.
  let end = text.length;
  for (let at = 0; at < text.length;) {
    const nl = text.indexOf('\n', at);
    const next = nl < 0 ? text.length : nl + 1;
    const line = text.slice(at, Math.min(next, at + SEPARATOR_LINE));
    if ((SEPARATOR.test(line) && SEPARATOR_WORDS.test(line)) || ORIGINAL_FOLLOWS.test(line)) {
      end = at;
      break;
    }
    at = next;
  }
  return text.slice(0, end).replace(QUOTED_SUBJECT, '');
}

/**
 * What the words of a bounce say, or undefined when they say nothing either way. In order:
 * an explicit permanent failure or giving up (a message may report one recipient failed and
 * another delayed: the permanent failure is the stronger claim, as in a DSN); a delay
 * warning; a class 5 status or reply code; a plain "could not be delivered"; a class 4 code.
 */
export function bounceTextVerdict(text: string): BounceTextVerdict | undefined {
  const own = ownText(text.length > BOUNCE_TEXT_CAP ? text.slice(0, BOUNCE_TEXT_CAP) : text);
  if (!own.trim()) return undefined;

  const permanent = firstMatch(permanentSentences, own);
  if (permanent) return { failure: 'permanent', ...permanent };
  const warning = firstMatch(warningSentences, own);
  if (warning) return { failure: 'temporary', ...warning };

  const codes = statusCodes(own);
  const five = codes.find((c) => c.cls === '5');
  if (five) return { failure: 'permanent', rule: five.rule, matched: five.matched };
  const notDelivered = firstMatch(notDeliveredSentences, own);
  if (notDelivered) return { failure: 'permanent', ...notDelivered };
  const four = codes.find((c) => c.cls === '4');
  if (four) return { failure: 'temporary', rule: four.rule, matched: four.matched };
  return undefined;
}

/** Status and reply codes quoted in the text, enhanced codes first. */
function statusCodes(text: string): { cls: string; rule: string; matched: string }[] {
  const out: { cls: string; rule: string; matched: string }[] = [];
  for (const m of text.matchAll(ENHANCED)) out.push({ cls: m[1]!, rule: 'enhanced status code (RFC 3463)', matched: clip(m[0]) });
  for (const m of text.matchAll(REPLY)) out.push({ cls: m[1]!, rule: 'SMTP reply code', matched: clip(m[0]) });
  return out;
}

/**
 * Plain text out of an HTML bounce body (Exchange, GroupWise), for {@link bounceTextVerdict}:
 * tags become spaces (line ends for those that end a block), scripts and styles are dropped.
 * One pass with indexOf, linear in the text whatever markup a sender writes.
 */
export function htmlText(html: string): string {
  const lower = html.toLowerCase();
  let out = '';
  for (let at = 0; at < html.length;) {
    const lt = html.indexOf('<', at);
    if (lt < 0) {
      out += html.slice(at);
      break;
    }
    out += html.slice(at, lt);
    const gt = html.indexOf('>', lt + 1);
    // An unterminated tag: the rest is markup.
    if (gt < 0) break;
    const [, closing, name] = /^(\/?)([a-z0-9]*)/.exec(lower.slice(lt + 1, Math.min(gt, lt + 12)))!;
    out += BLOCK_TAGS.has(name!) ? '\n' : ' ';
    at = gt + 1;
    if (!closing && (name === 'script' || name === 'style')) {
      const close = lower.indexOf(`</${name}`, at);
      if (close < 0) break;
      at = close;
    }
  }
  return out
    .replace(/&nbsp;/gi, ' ')
    .replace(/&lt;/gi, '<')
    .replace(/&gt;/gi, '>')
    .replace(/&quot;/gi, '"')
    .replace(/&#39;|&apos;/gi, "'")
    .replace(/&amp;/gi, '&');
}

const BLOCK_TAGS = new Set(['br', 'p', 'div', 'tr', 'li', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'table']);
