/**
 * Why fetching from an alias's mailbox failed: one kind per cause, in one table that says what
 * the retriever does about it and how an admin reads it. Alias health (alias-health.ts, Cisco
 * guide "Changing the Status of Aliases") makes an alias inactive after three failures in a
 * row; for a network, a stopped server or a mailbox in use elsewhere, the retriever then tries
 * again by itself, for the rest only an admin's fix helps. The reason goes to `mailgate aliases
 * list` and `aliases test` in words an admin can act on (Enate, "Missing Emails"). A kind is
 * stored with the alias state (`lastErrorKind`) and labels a metric: never rename one.
 */
import { MailgateError } from '../../lib/errors.js';

/** What becomes of an alias that keeps failing with a kind, and the reason shown for it. */
export interface FetchFailure {
  /**
   * `retry`: once inactive, the retriever tries again by itself after `health_retry_interval`
   * (the guide's ten minutes) and makes the alias active when it connects; `admin`: it stays
   * inactive until an admin fixes the cause and runs `mailgate aliases activate`; `ours`: our
   * own store or pipeline failed, which says nothing about the mailbox, so it never counts.
   */
  readonly recovery: 'retry' | 'admin' | 'ours';
  /** The reason in words a mail admin can act on. */
  readonly reason: string;
}

export const fetchFailures = {
  // A name that does not resolve is a network problem to the guide (often a resolver outage).
  dns: { recovery: 'retry', reason: 'DNS: host not found (check the host name and the resolver)' },
  // The guide's "service not started": the host answers, nothing listens on the port.
  tcp_refused: { recovery: 'admin', reason: 'TCP connection refused: is the POP3/IMAP service running? (check the host and port)' },
  network: { recovery: 'retry', reason: 'server unreachable (connection lost or reset)' },
  timeout: { recovery: 'retry', reason: 'server unreachable (timeout): check the host, port and firewall' },
  // Certificates, TLS negotiation and a missing folder are configuration, like bad credentials.
  tls_certificate: {
    recovery: 'admin',
    reason: 'TLS certificate not trusted: install a valid certificate on the server or trust its CA with ca_file',
  },
  tls: {
    recovery: 'admin',
    reason: 'TLS negotiation failed: check the security setting (TLS on connect is usually port 993/995, STARTTLS 143/110)',
  },
  auth: { recovery: 'admin', reason: 'authentication failed: check user and password' },
  in_use: { recovery: 'retry', reason: 'mailbox in use by another client' },
  folder_missing: { recovery: 'admin', reason: 'folder missing: check the folder name' },
  // A server reporting trouble on its side is the guide's stopped server.
  server: { recovery: 'retry', reason: 'the server reports a problem on its side' },
  // Anything we cannot classify: giving up on an unknown cause would lose mail silently.
  protocol: { recovery: 'retry', reason: 'unexpected answer from the server' },
  // Token requests (oauth/tokens.ts OAuthError). Issue 4: revoked consent or an expired refresh token is "re-authorization needed".
  oauth_reauthorization: {
    recovery: 'admin',
    reason: 're-authorization needed: consent was revoked or the sign-in expired; run `mailgate oauth authorize ALIAS`',
  },
  oauth_client_secret: {
    recovery: 'admin',
    reason: 'client secret rejected: the oauth_app client_secret is wrong or expired; renew it in Entra ID and in the configuration',
  },
  oauth_network: { recovery: 'retry', reason: 'identity provider unreachable (OAuth token endpoint)' },
  // Anything else, such as a token cache that no longer decrypts with the secret key.
  oauth: { recovery: 'admin', reason: 'OAuth token request failed (see the last error)' },
  // Ours, not the mailbox's (lib/errors.ts): our store, or taking the message in.
  store: { recovery: 'ours', reason: 'the message could not be stored here (see the log)' },
  ingest: { recovery: 'ours', reason: 'the message could not be taken in here (see the log)' },
} as const satisfies Record<string, FetchFailure>;

/** A kind of fetch failure: a key of {@link fetchFailures}. */
export type FetchFailureKind = keyof typeof fetchFailures;

/** An error that knows its kind already: a POP3 session's (pop3/errors.ts), a token request's (oauth/tokens.ts). */
export class ClassifiedError<K extends FetchFailureKind = FetchFailureKind> extends Error {
  /** What went wrong; see {@link fetchFailures}. */
  readonly kind: K;

  constructor(kind: K, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
  }
}

const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'EAI_NODATA']);
/** Node's, and imapflow's own codes for a connection or greeting that took too long. */
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ETIMEOUT', 'CONNECT_TIMEOUT', 'GREETING_TIMEOUT', 'UPGRADE_TIMEOUT']);
const CERTIFICATE_CODES = /CERT|SELF_SIGNED|ISSUER|LEAF_SIGNATURE|HOSTNAME_MISMATCH|INVALID_CA|INVALID_PURPOSE/;
/** imapflow's own codes for a session that ended under us, and Node's for unreachable networks. */
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENETDOWN',
  'NoConnection',
  'EConnectionClosed',
  'ClosedAfterConnectText',
  'ClosedAfterConnectTLS',
]);

/** Whether a system or TLS error code says the server's certificate is not trusted. */
export function isCertificateCode(code: string | undefined): boolean {
  return code !== undefined && CERTIFICATE_CODES.test(code);
}

/**
 * The kind a system, TLS or imapflow error code names on its own; undefined for a lost
 * connection or anything else, which the caller places (POP3: `tls` while handshaking, else
 * `network`; IMAP: `network` or `protocol`).
 */
export function connectionFailureKind(code: string | undefined): 'dns' | 'tcp_refused' | 'timeout' | 'tls_certificate' | 'tls' | undefined {
  if (!code) return undefined;
  if (DNS_CODES.has(code)) return 'dns';
  if (code === 'ECONNREFUSED') return 'tcp_refused';
  if (TIMEOUT_CODES.has(code)) return 'timeout';
  if (isCertificateCode(code)) return 'tls_certificate';
  if (code.startsWith('ERR_SSL') || code === 'StartTLSFailed') return 'tls';
  return undefined;
}

/**
 * The kind of any failure of a fetch, for the log and the alias health: a POP3 or token
 * failure knows its own; one of ours (lib/errors.ts) is `store` or `ingest`; an imapflow or
 * system error is read from its RFC 5530 response code or its code.
 */
export function fetchFailureKind(err: unknown): FetchFailureKind {
  if (err instanceof ClassifiedError) return err.kind;
  if (err instanceof MailgateError) return err.code.startsWith('STORE_') ? 'store' : 'ingest';
  const e = (err ?? {}) as { authenticationFailed?: boolean; code?: unknown; serverResponseCode?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const response = typeof e.serverResponseCode === 'string' ? e.serverResponseCode.toUpperCase() : '';
  if (e.authenticationFailed) return 'auth';
  // RFC 5530 response codes
  if (response === 'NONEXISTENT') return 'folder_missing';
  if (response === 'INUSE') return 'in_use';
  if (response === 'UNAVAILABLE' || response === 'SERVERBUG') return 'server';
  return connectionFailureKind(code) ?? (NETWORK_CODES.has(code) ? 'network' : 'protocol');
}
