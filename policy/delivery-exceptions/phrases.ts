/**
 * The delivery-exception phrases the Cisco guide ships ("Appendix: Predefined Delivery
 * Exceptions"), copied row by row from the appendix tables, in the guide's order. In the guide
 * every predefined phrase is its own name, so each row here is `[phrase, failure]` and the
 * name is the phrase.
 *
 * The guide announces 112 subject phrases, but its table lists 111 rows (the last is
 * "ZAZ Reply"); we ship the rows it lists and invent none.
 */

/** Where a phrase is looked for: the sender address before `@`, or the subject. */
export type PhraseType = 'address' | 'subject';
/** What kind of bounce a match means (Cisco guide: permanent or temporary). */
export type FailureType = 'permanent' | 'temporary';

/** One delivery-exception phrase. */
export interface DeliveryExceptionPhrase {
  /** The name IT refers to it by, e.g. in `remove = [...]`. */
  readonly name: string;
  readonly type: PhraseType;
  /** The text looked for, case-insensitively. Never contains `@` (Cisco guide). */
  readonly phrase: string;
  readonly failure: FailureType;
}

type Row = readonly [phrase: string, failure: FailureType];

// Cisco guide, appendix: "The following 16 phrases are checked in email addresses."
const addressRows: readonly Row[] = [
  ['-MaiSer-', 'temporary'],
  ['Auto-reply', 'permanent'],
  ['auto-sender', 'permanent'],
  ['Autoresponder', 'permanent'],
  ['badaddress', 'temporary'],
  ['ccmail_agent', 'temporary'],
  ['Mail-Gateway', 'temporary'],
  ['Mail_master', 'temporary'],
  ['Mailer', 'temporary'],
  ['mail-daemon', 'temporary'],
  ['mdaemon', 'temporary'],
  ['postadm', 'temporary'],
  ['postmast', 'temporary'],
  ['postmaster', 'temporary'],
  ['supervisor', 'permanent'],
  ['unknown', 'temporary'],
];

// Cisco guide, appendix: "The following 112 phrases are checked in the subject of the email."
const subjectRows: readonly Row[] = [
  ['Abwesenheitsnotiz', 'permanent'],
  ['Address Unavailable', 'temporary'],
  ['Admin', 'permanent'],
  ['Adressänderung', 'permanent'],
  ['Auto answer', 'permanent'],
  ['Auto Reply', 'permanent'],
  ['Auto response', 'permanent'],
  ['Auto-Reply', 'permanent'],
  ['Auto-response', 'permanent'],
  ['Automated response', 'permanent'],
  ['Automated Omnigate Message', 'permanent'],
  ['Automatic reply', 'permanent'],
  ['Automatic response', 'permanent'],
  ['Automaticka odpoved', 'permanent'],
  ['AUTOMATICKA ODPOVID', 'permanent'],
  ['Automatisch antwoord', 'permanent'],
  ['Automatisk_svar', 'permanent'],
  ['Automatsvar', 'permanent'],
  ['AutoReply', 'permanent'],
  ['AutoResp', 'permanent'],
  ['Autoresponse', 'permanent'],
  ['Autosvar', 'permanent'],
  ['away from my email', 'permanent'],
  ['away from the office', 'permanent'],
  ['bad-style address', 'temporary'],
  ['Bevestiging Ontvangen', 'permanent'],
  ['bounced message', 'permanent'],
  ['Conversion fail', 'permanent'],
  ['could not send message', 'permanent'],
  ['Delivery Confirmation', 'permanent'],
  ['Delivery Error', 'temporary'],
  ['Delivery Failed', 'temporary'],
  ['Delivery Failure', 'temporary'],
  ['Delivery notification', 'temporary'],
  ['Delivery Problem Notification', 'permanent'],
  ['Delivery Report', 'temporary'],
  ['Delivery Returned', 'temporary'],
  ['Delivery Status Notification', 'temporary'],
  ['Delivery-Report', 'permanent'],
  ['Details of my business trips', 'permanent'],
  ['Dìkuji za maila', 'permanent'],
  ['E-mail Received!', 'permanent'],
  ['E-mail Unavailable', 'permanent'],
  ['Error Response', 'temporary'],
  ['Error sending mail', 'temporary'],
  ['Extended Absence Response', 'permanent'],
  ['Failed mail', 'temporary'],
  ['failed message delivery', 'permanent'],
  ['failure notice', 'temporary'],
  ['Ihre Mail', 'permanent'],
  ['Inaccessible e-mail address', 'temporary'],
  ['INBOUND MESSAGE ERR', 'permanent'],
  ['Invalid mailbox', 'temporary'],
  ['Invalid user', 'temporary'],
  ['Keep more of what you make!', 'permanent'],
  ['Mail Did Not Get Through', 'temporary'],
  ['Mail error', 'temporary'],
  ['Mail failed', 'temporary'],
  ['Mail failure', 'temporary'],
  ['Mail recipient has left Enter-Net', 'permanent'],
  ['Maternity Leave', 'permanent'],
  ['message failed', 'permanent'],
  ['message not sent', 'permanent'],
  ['message rejected', 'permanent'],
  ['message was not sent', 'permanent'],
  ['NDN:', 'temporary'],
  ['No interest!!', 'permanent'],
  ['No such user', 'temporary'],
  ['Non-Delivery', 'temporary'],
  ['Non-existing employee', 'permanent'],
  ['Nondeliverable', 'temporary'],
  ['Not a WORLDPATH client', 'permanent'],
  ['Non deliverable', 'temporary'],
  ['Not delivered', 'temporary'],
  ['not_a_jono_addy', 'permanent'],
  ['Odpoved na zpravu', 'permanent'],
  ['Ontvangstbevestiging', 'permanent'],
  ['Out of email contact', 'permanent'],
  ['Out of office', 'permanent'],
  ['Out of the office', 'permanent'],
  ['ponse_automatique', 'permanent'],
  ['problem delivering your mail', 'permanent'],
  ['Response from Administrator', 'permanent'],
  ['Response from bdbad', 'permanent'],
  ['Response from rlozano', 'permanent'],
  ['Resposta Automatica', 'permanent'],
  ['Return message', 'permanent'],
  ['Returned Mail', 'permanent'],
  ['Returned to Sender', 'permanent'],
  ['Réponse automatique', 'permanent'],
  ['Service Message', 'temporary'],
  ['SMS error response', 'temporary'],
  ['SMS message', 'permanent'],
  ['system', 'permanent'],
  ['Thanks for writing ER!', 'permanent'],
  ['Thanks for your e-mail message!!', 'permanent'],
  ['Troubles delivering the message', 'permanent'],
  ['Unable to deliver mail', 'temporary'],
  ['Undeliverable', 'temporary'],
  ['unknown address', 'temporary'],
  ['unknown domain', 'temporary'],
  ['unknown recipient', 'temporary'],
  ['User Not at VISTA.COM Domain', 'permanent'],
  ['user not found', 'temporary'],
  ['user unknown', 'temporary'],
  ['vacation', 'permanent'],
  ['Warning - delayed mail', 'permanent'],
  ['X.400 Inter-Personal Notification', 'temporary'],
  ['Your Message To Juno', 'permanent'],
  ['Your message was received', 'permanent'],
  ['ZAZ Reply', 'temporary'],
];

const fromRows = (type: PhraseType, rows: readonly Row[]): readonly DeliveryExceptionPhrase[] =>
  Object.freeze(rows.map(([phrase, failure]) => Object.freeze({ name: phrase, type, phrase, failure })));

/** The 16 predefined phrases checked in the sender address (the part before `@`). */
export const predefinedAddressPhrases = fromRows('address', addressRows);
/** The predefined phrases checked in the subject. */
export const predefinedSubjectPhrases = fromRows('subject', subjectRows);
/** Every predefined phrase: address phrases first, then subject phrases, in the guide's order. */
export const predefinedPhrases: readonly DeliveryExceptionPhrase[] = Object.freeze([...predefinedAddressPhrases, ...predefinedSubjectPhrases]);
