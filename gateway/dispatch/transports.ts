/**
 * One pooled nodemailer transport per route: connections to a server are reused across
 * messages, at most `connections_per_route` at once and `rate_per_minute_per_route` messages
 * a minute (nodemailer's pool does both).
 */
import nodemailer from 'nodemailer';
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
    const info = (await this.#transport(route).sendMail({ envelope, raw, ...dsn })) as {
      accepted?: unknown[];
      rejectedErrors?: { recipient?: string; responseCode?: number; response?: string; message: string }[];
      response?: string;
    };
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
