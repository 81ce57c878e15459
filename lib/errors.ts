/**
 * The one catalogue of mailgate's errors (fastify's habit: every code in one file, and a test
 * that README "Error codes" documents each). Every error carries a stable code and a sentence
 * a mail admin can act on; an error an SMTP client can meet also carries the reply it becomes
 * (smtp-server sends `err.responseCode || 450` and `err.message`, so the message then leads
 * with the enhanced code, as Postfix's replies do). Errors only the CLI or the log sees (the
 * store's) have no reply: at an SMTP session they become a 4xx through asMailgateError.
 * Nothing else builds a MailgateError.
 */

/** An SMTP reply: the basic code (RFC 5321 section 4.2) and the enhanced status code (RFC 3463). */
export interface SmtpReply {
  /** e.g. `451`. */
  readonly code: number;
  /** e.g. `4.3.0`. */
  readonly enhanced: string;
}

/** An error of the catalogue. Build one through an entry of `errors` or `storeErrors`, never with `new`. */
export class MailgateError extends Error {
  /**
   * Stable machine-readable code, e.g. `STORE_WRITE_FAILED`. A plain field, not a getter:
   * nodemailer relabels an error it passes on (`code = 'ESTREAM'`, the old one in `originalCode`).
   */
  readonly code: string;
  /** The sentence alone, without the enhanced code. */
  readonly sentence: string;
  // Declared, not initialised: without a reply the error has no such property at all.
  /** The reply an SMTP client gets for it; none for an error no client meets. */
  declare readonly reply?: SmtpReply;
  /** The basic reply code under the name smtp-server reads; set exactly when `reply` is. */
  declare readonly responseCode?: number;

  constructor(code: string, sentence: string, options: { reply?: SmtpReply | undefined; cause?: unknown } = {}) {
    // smtp-server sends err.message as the reply text: lead with the enhanced code as Postfix does.
    super(options.reply ? `${options.reply.enhanced} ${sentence}` : sentence, 'cause' in options ? { cause: options.cause } : undefined);
    this.name = 'MailgateError';
    this.code = code;
    this.sentence = sentence;
    if (options.reply) {
      this.reply = options.reply;
      this.responseCode = options.reply.code;
    }
  }
}

/** A MailgateError with an SMTP reply: what an SMTP session may be answered with. */
export type SmtpError = MailgateError & { readonly reply: SmtpReply; readonly responseCode: number };

/** Whether ERR is a MailgateError with an SMTP reply. */
export function hasReply(err: unknown): err is SmtpError {
  return err instanceof MailgateError && err.reply !== undefined;
}

/** What names an entry of the catalogue without building its error: README "Error codes" lists these. */
export interface ErrorName {
  readonly code: string;
  readonly reply: SmtpReply | undefined;
}

/** One entry of the catalogue: builds its error, and names it (`code`, `reply`) without building one. */
export type ErrorEntry<A extends unknown[], E extends MailgateError = MailgateError> = ((...args: A) => E) & ErrorName;

/** An SMTP reply as the catalogue writes it: `[451, '4.3.0']`. */
type ReplyPair = readonly [code: number, enhanced: string];

// An entry's errors have the SMTP reply REPLY (or none) and, with CAUSE, take their cause as the last argument.
function entry<A extends unknown[]>(
  code: string,
  shape: { reply: ReplyPair; cause: true },
  sentence: (...args: A) => string,
): ErrorEntry<[...A, cause: unknown], SmtpError>;
function entry<A extends unknown[]>(code: string, shape: { reply: ReplyPair; cause?: false }, sentence: (...args: A) => string): ErrorEntry<A, SmtpError>;
function entry<A extends unknown[]>(
  code: string,
  shape: { reply?: undefined; cause: true },
  sentence: (...args: A) => string,
): ErrorEntry<[...A, cause: unknown]>;
function entry<A extends unknown[]>(code: string, shape: { reply?: undefined; cause?: false }, sentence: (...args: A) => string): ErrorEntry<A>;
function entry(
  code: string,
  shape: { reply?: ReplyPair | undefined; cause?: boolean },
  sentence: (...args: unknown[]) => string,
): ErrorName & ((...args: never) => MailgateError) {
  const reply = shape.reply ? { code: shape.reply[0], enhanced: shape.reply[1] } : undefined;
  const build = shape.cause
    ? (...args: unknown[]) => new MailgateError(code, sentence(...args.slice(0, -1)), { reply, cause: args[args.length - 1] })
    : (...args: unknown[]) => new MailgateError(code, sentence(...args), { reply });
  return Object.assign(build, { code, reply });
}

/** Refusals and failures an SMTP client meets (the listeners, ingest, submission), each with its reply. */
export const errors = {
  // A session: connecting, TLS, AUTH (gateway/smtp).
  tooManyConnections: entry('TOO_MANY_CONNECTIONS', { reply: [421, '4.7.0'] }, (ip: string) => `Too many connections from ${ip}, try again later`),
  tooManyErrors: entry('TOO_MANY_ERRORS', { reply: [421, '4.7.0'] }, (last: string) => `Too many errors (${last}), closing connection`),
  bareLfInCommand: entry('BARE_LF_IN_COMMAND', { reply: [421, '4.5.2'] }, () => 'Bare LF in a command line is not allowed, closing connection'),
  encryptionRequired: entry('ENCRYPTION_REQUIRED', { reply: [538, '5.7.11'] }, () => 'Encryption required: issue STARTTLS before AUTH'),
  authFailed: entry('AUTH_FAILED', { reply: [535, '5.7.8'] }, () => 'Authentication credentials invalid'),
  authLocked: entry('AUTH_LOCKED', { reply: [454, '4.7.0'] }, () => 'Too many failed logins from your address, try again later'),
  authUnavailable: entry('AUTH_UNAVAILABLE', { reply: [454, '4.7.0'], cause: true }, () => 'Temporary authentication failure'),
  authRequired: entry('AUTH_REQUIRED', { reply: [530, '5.7.0'] }, () => 'Authentication required'),

  // The envelope (gateway/smtp/recipient-rules.ts, session-limits.ts, submission.ts).
  relayDenied: entry('RELAY_DENIED', { reply: [550, '5.7.1'] }, (rcpt: string) => `Relay access denied: we do not accept mail for <${rcpt}>`),
  addressRouting: entry(
    'ADDRESS_ROUTING',
    { reply: [550, '5.7.1'] },
    (address: string) => `Relay access denied: <${address}> routes through its local part (% or !), which is not accepted`,
  ),
  tooManyRecipients: entry('TOO_MANY_RECIPIENTS', { reply: [452, '4.5.3'] }, (max: number) => `Too many recipients: at most ${max} per message`),
  sendAsDenied: entry('SEND_AS_DENIED', { reply: [550, '5.7.1'] }, (address: string) => `Sender address rejected: you may not send as <${address}>`),

  // A message's bytes (gateway/smtp/data-guards.ts, ingest, gateway/dispatch/submit.ts).
  messageTooBig: entry('MESSAGE_TOO_BIG', { reply: [552, '5.3.4'] }, (limit: number) => `Message too large: the limit is ${limit} bytes`),
  tooManyHops: entry('TOO_MANY_HOPS', { reply: [554, '5.4.6'] }, (max: number) => `Too many hops: more than ${max} Received headers (a mail loop?)`),
  bareLineEnding: entry(
    'BARE_LINE_ENDING',
    { reply: [554, '5.5.2'] },
    (what: 'LF' | 'CR') => `Message refused: bare ${what} in the message text; lines must end in CRLF (SMTP smuggling protection)`,
  ),
  fromHeaderDenied: entry(
    'FROM_HEADER_DENIED',
    { reply: [550, '5.7.1'] },
    (from: string, alias: string) => `The From header ${from ? `<${from}>` : '(none)'} is not an address of alias "${alias}", which this message is sent as`,
  ),
  unprocessable: entry(
    'MESSAGE_UNPROCESSABLE',
    { reply: [554, '5.6.0'], cause: true },
    (detail: string) => `The message could not be processed and was not accepted: ${detail.replace(/[\r\n]+/g, ' ')}`,
  ),
  clientGone: entry('CLIENT_GONE', { reply: [421, '4.4.2'] }, () => 'The client went away before the end of the message'),

  // Storing it (ingest): temporary, the client tries again.
  storeFailed: entry(
    'STORE_WRITE_FAILED',
    { reply: [451, '4.3.0'], cause: true },
    () => 'Temporary local problem: the message could not be stored, try again later',
  ),
  pipelineFailed: entry(
    'PIPELINE_FAILED',
    { reply: [451, '4.3.0'], cause: true },
    (stage: string) => `Temporary local problem in the ${stage} stage, try again later`,
  ),
  storageFull: entry(
    'STORE_FULL',
    { reply: [452, '4.3.1'], cause: true },
    () => 'Insufficient system storage: the message could not be stored, try again later',
  ),

  // The admin API (gateway/admin/api.ts): what the CLI prints (and the REST API will answer) when
  // an admin's request cannot be done. An admin reads them, never an SMTP client: no reply.
  /** An admin named an alias the gateway's configuration does not have. */
  aliasNotConfigured: entry('UNKNOWN_ALIAS', {}, (alias: string) => `no alias named "${alias}" in the gateway's configuration`),
  /** An admin named a department the gateway's configuration does not have. */
  departmentNotConfigured: entry('UNKNOWN_DEPARTMENT', {}, (department: string) => `no department "${department}" in the gateway's configuration`),
  /** A request the admin API cannot make sense of: `detail` says what was wrong. */
  badRequest: entry('BAD_REQUEST', {}, (detail: string) => detail),
  /** No admin operation at this method and path of the control socket. */
  unknownOperation: entry('UNKNOWN_OPERATION', {}, (method: string, path: string) => `no admin operation at ${method} ${path}`),
  /** `queue drop` of a message the dispatcher is sending at this moment. */
  queueBusy: entry('QUEUE_BUSY', {}, (id: string) => `message ${id} is being sent right now; try again in a moment`),
  /** A command that reads the store, run before the gateway ever made one. */
  noStore: entry('NO_STORE', {}, (dir: string) => `no store at ${dir} (has the gateway run with this configuration?)`),
  /** The store is held by a process that does not answer on the control socket (a gateway starting or stopping, or another program). */
  gatewayNotAnswering: entry(
    'GATEWAY_NOT_ANSWERING',
    { cause: true },
    (dir: string, socket: string) => `the store at ${dir} is locked by another process and no gateway answers on ${socket}`,
  ),
  /** `mailgate serve` while another gateway holds the data directory. */
  gatewayRunning: entry('GATEWAY_RUNNING', { cause: true }, (dir: string) => `another mailgate is already running on ${dir}`),
  /** `mailgate oauth authorize` writes the tokens into the store, which the running gateway holds. */
  oauthGatewayRunning: entry(
    'OAUTH_GATEWAY_RUNNING',
    { cause: true },
    (dir: string, alias: string) =>
      `the gateway is running on ${dir}: stop it, run \`mailgate oauth authorize ${alias}\` again, then start it (the tokens are written to the store directly)`,
  ),
  // The REST API's sign-in and roles (gateway/web).
  /** A REST API request with neither a signed-in session nor a bearer token. */
  signInRequired: entry('SIGN_IN_REQUIRED', {}, () => 'sign in, or send Authorization: Bearer TOKEN'),
  /** A sign-in with a wrong user name or password, or an unknown bearer token. */
  signInFailed: entry('SIGN_IN_FAILED', {}, () => 'wrong user name, password or token'),
  /** Too many failed sign-ins from one address within `[smtp.limits] auth_failure_window`. */
  signInLocked: entry('SIGN_IN_LOCKED', {}, () => 'too many failed sign-ins from your address, try again later'),
  /** The signed-in user's or token's role may not do this. */
  notAllowed: entry('NOT_ALLOWED', {}, (role: string, what: string) => `the ${role} role may not ${what}`),
  /** A request carrying the session cookie from a page of another site (CSRF). */
  crossSiteRequest: entry('CROSS_SITE_REQUEST', {}, (origin: string) => `refused: a request from ${origin} with this site's session cookie`),
  /** An admin operation failed in a way no other code names; the sentence is the failure's own. */
  adminFailed: Object.assign((cause: unknown) => new MailgateError('ADMIN_FAILED', cause instanceof Error ? cause.message : String(cause), { cause }), {
    code: 'ADMIN_FAILED',
    reply: undefined,
  }) as ErrorEntry<[cause: unknown]>,
};

/**
 * Turns anything thrown into an error an SMTP session can answer with: an error that has a
 * reply keeps it; anything else, a store error included, is temporary (FALLBACK, by default
 * 451 4.3.0 with ERR as its cause), never 250.
 */
export function asMailgateError(err: unknown, fallback: (cause: unknown) => SmtpError = errors.storeFailed): SmtpError {
  return hasReply(err) ? err : fallback(err);
}

/** The store's errors: for the CLI and the log, without SMTP replies (ingest answers a client 451 4.3.0 for them). */
export const storeErrors = {
  /** Another process (normally the running gateway) holds the data directory. */
  storeLocked: entry('STORE_LOCKED', { cause: true }, (dir: string) => `The store at ${dir} is in use by another process`),
  /** The data was written by a newer mailgate whose layout this one does not know. */
  schemaTooNew: entry(
    'STORE_SCHEMA_TOO_NEW',
    {},
    (dir: string, found: number, supported: number) =>
      `The store at ${dir} has layout version ${found}, newer than the ${supported} this mailgate knows: upgrade mailgate`,
  ),
  /** The `schema` key holds something that is not a layout version. */
  schemaInvalid: entry(
    'STORE_SCHEMA_INVALID',
    {},
    (dir: string, value: string) => `The store at ${dir} has an unreadable layout version ${JSON.stringify(value)}`,
  ),
  /** No committed message has this id; with QUARANTINED, the message of that quarantined attachment. */
  messageNotFound: entry('MESSAGE_NOT_FOUND', {}, (id: string, quarantined?: string) =>
    quarantined === undefined ? `No such message: ${id}` : `The message ${id} of quarantined attachment ${quarantined} is gone`,
  ),
  /** The stored bytes do not add up to the size recorded at commit. */
  messageDamaged: entry(
    'MESSAGE_DAMAGED',
    {},
    (id: string, expected: number, found: number) => `Message ${id} is damaged: ${found} of ${expected} bytes are stored`,
  ),
  /** A write failed and the database has not been reopened since (write-guard.ts); `cause` is that failure. */
  storeUnavailable: entry('STORE_UNAVAILABLE', { cause: true }, () => 'The store is refusing writes until it recovers from a failed write'),
  /** A write that was in flight when another one failed: it may be lost at the next open (write-guard.ts). */
  writeUncertain: entry('STORE_WRITE_UNCERTAIN', { cause: true }, () => 'A write may not have reached the store: another write failed meanwhile'),
  /** A PostgreSQL store without mailgate's tables, or with older ones: `mailgate storage migrate` makes or upgrades them. */
  schemaTooOld: entry('STORE_SCHEMA_TOO_OLD', {}, (where: string, found: number, supported: number) =>
    found === 0
      ? `The database ${where} has no mailgate tables: run \`mailgate storage migrate\` to create them`
      : `The database ${where} has schema version ${found}, older than the ${supported} this mailgate needs: run \`mailgate storage migrate\``,
  ),
  /** PostgreSQL would answer a commit before it is on disk: a 250 could then be lost. */
  unsafeCommit: entry(
    'STORE_UNSAFE_COMMIT',
    {},
    (where: string, setting: string) =>
      `The database ${where} has synchronous_commit = ${setting}: a commit would return before it is on disk and an accepted message could be lost; set synchronous_commit = on (ALTER DATABASE ... SET synchronous_commit = on, or in postgresql.conf)`,
  ),
  /** This node no longer holds the mailbox's lease (it expired, another node took it): it may not record or move the mailbox's messages. */
  leaseLost: entry(
    'STORE_LEASE_LOST',
    {},
    (mailbox: string, epoch: number) => `This node no longer holds the lease on mailbox ${mailbox} (epoch ${epoch}): another node fetches it now`,
  ),
  /** `mailgate storage copy` fills only an empty store: the target already holds records. */
  copyTargetNotEmpty: entry(
    'STORE_COPY_TARGET_NOT_EMPTY',
    {},
    (where: string, held: string) => `The target ${where} already holds ${held}: \`mailgate storage copy\` copies only into an empty store`,
  ),
  /** After `mailgate storage copy`, the target does not hold what the source does. */
  copyMismatch: entry(
    'STORE_COPY_MISMATCH',
    {},
    (where: string, differences: number) => `The copy in ${where} differs from the source (${differences} differences, listed above): do not use it`,
  ),
  /** No quarantined attachment has this id (restored or deleted already, or mistyped). */
  quarantineNotFound: entry('QUARANTINE_NOT_FOUND', {}, (id: string) => `No quarantined attachment with id ${id}`),
  /** A restore found no placeholder of the attachment in its message. */
  quarantinePlaceNotFound: entry('QUARANTINE_PLACE_NOT_FOUND', {}, (messageId: string, id: string) => `Message ${messageId} has no placeholder for ${id}`),
  /** No queued message has this id (delivered, dropped, or mistyped). */
  queueEntryNotFound: entry('QUEUE_ENTRY_NOT_FOUND', {}, (id: string) => `no queued message with id ${id}`),
  /** Several nodes: this node's claim on a queued message expired and another node took it; this node's attempt is not recorded (the holder retries). */
  queueClaimLost: entry('QUEUE_CLAIM_LOST', {}, (id: string) => `This node no longer holds the claim on queued message ${id}: another node delivers it now`),
  /**
   * Several nodes: another `mailgate serve` holds this node's name on the database (leases and
   * queue claims are held by name, so two processes under one name would fetch and send the same mail).
   */
  nodeNameInUse: entry('NODE_NAME_IN_USE', {}, (node: string, where: string, holder: { host?: string; pid?: number } = {}) => {
    const who = [holder.host === undefined ? '' : `host ${holder.host}`, holder.pid === undefined ? '' : `pid ${holder.pid}`].filter((s) => s !== '');
    return `Node name ${node} is in use by another mailgate serve on ${where}${who.length ? ` (${who.join(', ')})` : ''}: give each node its own [node] name; if that node is gone, its database session ends with it and the name is free again`;
  }),
  /** A message still in the outbound queue cannot be deleted: it has yet to be sent (retention and `messages delete`). */
  messageQueued: entry(
    'MESSAGE_QUEUED',
    {},
    (id: string) => `Message ${id} is still in the outbound queue and is not deleted: drop it first (\`mailgate queue drop ${id}\`) or wait until it is sent`,
  ),
};

/** Every group of the catalogue, for the test that README "Error codes" documents each code. */
export const catalogue: Readonly<Record<string, Readonly<Record<string, ErrorName>>>> = { errors, storeErrors };

/**
 * Whether a failure is a full disk or quota, looking through its causes. Node's fs errors
 * carry `code: 'ENOSPC'`; classic-level carries only LevelDB's message, e.g.
 * `LEVEL_IO_ERROR: IO error: /data/000003.log: No space left on device`.
 */
export function isDiskFull(err: unknown): boolean {
  return causedBy(err, (e) => {
    const { code, message } = e as { code?: unknown; message?: unknown };
    return code === 'ENOSPC' || code === 'EDQUOT' || (typeof message === 'string' && /No space left on device|Disk quota exceeded/.test(message));
  });
}

/** Whether ERR, or one of its causes (a failed commit wraps the store's refusal), has CODE: a catalogue code or a system one. */
export function hasCode(err: unknown, code: string): boolean {
  return causedBy(err, (e) => (e as { code?: unknown }).code === code);
}

// Walks ERR and its causes, a few deep (a cause chain is short; a cyclic one must not hang).
function causedBy(err: unknown, match: (e: object) => boolean): boolean {
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) if (match(e)) return true;
  return false;
}

/**
 * An error that crossed the control socket (gateway/admin/http-client.ts), rebuilt on this side
 * with the code, sentence and reply the gateway's catalogue gave it, so the CLI prints what it
 * would print had it made the error itself.
 */
export function receivedError(code: string, sentence: string, reply?: SmtpReply): MailgateError {
  return new MailgateError(code, sentence, { reply });
}
