/**
 * The dispatcher: works the durable queue (storage/queue.ts). Each entry is attempted when
 * due, at most `[queue] concurrency` at once; after an attempt the entry is saved before
 * anything else, so a recipient the server accepted is never sent again. Temporary failures
 * wait on the retry schedule (with jitter); past `give_up_after`, or on a permanent reply,
 * recipients fail and a delivery status notification goes back to the sender. A restart
 * picks the queue up from the store where it stopped.
 *
 * On a store several nodes share (`store.queueClaims.shared`, PostgreSQL), any node may deliver
 * any entry, one node at a time: the dispatcher polls for due entries and claims them for a
 * lease, claims a new entry before its first attempt, renews its claims while attempts run,
 * records an attempt only while the claim is still its own, and gives its claims up when it
 * stops. A dead node's claims expire and another node takes its entries over.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { QueueClaims, Store } from '../../storage/store.js';
import type { DeliveryRecord, MessageMeta, QueueEntry } from '../../storage/records.js';
import { newMessageId } from '../../storage/ids.js';
import { outcomeOf } from '../../storage/queue.js';
import type { Stage } from '../../policy/chain/stage.js';
import type { AliasConfig } from '../config/schema.js';
import type { TokenProvider } from '../oauth/tokens.js';
import { ingestMessage } from '../../ingest/ingest.js';
import { Metrics } from '../../lib/metrics.js';
import { hasCode, storeErrors } from '../../lib/errors.js';
import { attemptDelivery, logAttempt, type Attempt } from './attempt.js';
import { outboundEntry } from './entries.js';
import { outboundRouting } from './routes.js';
import { deliveryStatusNotification } from './dsn.js';
import { Transports } from './transports.js';
import type { QueueWorker } from './queue-actions.js';
import { storeForwardingMessage } from '../quarantine-forward/forwarding.js';

export interface DispatcherDeps {
  store: Store;
  config: Config;
  logger: Logger;
  /** Policy stages (for the notifications the dispatcher stores and sends). */
  stages: (department?: string) => readonly Stage[];
  metrics?: Metrics;
  /** OAuth token providers, for aliases that send with XOAUTH2. */
  tokens?: (alias: AliasConfig) => TokenProvider | undefined;
  /** Shared queue: how long a claim on an entry lasts without renewal (a dead node's entries wait this long). Default 30 s. */
  claimLeaseMs?: number;
  /** Shared queue: how often due entries are polled for when nothing wakes the dispatcher sooner. Default 3 s. */
  claimPollMs?: number;
}

/** Retried sooner than the schedule when our own store failed to save an attempt. */
const STORE_RETRY_MS = 60_000;
/** How long `stop` waits for deliveries in progress before cutting their connections. */
const STOP_GRACE_MS = 5000;
// setTimeout takes at most a signed 32-bit delay.
const MAX_TIMER_MS = 2 ** 31 - 1;
/** New entries kept in memory with their metadata until their first attempt; beyond this many (a backlog), that attempt reads them from the store. */
const MAX_FRESH = 10_000;
/** Bytes of new messages kept in memory as stored for their first attempt; beyond this, that attempt reads them from the store. */
const MAX_FRESH_BYTES = 32 * 1024 * 1024;
/** A shared queue's claim lease, as the issue's mailbox `lease_ttl`: long enough for a pause, short enough for a takeover. */
const CLAIM_LEASE_MS = 30_000;
const CLAIM_POLL_MS = 3000;

export class Dispatcher implements QueueWorker {
  readonly #deps: DispatcherDeps;
  readonly #transports: Transports;
  readonly #metrics: Metrics;
  readonly #log: Logger;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #due: string[] = [];
  readonly #active = new Map<string, Promise<void>>();
  // Entries just committed by this process, with their message's metadata: their first attempt
  // needs neither read from the store. Anything that may change an entry in the store (an
  // admin's retry or drop) forgets it here, so the store stays the truth.
  readonly #fresh = new Map<string, { entry: QueueEntry; meta: MessageMeta | undefined; raw: Buffer | undefined }>();
  // The bytes of the `raw`s in #fresh.
  #freshBytes = 0;
  #stopped = false;
  // A shared queue only (undefined on a store of one node).
  readonly #claims: QueueClaims | undefined;
  readonly #claimLeaseMs: number;
  // Entries this node holds a claim on, as claimed: claimed by a poll and waiting for a slot, or
  // being attempted. Renewed together; forgotten when the attempt's run ends (its last write
  // released the claim) or when a renewal finds a waiting one lost.
  readonly #holding = new Map<string, QueueEntry>();
  #polling: Promise<void> | undefined;
  #pollAgain = false;
  #pollTimer: NodeJS.Timeout | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  // Entries an admin on another node retried while this node was attempting them: the next attempt is at once.
  readonly #retryAsked = new Set<string>();

  constructor(deps: DispatcherDeps) {
    this.#deps = deps;
    this.#transports = new Transports(deps.tokens);
    this.#metrics = deps.metrics ?? new Metrics();
    this.#log = deps.logger.child({ component: 'dispatcher' });
    this.#claims = deps.store.queueClaims.shared ? deps.store.queueClaims : undefined;
    this.#claimLeaseMs = deps.claimLeaseMs ?? CLAIM_LEASE_MS;
  }

  /** Loads the queue and schedules every entry. Held entries are tried once at start: the configuration may have changed. */
  async start(): Promise<void> {
    if (this.#claims) return this.#startShared();
    const entries = await this.#deps.store.listQueue();
    for (const entry of entries) this.#schedule(entry, true);
    this.#log.info({ queued: entries.length, held: entries.filter((e) => e.held).length }, `dispatcher started with ${entries.length} queued message(s)`);
  }

  /** A new entry, just committed with its message (whose metadata and bytes, when given, are as committed). */
  queued(entry: QueueEntry, meta?: MessageMeta, raw?: Buffer): void {
    if (this.#stopped) return;
    if (this.#fresh.size < MAX_FRESH && entry.held === undefined) {
      const keep = meta && raw && this.#freshBytes + raw.length <= MAX_FRESH_BYTES ? raw : undefined;
      this.#forgetFresh(entry.id);
      this.#fresh.set(entry.id, { entry, meta, raw: keep });
      this.#freshBytes += keep?.length ?? 0;
    }
    this.#schedule(entry, false);
  }

  /** The fresh entry `id` with what it was queued with, if any, no longer kept. */
  #forgetFresh(id: string): { entry: QueueEntry; meta: MessageMeta | undefined; raw: Buffer | undefined } | undefined {
    const fresh = this.#fresh.get(id);
    if (!fresh) return undefined;
    this.#fresh.delete(id);
    this.#freshBytes -= fresh.raw?.length ?? 0;
    return fresh;
  }

  /**
   * Stops scheduling and lets attempts in progress finish for a few seconds; then closes the
   * connections, which fails what is still sending as a temporary error, recorded and retried
   * at the next start (a recipient is never marked delivered without the server's 250).
   */
  async stop(graceMs = STOP_GRACE_MS): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#pollTimer);
    await this.#polling;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    this.#fresh.clear();
    this.#freshBytes = 0;
    const settled = Promise.allSettled([...this.#active.values()]);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([settled, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    this.#transports.close();
    await settled;
    clearInterval(this.#renewTimer);
    // What this node claimed and never started goes back to the fleet now, not after the lease.
    const waiting = [...this.#holding.keys()];
    this.#holding.clear();
    if (this.#claims && waiting.length > 0) {
      await this.#claims
        .release(waiting)
        .catch((err: unknown) =>
          this.#log.warn({ err, queued: waiting.length }, 'could not give up claims on queued messages; other nodes take them when the claims expire'),
        );
    }
  }

  // An admin's retry and drop (queue-actions.ts) tell the running dispatcher through these.

  isSending(id: string): boolean {
    return this.#active.has(id);
  }

  forget(id: string): void {
    this.#forgetFresh(id);
    this.#unschedule(id);
  }

  tryNow(entry: QueueEntry): void {
    this.#forgetFresh(entry.id);
    this.#schedule(entry, true);
  }

  retryAsked(id: string): void {
    if (this.#active.has(id)) this.#retryAsked.add(id);
  }

  dropped(entry: QueueEntry): void {
    this.#metrics.inc('mailgate_queue_finished_total', { kind: entry.kind, status: 'dropped' });
    this.#log.warn(
      { msg_id: entry.id, pending: entry.recipients.filter((r) => r.status === 'pending').map((r) => r.address) },
      'queued message dropped by an admin',
    );
  }

  #schedule(entry: QueueEntry, includeHeld: boolean): void {
    if (this.#stopped) return;
    this.#unschedule(entry.id);
    if (entry.held !== undefined && !includeHeld) return;
    const delay = includeHeld && entry.held !== undefined ? 0 : Math.max(0, Date.parse(entry.nextAttemptAt) - Date.now());
    const timer = setTimeout(
      () => {
        this.#timers.delete(entry.id);
        this.#due.push(entry.id);
        this.#pump();
      },
      Math.min(delay, MAX_TIMER_MS),
    );
    this.#timers.set(entry.id, timer);
  }

  #unschedule(id: string): void {
    const timer = this.#timers.get(id);
    if (timer) clearTimeout(timer);
    this.#timers.delete(id);
  }

  #pump(): void {
    while (!this.#stopped && this.#active.size < this.#deps.config.queue.concurrency && this.#due.length > 0) {
      const id = this.#due.shift()!;
      if (this.#active.has(id)) continue;
      const run = this.#run(id)
        .catch((err: unknown) => {
          if (hasCode(err, 'QUEUE_CLAIM_LOST')) {
            this.#log.warn(
              { msg_id: id },
              "this node's claim on the queued message expired and another node took it: this attempt is not recorded, the node holding it retries",
            );
            return;
          }
          if (this.#claims) {
            // Its claim is no longer renewed: any node tries it again once the claim expires.
            this.#log.error({ err, msg_id: id }, 'a delivery attempt failed in mailgate itself; trying again once its claim expires');
            return;
          }
          this.#log.error({ err, msg_id: id }, 'a delivery attempt failed in mailgate itself; trying again in a minute');
          void this.#deps.store.getQueueEntry(id).then(
            (e) => e && this.#schedule({ ...e, nextAttemptAt: new Date(Date.now() + STORE_RETRY_MS).toISOString() }, false),
            () => undefined,
          );
        })
        .finally(() => {
          this.#active.delete(id);
          this.#holding.delete(id);
          this.#retryAsked.delete(id);
          this.#pump();
          this.#wake();
        });
      this.#active.set(id, run);
    }
  }

  async #run(id: string): Promise<void> {
    const { store, config } = this.#deps;
    const fresh = this.#forgetFresh(id);
    let claimed = this.#holding.get(id);
    if (this.#claims && !claimed) {
      // A new entry (or an admin's retry): another node may have polled it meanwhile, or even
      // attempted it already, so the entry as claimed is the truth, not the one kept in memory.
      const got = await this.#claims.claim(id, this.#claimLeaseMs, { onlyIfDue: true });
      if (got) this.#holding.set(id, got);
      // This node's own poll may have claimed it while we asked (its start is skipped while this
      // run is active): then it is ours all the same, and this run is the one to attempt it.
      claimed = this.#holding.get(id);
      if (!claimed) return; // another node holds it, or it was attempted, dropped or sent meanwhile
    }
    const entry = claimed ?? fresh?.entry ?? (await store.getQueueEntry(id));
    if (!entry) return; // dropped meanwhile
    // A forward to the quarantine mailbox is queued with the message it forwards, and made here.
    const meta =
      fresh?.meta ?? (await store.getMessage(id)) ?? (entry.quarantine ? await storeForwardingMessage({ store, config, logger: this.#log }, entry) : undefined);
    if (!meta) {
      this.#log.error({ msg_id: id }, 'queued message has no stored message; removing it from the queue');
      await this.#finishEntry(entry.id, {
        kind: entry.kind,
        status: 'failed',
        finishedAt: new Date().toISOString(),
        attempts: entry.attempts,
        recipients: entry.recipients,
        reason: 'the stored message is gone',
      });
      return;
    }
    const before = new Map(entry.recipients.filter((r) => r.status === 'pending').map((r) => [r.address, r.attempts]));
    const attempt = await attemptDelivery({ store, config, transports: this.#transports, logger: this.#log }, entry, meta, {
      saveProgress: (e) => this.#save(e, false),
      ...(fresh?.raw ? { raw: fresh.raw } : {}),
    });
    let next = attempt.entry;
    const pending = next.recipients.filter((r) => r.status === 'pending');
    // Saved first, counted and logged after (attempt.ts: the window before the record is the one to keep small).
    if (pending.length === 0) return this.#finish(next, meta, attempt, before);
    if (next.held !== undefined && next.attempts === entry.attempts) {
      // Nothing could be tried: it waits for an admin (config change and restart, or `queue retry`).
      await this.#save(next, true);
      this.#log.warn({ msg_id: id, reason: next.held }, 'queued message held: no route to send it');
      return;
    }
    const age = Date.now() - Date.parse(next.queuedAt);
    if (age >= config.queue.give_up_after * 1000) {
      const at = new Date().toISOString();
      const hours = Math.round(age / 360_000) / 10;
      for (const r of pending) {
        r.status = 'failed';
        r.last = {
          at,
          ...(r.last?.code ? { code: r.last.code } : {}),
          message: `gave up after ${next.attempts} attempts in ${hours} hours; last: ${r.last?.message ?? 'no reply'}`,
          permanent: true,
        };
      }
      return this.#finish(next, meta, attempt, before);
    }
    const asked = this.#retryAsked.delete(id);
    next = { ...next, nextAttemptAt: new Date(Date.now() + (asked ? 0 : this.#retryDelay(next.attempts))).toISOString() };
    await this.#save(next, true);
    this.#reportAttempt(attempt, before);
    // A shared queue's entry is polled for by every node when it is due.
    if (!this.#claims) this.#schedule(next, false);
  }

  /**
   * Saves an attempt's progress or outcome (`release`: the attempt is over). On a shared
   * queue only while this node still holds the claim: otherwise the node that took it over
   * retries, and this attempt's result is dropped (QUEUE_CLAIM_LOST).
   */
  async #save(entry: QueueEntry, release: boolean): Promise<void> {
    if (!this.#claims) return this.#deps.store.putQueueEntries([entry]);
    if (!(await this.#claims.saveClaimed(entry, { release }))) throw storeErrors.queueClaimLost(entry.id);
  }

  /** Takes an entry out of the queue with its outcome; on a shared queue only while this node holds its claim. */
  async #finishEntry(id: string, delivery: DeliveryRecord): Promise<void> {
    if (!this.#claims) return this.#deps.store.finishQueueEntry(id, delivery);
    if (!(await this.#claims.finishClaimed(id, delivery))) throw storeErrors.queueClaimLost(id);
  }

  /** Counts and logs an attempt, once it is on record. */
  #reportAttempt(attempt: Attempt, before: Map<string, number>, outcome?: string): void {
    this.#count(attempt.entry, before);
    if (attempt.transactions.length > 0) logAttempt(this.#log, attempt.entry.id, attempt, outcome);
  }

  /** The wait before retry number `attempts` (1 after the first attempt): the schedule's entry, moved by the jitter. */
  #retryDelay(attempts: number): number {
    const { retry_intervals: steps, retry_jitter: jitter } = this.#deps.config.queue;
    const base = steps[Math.min(Math.max(attempts, 1), steps.length) - 1]! * 1000;
    return Math.round(base * (1 + jitter * (2 * Math.random() - 1)));
  }

  /** Counts what this attempt did to the recipients that were pending before it. */
  #count(next: QueueEntry, before: Map<string, number>): void {
    for (const r of next.recipients) {
      const attempts = before.get(r.address);
      if (attempts === undefined || r.attempts === attempts) continue;
      this.#metrics.inc('mailgate_outbound_recipients_total', { kind: next.kind, result: r.status === 'pending' ? 'deferred' : r.status });
    }
  }

  /** Takes a finished entry out of the queue, recording the outcome; a failure goes back to the sender as a notification. */
  async #finish(entry: QueueEntry, meta: MessageMeta, attempt: Attempt, before: Map<string, number>): Promise<void> {
    const { store, config } = this.#deps;
    const status = outcomeOf(entry);
    const record: DeliveryRecord = {
      kind: entry.kind,
      status,
      finishedAt: new Date().toISOString(),
      attempts: entry.attempts,
      recipients: entry.recipients,
      ...(entry.lastError && status !== 'delivered' ? { reason: entry.lastError.message } : {}),
    };
    const failed = entry.recipients.filter((r) => r.status === 'failed');
    // Never a notification about a notification (null sender): that is how loops start. And
    // none that could not be sent either (relayed mail with no default SMTP to return it by).
    const dsnRoute = outboundRouting(config, entry.alias).route;
    const notify = failed.length > 0 && entry.mailFrom !== '' && !entry.dsn;
    if (!notify || !dsnRoute) {
      const why = notify ? { reason: `${record.reason ? `${record.reason}; ` : ''}no delivery status notification: no server to send it through` } : {};
      await this.#finishEntry(entry.id, { ...record, ...why });
      this.#reportAttempt(attempt, before, status);
    } else {
      const dsnId = newMessageId();
      const alias = config.alias.find((a) => a.name === entry.alias);
      const dsnEntry: QueueEntry = {
        ...outboundEntry(dsnId, undefined, { mailFrom: '', rcptTo: [entry.mailFrom] }, new Date(), { dsn: true }),
        ...(entry.alias ? { alias: entry.alias } : {}),
      };
      const dsn = deliveryStatusNotification({
        reportingMta: config.smtp.hostname,
        from: config.queue.dsn_from ?? `MAILER-DAEMON@${config.smtp.hostname}`,
        to: entry.mailFrom,
        ...(meta.messageId ? { originalMessageId: meta.messageId } : {}),
        originalEnvelopeId: entry.id,
        arrivalDate: meta.receivedAt,
        recipients: failed.map((r) => ({
          address: r.address,
          status: 'failed' as const,
          ...(r.last?.code ? { code: r.last.code } : {}),
          message: r.last?.message ?? 'failed',
          ...(r.last?.at ? { lastAttemptAt: r.last.at } : {}),
        })),
        originalHeaders: () => store.openRaw(entry.id),
      });
      const dsnMeta = await ingestMessage({ store, logger: this.#log, stages: this.#deps.stages }, dsn, {
        envelope: { mailFrom: '', rcptTo: [entry.mailFrom] },
        source: { kind: 'dsn', ...(entry.alias ? { alias: entry.alias } : {}) },
        direction: 'outbound',
        ...(alias?.department ? { department: alias.department } : {}),
        id: dsnId,
        // The original leaves the queue in the same commit that stores and queues its notification.
        sideRecords: [
          { type: 'queue-finished', id: entry.id, delivery: { ...record, dsnId }, ...(this.#claims ? { claimed: true as const } : {}) },
          { type: 'queue-entry', entry: dsnEntry },
        ],
        wrapUnparsable: false,
      });
      this.#reportAttempt(attempt, before, status);
      this.#log.info({ msg_id: entry.id, dsn_id: dsnId, to: entry.mailFrom }, 'delivery status notification queued for the sender');
      this.queued(dsnEntry, dsnMeta);
    }
    this.#metrics.inc('mailgate_queue_finished_total', { kind: entry.kind, status });
    // The attempt's line said how it left; this one is for whoever follows the queue itself.
    this.#log.debug(
      { msg_id: entry.id, status, attempts: entry.attempts, failed: failed.map((r) => r.address) },
      `message left the queue: ${status.replace('_', ' ')}`,
    );
  }

  // A shared queue (several nodes on one store).

  /** Held entries are tried once at start, as on one node; everything else comes by polling. */
  async #startShared(): Promise<void> {
    const queued = await this.#deps.store.listQueue();
    // Claims under this node's name are its previous run's (serve holds the name, so no other
    // live process has it: Store.holdNodeName): that run is gone (a crash, a SIGKILL), so they
    // are free now rather than when their lease ends.
    await this.#claims!.release(queued.map((e) => e.id));
    const held = queued.filter((e) => e.held !== undefined);
    for (const entry of held) this.#schedule(entry, true);
    // Renewed three times per lease: a renewal late or lost to a database hiccup still leaves time.
    this.#renewTimer = setInterval(() => void this.#renewClaims(), Math.max(1, Math.floor(this.#claimLeaseMs / 3)));
    this.#log.info(
      { held: held.length, claim_lease_ms: this.#claimLeaseMs },
      'dispatcher started on a queue shared with other nodes: delivering what this node claims',
    );
    this.#wake();
  }

  /** Polls for due entries now (or right after the poll in progress), and then every few seconds. */
  #wake(): void {
    if (!this.#claims || this.#stopped) return;
    if (this.#polling) {
      this.#pollAgain = true;
      return;
    }
    clearTimeout(this.#pollTimer);
    this.#polling = this.#poll().finally(() => {
      this.#polling = undefined;
      if (this.#pollAgain) {
        this.#pollAgain = false;
        this.#wake();
      } else if (!this.#stopped) {
        this.#pollTimer = setTimeout(() => this.#wake(), this.#deps.claimPollMs ?? CLAIM_POLL_MS);
      }
    });
  }

  /** Claims as many due entries as there are free slots, and starts them. */
  async #poll(): Promise<void> {
    const claims = this.#claims!;
    const free = this.#deps.config.queue.concurrency - this.#active.size - this.#due.length;
    if (free <= 0) return;
    let claimed: Awaited<ReturnType<QueueClaims['claimDue']>>;
    try {
      claimed = await claims.claimDue(free, this.#claimLeaseMs);
    } catch (err) {
      this.#log.warn({ err }, 'could not claim due messages from the shared queue; polling again in a few seconds');
      return;
    }
    for (const { entry, tookOverFrom } of claimed) {
      // An expired claim of this node's own (one it is still attempting, its renewal late) is
      // only renewed by the poll: no other node is taken over from.
      if (tookOverFrom !== undefined && !this.#holding.has(entry.id))
        this.#log.warn({ msg_id: entry.id, from_node: tookOverFrom }, 'taking over a queued message whose claim by another node expired');
      this.#unschedule(entry.id);
      this.#holding.set(entry.id, entry);
      this.#due.push(entry.id);
    }
    this.#pump();
  }

  /** Keeps this node's claims alive while it holds them (an attempt can take minutes on a slow server). */
  async #renewClaims(): Promise<void> {
    const ids = [...this.#holding.keys()];
    if (ids.length === 0 || !this.#claims) return;
    let kept: Set<string>;
    try {
      kept = new Set(await this.#claims.renew(ids, this.#claimLeaseMs));
    } catch (err) {
      this.#log.warn({ err, claims: ids.length }, 'could not renew claims on queued messages; trying again');
      return;
    }
    for (const id of ids) {
      // One being attempted learns it when it saves (QUEUE_CLAIM_LOST); one waiting is not started.
      if (kept.has(id) || this.#active.has(id) || !this.#holding.has(id)) continue;
      this.#holding.delete(id);
      this.#log.debug({ msg_id: id }, 'claim on a waiting queued message lost to another node');
    }
  }
}
