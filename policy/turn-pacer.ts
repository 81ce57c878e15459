/**
 * Breaks long runs of synchronous work in a chain of object-mode streams into turns of the
 * event loop, so one message cannot keep the gateway from serving its other sessions.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** How long the stages may keep the event loop in one turn before the next chunk waits for the next turn. */
const TURN_BUDGET_MS = 10;

/**
 * Passes mailsplit chunks on, but once the current event-loop turn has run for longer than
 * TURN_BUDGET_MS, hands the next chunk on only in the next turn. Stages run synchronously
 * one after another for each chunk (a push reaches the next stage's transform at once, and
 * the async ones continue in microtasks), so without a break a message of many small parts,
 * such as 16 KiB holding 1800 empty parts, kept the gateway's event loop, and every other
 * session's, busy for 400 ms. Stages that split an attached message put one behind their own
 * splitter too.
 */
export class TurnPacer extends Transform {
  /** When the current turn was first seen here; 0 once a later turn has begun. */
  #turnStart = 0;

  constructor() {
    super({ objectMode: true });
  }

  override _transform(chunk: unknown, _enc: BufferEncoding, done: TransformCallback): void {
    const now = performance.now();
    if (this.#turnStart === 0) {
      this.#turnStart = now;
      setImmediate(() => (this.#turnStart = 0));
    } else if (now - this.#turnStart > TURN_BUDGET_MS) {
      setImmediate(() => done(null, chunk));
      return;
    }
    done(null, chunk);
  }
}
