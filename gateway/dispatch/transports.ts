/**
 * One pooled nodemailer transport per route: connections to a server are reused across
 * messages, at most `connections_per_route` at once and `rate_per_minute_per_route` messages
 * a minute (nodemailer's pool does both).
 */
import nodemailer from 'nodemailer';
import MailMessage from 'nodemailer/lib/mailer/mail-message';
import MimeNode from 'nodemailer/lib/mime-node';
import type { Readable } from 'node:stream';
import type { AliasConfig } from '../config/schema.js';
import type { TokenProvider } from '../oauth/tokens.js';
import type { Route } from './routes.js';

type PooledTransport = ReturnType<typeof nodemailer.createTransport>;

/** What the server said about one message: who was accepted, who was refused and why. */
export interface SendResult {
  accepted: string[];
  rejected: { address: string; code?: number; message: string }[];
  /** The server's final reply to the message. */
  response: string;
}

export class Transports {
  readonly #pool = new Map<string, PooledTransport>();
  readonly #tokens: ((alias: AliasConfig) => TokenProvider | undefined) | undefined;
  // Numbers the placeholder Message-IDs the pool logs.
  #sent = 0;

  constructor(tokens?: (alias: AliasConfig) => TokenProvider | undefined) {
    this.#tokens = tokens;
  }

  /**
   * Sends `raw` (the message as stored, plus any header lines the caller prepended; whole, or streamed when large) over
   * `route`, with the route's NOTIFY when it has one (nodemailer adds it only where the server
   * offers DSN).
   */
  async send(route: Route, envelope: { from: string; to: string[] }, raw: Readable | Buffer): Promise<SendResult> {
    // No NOTIFY on our own notifications (null sender): nothing could be reported back to <>.
    const dsn = route.dsnNotify && envelope.from !== '' ? { dsn: { notify: [...route.dsnNotify] } } : {};
    // Handed to the pool as its transport API takes it (`send(mail, callback)`), not through
    // sendMail: that composes a MIME tree, runs plugins and draws random Message-ID and boundary
    // bytes for every message, all for a raw message it then sends as it is (measured: about a
    // tenth of the dispatcher's CPU). The envelope still goes through the node's setEnvelope,
    // so addresses are normalized as before (IDN domains and all).
    const transport = this.#transport(route);
    const mail = new MailMessage(transport, { envelope, ...dsn });
    // A fixed boundary (a raw node has no parts) and our own Message-ID, never sent: nodemailer logs it.
    mail.message = new MimeNode('message/rfc822', { baseBoundary: 'mailgate' })
      .setRaw(raw)
      .setEnvelope(envelope)
      .setHeader('Message-ID', `<${++this.#sent}.dispatch@mailgate.invalid>`);
    const info = await new Promise<{
      accepted?: unknown[];
      rejectedErrors?: { recipient?: string; responseCode?: number; response?: string; message: string }[];
      response?: string;
    }>((resolve, reject) => transport.transporter.send(mail, (err: Error | null, sent: unknown) => (err ? reject(err) : resolve(sent as never))));
    return {
      accepted: (info.accepted ?? []).map(String),
      rejected: (info.rejectedErrors ?? []).map((e) => ({
        address: e.recipient ?? '',
        ...(e.responseCode ? { code: e.responseCode } : {}),
        message: e.response ?? e.message,
      })),
      response: info.response ?? '',
    };
  }

  /** Closes every pooled connection. */
  close(): void {
    for (const t of this.#pool.values()) t.close();
    this.#pool.clear();
  }

  #transport(route: Route): PooledTransport {
    let transport = this.#pool.get(route.key);
    if (transport) return transport;
    transport = nodemailer.createTransport({ ...route.options, pool: true } as Parameters<typeof nodemailer.createTransport>[0] & { pool: true });
    const alias = route.oauthAlias;
    if (alias) {
      // XOAUTH2 with the alias's OAuth app: msal gives a cached token while valid and a new one near expiry.
      const provider = this.#tokens?.(alias);
      transport.set('oauth2_provision_cb', (_user: string, _renew: boolean, callback: (err: Error | null, token?: string) => void) => {
        if (!provider) return callback(new Error(`alias "${alias.name}" has no OAuth token provider (is the secret key configured?)`));
        provider.getAccessToken().then(
          (token) => callback(null, token),
          (err: Error) => callback(err),
        );
      });
    }
    this.#pool.set(route.key, transport);
    return transport;
  }
}
