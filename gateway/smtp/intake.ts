/**
 * Taking in one message's DATA, the same for both SMTP listeners: the bytes go through the
 * data guards to whatever stores the message; the reply is sent only once that has settled
 * (250 once durable, the refusal's own reply otherwise), and it is logged, counted and timed.
 */
import type { Readable } from 'node:stream';
import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server';
import { asMailgateError } from '../../lib/errors.js';
import type { Logger } from '../../lib/logger.js';
import type { Metrics } from '../../lib/metrics.js';
import type { Config } from '../config/schema.js';
import { guardedData } from './data-guards.js';
import type { SessionGuard } from './session-limits.js';

/** What a listener's intake needs, fixed for the listener's life. */
export interface IntakeSettings {
  /** The listener, as the metrics and log lines name it. */
  source: 'smtp' | 'submission';
  limits: Pick<Config['smtp']['limits'], 'bare_line_endings' | 'max_received_headers'>;
  guard: SessionGuard;
  logger: Logger;
  metrics: Metrics;
  /** Messages still being taken in; the listener's `close` waits for them before the store closes. */
  inFlight: Set<Promise<unknown>>;
  /** Whether a refusal is also counted by its reply code (`mailgate_refusals_total`). */
  countRefusalsByCode: boolean;
}

/** How an accepted message is logged and counted. */
export interface Accepted {
  /** The id the 250 reply names. */
  id: string;
  /** The `outcome` label of `mailgate_messages_total`. */
  outcome: string;
  /** The log line's fields and message. */
  logFields: object;
  logMessage: string;
  /** The bytes stored, for `mailgate_message_bytes_total`; not counted when absent. */
  bytes?: number;
  /** Called after counting and before the 250 (to wake the dispatcher for a queued relay). */
  afterCount?: () => void;
}

/** One message's way in: what stores it and how its outcome is reported. */
export interface Handover<T> {
  /** Takes the guarded DATA in; resolves once the message is durable, rejects with the refusal. */
  store(data: Readable): Promise<T>;
  accepted(result: T): Accepted;
  /** The refusal log line's fields after outcome, code, reason, err and source. */
  refusedFields: object;
}

type DataCallback = (err?: Error | null, message?: string) => void;

/** Takes in one DATA stream (smtp-server's onData) and answers `callback` once it has settled. */
export function takeInData<T>(
  settings: IntakeSettings,
  stream: SMTPServerDataStream,
  session: SMTPServerSession,
  callback: DataCallback,
  handover: Handover<T>,
): void {
  const { source, limits, guard, logger, metrics, inFlight } = settings;
  // The wait a client sees: from its final dot to our reply.
  let replied: ((code: number) => void) | undefined;
  stream.once('end', () => (replied = metrics.timeReply(source)));
  const data = guardedData(stream, {
    bareLineEndings: limits.bare_line_endings,
    maxReceivedHeaders: limits.max_received_headers,
    onBytes: guard.data(stream, session),
  });
  const stored = handover.store(data);
  inFlight.add(stored);
  void stored.finally(() => inFlight.delete(stored)).catch(() => undefined);
  stored.then(
    (result) => {
      const accepted = handover.accepted(result);
      logger.info(accepted.logFields, accepted.logMessage);
      metrics.inc('mailgate_messages_total', { source, outcome: accepted.outcome });
      if (accepted.bytes !== undefined) metrics.inc('mailgate_message_bytes_total', { source }, accepted.bytes);
      accepted.afterCount?.();
      replied?.(250);
      callback(null, `2.0.0 Ok: queued as ${accepted.id}`);
    },
    (err: unknown) => {
      // Ingest refuses with an error that has an SMTP reply; anything else is ours, and the client tries again.
      const e = asMailgateError(err);
      logger[e.responseCode >= 500 ? 'info' : 'error'](
        { outcome: 'refused', code: e.responseCode, reason: e.code, err: e.cause ?? e, source, ...handover.refusedFields },
        e.message,
      );
      metrics.inc('mailgate_messages_total', { source, outcome: 'refused' });
      if (settings.countRefusalsByCode) metrics.inc('mailgate_refusals_total', { code: String(e.responseCode) });
      replied?.(e.responseCode);
      callback(e);
    },
  );
}
