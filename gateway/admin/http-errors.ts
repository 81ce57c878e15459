/**
 * How an error of the admin API travels over HTTP: a status that fits, and a JSON body
 * `{ code, message }` (with `reply` when it carries an SMTP reply) from which the client
 * rebuilds the same MailgateError, so the CLI prints exactly what it would print on the store.
 */
import { MailgateError, errors, receivedError } from '../../lib/errors.js';

/** The JSON body of an error answer. */
export interface ErrorBody {
  /** The catalogue's code (lib/errors.ts), or the code of a coded error from elsewhere (e.g. Node's ENOENT). */
  code: string;
  /** The error's message, as the CLI prints it. */
  message: string;
  /** The SMTP reply the error carries, when it has one (a refused `send`). */
  reply?: { code: number; enhanced: string };
}

/** The trailer that carries an error met after the bytes of an answer had begun. */
export const ERROR_TRAILER = 'x-mailgate-error';

// Every code not named here answers 500.
const STATUS: Readonly<Record<string, number>> = {
  MESSAGE_NOT_FOUND: 404,
  QUARANTINE_NOT_FOUND: 404,
  QUEUE_ENTRY_NOT_FOUND: 404,
  UNKNOWN_ALIAS: 404,
  UNKNOWN_DEPARTMENT: 404,
  UNKNOWN_OPERATION: 404,
  QUEUE_BUSY: 409,
  MESSAGE_QUEUED: 409,
  BAD_REQUEST: 400,
  // `send` refused: the message, its sender or its upload was at fault.
  SEND_AS_DENIED: 400,
  FROM_HEADER_DENIED: 400,
  MESSAGE_TOO_BIG: 400,
  MESSAGE_UNPROCESSABLE: 400,
  CLIENT_GONE: 400,
  // The REST API's sign-in and roles (gateway/web).
  SIGN_IN_REQUIRED: 401,
  SIGN_IN_FAILED: 401,
  SIGN_IN_LOCKED: 429,
  NOT_ALLOWED: 403,
  CROSS_SITE_REQUEST: 403,
  NO_STORE: 503,
  STORE_UNAVAILABLE: 503,
};

/** The HTTP status an error with this code answers with. */
export const statusOf = (code: string): number => STATUS[code] ?? 500;

/** The body for anything an operation threw: a coded error keeps its code; anything else becomes ADMIN_FAILED. */
export function errorBody(err: unknown): ErrorBody {
  if (err instanceof MailgateError) {
    return { code: err.code, message: err.message, ...(err.reply ? { reply: { code: err.reply.code, enhanced: err.reply.enhanced } } : {}) };
  }
  const { code, message } = (err ?? {}) as { code?: unknown; message?: unknown };
  if (typeof code === 'string' && typeof message === 'string') return { code, message };
  return errorBody(errors.adminFailed(err));
}

/**
 * The error the gateway answered with, rebuilt: the same code, sentence and SMTP reply (one of
 * the catalogue's crossing the socket).
 */
export function errorFromBody(value: unknown, status: number): MailgateError {
  const body = (value ?? {}) as Partial<ErrorBody>;
  if (typeof body.code !== 'string' || typeof body.message !== 'string') {
    return errors.adminFailed(new Error(`the gateway answered with status ${status} and no error it could read`));
  }
  const reply = body.reply;
  const sentence = reply && body.message.startsWith(`${reply.enhanced} `) ? body.message.slice(reply.enhanced.length + 1) : body.message;
  const rebuilt = receivedError(body.code, sentence, reply);
  rebuilt.message = body.message; // as the gateway said it, whatever the shape of its sentence
  return rebuilt;
}
