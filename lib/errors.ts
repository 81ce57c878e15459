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

  // The admin API (gateway/admin/api.ts): what the CLI prints (and the REST API will answer) when
  // an admin's request cannot be done. An admin reads them, never an SMTP client: a code and a
  // sentence, no SMTP reply (see adminError at the end of this file).
  /** An admin named an alias the gateway's configuration does not have. */
  aliasNotConfigured: (alias: string) => adminError('UNKNOWN_ALIAS', `no alias named "${alias}" in the gateway's configuration`),
  /** An admin named a department the gateway's configuration does not have. */
  departmentNotConfigured: (department: string) => adminError('UNKNOWN_DEPARTMENT', `no department "${department}" in the gateway's configuration`),
  /** A request the admin API cannot make sense of: `detail` says what was wrong. */
  badRequest: (detail: string) => adminError('BAD_REQUEST', detail),
  /** No admin operation at this method and path of the control socket. */
  unknownOperation: (method: string, path: string) => adminError('UNKNOWN_OPERATION', `no admin operation at ${method} ${path}`),
  /** `queue drop` of a message the dispatcher is sending at this moment. */
  queueBusy: (id: string) => adminError('QUEUE_BUSY', `message ${id} is being sent right now; try again in a moment`),
  /** A command that reads the store, run before the gateway ever made one. */
  noStore: (dir: string) => adminError('NO_STORE', `no store at ${dir} (has the gateway run with this configuration?)`),
  /** The store is held by a process that does not answer on the control socket (a gateway starting or stopping, or another program). */
  gatewayNotAnswering: (dir: string, socket: string, cause: unknown) =>
    adminError('GATEWAY_NOT_ANSWERING', `the store at ${dir} is locked by another process and no gateway answers on ${socket}`, cause),
  /** `mailgate serve` while another gateway holds the data directory. */
  gatewayRunning: (dir: string, cause: unknown) => adminError('GATEWAY_RUNNING', `another mailgate is already running on ${dir}`, cause),
  /** `mailgate oauth authorize` writes the tokens into the store, which the running gateway holds. */
  oauthGatewayRunning: (dir: string, alias: string, cause: unknown) =>
    adminError(
      'OAUTH_GATEWAY_RUNNING',
      `the gateway is running on ${dir}: stop it, run \`mailgate oauth authorize ${alias}\` again, then start it (the tokens are written to the store directly)`,
      cause,
    ),
  /** An admin operation failed in a way no other code names; the sentence is the failure's own. */
  adminFailed: (cause: unknown) => adminError('ADMIN_FAILED', cause instanceof Error ? cause.message : String(cause), cause),
};

/** Turns anything thrown into an error with an SMTP reply: unknown failures are temporary (4xx), never 250. */
export function asMailgateError(err: unknown, fallback: (cause: unknown) => MailgateError = errors.storeFailed): MailgateError {
  return err instanceof MailgateError ? err : fallback(err);
}
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

/**
 * An error of the admin block of `errors`: a code and a sentence, printed as they are (the CLI
 * prints `mailgate: <message>`), with no enhanced status code in front since no SMTP client
 * reads it. responseCode 0: were one ever to reach an SMTP session, smtp-server would answer
 * its default 450, a temporary failure.
 */
function adminError(code: string, sentence: string, cause?: unknown): MailgateError {
  const err = new MailgateError(code, 0, '', sentence, cause === undefined ? undefined : { cause });
  err.message = sentence;
  return err;
}
