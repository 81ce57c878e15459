/**
 * The records mailgate stores, whatever store holds them (storage/store.ts): message
 * metadata, queue entries and delivery records, quarantine records, alias state and the
 * retriever's fetched-key records. Types only; how a store lays them out is its own business
 * (storage/leveldb/layout.ts documents the LevelDB one).
 */

/** What the client said in MAIL FROM and RCPT TO. `mailFrom` is '' for the null reverse path. */
export interface Envelope {
  mailFrom: string;
  rcptTo: string[];
}

/** Where a message came from. */
export interface MessageSource {
  /** smtp: the SMTP listener; submission: the submission listener; imap/pop3: the retriever; cli: `mailgate send`; dsn: a delivery status notification mailgate made; quarantine: a message forwarding another to the quarantine mailbox; auto-reply: an answer mailgate sent (gateway/auto-reply/). */
  kind: 'smtp' | 'submission' | 'imap' | 'pop3' | 'cli' | 'dsn' | 'quarantine' | 'auto-reply';
  /** The alias the message arrived for or was fetched by, when one is known. */
  alias?: string;
  /** Client IP address for SMTP. */
  remoteAddress?: string;
  /** Reverse DNS name of the client, when looked up. */
  clientHostname?: string;
  /** HELO/EHLO name the client gave. */
  helo?: string;
  /** Authenticated user, when the client authenticated. */
  user?: string;
  /** TLS in use for the session. */
  secure?: boolean;
}

/** An attachment as seen in the stored message. */
export interface AttachmentInfo {
  fileName: string;
  contentType: string;
  /** Size of the encoded body part in bytes. */
  size: number;
  /** Set by attachment blocking when the part was removed. */
  blocked?: boolean;
}

/**
 * Everything mailgate knows about a stored message besides its bytes.
 * Field names follow the seeds where they name one (Genesys: `_AttachmentFileNames`).
 */
export interface MessageMeta {
  /** Time-ordered id, sorts by arrival. */
  id: string;
  /** Schema of this record, for migrations. */
  version: 1;
  /** ISO 8601 time the message was received. */
  receivedAt: string;
  /** Size in bytes of the stored (processed) message. */
  size: number;
  /** Size in bytes of the message as received. */
  receivedSize: number;
  envelope: Envelope;
  source: MessageSource;
  /** Decoded Subject header. */
  subject?: string;
  /** From header, as text. */
  from?: string;
  /** Addresses from the To header. */
  to: string[];
  /** Addresses from the Cc header. */
  cc: string[];
  /** Message-ID header, without angle brackets. */
  messageId?: string;
  /** File names of the attachments, in message order (Genesys `_AttachmentFileNames`). */
  _AttachmentFileNames: string[];
  /** Details of the attachments. */
  attachments: AttachmentInfo[];
  /**
   * Set when the message as received could not be processed and a wrapping message (the
   * original attached byte for byte) was stored in its place: the reason code, a colon and what
   * exactly was wrong, e.g. `header_nul: The message header has a NUL byte at offset 12`. The
   * codes are listed in policy/mime/unparsable.ts (Genesys `_WrappingMessageReason`).
   */
  _WrappingMessageReason?: string;
  /** What each pipeline stage found and did, by stage name. */
  findings: Record<string, { summary: string[]; [detail: string]: unknown }>;
  /** Labels set by stages, e.g. `email-permanent-undeliverable`. */
  tags: string[];
  /** `outbound` for mail going out through the dispatcher; absent for inbound mail. */
  direction?: 'outbound';
  /** Set when the message left the outbound queue: delivered, failed (with the notification sent back) or dropped. */
  delivery?: DeliveryRecord;
  // Reply threading (policy/threading/; Enate "Inbound Email": the reference in Subject or Body).
  /** The conversation's reference token, e.g. `K7P2QX` (shown in subjects as `[ref:K7P2QX]`). */
  conversation?: string;
  /** Id of the stored message this one answers (its In-Reply-To or References named it), when known. */
  inReplyTo?: string;
  /** Set when the message is forwarded to the quarantine mailbox (gateway/quarantine-forward/). */
  quarantineForward?: QuarantineForward;
}

/**
 * That an inbound message goes to the quarantine mailbox, written with the message (PCEmail
 * "Email Quarantine Settings"). The forward is a message of its own, `id`, queued in the same
 * commit: whether and when it left is on that message's delivery record (`messages show`
 * reads it from there into `status`, `leftAt` and `lastError`).
 */
export interface QuarantineForward {
  /** The quarantine mailbox. */
  to: string;
  /** Id of the forwarding message (from `to`'s point of view, the one it receives). */
  id: string;
  /** Why, in words: `unparsable (header_nul: ...)`, `auto-response`, ... */
  reason: string;
  /** ISO 8601 time it was queued. */
  queuedAt: string;
  /** Filled in when read (`messages show`), never stored: `queued`, or the forward's delivery status. */
  status?: 'queued' | DeliveryRecord['status'];
  /** Filled in when read: when the forward left the queue. */
  leftAt?: string;
  /** Filled in when read: the last error while it is queued, or why it failed. */
  lastError?: string;
}

// Outbound queue (storage/queue.ts, gateway/dispatch/): one entry per stored message still to
// be sent or forwarded, tracked recipient by recipient so that nobody gets it twice.

/** Where one recipient stands. */
export type RecipientStatus = 'pending' | 'delivered' | 'failed';

/** The last thing a server (or the network) said about a recipient or a route. */
export interface DeliveryResult {
  /** ISO 8601 time of the attempt. */
  at: string;
  /** SMTP reply code, when a server replied. */
  code?: number;
  /** The server's reply or the error, in words. */
  message: string;
  /** True when retrying cannot help (a 5xx reply). */
  permanent: boolean;
}

/** One envelope recipient of a queued message. */
export interface QueueRecipient {
  address: string;
  status: RecipientStatus;
  /** Attempts made for this recipient. */
  attempts: number;
  /** Relay entries: the `[[relay]]` this recipient is forwarded through; absent: the partition default SMTP. */
  relay?: string;
  /** The last reply or error for this recipient. */
  last?: DeliveryResult;
  /** When the server accepted it, and through which route. */
  deliveredAt?: string;
  route?: string;
}

/** A message waiting to be delivered. */
export interface QueueEntry {
  /** The stored message's id. */
  id: string;
  /** `outbound`: submitted for an alias to send; `relay`: inbound mail forwarded downstream; `quarantine`: a message forwarding another to the quarantine mailbox. */
  kind: 'outbound' | 'relay' | 'quarantine';
  /** Outbound: the alias it is sent from (resolved again at each attempt: the alias may be gone). */
  alias?: string;
  /** Envelope sender used upstream ('' for the null sender of a delivery status notification). */
  mailFrom: string;
  /** Envelope recipients the client gave, before automatic BCC or send_mail_to (for `queue show`). */
  requestedRecipients: string[];
  recipients: QueueRecipient[];
  /** When it was queued (ISO 8601). */
  queuedAt: string;
  /** Attempts made for the message as a whole. */
  attempts: number;
  /** When the next attempt is due (ISO 8601). */
  nextAttemptAt: string;
  lastAttemptAt?: string;
  /** Set while the message cannot be sent until an admin acts (no route): the reason, in words. */
  held?: string;
  /** The last failure that was not about one recipient (connection, TLS, authentication). */
  lastError?: DeliveryResult;
  /** True for a delivery status notification: it never gets one of its own. */
  dsn?: boolean;
  /**
   * Kind `quarantine`: the message forwarded and why. The entry is committed with that
   * message, before the forwarding message itself is stored (the dispatcher makes it from
   * this when it finds it missing), so a crash cannot lose the forward.
   */
  quarantine?: { original: string; reason: string };
}

/** A recipient of a message that left the queue: `dropped` when an admin took it out before it was delivered or failed. */
export interface FinishedRecipient extends Omit<QueueRecipient, 'status'> {
  status: RecipientStatus | 'dropped';
}

/** What happened to a message that left the queue; on its metadata as `delivery`. */
export interface DeliveryRecord {
  kind: QueueEntry['kind'];
  status: 'delivered' | 'failed' | 'partly_delivered' | 'dropped';
  finishedAt: string;
  attempts: number;
  recipients: FinishedRecipient[];
  /** Id of the delivery status notification stored and queued for the sender, if one was. */
  dsnId?: string;
  /** Why it was dropped, or the last route-level error. */
  reason?: string;
}

// Quarantine (policy/attachments/): blocked attachments kept as received, for an admin to
// restore, export or delete (Cisco guide: "Viewing / Deleting Blocked Attachments").

/** One quarantined attachment. */
export interface QuarantineRecord {
  /** Quarantine id, `<message id>.<n>`. */
  id: string;
  /** The message the attachment was removed from. */
  messageId: string;
  /** The attachment's file name (normalised: invisible characters and trailing dots removed). */
  fileName: string;
  /** Its declared content type. */
  contentType: string;
  /** Size of the decoded attachment in bytes (what `quarantine export` writes). */
  size: number;
  /** Bytes kept: the part's raw header block and encoded body. */
  storedBytes: number;
  /** The rule that blocked it. */
  rule: string;
  /** What the stage found (names, sniffed type, archive entries). */
  evidence: string[];
  /** ISO 8601 time it was quarantined. */
  date: string;
  /** Department of the message, when known. */
  department?: string;
}

// Alias health (gateway/fetch/alias-health.ts): what the retriever or an admin last decided,
// so a restart does not forget that an alias was made inactive (Cisco guide, "Changing the
// Status of Aliases"; Enate "Missing Emails": a failure count with a reason).

/** Whether the retriever fetches the alias. */
export type AliasStatus = 'active' | 'inactive';

/** Who changed the status last. */
export type AliasChangedBy = 'retriever' | 'admin';

/** One alias's health, as stored. */
export interface AliasState {
  /** `inactive`: not fetched (except the retriever's timed retry when `retryAt` is set). */
  status: AliasStatus;
  /** Consecutive failed connections or polls; 0 after a success. */
  failures: number;
  /** The last failure's message, as the client library or server gave it. */
  lastError?: string;
  /** The last failure's kind (fetchErrorKind: `auth`, `dns`, `tcp_refused`, ...). */
  lastErrorKind?: string;
  /** The last failure in words a mail admin can act on, or why an admin changed the status. */
  reason?: string;
  /** ISO time of the last change of status (or of the first record). */
  changedAt: string;
  /** Who made the last change of status. */
  changedBy: AliasChangedBy;
  /** With several nodes: the node on which an admin made it (its `[node] name`), for the holder's log. */
  changedOn?: string;
  /** ISO time of the retriever's next attempt while inactive; absent when only an admin can bring it back. */
  retryAt?: string;
  /** Fingerprint of the `[alias.incoming]` settings the state was reached with: an edited table starts afresh. */
  configHash?: string;
}

// Fetched keys (gateway/fetch/retriever.ts): which mailbox messages are already stored, so a
// message found again after a crash gets only its post-store action.

/**
 * A mailbox message as the retriever names it: the alias whose mailbox (or copy) it is, and
 * the mailbox key (IMAP `<uidvalidity>:<uid>`, POP3 `pop3:<uidl>`, with `#<recipient>` for
 * one recipient's copy under `split_recipients`).
 */
export interface FetchedKey {
  alias: string;
  key: string;
}

/** What the retriever stored for a mailbox message. */
export interface FetchedRecord {
  /** The stored message: the message itself, or the record of an over-size one. */
  id: string;
  /** Set when the message was invalid (over-size): it gets `on_invalid`, not `on_stored`. */
  invalid?: true;
}

// The audit log (the REST API, gateway/web): every change an admin made, and every sign-in.

/** One line of the audit log: who did what, when, from where, and how it ended. */
export interface AuditEntry {
  /** Sorts by time (a message-style id from ids.ts); set by the store. */
  id: string;
  /** ISO time it was done. */
  at: string;
  /** Who: `user NAME`, `token NAME`, `first-run link`, or what a failed sign-in claimed to be. */
  who: string;
  /** What: `sign-in`, `restore`, `delete`, `export`, `retry`, `drop`, `activate`, `deactivate`... */
  action: string;
  /** What it was done to: a message, quarantine or queue id, an alias name. */
  target?: string;
  /** The client address it came from. */
  from: string;
  /** `ok`, or the error code it failed with. */
  outcome: string;
}
