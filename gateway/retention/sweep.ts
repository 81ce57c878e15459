/**
 * The retention sweep (`[retention]`, issue 14): a minute after the gateway starts and then
 * daily, it deletes what is older than the configured ages: quarantined attachments, messages
 * with everything stored for them, audit entries; then it gives their space back. Never a
 * message still in the outbound queue (the store refuses it): it goes at the first sweep after
 * it has left the queue. The retriever's fetched-key records are never deleted, or a mailbox
 * that still holds a message would have it fetched again.
 */
import type { Logger } from 'pino';
import type { Store } from '../../storage/store.js';
import type { Metrics } from '../../lib/metrics.js';
import type { RetentionConfig } from '../config/schema.js';

/** The first sweep waits this long after start: the gateway takes mail first. */
export const FIRST_SWEEP_DELAY_MS = 60_000;
/** Then one sweep a day. */
export const SWEEP_INTERVAL_MS = 86_400_000;

/** What one sweep deleted. */
export interface SweepResult {
  /** The time the ages were counted back from (ISO 8601). */
  at: string;
  /** Messages deleted. */
  messages: number;
  /** Quarantined attachments deleted, by age or with their message. */
  quarantine: number;
  /** Audit entries deleted. */
  audit: number;
  /** Bytes of the messages deleted. */
  bytes: number;
  /** Messages old enough but kept: still in the outbound queue. */
  keptQueued: number;
}

export interface RetentionDeps {
  config: RetentionConfig;
  store: Store;
  logger: Logger;
  metrics: Metrics;
}

/** The sweep of one gateway: started and stopped with it (gateway.ts); `sweep` runs one now. */
export class Retention {
  readonly #deps: RetentionDeps;
  readonly #stop = new AbortController();
  #timer: NodeJS.Timeout | undefined;
  // One sweep at a time: a sweep asked for while one runs starts after it.
  #running: Promise<unknown> = Promise.resolve();

  constructor(deps: RetentionDeps) {
    this.#deps = deps;
  }

  /** Schedules the first sweep a minute from now, then one a day. */
  start(): void {
    const run = (delay: number) => {
      this.#timer = setTimeout(() => {
        void this.sweep().catch(() => {}); // logged by sweep
        if (!this.#stop.signal.aborted) run(SWEEP_INTERVAL_MS);
      }, delay);
      // A pending sweep never keeps the process alive.
      this.#timer.unref();
    };
    run(FIRST_SWEEP_DELAY_MS);
  }

  /**
   * Deletes what is older than the configured ages, counted back from `now` (tests pass a time
   * ahead rather than wait), logs one line with the counts and counts them in the metrics.
   */
  sweep(now: Date = new Date()): Promise<SweepResult> {
    const next = this.#running.then(() => this.#sweepOnce(now));
    this.#running = next.catch(() => {});
    return next;
  }

  /** Cancels the next sweep and stops a running one between messages; resolves once it has stopped. */
  async stop(): Promise<void> {
    this.#stop.abort();
    clearTimeout(this.#timer);
    await this.#running;
  }

  async #sweepOnce(now: Date): Promise<SweepResult> {
    const { config, store, logger, metrics } = this.#deps;
    const signal = this.#stop.signal;
    const started = Date.now();
    const ago = (ms: number) => new Date(now.getTime() - ms);
    const result: SweepResult = { at: now.toISOString(), messages: 0, quarantine: 0, audit: 0, bytes: 0, keptQueued: 0 };
    try {
      // Quarantine first, so an attachment counts once whether its age or its message's takes it.
      if (config.quarantine !== undefined && !signal.aborted) result.quarantine += await deleteQuarantinedBefore(store, ago(config.quarantine), signal);
      if (config.messages !== undefined && !signal.aborted) {
        const deleted = await store.deleteMessagesBefore(ago(config.messages), { signal });
        result.messages = deleted.messages;
        result.quarantine += deleted.quarantined;
        result.bytes = deleted.bytes;
        result.keptQueued = deleted.queued;
      }
      if (!signal.aborted) result.audit = await store.deleteAuditBefore(ago(config.audit));
      // Deleted keys keep their space in LevelDB's files until compacted.
      if (result.messages + result.quarantine + result.audit > 0) await store.compact();
    } catch (err) {
      logger.error({ err, retention: counts(result) }, 'retention sweep failed; it runs again tomorrow');
      throw err;
    } finally {
      metrics.inc('mailgate_retention_deleted_total', { kind: 'message' }, result.messages);
      metrics.inc('mailgate_retention_deleted_total', { kind: 'quarantine' }, result.quarantine);
      metrics.inc('mailgate_retention_deleted_total', { kind: 'audit' }, result.audit);
    }
    logger.info(
      { retention: counts(result), ms: Date.now() - started, ...(signal.aborted ? { stopped: true } : {}) },
      `retention sweep: deleted ${result.messages} message(s) (${result.bytes} bytes), ${result.quarantine} quarantined attachment(s), ${result.audit} audit entr${result.audit === 1 ? 'y' : 'ies'}; kept ${result.keptQueued} still queued`,
    );
    return result;
  }
}

/** The quarantined attachments quarantined before `before`, deleted one by one; how many. */
async function deleteQuarantinedBefore(store: Store, before: Date, signal: AbortSignal): Promise<number> {
  let deleted = 0;
  for (const record of await store.listQuarantine()) {
    if (signal.aborted) break;
    if (!(Date.parse(record.date) < before.getTime())) continue;
    try {
      await store.deleteQuarantined(record.id);
      deleted++;
    } catch (err) {
      // Restored or deleted by an admin meanwhile: nothing left to do for it.
      if ((err as { code?: string }).code !== 'QUARANTINE_NOT_FOUND') throw err;
    }
  }
  return deleted;
}

function counts(r: SweepResult) {
  return { messages: r.messages, quarantine: r.quarantine, audit: r.audit, bytes: r.bytes, kept_queued: r.keptQueued };
}
