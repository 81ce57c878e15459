/**
 * Failures of the store, in the vocabulary of gateway/errors.ts. They live here rather than
 * in gateway/errors.ts only because the storage work was kept to storage/; they can move.
 */
import { MailgateError } from '../gateway/errors.js';

export const storeErrors = {
  /** Another process (normally the running gateway) holds the data directory. */
  storeLocked: (dir: string, cause: unknown) =>
    new MailgateError('STORE_LOCKED', 451, '4.3.0', `The store at ${dir} is in use by another process`, { cause }),
  /** The data was written by a newer mailgate whose layout this one does not know. */
  schemaTooNew: (dir: string, found: number, supported: number) =>
    new MailgateError(
      'STORE_SCHEMA_TOO_NEW', 451, '4.3.0',
      `The store at ${dir} has layout version ${found}, newer than the ${supported} this mailgate knows: upgrade mailgate`,
    ),
  /** The `schema` key holds something that is not a layout version. */
  schemaInvalid: (dir: string, value: string) =>
    new MailgateError('STORE_SCHEMA_INVALID', 451, '4.3.0', `The store at ${dir} has an unreadable layout version ${JSON.stringify(value)}`),
  /** No committed message has this id. */
  messageNotFound: (id: string) =>
    new MailgateError('MESSAGE_NOT_FOUND', 550, '5.0.0', `No such message: ${id}`),
  /** The stored bytes do not add up to the size recorded at commit. */
  messageDamaged: (id: string, expected: number, found: number) =>
    new MailgateError('MESSAGE_DAMAGED', 451, '4.3.0', `Message ${id} is damaged: ${found} of ${expected} bytes are stored`),
};
