import type { DeliveryRecord } from './leveldb/queue.js';

/** What the client said in MAIL FROM and RCPT TO. `mailFrom` is '' for the null reverse path. */
export interface Envelope {
  mailFrom: string;
  rcptTo: string[];
}

/** Where a message came from. */
export interface MessageSource {
  /** smtp: the SMTP listener; submission: the submission listener; imap/pop3: the retriever; cli: `mailgate send`; dsn: a delivery status notification mailgate made. */
  kind: 'smtp' | 'submission' | 'imap' | 'pop3' | 'cli' | 'dsn';
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
   * codes are listed in policy/unparsable.ts (Genesys `_WrappingMessageReason`).
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
}
