/**
 * The submission listener (RFC 6409 style, default 127.0.0.1:2587): where a helpdesk or any
 * application hands over mail for an alias to send. AUTH is required; the user may send only
 * as the aliases `send_as` lists, and MAIL FROM and the From header both pick the alias.
 * Accepted (250) once the message is stored and queued, durably.
 */
import type { SMTPServerOptions } from 'smtp-server';
import type { Config } from '../config/schema.js';
import { asMailgateError, errors } from '../../lib/errors.js';
import type { IngestDeps } from '../../ingest/ingest.js';
import { Metrics } from '../../lib/metrics.js';
import { authSettings } from './auth.js';
import { SessionGuard } from './session-limits.js';
import { guardedData } from './data-guards.js';
import { bindSmtpServers, type SmtpListener } from './listener.js';
import { submitOutbound } from '../dispatch/submit.js';
import { aliasOfAddress } from '../config/alias-addresses.js';
import type { Dispatcher } from '../dispatch/dispatcher.js';

/** Whether `[submission]` runs: explicitly, or because there are users who could use it. */
export function submissionEnabled(config: Config): boolean {
  return config.submission.enabled ?? config.submission.user.length > 0;
}

export async function startSubmissionListener(
  config: Config,
  deps: IngestDeps & { dispatcher?: Dispatcher | undefined },
  metrics = new Metrics(),
): Promise<SmtpListener> {
  const sub = config.submission;
  const tls = sub.tls ?? config.smtp.tls;
  const sendAs = new Map(sub.user.map((u) => [u.name, new Set(u.send_as)]));
  const maxSize = sub.max_message_size ?? config.smtp.max_message_size;
  const inFlight = new Set<Promise<unknown>>();
  // The same limits as the SMTP listener; a submitting application is a client like any other.
  const limits = config.smtp.limits;
  const guard = new SessionGuard(limits, deps.logger);
  const options: SMTPServerOptions = {
    name: config.smtp.hostname,
    banner: 'mailgate ESMTP submission',
    logger: false,
    size: maxSize,
    rejectOversized: true,
    hideENHANCEDSTATUSCODES: true,
    disableReverseLookup: true,
    ...authSettings({ users: sub.user, tls, allowInsecureOnLoopback: sub.auth.allow_insecure_on_loopback, required: true, logger: deps.logger, guard, limits }),

    onMailFrom(address, session, callback) {
      const user = typeof session.user === 'string' ? session.user : undefined;
      if (!user) return callback(errors.authRequired());
      const alias = aliasOfAddress(config, address.address);
      const allowed = sendAs.get(user);
      if (!alias || !allowed || !(allowed.has('*') || allowed.has(alias.name))) {
        deps.logger.warn({ user, from: address.address, remote: session.remoteAddress }, 'submission refused: not an alias this user may send as');
        return callback(guard.refuse(session, errors.sendAsDenied(address.address)));
      }
      callback();
    },

    onRcptTo(_address, session, callback) {
      callback(guard.recipientLimit(session));
    },

    onData(stream, session, callback) {
      // The wait a client sees: from its final dot to our reply.
      let replied: ((code: number) => void) | undefined;
      stream.once('end', () => (replied = metrics.timeReply('submission')));
      const mailFrom = session.envelope.mailFrom ? session.envelope.mailFrom.address : '';
      // onMailFrom checked it; the alias is found again from the address.
      const alias = aliasOfAddress(config, mailFrom)!;
      const envelope = { mailFrom, rcptTo: session.envelope.rcptTo.map((r) => r.address) };
      const source = {
        kind: 'submission' as const,
        alias: alias.name,
        remoteAddress: session.remoteAddress,
        // For our Received line when it is sent (RFC 5321 section 4.4).
        ...(session.hostNameAppearsAs ? { helo: session.hostNameAppearsAs } : {}),
        ...(typeof session.user === 'string' ? { user: session.user } : {}),
        secure: session.secure,
      };
      const data = guardedData(stream, {
        bareLineEndings: limits.bare_line_endings,
        maxReceivedHeaders: limits.max_received_headers,
        onBytes: guard.data(stream, session),
      });
      const submit = submitOutbound({ ...deps, config }, data, { alias, envelope, source, maxSize });
      inFlight.add(submit);
      void submit.finally(() => inFlight.delete(submit)).catch(() => undefined);
      submit.then(
        ({ meta, entry }) => {
          deps.logger.info(
            { msg_id: meta.id, outcome: 'queued', alias: alias.name, user: source.user, rcpt: entry.recipients.map((r) => r.address) },
            'message submitted and queued',
          );
          metrics.inc('mailgate_messages_total', { source: 'submission', outcome: 'queued' });
          replied?.(250);
          callback(null, `2.0.0 Ok: queued as ${meta.id}`);
        },
        (err: unknown) => {
          const e = asMailgateError(err);
          deps.logger[e.responseCode >= 500 ? 'info' : 'error'](
            { outcome: 'refused', code: e.responseCode, reason: e.code, err: e.cause ?? e, source: 'submission', user: source.user },
            e.message,
          );
          metrics.inc('mailgate_messages_total', { source: 'submission', outcome: 'refused' });
          replied?.(e.responseCode);
          callback(e);
        },
      );
    },
  };
  return bindSmtpServers('submission listener', sub.listen, options, deps.logger, inFlight, guard, { tls: Boolean(tls) });
}
