import { buffer } from 'node:stream/consumers';
import { simpleParser } from 'mailparser';
import type { Store } from '../../storage/store.js';
import type { MessageMeta } from '../../storage/records.js';

/** What a mail client shows of a stored wrapping message. */
export interface WrappedView {
  meta: MessageMeta | undefined;
  raw: Buffer;
  subject: string | undefined;
  from: string | undefined;
  text: string;
  /** The attached original, decoded. */
  original: Buffer;
  originalType: string;
  originalName: string | undefined;
}

/** Reads a wrapping message back as a user would see it (the messages are small: simpleParser is fine here). */
export async function parseWrapped(raw: Buffer, meta?: MessageMeta): Promise<WrappedView> {
  const parsed = await simpleParser(raw, { skipTextToHtml: true });
  const attachment = parsed.attachments[0];
  if (!attachment || parsed.attachments.length !== 1) throw new Error(`expected exactly one attachment, got ${parsed.attachments.length}`);
  return {
    meta,
    raw,
    subject: parsed.subject,
    from: parsed.from?.value[0]?.address,
    text: parsed.text ?? '',
    original: attachment.content,
    originalType: attachment.contentType,
    originalName: attachment.filename,
  };
}

/** A stored message and its bytes. */
export async function storedMessage(store: Store, id: string): Promise<{ meta: MessageMeta; raw: Buffer }> {
  const meta = await store.getMessage(id);
  if (!meta) throw new Error(`no stored message ${id}`);
  return { meta, raw: await buffer(store.openRaw(id)) };
}

/**
 * The bytes smtp-server hands the gateway for `bytes` sent with nodemailer's `raw`: nodemailer
 * turns every bare LF and bare CR into CRLF (SMTP allows no other line end, RFC 5321 2.3.8)
 * and ends the data with CRLF before the final dot, which smtp-server keeps as part of the
 * message; dot-stuffing is undone by the server.
 */
export function asReceivedOverSmtp(bytes: Buffer): Buffer {
  let text = bytes.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
  if (!text.endsWith('\r\n')) text += '\r\n';
  return Buffer.from(text, 'latin1');
}
