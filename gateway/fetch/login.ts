/**
 * How the retriever logs in to an alias's mailbox, in one place for the retriever (imap.ts,
 * gateway/fetch/pop3/mailbox.ts) and `mailgate aliases test` (connection-test.ts), so the test tries exactly
 * what the retriever does and the two cannot drift (issue 11):
 * - a password: IMAP AUTHENTICATE PLAIN (LOGIN where PLAIN is not offered), POP3 USER/PASS;
 * - a password with `auth_identity` (Cisco "Shared Mailbox", Enate "Authorization Identity"):
 *   SASL PLAIN with it as the authorization identity (RFC 4616), the form Exchange's shared
 *   mailboxes and Dovecot's master users take;
 * - `oauth2`: a token from the alias's app (gateway/oauth/tokens.ts), SASL XOAUTH2 (IMAP: OAUTHBEARER where
 *   the server offers it, RFC 7628), naming the shared mailbox (`auth_identity`) or `user`.
 */
import { ImapFlow, type ImapFlowOptions } from 'imapflow';
import type { IncomingServerConfig } from '../config/schema.js';
import { tlsOptionsFor } from './mailbox.js';
import { OAuthError, type TokenProvider } from '../oauth/tokens.js';
import { Pop3Client, type Pop3Security } from './pop3/client.js';

/** What the retriever presents to log in. */
export type MailboxCredentials =
  | { kind: 'password'; user: string; password: string; /** SASL PLAIN authorization identity: the shared mailbox to open. */ authzid?: string }
  | { kind: 'oauth2'; /** The mailbox XOAUTH2 names. */ user: string; accessToken: string };

/**
 * The credentials for SERVER: with `oauth2`, a fresh token from TOKENS (rejects with
 * OAuthError); ask for them before connecting, so a token failure is reported as such.
 */
export async function mailboxCredentials(server: IncomingServerConfig, tokens?: TokenProvider): Promise<MailboxCredentials> {
  if (server.oauth2 !== undefined) {
    // Never fall back to an empty password: the server's refusal would hide the real cause.
    if (!tokens) throw new OAuthError('oauth', `oauth_app ${server.oauth2}: no token source for this alias`);
    // XOAUTH2/OAUTHBEARER name the mailbox to open: the shared one when there is one.
    return { kind: 'oauth2', user: server.auth_identity ?? server.user ?? '', accessToken: await tokens.getAccessToken() };
  }
  return { kind: 'password', user: server.user ?? '', password: server.password ?? '', ...(server.auth_identity ? { authzid: server.auth_identity } : {}) };
}

/** How the login goes, in words for `aliases test` (never the secret). */
export function loginDescription(server: IncomingServerConfig): string {
  const user = JSON.stringify(server.user ?? '');
  if (server.oauth2 !== undefined) {
    const mailbox = server.auth_identity ? `the shared mailbox ${JSON.stringify(server.auth_identity)}` : user;
    // imapflow takes OAUTHBEARER where the server offers it (RFC 7628), else XOAUTH2.
    const sasl = server.type === 'imap' ? 'SASL OAUTHBEARER or XOAUTH2' : 'SASL XOAUTH2';
    return `${mailbox} with an OAuth2 token from oauth_app ${JSON.stringify(server.oauth2)} (${sasl})`;
  }
  if (server.auth_identity) return `${user} for the shared mailbox ${JSON.stringify(server.auth_identity)} (SASL PLAIN with authorization identity)`;
  return user;
}

/**
 * An IMAP client for SERVER logging in with CREDS, as the retriever makes it (not yet
 * connected). EXTRA adds the caller's own options (IDLE, timeouts).
 */
export function imapClient(server: IncomingServerConfig, creds: MailboxCredentials, extra: Partial<ImapFlowOptions> = {}): ImapFlow {
  const tlsOnConnect = server.security === 'tls' || (server.security === 'auto' && server.port === 993);
  const client = new ImapFlow({
    host: server.host,
    port: server.port,
    secure: tlsOnConnect,
    // auto: upgrade when offered; starttls: refuse to go on in clear; none: stay in clear.
    ...(server.security === 'starttls' ? { doSTARTTLS: true } : server.security === 'none' ? { doSTARTTLS: false } : {}),
    tls: tlsOptionsFor(server),
    auth:
      creds.kind === 'oauth2'
        ? { user: creds.user, accessToken: creds.accessToken }
        : { user: creds.user, pass: creds.password, ...(creds.authzid ? { authzid: creds.authzid } : {}) },
    logger: false,
    ...extra,
  });
  client.on('error', () => {
    // Reported by the command that fails, or seen as `usable` turning false.
  });
  return client;
}

/** `auto` is TLS on connect on port 995, else STLS (never clear text unless asked for). */
export function pop3Security(server: IncomingServerConfig): Pop3Security {
  if (server.security === 'auto') return server.port === 995 ? 'tls' : 'starttls';
  return server.security;
}

/** Connects to SERVER's POP3 service (TLS on connect or STLS), not yet logged in. */
export function pop3Connect(server: IncomingServerConfig, timeouts: { connectTimeoutMs?: number; commandTimeoutMs?: number } = {}): Promise<Pop3Client> {
  return Pop3Client.connect({ host: server.host, port: server.port, security: pop3Security(server), tls: tlsOptionsFor(server), ...timeouts });
}

/** Logs in on an open POP3 session with CREDS. */
export function pop3Login(client: Pop3Client, creds: MailboxCredentials): Promise<void> {
  // XOAUTH2's user= is the mailbox to open: the shared one when there is one.
  if (creds.kind === 'oauth2') return client.authXoauth2(creds.user, creds.accessToken);
  if (creds.authzid) return client.authPlain(creds.user, creds.password, creds.authzid);
  return client.login(creds.user, creds.password);
}
