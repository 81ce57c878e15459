/**
 * The record stored for a message too large to fetch (CCaaS `max_message_size`, Genesys
 * `maximum-msg-size`): its own header block, so an admin can see who sent what, with a short
 * text saying it was left on the server. The original's MIME headers are dropped, since the
 * body they describe is not there.
 */

/** A header field that describes the body, which the record does not carry. */
const BODY_FIELD = /^(content-[a-z-]*|mime-version)\s*:/i;

/** Header lines of `block` (up to its blank line), folded lines kept with their field, without the body-describing fields. */
function keptHeaderLines(block: Buffer): string[] {
  const lines = block.toString('latin1').split(/\r?\n/);
  const end = lines.findIndex((l) => l === '');
  const header = end === -1 ? lines : lines.slice(0, end);
  const kept: string[] = [];
  let dropping = false;
  for (const line of header) {
    const continuation = /^[ \t]/.test(line);
    if (!continuation) dropping = BODY_FIELD.test(line);
    if (!dropping) kept.push(line);
  }
  return kept;
}

/** What the retriever did with the message on the server, for the record's text. */
export type OversizeAction = 'move' | 'delete' | 'keep';

/** The bytes of the record of an over-size message, from its header block (latin1 in, latin1 out: header bytes are kept as they were). */
export function oversizeRecord(headers: Buffer, info: { size: number; limit: number; alias: string; action: OversizeAction; folder: string }): Buffer {
  const where =
    info.action === 'move'
      ? `It was moved to the folder "${info.folder}" on the mail server.`
      : info.action === 'delete'
        ? 'It was deleted from the mail server.'
        : 'It was left on the mail server.';
  const text = [
    `This message was not fetched: its size, ${info.size} bytes, is over the limit of ${info.limit} bytes`,
    `(max_message_size) of alias "${info.alias}". Only its header is kept here.`,
    where,
  ].join('\r\n');
  const head = [
    ...keptHeaderLines(headers),
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    `X-Mailgate-Oversize: ${info.size}`,
  ].join('\r\n');
  return Buffer.concat([Buffer.from(head + '\r\n\r\n', 'latin1'), Buffer.from(text + '\r\n', 'utf8')]);
}
