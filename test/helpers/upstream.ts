import { readFileSync } from 'node:fs';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerOptions } from 'smtp-server';
import { fixture } from './paths.js';

/** A message as an upstream server received it. */
export interface Received {
  mailFrom: string;
  rcptTo: string[];
  raw: Buffer;
  /** The user that authenticated, if any. */
  user?: string;
  secure: boolean;
  /** The name the client gave in EHLO/HELO (which gateway sent it, when each has its own `[smtp] hostname`). */
  helo: string;
  /** NOTIFY of each RCPT TO that had one (RFC 3461), by recipient; absent when none had. */
  notify?: Record<string, string[]>;
}

export interface UpstreamOptions {
  /** Users and passwords for AUTH PLAIN/LOGIN; AUTH is offered only when set (or with `xoauth2`). */
  users?: Record<string, string>;
  /** Check an XOAUTH2 token (user, token) → accepted. */
  xoauth2?: (user: string, token: string) => boolean | Promise<boolean>;
  /** Offer STARTTLS / TLS with the test certificate. Default false. */
  tls?: boolean;
  /** TLS on connect. */
  secure?: boolean;
  /** Refuse AUTH unless TLS. Default false (tests on loopback). */
  authOnlyOverTls?: boolean;
  /** Decide each RCPT TO: return undefined to accept, or [code, text] to refuse. */
  rcpt?: (address: string) => [number, string] | undefined;
  /** Decide the reply to DATA once the message is read: undefined accepts. May wait (to hold a message open). */
  data?: (message: Received) => Promise<[number, string] | undefined> | [number, string] | undefined;
  /** Listen on this port (e.g. one a stopped upstream had). Default: an ephemeral one. */
  port?: number;
  /** Offer the DSN extension (RFC 3461) in EHLO. Default false, as smtp-server's. */
  dsn?: boolean;
}

/** A real smtp-server on an ephemeral loopback port, standing in for an alias's mail server, the partition default, or a downstream. */
export interface Upstream {
  port: number;
  received: Received[];
  /** Resolves once `count` messages were accepted. */
  waitFor(count: number, timeoutMs?: number): Promise<Received[]>;
  /** AUTH attempts (user, accepted). */
  authAttempts: { user: string; ok: boolean; method: string }[];
  close(): Promise<void>;
}

export async function startUpstream(opts: UpstreamOptions = {}): Promise<Upstream> {
  const received: Received[] = [];
  const authAttempts: Upstream['authAttempts'] = [];
  const hasAuth = Boolean(opts.users || opts.xoauth2);
  const options: SMTPServerOptions = {
    logger: false,
    // A gateway's pooled connection may still be open when a test ends: don't wait 30 s for it.
    closeTimeout: 200,
    secure: Boolean(opts.secure),
    hideDSN: !opts.dsn,
    authOptional: true,
    allowInsecureAuth: !opts.authOnlyOverTls,
    authMethods: [...(opts.users ? ['PLAIN', 'LOGIN'] : []), ...(opts.xoauth2 ? ['XOAUTH2'] : [])],
    disabledCommands: [...(opts.tls || opts.secure ? [] : ['STARTTLS']), ...(hasAuth ? [] : ['AUTH'])],
    ...(opts.tls || opts.secure ? { key: readFileSync(fixture('tls', 'key.pem')), cert: readFileSync(fixture('tls', 'cert.pem')) } : {}),
    onAuth(auth: SMTPServerAuthentication, _session, callback) {
      const check = async () => {
        if (auth.method === 'XOAUTH2') return Boolean(await opts.xoauth2?.(auth.username ?? '', auth.accessToken ?? ''));
        return opts.users?.[auth.username ?? ''] !== undefined && opts.users[auth.username ?? ''] === auth.password;
      };
      check().then(
        (ok) => {
          authAttempts.push({ user: auth.username ?? '', ok, method: auth.method });
          if (!ok) return callback(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 }));
          callback(null, { user: auth.username });
        },
        (err: Error) => callback(err),
      );
    },
    onRcptTo(address, _session, callback) {
      const refusal = opts.rcpt?.(address.address);
      if (refusal) return callback(Object.assign(new Error(refusal[1]), { responseCode: refusal[0] }));
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        // What the client sent, whether or not DSN was offered (then it should have sent none).
        const notify = session.envelope.rcptTo.flatMap((r) => {
          const given = r.dsn?.notify ?? (r.args && typeof r.args.NOTIFY === 'string' ? r.args.NOTIFY.split(',') : undefined);
          return given ? [[r.address, given] as const] : [];
        });
        const message: Received = {
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
          ...(notify.length ? { notify: Object.fromEntries(notify) } : {}),
          raw: Buffer.concat(chunks),
          ...(typeof session.user === 'string' ? { user: session.user } : {}),
          secure: session.secure,
          helo: session.hostNameAppearsAs,
        };
        Promise.resolve(opts.data?.(message)).then((refusal) => {
          if (refusal) return callback(Object.assign(new Error(refusal[1]), { responseCode: refusal[0] }));
          received.push(message);
          callback(null, 'Ok: queued upstream');
        }, callback);
      });
    },
  };
  const server = new SMTPServer(options);
  server.on('error', () => undefined);
  // A port asked for by number may have been taken meanwhile (closedPort() frees one, and other
  // test files run at the same time): fail with EADDRINUSE, not wait for ever (a CI run hung so).
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    received,
    authAttempts,
    async waitFor(count, timeoutMs = 15_000) {
      const deadline = Date.now() + timeoutMs;
      while (received.length < count) {
        if (Date.now() > deadline) throw new Error(`upstream got ${received.length} of ${count} messages within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return received;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A loopback port where nothing listens now: an upstream's, once it is closed. */
export async function closedPort(): Promise<number> {
  const upstream = await startUpstream();
  await upstream.close();
  return upstream.port;
}
