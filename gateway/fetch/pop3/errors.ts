/**
 * How a POP3 session fails: each failure a kind of failures.ts, with a sentence that says
 * where and what to check. RFC 2449 and 3206 response codes (`[IN-USE]`, `[AUTH]`,
 * `[SYS/TEMP]`, ...) name the kind when the server gives one.
 */
import { ClassifiedError, connectionFailureKind, type FetchFailureKind } from '../failures.js';

/** The kinds a POP3 session reports (failures.ts says what each means to the retriever and the admin). */
export type Pop3ErrorKind = Extract<
  FetchFailureKind,
  'dns' | 'tcp_refused' | 'network' | 'timeout' | 'tls_certificate' | 'tls' | 'auth' | 'in_use' | 'server' | 'protocol'
>;

/** A POP3 failure with its kind and, when the server answered, the server's own text. */
export class Pop3Error extends ClassifiedError<Pop3ErrorKind> {
  /** The server's text after `-ERR` (or the unexpected line), when the server said something. */
  readonly serverText: string | undefined;
  /** The system or TLS error code (`ECONNREFUSED`, `DEPTH_ZERO_SELF_SIGNED_CERT`, ...), when there was one. */
  readonly code: string | undefined;

  constructor(kind: Pop3ErrorKind, message: string, opts: { serverText?: string; code?: string | undefined; cause?: unknown } = {}) {
    super(kind, message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'Pop3Error';
    this.serverText = opts.serverText;
    this.code = opts.code;
  }
}

/** Which kind a socket or TLS error is; `handshaking` is true before TLS is established. */
export function socketError(err: NodeJS.ErrnoException & { reason?: string }, where: string, handshaking: boolean): Pop3Error {
  const code = err.code;
  // OpenSSL's messages run over several lines of internals; its reason alone reads well.
  const said = err.reason ?? err.message.split('\n')[0];
  const opts = { code, cause: err };
  // A connection lost during the handshake is most often TLS spoken to a port that does not expect it.
  const kind = connectionFailureKind(code) ?? (handshaking ? 'tls' : 'network');
  switch (kind) {
    case 'dns':
      return new Pop3Error('dns', `Cannot resolve ${where} (${code}): check the host name`, opts);
    case 'tcp_refused':
      return new Pop3Error('tcp_refused', `Connection to ${where} refused: no POP3 service listens there, check the host and port`, opts);
    case 'timeout':
      return new Pop3Error('timeout', `Connection to ${where} timed out: check the host, port and firewall`, opts);
    case 'tls_certificate':
      return new Pop3Error(
        'tls_certificate',
        `The TLS certificate of ${where} is not trusted (${said}): install a valid certificate on the server or trust its CA`,
        opts,
      );
    case 'tls':
      return new Pop3Error(
        'tls',
        `TLS negotiation with ${where} failed (${said}): check the security setting (tls on connect is usually port 995, starttls port 110)`,
        opts,
      );
    case 'network':
      return new Pop3Error('network', `Connection to ${where} lost (${said})`, opts);
  }
}

/** Which kind a `-ERR` answer is: RFC 2449 and 3206 response codes first, then the command's own default. */
export function serverRefusal(command: string, text: string, where: string, fallback: Pop3ErrorKind): Pop3Error {
  const code = /^\[([^\]]+)\]/.exec(text)?.[1]?.toUpperCase();
  const kind: Pop3ErrorKind =
    code === 'IN-USE' ? 'in_use' : code === 'AUTH' ? 'auth' : code === 'LOGIN-DELAY' || code?.startsWith('SYS/') ? 'server' : fallback;
  const hints: Partial<Record<Pop3ErrorKind, string>> = {
    in_use: '; the mailbox is open in another POP3 session, try again later',
    auth: '; check the user name and password (or the OAuth2 token)',
    server: '; the server reports a problem on its side',
  };
  const hint = hints[kind] ?? '';
  return new Pop3Error(kind, `${command} refused by ${where}: "${text}"${hint}`, { serverText: text });
}

/** An answer the command does not expect (neither `+OK` nor `-ERR`, or a listing line out of shape). */
export function unexpectedAnswer(command: string, line: string, where: string): Pop3Error {
  return new Pop3Error('protocol', `${command} at ${where}: unexpected answer "${line.slice(0, 200)}"`, { serverText: line });
}
