import { Resolver } from 'node:dns/promises';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { parseListenAddress } from '../../lib/net.js';
import type { Config } from '../config/schema.js';
import { recipientRules } from './recipient-rules.js';
import { MailgateError } from '../../lib/errors.js';
import { newMessageId } from '../../storage/ids.js';
import { DEFAULT_ROUTE, relayEntry } from '../dispatch/entries.js';
import { SessionGuard } from './session-limits.js';
import { takeInData, type IntakeSettings } from './intake.js';
import type { Dispatcher } from '../dispatch/dispatcher.js';
import { authSettings } from './auth.js';
import { aliasOfAddress } from '../config/alias-addresses.js';
import { ingestMessage, type IngestDeps } from '../../ingest/ingest.js';
import { autoReply } from '../auto-reply/auto-reply.js';
import { Metrics } from '../../lib/metrics.js';

/** A running SMTP listener: one smtp-server per configured address. */
export interface SmtpListener {
  /** The addresses actually bound (ephemeral ports resolved). */
  readonly addresses: { host: string; port: number }[];
  /** Stops accepting connections and waits for sessions in progress to finish. */
  close(): Promise<void>;
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
      resolver.reverse(ip).then(
        (names) => callback(null, names),
        (err: Error) => callback(err),
      );
    },
  };
}

/** Builds the smtp-server options shared by every listen address. */
function serverOptions(
  config: Config,
  deps: IngestDeps & { dispatcher?: Dispatcher | undefined },
  inFlight: Set<Promise<unknown>>,
  metrics: Metrics,
  guard: SessionGuard,
): SMTPServerOptions {
  const smtp = config.smtp;
  const rules = recipientRules(config);
  const aliasFor = aliasResolver(config);
  // Refusals are also counted by reply code here: the SMTP listener is where senders from outside are refused.
  const intake: IntakeSettings = { source: 'smtp', limits: smtp.limits, guard, logger: deps.logger, metrics, inFlight, countRefusalsByCode: true };
  const auth = authSettings({
    users: smtp.user,
    tls: smtp.tls,
    allowInsecureOnLoopback: smtp.auth.allow_insecure_on_loopback,
    required: false,
    logger: deps.logger,
    guard,
    limits: smtp.limits,
  });

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
      const limit = guard.recipientLimit(session);
      if (limit) return callback(limit);
      const route = rules.route(session, address.address);
      callback(route instanceof MailgateError ? guard.refuse(session, route) : undefined);
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
      const relay = relayEntry(id, rules.forwardTo(session), envelope);
      takeInData(intake, stream, session, callback, {
        store: (data) =>
          ingestMessage(deps, data, {
            id,
            envelope,
            source,
            maxSize: smtp.max_message_size,
            defaultDomain: config.partition.default_domain,
            ...(alias?.department ? { department: alias.department } : {}),
            ...(relay ? { sideRecords: [{ type: 'queue-entry' as const, entry: relay }] } : {}),
          }).then((meta) => {
            // The alias's acknowledgement (gateway/auto-reply/), not awaited: it never holds up the 250, and never rejects.
            if (alias?.auto_reply) void autoReply({ ...deps, config }, meta, alias);
            return meta;
          }),
        accepted: (meta) => ({
          id: meta.id,
          outcome: meta.tags.includes('wrapped') ? 'wrapped' : 'stored',
          logFields: {
            msg_id: meta.id,
            outcome: relay ? 'stored and queued' : 'stored',
            size: meta.size,
            source: 'smtp',
            remote: session.remoteAddress,
            from: envelope.mailFrom,
            rcpt: envelope.rcptTo,
            ...(relay ? { queued_for: relay.recipients.map((r) => `${r.address} via ${r.relay ?? DEFAULT_ROUTE}`) } : {}),
          },
          logMessage: relay ? 'message stored and queued for delivery' : 'message stored',
          bytes: meta.size,
          ...(relay ? { afterCount: () => deps.dispatcher?.queued(relay, meta) } : {}),
        }),
        refusedFields: { remote: session.remoteAddress, from: envelope.mailFrom, rcpt: envelope.rcptTo },
      });
    },
  };
}

/** Starts the SMTP listener on every address in `[smtp] listen`. */
export async function startSmtpListener(
  config: Config,
  deps: IngestDeps & { dispatcher?: Dispatcher | undefined },
  metrics = new Metrics(),
): Promise<SmtpListener> {
  const inFlight = new Set<Promise<unknown>>();
  const guard = new SessionGuard(config.smtp.limits, deps.logger);
  const options = serverOptions(config, deps, inFlight, metrics, guard);
  return bindSmtpServers('SMTP listener', config.smtp.listen, options, deps.logger, inFlight, guard, {
    accept_all: config.smtp.accept_all,
    tls: Boolean(config.smtp.tls),
  });
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
