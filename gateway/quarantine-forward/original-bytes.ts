/**
 * The bytes a forward to the quarantine mailbox attaches: for a wrapping message, the original
 * it holds (decoded from its `original-message.eml` part, so the agent gets what the sender
 * sent, not our wrapper); for any other message, the message as stored.
 */
import type { Store } from '../../storage/store.js';
import type { MessageMeta } from '../../storage/records.js';
import { ORIGINAL_FILE_NAME } from '../../policy/wrapping/wrapping-message.js';

/** The wrapper's attachment header line (policy/wrapping/wrapping-message.ts); the original's copied header never has a Content-* line. */
const ORIGINAL_PART = `content-disposition: attachment; filename="${ORIGINAL_FILE_NAME}"`;

/**
 * Opens what to attach for `meta`, and says what it is. A wrapping message without the
 * original (the attachment policy blocked it) is attached itself.
 */
export async function attachedBytes(store: Store, meta: MessageMeta): Promise<{ open: () => AsyncIterable<Buffer>; what: 'original' | 'stored' }> {
  const stored = () => store.openRaw(meta.id) as AsyncIterable<Buffer>;
  if (meta._WrappingMessageReason === undefined) return { open: stored, what: 'stored' };
  // One pass to see whether the wrapper holds the original at all, reading no more than its start.
  for await (const _ of wrappedOriginal(stored())) return { open: () => wrappedOriginal(stored()), what: 'original' };
  return { open: stored, what: 'stored' };
}

/** The decoded bytes of the wrapper's original part; nothing when it has none. Line by line, in constant memory. */
async function* wrappedOriginal(wrapper: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let state: 'seek' | 'header' | 'body' = 'seek';
  let rest = '';
  for await (const chunk of wrapper) {
    const lines = (rest + chunk.toString('latin1')).split('\n');
    rest = lines.pop()!;
    for (const raw of lines) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (state === 'seek') {
        if (line.toLowerCase() === ORIGINAL_PART) state = 'header';
      } else if (state === 'header') {
        if (line === '') state = 'body';
      } else {
        if (line.startsWith('--')) return;
        // base64Lines writes whole quanta on every line but the last.
        if (line) yield Buffer.from(line, 'base64');
      }
    }
  }
}
