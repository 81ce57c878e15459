import { Resolver } from 'node:dns/promises';
import { readFileSync } from 'node:fs';

import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { isLoopbackHost, parseListenAddress, type Config } from './config/schema.js';
import { verifyPassword } from './config/password.js';
import { errors, MailgateError } from './errors.js';
import { ingestMessage, type IngestDeps } from './ingest.js';
import { Metrics } from './metrics.js';

/** A running SMTP listener: one smtp-server per configured address. */
export interface SmtpListener {
  /** The addresses actually bound (ephemeral ports resolved). */
  readonly addresses: { host: string; port: number }[];
  /** Stops accepting connections and waits for sessions in progress to finish. */
  close(): Promise<void>;
}

/** Decides whether a recipient is one we take mail for. */
export function recipientAcceptor(config: Config): (address: string) => boolean {
  const exact = new Set<string>();
  for (const alias of config.alias) {
    exact.add(alias.address.toLowerCase());
    for (const r of alias.redirection_addresses) exact.add(r.toLowerCase());
  }
  const domains = new Set(config.smtp.domains.map((d) => d.toLowerCase().replace(/\.$/, '')));
  return (address) => {
    if (config.smtp.accept_all) return true;
    const lower = address.toLowerCase();
    if (exact.has(lower)) return true;
    const at = lower.lastIndexOf('@');
    return at > 0 && domains.has(lower.slice(at + 1));
  };
}

/**
 * The alias a message is for: the first recipient that is an alias address or one of its
 * redirection addresses (Cisco guide: mail redirected from other addresses belongs to the
 * alias). Its department selects the policy.
 */
export function aliasResolver(config: Config): (recipients: readonly string[]) => Config['alias'][number] | undefined {
  const byAddress = new Map<string, Config['alias'][number]>();
  for (const alias of config.alias) {
    byAddress.set(alias.address.toLowerCase(), alias);
    for (const r of alias.redirection_addresses) if (!byAddress.has(r.toLowerCase())) byAddress.set(r.toLowerCase(), alias);
  }
  return (recipients) => {
    for (const r of recipients) {
      const alias = byAddress.get(r.toLowerCase());
      if (alias) return alias;
    }
    return undefined;
  };
}

/** The reverse DNS lookup smtp-server does per connection, with our own (short) timeout. */
function reverseResolver(timeoutMs: number): SMTPServerOptions['resolver'] {
  const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
  return {
    reverse(ip: string, callback: (err: Error | null, hostnames?: string[]) => void) {
      resolver.reverse(ip).then((names) => callback(null, names), (err: Error) => callback(err));
    },
  };
}

function remoteIsLoopback(session: SMTPServerSession): boolean {
  return isLoopbackHost(session.remoteAddress);
}

/** Builds the smtp-server options shared by every listen address. */
function serverOptions(config: Config, deps: IngestDeps, inFlight: Set<Promise<unknown>>, metrics: Metrics): SMTPServerOptions {
  const smtp = config.smtp;
  const accepts = recipientAcceptor(config);
  const aliasFor = aliasResolver(config);
  const users = new Map(smtp.user.map((u) => [u.name, u.password_hash]));
  const disabled: string[] = [];
  if (!smtp.tls) disabled.push('STARTTLS'); // no certificate: don't offer TLS we cannot do properly
  if (users.size === 0) disabled.push('AUTH');

  return {
    name: smtp.hostname,
    banner: 'mailgate ESMTP',
    logger: false,
    size: smtp.max_message_size,
    rejectOversized: true,
    // Our replies carry their own enhanced status codes (550 5.7.1 for relay, not smtp-server's 5.1.1 for every 550).
    hideENHANCEDSTATUSCODES: true,
    authOptional: true,
    authMethods: ['PLAIN', 'LOGIN'],
    // smtp-server hides AUTH before TLS unless told otherwise; the loopback exception is checked in onAuth.
    allowInsecureAuth: smtp.auth.allow_insecure_on_loopback,
    disabledCommands: disabled,
    disableReverseLookup: !smtp.reverse_dns,
    resolver: reverseResolver(smtp.reverse_dns_timeout_ms),
    ...(smtp.tls ? { key: readFileSync(smtp.tls.key), cert: readFileSync(smtp.tls.cert) } : {}),

    // RFC 4954 section 4: don't offer PLAIN or LOGIN where the password would cross in
    // clear text. Hide AUTH for the session until TLS is up (Postfix: smtpd_tls_auth_only).
    onConnect(session, callback) {
      if (!smtp.auth.allow_insecure_on_loopback || !remoteIsLoopback(session)) session.disabledCommands = [...disabled, 'AUTH'];
      callback();
    },

    onSecure(_socket, session, callback) {
      session.disabledCommands = disabled;
      callback();
    },

    onAuth(auth, session, callback) {
      if (!session.secure && !(smtp.auth.allow_insecure_on_loopback && remoteIsLoopback(session))) {
        return callback(errors.encryptionRequired());
      }
      const hash = auth.username ? users.get(auth.username) : undefined;
      if (!hash || auth.method === 'XOAUTH2' || !verifyPassword(auth.password ?? '', hash)) {
        deps.logger.warn({ remote: session.remoteAddress, user: auth.username }, 'authentication failed');
        return callback(errors.authFailed());
      }
      callback(null, { user: auth.username });
    },

    onRcptTo(address, _session, callback) {
      if (accepts(address.address)) return callback();
      callback(errors.relayDenied(address.address));
    },

    onData(stream, session, callback) {
      const envelope = {
        mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
        rcptTo: session.envelope.rcptTo.map((r) => r.address),
      };
      const alias = aliasFor(envelope.rcptTo);
      const source = {
        kind: 'smtp' as const,
        ...(alias ? { alias: alias.name } : {}),
        remoteAddress: session.remoteAddress,
        ...(session.clientHostname && session.clientHostname !== `[${session.remoteAddress}]` ? { clientHostname: session.clientHostname } : {}),
        ...(session.hostNameAppearsAs ? { helo: session.hostNameAppearsAs } : {}),
        ...(typeof session.user === 'string' ? { user: session.user } : {}),
        secure: session.secure,
      };
      const ingest = ingestMessage(deps, stream, { envelope, source, maxSize: smtp.max_message_size, defaultDomain: config.partition.default_domain, ...(alias?.department ? { department: alias.department } : {}) });
      inFlight.add(ingest);
      void ingest.finally(() => inFlight.delete(ingest)).catch(() => undefined);
      ingest.then(
        (meta) => {
          deps.logger.info(
            { msg_id: meta.id, outcome: 'stored', size: meta.size, source: 'smtp', remote: session.remoteAddress, from: envelope.mailFrom, rcpt: envelope.rcptTo },
            'message stored',
          );
          metrics.inc('mailgate_messages_total', { source: 'smtp', outcome: meta.tags.includes('wrapped') ? 'wrapped' : 'stored' });
          metrics.inc('mailgate_message_bytes_total', { source: 'smtp' }, meta.size);
          callback(null, `2.0.0 Ok: queued as ${meta.id}`);
        },
        (err: MailgateError) => {
          const level = err.responseCode >= 500 ? 'info' : 'error';
          deps.logger[level](
            { outcome: 'refused', code: err.responseCode, reason: err.code, err: err.cause ?? err, source: 'smtp', remote: session.remoteAddress, from: envelope.mailFrom, rcpt: envelope.rcptTo },
            err.message,
          );
          metrics.inc('mailgate_messages_total', { source: 'smtp', outcome: 'refused' });
          metrics.inc('mailgate_refusals_total', { code: String(err.responseCode) });
          callback(err);
        },
      );
    },
  };
}

/** Starts the SMTP listener on every address in `[smtp] listen`. */
export async function startSmtpListener(config: Config, deps: IngestDeps, metrics = new Metrics()): Promise<SmtpListener> {
  const inFlight = new Set<Promise<unknown>>();
  const options = serverOptions(config, deps, inFlight, metrics);
  const servers: SMTPServer[] = [];
  const addresses: { host: string; port: number }[] = [];
  try {
    for (const listen of config.smtp.listen) {
      // validated by the config schema
      const { host, port } = parseListenAddress(listen)!;
      const server = new SMTPServer(options);
      server.on('error', (err) => deps.logger.error({ err, listen }, 'SMTP listener error'));
      await new Promise<void>((resolve, reject) => {
        server.server.once('error', reject);
        server.listen(port, host, () => {
          server.server.off('error', reject);
          resolve();
        });
      });
      servers.push(server);
      const bound = server.server.address();
      const boundPort = bound && typeof bound === 'object' ? bound.port : port;
      addresses.push({ host, port: boundPort });
      deps.logger.info({ host, port: boundPort, accept_all: config.smtp.accept_all, tls: Boolean(config.smtp.tls) }, 'SMTP listener ready');
    }
  } catch (err) {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    throw err;
  }
  return {
    addresses,
    async close() {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      // A session cut off by the close timeout still has its message being discarded; let that finish before the store closes.
      await Promise.allSettled([...inFlight]);
    },
  };
}

