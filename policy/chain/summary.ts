import { decodedHead, headAddresses } from '../mime/header-text.js';
import type { MimeNode, SplitterChunk } from '@zone-eu/mailsplit';
import type { AttachmentInfo } from '../../storage/records.js';
import { ChunkStage } from './stage-chain.js';

/** The header fields and attachment list that go onto a stored message's metadata. */
export interface MessageSummary {
  subject?: string;
  from?: string;
  to: string[];
  cc: string[];
  messageId?: string;
  attachments: AttachmentInfo[];
}

/**
 * Passes mailsplit chunks through unchanged and notes what an admin wants to see in a
 * listing. It runs after the policy stages, so it describes the message as stored.
 */
export class SummaryCollector extends ChunkStage {
  readonly summary: MessageSummary = { to: [], cc: [], attachments: [] };
  #current: AttachmentInfo | undefined;

  protected transform(chunk: SplitterChunk): void {
    try {
      if (chunk.type === 'node') this.#onNode(chunk);
      else if (chunk.type === 'body' && this.#current) this.#current.size += chunk.value.length;
    } catch {
      // A header we cannot describe must not stop the message; the listing just shows less.
    }
    this.push(chunk);
  }

  #onNode(node: MimeNode): void {
    this.#current = undefined;
    if (node.root && !node.parentNode && node.headers) {
      const headers = node.headers;
      const subject = headers.getFirst('subject');
      if (subject) this.summary.subject = decodeWords(subject);
      const from = headers.getFirst('from');
      if (from) this.summary.from = decodeWords(from);
      this.summary.to = addresses(headers.get('to'));
      this.summary.cc = addresses(headers.get('cc'));
      const messageId = headers.getFirst('message-id').replace(/^\s*<|>\s*$/g, '');
      if (messageId) this.summary.messageId = messageId;
      // A single-part message can itself be the file (Content-Disposition: attachment on the
      // whole message): it is listed like any attachment, below.
    }
    if (node.multipart) return;
    // A part the attachments stage replaced still names the removed file (policy/attachments/stage.ts).
    const blockedFile = node.headers ? node.headers.getFirst('x-mailgate-blocked-file') : '';
    if (blockedFile) {
      this.#current = {
        fileName: decodeWords(blockedFile),
        contentType: (node.headers && node.headers.getFirst('x-mailgate-blocked-type')) || 'application/octet-stream',
        size: 0,
        blocked: true,
      };
      this.summary.attachments.push(this.#current);
      return;
    }
    const isAttachment = node.disposition === 'attachment' || Boolean(node.filename);
    if (!isAttachment) return;
    this.#current = {
      fileName: node.filename || 'unnamed',
      contentType: node.contentType || 'application/octet-stream',
      size: 0,
    };
    this.summary.attachments.push(this.#current);
  }
}

/** Marks blocked attachments in a file name list. */
export const BLOCKED_MARK = ' [blocked]';

/**
 * The Genesys `_AttachmentFileNames` list: file names in message order, a blocked one
 * followed by ` [blocked]` (its placeholder stands where it was).
 */
export function attachmentFileNames(attachments: readonly AttachmentInfo[]): string[] {
  return attachments.map((a) => (a.blocked ? a.fileName + BLOCKED_MARK : a.fileName));
}

/** The value for a listing: a huge one is read only so far (see header-text.ts). */
function decodeWords(value: string): string {
  return decodedHead(value).trim();
}

/** Addresses from full header lines (`To: a@b, c@d`), flattening groups; of a huge line, the first ones. */
function addresses(lines: string[]): string[] {
  return lines.flatMap((line) => headAddresses(line.slice(line.indexOf(':') + 1)));
}
