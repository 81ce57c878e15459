/**
 * What the retriever needs from a mailbox, whatever the protocol: imap.ts and gateway/fetch/pop3/mailbox.ts
 * implement it. Calls on one session are made one after another, never concurrently (the retriever
 * may open a second IMAP session for large messages, retriever.ts).
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { Readable } from 'node:stream';
import type { IncomingServerConfig } from '../config/schema.js';

/** A message waiting in the mailbox. */
export interface MailboxItem {
  /** Stable across sessions: `<uidvalidity>:<uid>` for IMAP, `pop3:<uidl>` for POP3. The `fetched` key is `<alias>\x00<key>`. */
  key: string;
  /** Size in octets as the server reports it (IMAP RFC822.SIZE, POP3 LIST). */
  size: number;
  /** The protocol's handle for this session: IMAP UID or POP3 message number. */
  ref: number;
}

/** One message of a range (Mailbox.messages), read whole. */
export interface FetchedMessage {
  item: MailboxItem;
  content: Buffer;
}

/** One open session on a mailbox. */
export interface Mailbox {
  /** Connects, secures, logs in and (IMAP) selects the folder. */
  open(): Promise<void>;
  /** The messages in the mailbox now, in mailbox order. */
  list(): Promise<MailboxItem[]>;
  /** The whole message as a stream; read it to the end or destroy it. */
  message(item: MailboxItem): Promise<Readable>;
  /**
   * The messages ITEMS, in order, with several of them on the wire at once (IMAP: one UID FETCH
   * for the range; POP3: RETR commands pipelined where the server offers PIPELINING); each is
   * yielded as soon as it is whole, so the caller can store one while the next arrives. The
   * caller bounds the bytes by the ITEMS it passes (their sizes are known from `list`), reads the
   * iterator to its end or ends it early (`return`), and makes no other call on this session
   * meanwhile. A message gone from the mailbox since `list` is left out.
   */
  messages(items: readonly MailboxItem[]): AsyncIterable<FetchedMessage>;
  /**
   * The order `messages` yields a range in: `given` (POP3, the RETRs' order) or `mailbox`
   * (IMAP: the server answers a UID FETCH in its own order, ascending UIDs in practice).
   */
  readonly rangeOrder: 'given' | 'mailbox';
  /** The message's header block only (IMAP `BODY.PEEK[HEADER]`, POP3 `TOP n 0`). */
  headers(item: MailboxItem): Promise<Buffer>;
  /** Applies `on_stored` to messages already recorded as stored: move to the processed folder, delete, or keep; in as few commands as the protocol allows. */
  markStored(items: readonly MailboxItem[]): Promise<void>;
  /** Applies `on_invalid`: move to the invalid folder, delete, or keep. */
  markInvalid(item: MailboxItem): Promise<void>;
  /** Registers the callback called when the server says new mail arrived (IMAP IDLE). */
  onNewMail(callback: () => void): void;
  /** False once the connection is gone; the retriever then opens a new session. */
  readonly usable: boolean;
  /** Whether the session should stay open between polls (IMAP with IDLE); otherwise it is closed after each poll. */
  readonly persistent: boolean;
  /** Ends the session: POP3 QUIT (which applies deletions), IMAP LOGOUT. Never rejects. */
  close(): Promise<void>;
}

/** Reads STREAM to its end. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** The header block of a whole MESSAGE, with the blank line that ends it (what IMAP `BODY[HEADER]` answers); all of it when it has no body. */
export function headerBlock(message: Buffer): Buffer {
  const crlf = message.indexOf('\r\n\r\n');
  const lf = message.indexOf('\n\n');
  // The first blank line, whichever line ending the message uses.
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return message.subarray(0, crlf + 4);
  if (lf >= 0) return message.subarray(0, lf + 2);
  return message;
}

/** Secure contexts by the CA file's contents: one per CA, built once (see tlsOptionsFor). */
const contexts = new Map<string, tls.SecureContext>();

/**
 * TLS options for a server: the `ca_file` is trusted in addition to the system's CAs. The
 * secure context is built once per CA file's contents and reused: building it parses every
 * system root certificate again (tens of milliseconds of CPU), which every session of every
 * poll paid, twice per poll with a second IMAP session.
 */
export function tlsOptionsFor(server: IncomingServerConfig): { secureContext?: tls.SecureContext } {
  if (!server.ca_file) return {};
  const pem = readFileSync(server.ca_file, 'utf8');
  let secureContext = contexts.get(pem);
  if (!secureContext) {
    // Node replaces the default CAs when `ca` is given: keep them.
    secureContext = tls.createSecureContext({ ca: [...tls.rootCertificates, pem] });
    contexts.set(pem, secureContext);
  }
  return { secureContext };
}
