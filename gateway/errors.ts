/**
 * One vocabulary of failures. Every error carries a stable code, a sentence a mail
 * admin can act on, and the SMTP reply it becomes when it reaches a client
 * (smtp-server sends `err.responseCode || 450` and `err.message`).
 */
export class MailgateError extends Error {
  /** Stable machine-readable code, e.g. `STORE_WRITE_FAILED`. */
  readonly code: string;
  /** SMTP reply code sent to a client that caused or suffers this error. */
  readonly responseCode: number;
  /** Enhanced status code (RFC 3463), e.g. `4.3.0`. */
  readonly enhancedCode: string;

  constructor(code: string, responseCode: number, enhancedCode: string, sentence: string, options?: { cause?: unknown }) {
    // smtp-server sends err.message as the reply text; lead with the enhanced code as Postfix does.
    super(`${enhancedCode} ${sentence}`, options);
    this.name = 'MailgateError';
    this.code = code;
    this.responseCode = responseCode;
    this.enhancedCode = enhancedCode;
  }
}

export const errors = {
  messageTooBig: (limit: number) => new MailgateError('MESSAGE_TOO_BIG', 552, '5.3.4', `Message too large: the limit is ${limit} bytes`),
  relayDenied: (rcpt: string) => new MailgateError('RELAY_DENIED', 550, '5.7.1', `Relay access denied: we do not accept mail for <${rcpt}>`),
  encryptionRequired: () => new MailgateError('ENCRYPTION_REQUIRED', 538, '5.7.11', 'Encryption required: issue STARTTLS before AUTH'),
  authFailed: () => new MailgateError('AUTH_FAILED', 535, '5.7.8', 'Authentication credentials invalid'),
  authUnavailable: (cause: unknown) => new MailgateError('AUTH_UNAVAILABLE', 454, '4.7.0', 'Temporary authentication failure', { cause }),
  authNotEnabled: () => new MailgateError('AUTH_NOT_ENABLED', 503, '5.5.1', 'Authentication is not enabled on this listener'),
  storeFailed: (cause: unknown) =>
    new MailgateError('STORE_WRITE_FAILED', 451, '4.3.0', 'Temporary local problem: the message could not be stored, try again later', { cause }),
  pipelineFailed: (stage: string, cause: unknown) =>
    new MailgateError('PIPELINE_FAILED', 451, '4.3.0', `Temporary local problem in the ${stage} stage, try again later`, { cause }),
  unprocessable: (detail: string, cause: unknown) =>
    new MailgateError('MESSAGE_UNPROCESSABLE', 554, '5.6.0', `The message could not be processed and was not accepted: ${detail.replace(/[\r\n]+/g, ' ')}`, {
      cause,
    }),
  sendAsDenied: (address: string) => new MailgateError('SEND_AS_DENIED', 550, '5.7.1', `Sender address rejected: you may not send as <${address}>`),
  fromHeaderDenied: (from: string, alias: string) =>
    new MailgateError(
      'FROM_HEADER_DENIED',
      550,
      '5.7.1',
      `The From header ${from ? `<${from}>` : '(none)'} is not an address of alias "${alias}", which this message is sent as`,
    ),
  authRequired: () => new MailgateError('AUTH_REQUIRED', 530, '5.7.0', 'Authentication required'),
  clientGone: () => new MailgateError('CLIENT_GONE', 421, '4.4.2', 'The client went away before the end of the message'),
  shuttingDown: () => new MailgateError('SHUTTING_DOWN', 421, '4.3.2', 'Service shutting down, try again later'),
  storageFull: (cause: unknown) =>
    new MailgateError('STORE_FULL', 452, '4.3.1', 'Insufficient system storage: the message could not be stored, try again later', { cause }),
};

/** Turns anything thrown into an error with an SMTP reply: unknown failures are temporary (4xx), never 250. */
export function asMailgateError(err: unknown, fallback: (cause: unknown) => MailgateError = errors.storeFailed): MailgateError {
  return err instanceof MailgateError ? err : fallback(err);
}
