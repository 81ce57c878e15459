/**
 * A long backfill's progress (issue 15): a mailbox with more messages waiting than one poll
 * takes (`max_items`), first brought in or after an outage, is worked poll after poll. Its
 * tracker counts what is done and left, the rate over the last minute and the time left, for
 * the log (a line every 30 s and one at the end, never one per message), `aliases list`, the
 * console (a `backfill-progress` event at most every few seconds) and the
 * `mailgate_mailbox_waiting_messages` gauge. It is told only at each poll's listing and end, and
 * reads the poll's live count of stored messages in between, so the fetching code is untouched.
 */
import type { Metrics } from '../../lib/metrics.js';
import type { GatewayEvents } from '../events.js';

/** A mailbox's backlog being worked, as an admin reads it (AliasRow.backfill, the log line). */
export interface Backfill {
  /** Messages stored since the backlog began. */
  done: number;
  /** Messages waiting: those listed by the last poll, less those stored since (held for inactive aliases not counted). */
  left: number;
  /** done + left: grows when mail arrives during the backfill. */
  total: number;
  /** Messages stored per second over the last minute. */
  ratePerSecond: number;
  /** Seconds until none is left at that rate; absent while nothing was stored in the last minute. */
  etaSeconds?: number;
  /** When the backlog began (ISO 8601). */
  since: string;
}

/** What a tracker reports to. */
export interface BackfillDeps {
  /** The mailbox's leading alias: the gauge's label. */
  alias: string;
  /** The mailbox worker's logger (it names the alias). */
  logger: { info(obj: object, msg?: string): void };
  metrics?: Metrics | undefined;
  events?: GatewayEvents | undefined;
  /** A backlog is more messages waiting than this: the mailbox's `max_items`, what one poll takes. */
  batch: number;
  /** The clock, for tests. */
  now?: () => number;
}

/** The window of the rate: recent enough to follow a slower server, long enough not to jump. */
const RATE_WINDOW_MS = 60_000;
/** Between two progress lines in the log. */
const LOG_EVERY_MS = 30_000;
/** Between two looks at the count: a rate sample, and an event when it changed (the console refreshes on it). */
const TICK_MS = 2_000;

/** One mailbox's backlog: nothing while fewer than a poll's worth wait. */
export class BackfillProgress {
  readonly #deps: BackfillDeps;
  readonly #now: () => number;
  /** When the backlog began; undefined while there is none. */
  #since: number | undefined;
  /** Stored in the backlog's finished polls. */
  #doneBefore = 0;
  /** Waiting at the poll's listing (or, after a poll, what it left). */
  #waiting = 0;
  /** The running poll's count of stored messages, read live. */
  #counting: (() => number) | undefined;
  /** Counts at moments over the last minute, oldest first; the first one at or before the window's start. */
  #samples: { at: number; done: number }[] = [];
  #timer: NodeJS.Timeout | undefined;
  #nextLogAt = 0;
  /** `done` at the last progress line. */
  #logged = 0;
  /** `done` at the last event, and when the next may be sent: the console refetches the page on each. */
  #reported = -1;
  #nextReportAt = 0;

  constructor(deps: BackfillDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
  }

  /**
   * A poll listed the mailbox: WAITING messages to fetch (fresh ones, less those held for
   * inactive aliases); STORED gives the poll's count of messages stored so far. More than a
   * poll's worth begins a backlog; none ends it.
   */
  listed(waiting: number, stored: () => number): void {
    this.#settle();
    this.#gauge(waiting);
    if (this.#since === undefined) {
      if (waiting <= this.#deps.batch) return;
      this.#begin();
    }
    if (waiting === 0) return this.#finish();
    this.#waiting = waiting;
    this.#counting = stored;
  }

  /** The poll ended leaving DEFERRED messages for the next one (held ones not counted): none ends the backlog. */
  polled(deferred: number): void {
    this.#settle();
    this.#gauge(deferred);
    if (this.#since === undefined) return;
    if (deferred === 0) return this.#finish();
    this.#waiting = deferred;
    this.#tick();
  }

  /** The backlog now; undefined when there is none. */
  view(): Backfill | undefined {
    if (this.#since === undefined) return undefined;
    const now = this.#now();
    const current = this.#counting?.() ?? 0;
    const done = this.#doneBefore + current;
    const left = Math.max(0, this.#waiting - current);
    const first = this.#samples[0] ?? { at: this.#since, done: 0 };
    const seconds = (now - first.at) / 1000;
    const ratePerSecond = seconds > 0 ? Math.round(((done - first.done) / seconds) * 10) / 10 : 0;
    return {
      done,
      left,
      total: done + left,
      ratePerSecond,
      ...(ratePerSecond > 0 ? { etaSeconds: Math.round(left / ratePerSecond) } : {}),
      since: new Date(this.#since).toISOString(),
    };
  }

  /** The worker stops: no more ticks (the backlog is found again at the next start). */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #begin(): void {
    const now = this.#now();
    this.#since = now;
    this.#doneBefore = 0;
    this.#samples = [{ at: now, done: 0 }];
    // The first line as soon as there is something to say, then every LOG_EVERY_MS.
    this.#nextLogAt = now;
    this.#logged = 0;
    this.#reported = -1;
    this.#nextReportAt = now;
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
    // A backlog never keeps the process alive.
    this.#timer.unref();
  }

  /** The poll's live count becomes part of what is done. */
  #settle(): void {
    if (!this.#counting) return;
    const stored = this.#counting();
    this.#doneBefore += stored;
    this.#waiting = Math.max(0, this.#waiting - stored);
    this.#counting = undefined;
  }

  #tick(): void {
    const view = this.view();
    if (!view) return;
    const now = this.#now();
    this.#samples.push({ at: now, done: view.done });
    while (this.#samples.length > 1 && this.#samples[1]!.at <= now - RATE_WINDOW_MS) this.#samples.shift();
    // Polls end far more often than every TICK_MS in a fast backfill: events no oftener than that.
    if (view.done !== this.#reported && now >= this.#nextReportAt) {
      this.#reported = view.done;
      this.#nextReportAt = now + TICK_MS;
      this.#report(view);
    }
    this.#gauge(view.left);
    // Nothing stored since the last line (the server down, every alias paused): the failure is logged where it happens, not every 30 s here.
    if (now >= this.#nextLogAt && view.done > this.#logged) {
      this.#nextLogAt = now + LOG_EVERY_MS;
      this.#logged = view.done;
      this.#deps.logger.info(
        {
          backfill: 'progress',
          done: view.done,
          left: view.left,
          rate_per_s: view.ratePerSecond,
          ...(view.etaSeconds !== undefined ? { eta_s: view.etaSeconds } : {}),
        },
        `backfill of alias ${this.#deps.alias}: ${backfillText(view)}`,
      );
    }
  }

  #finish(): void {
    const done = this.#doneBefore;
    const seconds = Math.round((this.#now() - this.#since!) / 1000);
    this.stop();
    this.#since = undefined;
    this.#doneBefore = 0;
    this.#waiting = 0;
    this.#samples = [];
    this.#deps.logger.info(
      { backfill: 'done', done, duration_s: seconds },
      `backfill of alias ${this.#deps.alias} done: ${count(done)} messages in ${duration(seconds)}`,
    );
    this.#report(undefined);
  }

  #report(backfill: Backfill | undefined): void {
    const events = this.#deps.events;
    if (events?.watched) events.report({ type: 'backfill-progress', alias: this.#deps.alias, ...(backfill ? { backfill } : {}) });
  }

  #gauge(waiting: number): void {
    this.#deps.metrics?.set('mailgate_mailbox_waiting_messages', { alias: this.#deps.alias }, waiting);
  }
}

/** "1,200 of 50,000, 180/s, about 4 min left", as the log, `aliases list` and the console say it. */
export function backfillText(b: Backfill): string {
  const rate = b.ratePerSecond > 0 ? `${b.ratePerSecond >= 10 ? Math.round(b.ratePerSecond) : b.ratePerSecond}/s` : 'no message stored in the last minute';
  return `${count(b.done)} of ${count(b.total)}, ${rate}${b.etaSeconds !== undefined ? `, about ${duration(Math.max(1, b.etaSeconds))} left` : ''}`;
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

/** Seconds in words an admin reads at a glance: "45 s", "4 min", "2 h 5 min". */
function duration(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}
