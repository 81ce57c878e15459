/**
 * The handlers of a store's notices (storage/store.ts, Notice), shared by both stores: LevelDB
 * hands a notice straight to them (one process is the whole fleet), PostgreSQL hands them what
 * its LISTEN connection receives (storage/postgres/notices.ts).
 */
import { NOTICE_MAX_BYTES, type Notice } from './store.js';

/** A notice as sent: its JSON, refused with a RangeError when too long for PostgreSQL's NOTIFY. */
export function noticeText(notice: Notice): string {
  const text = JSON.stringify(notice);
  const bytes = Buffer.byteLength(text);
  if (bytes >= NOTICE_MAX_BYTES) throw new RangeError(`notice ${notice.topic} is ${bytes} bytes as JSON; at most ${NOTICE_MAX_BYTES - 1} fit`);
  return text;
}

/** A notice read back from TEXT, or undefined when it is not one (another program notifying on the channel). */
export function parseNotice(text: string): Notice | undefined {
  try {
    const n = JSON.parse(text) as Partial<Notice>;
    if (typeof n.topic !== 'string' || typeof n.from !== 'string' || typeof n.payload !== 'object' || n.payload === null) return undefined;
    return { topic: n.topic, from: n.from, payload: n.payload };
  } catch {
    return undefined;
  }
}

/** Who listens to a store's notices. A handler that throws is reported, and the others still hear the notice. */
export class NoticeHandlers {
  readonly #handlers = new Set<(notice: Notice) => void>();
  readonly #failed: (err: unknown, notice: Notice) => void;

  constructor(failed: (err: unknown, notice: Notice) => void) {
    this.#failed = failed;
  }

  add(handler: (notice: Notice) => void): () => void {
    // A wrapper of its own, so the same function added twice is removed once per call.
    const own = (notice: Notice) => handler(notice);
    this.#handlers.add(own);
    return () => this.#handlers.delete(own);
  }

  deliver(notice: Notice): void {
    for (const handler of [...this.#handlers]) {
      try {
        handler(notice);
      } catch (err) {
        this.#failed(err, notice);
      }
    }
  }
}
