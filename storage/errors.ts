/**
 * Failures of the store, in the vocabulary of gateway/errors.ts. They live here rather than
 * in gateway/errors.ts only because the storage work was kept to storage/; they can move.
 */
import { MailgateError } from '../gateway/errors.js';

export const storeErrors = {
  /** Another process (normally the running gateway) holds the data directory. */
  storeLocked: (dir: string, cause: unknown) => new MailgateError('STORE_LOCKED', 451, '4.3.0', `The store at ${dir} is in use by another process`, { cause }),
  /** The data was written by a newer mailgate whose layout this one does not know. */
  schemaTooNew: (dir: string, found: number, supported: number) =>
    new MailgateError(
      'STORE_SCHEMA_TOO_NEW',
      451,
      '4.3.0',
      `The store at ${dir} has layout version ${found}, newer than the ${supported} this mailgate knows: upgrade mailgate`,
    ),
  /** The `schema` key holds something that is not a layout version. */
  schemaInvalid: (dir: string, value: string) =>
    new MailgateError('STORE_SCHEMA_INVALID', 451, '4.3.0', `The store at ${dir} has an unreadable layout version ${JSON.stringify(value)}`),
  /** No committed message has this id. */
  messageNotFound: (id: string) => new MailgateError('MESSAGE_NOT_FOUND', 550, '5.0.0', `No such message: ${id}`),
  /** The stored bytes do not add up to the size recorded at commit. */
  messageDamaged: (id: string, expected: number, found: number) =>
    new MailgateError('MESSAGE_DAMAGED', 451, '4.3.0', `Message ${id} is damaged: ${found} of ${expected} bytes are stored`),
  /** A write failed and the database has not been reopened since (write-guard.ts); `cause` is that failure. */
  storeUnavailable: (cause: unknown) =>
    new MailgateError('STORE_UNAVAILABLE', 451, '4.3.0', 'The store is refusing writes until it recovers from a failed write', { cause }),
  /** A write that was in flight when another one failed: it may be lost at the next open (write-guard.ts). */
  writeUncertain: (cause: unknown) =>
    new MailgateError('STORE_WRITE_UNCERTAIN', 451, '4.3.0', 'A write may not have reached the store: another write failed meanwhile', { cause }),
};

/**
 * Whether a failure is a full disk or quota, looking through its causes. Node's fs errors
 * carry `code: 'ENOSPC'`; classic-level carries only LevelDB's message, e.g.
 * `LEVEL_IO_ERROR: IO error: /data/000003.log: No space left on device`.
 */
export function isDiskFull(err: unknown): boolean {
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, message } = e as { code?: unknown; message?: unknown };
    if (code === 'ENOSPC' || code === 'EDQUOT') return true;
    if (typeof message === 'string' && /No space left on device|Disk quota exceeded/.test(message)) return true;
  }
  return false;
}
