import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { domainToASCII } from 'node:url';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { parseCidr, parseListenAddress, type Config } from './config/schema.js';
import { errors, MailgateError } from './errors.js';
import { newMessageId } from '../storage/ids.js';
import { queuePutOp } from '../storage/queue.js';
import { DEFAULT_ROUTE, relayEntry, relayMatcher } from './dispatch/entries.js';
import { SessionGuard } from './session-limits.js';
import { guardedData } from './data-guards.js';
import type { Dispatcher } from './dispatch/dispatcher.js';
import { authSettings } from './smtp-auth.js';
import { aliasIndex, aliasOfAddress } from './config/alias-addresses.js';
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
  const aliases = aliasIndex(config);
  // Relayed domains are ours to accept too (Postfix: relay_domains).
  const domains = new Set([...config.smtp.domains, ...config.relay.flatMap((r) => r.domains)].map(comparableDomain));
  return (address) => {
    if (config.smtp.accept_all) return true;
    const at = address.lastIndexOf('@');
    if (at <= 0) return false;
    const local = address.slice(0, at);
    const domain = comparableDomain(address.slice(at + 1));
    if (aliases.has(`${local}@${domain}`.toLowerCase())) return true;
    return domains.has(domain);
  };
}

/**
 * A domain as configured domains are compared: lower case, without a trailing dot, IDN in its
 * ASCII (punycode) form, so `Example.COM.` and `bücher.example` / `xn--bcher-kva.example` each
 * match one way only. An IP literal (`[192.0.2.1]`) is never one of ours.
 */
function comparableDomain(domain: string): string {
  const d = domain.toLowerCase().replace(/\.$/, '');
  if (d.startsWith('[')) return d;
  return domainToASCII(d) || d;
}

/**
 * The alias a message is for: the first recipient that is an alias address or one of its
 * redirection addresses (Cisco guide: mail redirected from other addresses belongs to the
 * alias). Its department selects the policy.
 */
export function aliasResolver(config: Config): (recipients: readonly string[]) => Config['alias'][number] | undefined {
  return (recipients) => {
    for (const r of recipients) {
      const alias = aliasOfAddress(config, r);
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

/** Builds the smtp-server options shared by every listen address. */
function serverOptions(config: Config, deps: IngestDeps & { dispatcher?: Dispatcher | undefined }, inFlight: Set<Promise<unknown>>, metrics: Metrics, guard: SessionGuard): SMTPServerOptions {
  const smtp = config.smtp;
  const accepts = recipientAcceptor(config);
  const aliasFor = aliasResolver(config);
  const relayFor = relayMatcher(config);
  const mayRelayOut = outwardRelay(config);
  // Forwarded downstream: a [[relay]]'s recipients, or any recipient of a trusted or authenticated client (via the partition default SMTP).
  const forwardTo = (rcpt: string) => relayFor(rcpt) ?? (accepts(rcpt) ? undefined : DEFAULT_ROUTE);
  const auth = authSettings({ users: smtp.user, tls: smtp.tls, allowInsecureOnLoopback: smtp.auth.allow_insecure_on_loopback, required: false, logger: deps.logger, guard, limits: smtp.limits });

  return {
    name: smtp.hostname,
    banner: 'mailgate ESMTP',
    logger: false,
    size: smtp.max_message_size,
    rejectOversized: true,
    // Our replies carry their own enhanced status codes (550 5.7.1 for relay, not smtp-server's 5.1.1 for every 550).
    hideENHANCEDSTATUSCODES: true,
    disableReverseLookup: !smtp.reverse_dns,
    resolver: reverseResolver(smtp.reverse_dns_timeout_ms),
    ...auth,

    onRcptTo(address, session, callback) {
      const problem = guard.recipientLimit(session) ?? addressTrick(address.address);
      if (problem) return callback(problem.responseCode >= 500 ? guard.refuse(session, problem) : problem);
      if (accepts(address.address) || mayRelayOut(session)) return callback();
      callback(guard.refuse(session, errors.relayDenied(address.address)));
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
      // Recipients forwarded downstream (MX in front of an internal server) are queued with the message, in its one write.
      const id = newMessageId();
      const relay = relayEntry(id, forwardTo, envelope);
      const data = guardedData(stream, { bareLineEndings: smtp.limits.bare_line_endings, maxReceivedHeaders: smtp.limits.max_received_headers, onBytes: guard.data(stream, session) });
      const ingest = ingestMessage(deps, data, {
        id,
        envelope,
        source,
        maxSize: smtp.max_message_size,
        defaultDomain: config.partition.default_domain,
        ...(alias?.department ? { department: alias.department } : {}),
        ...(relay ? { commitOps: [queuePutOp(deps.store, relay)] } : {}),
      });
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
          if (relay) deps.dispatcher?.queued(relay);
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
export async function startSmtpListener(config: Config, deps: IngestDeps & { dispatcher?: Dispatcher | undefined }, metrics = new Metrics()): Promise<SmtpListener> {
  const inFlight = new Set<Promise<unknown>>();
  const guard = new SessionGuard(config.smtp.limits, deps.logger);
  const options = serverOptions(config, deps, inFlight, metrics, guard);
  return bindSmtpServers('SMTP listener', config.smtp.listen, options, deps.logger, inFlight, guard, { accept_all: config.smtp.accept_all, tls: Boolean(config.smtp.tls) });
}

/**
 * Whether a client may send to domains that are not ours (Postfix's permit_mynetworks,
 * permit_sasl_authenticated): from `[smtp] trusted_networks` or after AUTH, and only when
 * `[partition.default_smtp]` has a server to send it on through. Everyone else: 550 5.7.1.
 */
function outwardRelay(config: Config): (session: SMTPServerSession) => boolean {
  const trusted = new net.BlockList();
  for (const c of config.smtp.trusted_networks) {
    const { address, prefix, family } = parseCidr(c)!;
    trusted.addSubnet(address, prefix, family);
  }
  const smartHost = config.partition.default_smtp?.server !== undefined;
  return (session) => {
    if (!smartHost) return false;
    if (typeof session.user === 'string') return true;
    const ip = session.remoteAddress.replace(/^::ffff:(?=\d+\.)/, '');
    const family = net.isIP(ip);
    return family !== 0 && trusted.check(ip, family === 4 ? 'ipv4' : 'ipv6');
  };
}

/**
 * Addresses whose local part routes somewhere else: the percent hack (`user%other@ours`) and
 * bang paths (`other!user@ours`). Old MTAs, and some downstream servers still, forward such
 * mail to `other`: accepting them would make mailgate a relay through its downstream.
 * (smtp-server already strips source routes `@ours:user@other`, leaving `user@other` to the
 * relay check, and refuses a quoted `@` in the local part as bad syntax.)
 */
function addressTrick(address: string): MailgateError | undefined {
  const local = address.slice(0, address.lastIndexOf('@'));
  if (!/[%!]/.test(local)) return undefined;
  return new MailgateError('ADDRESS_ROUTING', 550, '5.7.1', `Relay access denied: <${address}> routes through its local part (% or !), which is not accepted`);
}

/**
 * One smtp-server per listen address, all with the same options. `close` stops them and waits
 * for messages still being taken in (`inFlight`) so the store is not closed under them.
 */
export async function bindSmtpServers(
  what: string,
  listen: readonly string[],
  options: SMTPServerOptions,
  logger: IngestDeps['logger'],
  inFlight: Set<Promise<unknown>>,
  guard: SessionGuard,
  logFields: object = {},
): Promise<SmtpListener> {
  const servers: SMTPServer[] = [];
  const addresses: { host: string; port: number }[] = [];
  try {
    for (const address of listen) {
      // validated by the config schema
      const { host, port } = parseListenAddress(address)!;
      const server = new SMTPServer(options);
      guard.attach(server);
      server.on('error', (err) => logger.error({ err, listen: address }, `${what} error`));
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
      logger.info({ host, port: boundPort, ...logFields }, `${what} ready`);
    }
  } catch (err) {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    guard.stop();
    throw err;
  }
  return {
    addresses,
    async close() {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      // A session cut off by the close timeout still has its message being discarded; let that finish before the store closes.
      await Promise.allSettled([...inFlight]);
      guard.stop();
    },
  };
}
