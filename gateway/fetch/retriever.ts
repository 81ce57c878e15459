/**
 * The retriever: brings mail in from each active alias's `[alias.incoming]` mailbox through
 * ingestMessage, exactly once. The mailbox key (IMAP UIDVALIDITY:UID, POP3 UIDL) is recorded in
 * the store with the message, in its one commit (a `fetched` side record); only then is the message moved or
 * deleted, so after a crash at any point a message found again gets only its post-store action.
 * One worker per mailbox; a failing mailbox never holds up another. Within a poll, IMAP messages
 * up to `lightweight_size` and larger ones are fetched at once over two sessions (CCaaS). `max_items` bounds one
 * batch, not the rate: a poll that stopped at it is followed by the next at once.
 */
import { Readable } from 'node:stream';
import type { AliasConfig, Config, IncomingServerConfig } from '../config/schema.js';
import { ingestMessage, type IngestDeps, type IngestRequest } from '../../ingest/ingest.js';
import { hasCode, hasReply } from '../../lib/errors.js';
import { newMessageId } from '../../storage/ids.js';
import type { AliasState, AliasStatus, FetchedKey, FetchedRecord, MessageMeta, QueueEntry } from '../../storage/records.js';
import type { Leases, SideRecord } from '../../storage/store.js';
import type { Metrics } from '../../lib/metrics.js';
import { ImapMailbox } from './imap.js';
import { Pop3Mailbox } from './pop3/mailbox.js';
import { oversizeRecord } from './oversize.js';
import { headerBlock, type Mailbox, type MailboxItem } from './mailbox.js';
import { ByteBudget, acquireAll } from './byte-budget.js';
import { RESOLVED_TAG, UNKNOWN_RECIPIENT_TAG, autoReply } from '../auto-reply/auto-reply.js';
import { addressedTo, mailboxIdentity, needsTargets, targetsFor, type DeliveryTarget } from './recipients.js';
import { AliasHealth } from './alias-health.js';
import { fetchFailureKind } from './failures.js';
import type { TokenProvider } from '../oauth/tokens.js';
import { plaintextOverNetwork } from '../config/incoming.js';
import { BackfillProgress, type Backfill } from './progress.js';
import type { GatewayEvents } from '../events.js';
import { LeaseKeeper } from './lease-keeper.js';

/**
 * A range (one IMAP UID FETCH, one run of pipelined POP3 RETRs) holds up to this many times the
 * mailbox's `bytes_in_flight`. The bytes in memory are bounded by the byte budgets whatever the
 * range's size (imapflow and the POP3 session leave what is not yet taken in the network); a
 * range's size bounds what a stop or a failure in its middle has to read and throw away before
 * the session's next command, and how often the session pays a round trip between ranges (at
 * 40 ms round trips, ranges of 8 MiB cost a tenth of the IMAP fetch's time). While a second
 * IMAP session takes large messages too, ranges stay at the bound, so the two share them.
 */
const RANGE_BOUNDS = 4;

/** What the lanes of one poll share: messages taken and being fetched (for `max_items`), and whether one failed. */
interface Lanes {
  taken: number;
  inFlight: number;
  /** Lanes taking messages now: with two, ranges stay at the byte bound so both sessions share the large ones. */
  running: number;
  failed: boolean;
  /** Told each time a lane took messages: the poll may then open a second session. */
  took?: () => void;
}

/**
 * Messages of a poll waiting to be taken, in order: the lanes take from the front, so when the
 * lightweight lane has no small message left it helps with the large ones (the second session
 * costs round trips to open, and would leave the first one idle meanwhile).
 */
interface Waiting {
  readonly items: readonly MailboxItem[];
  /** The first not yet taken by a lane. */
  next: number;
}

/** What became of one message: see MailboxWorker.#fetch. */
type Outcome = 'stored' | 'invalid' | 'held';

/** What the stores a lane started share: those still running, the first failure, and the messages refused for good while a range was on the wire. */
interface LaneRun {
  pending: Set<Promise<void>>;
  failure: unknown;
  refused: MailboxItem[];
}

/** Where a message's bytes come from: read whole within a range, or streamed on its own from the session. */
interface MessageSource {
  headers(): Promise<Buffer>;
  body(): Promise<Readable>;
  /** The bytes again, for a message held whole in memory: ingest then spools nothing (ingest.ts `reopen`). */
  reopen?: () => Readable;
}

/** Test seams: a test simulates a crash by throwing from `afterStore`, and waits for polls with `afterPoll`. */
export interface RetrieverHooks {
  /** Called after a message (or its over-size record) is durable and before its post-store action. */
  afterStore?(alias: string, item: MailboxItem): void | Promise<void>;
  /** Called after each poll that completed. */
  afterPoll?(alias: string, result: PollResult): void;
  /** Told the bytes of fetched messages the mailbox holds in memory, at each change (`[alias.incoming] bytes_in_flight`). */
  bytesInFlight?(alias: string, bytes: number): void;
}

/** The lease a worker fetches under, with several nodes on one store (lease-keeper.ts). */
interface WorkerLease {
  lease: { mailbox: string; epoch: number };
  leases: Leases;
  /** The former worker of this mailbox on this node, still stopping: this one starts after it. */
  after: Promise<void> | undefined;
  /** Tells the keeper the lease is gone (a confirm failed, a commit was refused). */
  lost(): void;
}

/** What one poll did. */
export interface PollResult {
  /** Messages stored in this poll (over-size records included). */
  stored: number;
  /** Messages found already stored that got their post-store action again. */
  finished: number;
  /** Messages left for the next poll by `max_items`; when there are any, it begins at once. */
  deferred: number;
  /** Messages left in the mailbox untouched because every alias they are for is inactive. */
  held: number;
}

/** What the retriever needs. */
export interface RetrieverDeps extends IngestDeps {
  config: Config;
  /** The running dispatcher, told about auto-replies queued (gateway/auto-reply/). */
  dispatcher?: { queued(entry: QueueEntry): void } | undefined;
  metrics?: Metrics;
  hooks?: RetrieverHooks;
  /** The alias's OAuth2 token provider when it sets `oauth2` (gateway/oauth/store.ts aliasTokenProviders). */
  tokenProvider?: (alias: AliasConfig) => TokenProvider | undefined;
  /** Where a backfill's progress is reported live (the console's aliases page). */
  events?: GatewayEvents;
}

/** The running retriever. */
export interface Retriever {
  /**
   * Names of the mailboxes being fetched, each by its leading alias (the first configured
   * active one). With several nodes on one store, only those whose lease this node holds.
   */
  readonly aliases: readonly string[];
  /** Stops every worker; waits for the message being fetched to be stored, then closes the sessions. */
  stop(): Promise<void>;
  /**
   * An admin's `mailgate aliases activate|deactivate`: persisted, and the worker of the alias's
   * mailbox is woken (it connects, or closes its session and pauses once none of its aliases is
   * active) without a restart. Undefined when the retriever does not run the alias (then the
   * caller records the change in the store itself).
   */
  setStatus(alias: string, status: AliasStatus): Promise<AliasState | undefined>;
  /**
   * Several nodes, after notices may have been missed: of STATES (as recorded in the store, by
   * alias), the admin changes to aliases this node fetches that it has not applied are taken
   * in, their workers woken; returns them, by alias name.
   */
  catchUp(states: Readonly<Record<string, AliasState>>): Promise<Map<string, AliasState>>;
  /** The backlog of the alias's mailbox being worked (progress.ts); undefined when there is none or the retriever does not run the alias. */
  backfill(alias: string): Backfill | undefined;
}

/**
 * Starts one worker per mailbox: aliases whose `[alias.incoming]` name the same mailbox share
 * it, so a message for several of them is fetched once and stored once per alias (CCaaS). A
 * mailbox is fetched while at least one of its aliases is active; each keeps its own status.
 */
export function startRetriever(deps: RetrieverDeps): Retriever {
  const groups = new Map<string, AliasConfig[]>();
  for (const a of deps.config.alias.filter((a) => a.incoming)) {
    const key = mailboxIdentity(a);
    groups.set(key, [...(groups.get(key) ?? []), a]);
  }
  // Aliases with status = "inactive" in the file stay in their mailbox's group, so their mail
  // is recognised and left in the mailbox rather than taken for another alias; a mailbox none
  // of whose aliases can ever be active (until the file changes) is not fetched at all.
  const fetched = [...groups.entries()].filter(([, group]) => group.some((a) => a.status === 'active'));
  // `[retriever] bytes_in_flight`: one bound on the fetched bytes in memory over all mailboxes.
  const shared = new ByteBudget(deps.config.retriever.bytes_in_flight);
  /** The workers running, by mailbox identity. */
  const workers = new Map<string, MailboxWorker>();
  /** Workers of mailboxes whose lease went, until they have stopped: a worker for the same mailbox waits for them. */
  const stopping = new Map<string, Promise<void>>();
  const { leases } = deps.store;
  let keeper: LeaseKeeper | undefined;
  if (!leases.shared) {
    // One node on its own store (LevelDB): it fetches every mailbox, with no lease rounds.
    for (const [mailbox, group] of fetched) workers.set(mailbox, new MailboxWorker(deps, group, shared));
  } else {
    const byMailbox = new Map(fetched);
    const lose = (mailbox: string) => {
      const worker = workers.get(mailbox);
      if (!worker) return;
      workers.delete(mailbox);
      const stopped = worker.stop().finally(() => {
        if (stopping.get(mailbox) === stopped) stopping.delete(mailbox);
      });
      stopping.set(mailbox, stopped);
    };
    const lease = new LeaseKeeper({
      leases,
      mailboxes: [...byMailbox.keys()],
      ttlMs: deps.config.retriever.lease_ttl,
      logger: deps.logger,
      aliasOf: (mailbox) => byMailbox.get(mailbox)!.find((a) => a.status === 'active')!.name,
      taken({ mailbox, epoch }) {
        lose(mailbox);
        workers.set(
          mailbox,
          new MailboxWorker(deps, byMailbox.get(mailbox)!, shared, {
            lease: { mailbox, epoch },
            leases,
            after: stopping.get(mailbox)?.catch(() => {}),
            lost: () => {
              keeper?.dropped({ mailbox, epoch });
            },
          }),
        );
      },
      lost: ({ mailbox }) => lose(mailbox),
    });
    keeper = lease;
    lease.start();
  }
  const running = () => [...workers.values()];
  return {
    get aliases() {
      return running().map((w) => w.alias.name);
    },
    async stop() {
      // No new lease first, then every worker finishes its message, then the leases go back.
      await keeper?.stop();
      await Promise.all([...running().map((w) => w.stop()), ...stopping.values()]);
      await keeper?.release();
    },
    async setStatus(alias, status) {
      const worker = running().find((w) => w.runs(alias));
      return worker ? worker.setStatus(alias, status) : undefined;
    },
    async catchUp(states) {
      const applied = new Map<string, AliasState>();
      for (const worker of running()) for (const [alias, state] of await worker.catchUp(states)) applied.set(alias, state);
      return applied;
    },
    backfill: (alias) =>
      running()
        .find((w) => w.runs(alias))
        ?.progress.view(),
  };
}

/** Key of one stored copy: the alias it is for, and the recipient with `split_recipients`. */
function targetKey(target: DeliveryTarget, item: MailboxItem): FetchedKey {
  return { alias: target.alias.name, key: target.recipient ? `${item.key}#${target.recipient}` : item.key };
}

/** Whether an alias receives mail now: active, or inactive by the retriever with its timed retry due (alias-health.ts). */
function receiving(health: AliasHealth | undefined): boolean {
  return health !== undefined && health.holdMs() === 0;
}

/**
 * The worker of one mailbox and every alias that fetches it. The leading alias (the first
 * configured with status = "active") gives the mailbox settings and names the mailbox key of a
 * stored message; each alias keeps its own health (alias-health.ts), so each has its own
 * status: the mailbox is fetched while any of them is active, a message is stored for the
 * active ones it is addressed to, and a message whose aliases are all inactive stays in the
 * mailbox untouched until one of them is active again.
 */
class MailboxWorker {
  /** The leading alias. */
  readonly alias: AliasConfig;
  readonly #server: IncomingServerConfig;
  /** Every alias of the mailbox in configured order, those inactive in the file included (they never receive). */
  readonly #group: readonly AliasConfig[];
  readonly #log: IngestDeps['logger'];
  #stopping = false;
  #wake: (() => void) | undefined;
  #woken = false;
  /** The health of each alias with status = "active" in the file, by name. */
  readonly #healths: Promise<Map<string, AliasHealth>>;
  /** Waiting messages whose aliases were all inactive when last looked at, by mailbox key: not read again until one is active. */
  readonly #held = new Map<string, readonly AliasConfig[]>();
  readonly #running: Promise<void>;
  /** The mailbox's backlog, when more wait than one poll takes (issue 15). */
  readonly progress: BackfillProgress;
  /** This mailbox's bound on fetched bytes in memory, then the one shared by every mailbox. */
  readonly #budgets: readonly ByteBudget[];

  readonly #deps: RetrieverDeps;
  /** With several nodes: the lease this worker fetches under (its fetched records carry it, and moves wait for its confirmation). */
  readonly #lease: WorkerLease | undefined;
  /** The lease is gone: nothing more is recorded, moved or deleted, and a failure now is not the alias's. */
  #leaseLost = false;

  constructor(deps: RetrieverDeps, group: readonly AliasConfig[], shared: ByteBudget, lease?: WorkerLease) {
    this.#deps = deps;
    this.#lease = lease;
    this.alias = group.find((a) => a.status === 'active')!;
    this.#server = this.alias.incoming!;
    this.#group = group;
    const told = deps.hooks?.bytesInFlight;
    this.#budgets = [new ByteBudget(this.#server.bytes_in_flight, told && ((bytes) => told(this.alias.name, bytes))), shared];
    this.#log = deps.logger.child({ alias: this.alias.name, source: this.#server.type });
    this.progress = new BackfillProgress({
      alias: this.alias.name,
      logger: this.#log,
      metrics: deps.metrics,
      events: deps.events,
      batch: this.#server.max_items,
    });
    const healthDeps = { store: deps.store, logger: deps.logger, ...(deps.metrics ? { metrics: deps.metrics } : {}) };
    const active = group.filter((a) => a.status === 'active');
    this.#healths = Promise.all(active.map((a) => AliasHealth.load(healthDeps, a.name, a.incoming!))).then((list) => new Map(list.map((h) => [h.alias, h])));
    // A health that cannot be read (store closing) leaves the worker stopped, not crashed.
    this.#healths.catch((err: unknown) => this.#log.error({ err }, `cannot read the health of the aliases of ${this.alias.name}'s mailbox; not fetching it`));
    // A worker of a mailbox whose former worker on this node is still stopping starts after it.
    this.#running = Promise.all([this.#healths, lease?.after]).then(
      ([healths]) => this.#loop(healths),
      () => {},
    );
  }

  /** Whether ALIAS is one of this mailbox's aliases whose status the worker keeps. */
  runs(alias: string): boolean {
    return this.#group.some((a) => a.name === alias && a.status === 'active');
  }

  /** An admin's change: persisted, then the loop is woken to connect, to pause, or to fetch what the alias's activation released. */
  async setStatus(alias: string, status: AliasStatus): Promise<AliasState> {
    const health = (await this.#healths).get(alias)!;
    const state = await health.setByAdmin(status);
    this.#wakeUp();
    return state;
  }

  /** Admin changes among STATES that this mailbox's aliases have not applied: taken in, and the loop woken to pause or connect. */
  async catchUp(states: Readonly<Record<string, AliasState>>): Promise<Map<string, AliasState>> {
    const applied = new Map<string, AliasState>();
    for (const [alias, health] of await this.#healths) {
      const adopted = health.adoptAdminChange(states[alias]);
      if (adopted) applied.set(alias, adopted);
    }
    if (applied.size > 0) this.#wakeUp();
    return applied;
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wakeUp();
    await this.#running;
    this.progress.stop();
  }

  /**
   * Whether this node may move or delete COUNT messages of the mailbox now: always on a store of
   * its own; with several nodes, only while the database confirms the lease at its epoch
   * (extending it), so a node that lost the mailbox (paused, cut off) never touches its
   * messages. Skipped ones are recorded: the node holding the mailbox finishes them.
   */
  async #mayMove(count: number): Promise<boolean> {
    const held = this.#lease;
    if (!held || count === 0) return true;
    if (!this.#leaseLost) {
      try {
        if (await held.leases.confirm(held.lease)) return true;
        this.#loseLease();
      } catch (err) {
        this.#log.warn({ err, messages: count, ...this.#leaseFields() }, 'cannot confirm the mailbox lease; messages stored are left in the mailbox for now');
        return false;
      }
    }
    this.#log.warn({ messages: count, ...this.#leaseFields() }, 'messages stored are not moved or deleted: this node no longer holds the mailbox lease');
    return false;
  }

  /** The lease is gone: this worker stops after the message it is on, and the keeper is told. */
  #loseLease(): void {
    if (this.#leaseLost || !this.#lease) return;
    this.#leaseLost = true;
    this.#stopping = true;
    this.#wakeUp();
    this.#lease.lost();
  }

  // No `node`: the gateway's logger has it on every line (lib/logger.ts).
  #leaseFields(): { mailbox?: string; epoch?: number } {
    const held = this.#lease;
    return held ? { mailbox: held.lease.mailbox, epoch: held.lease.epoch } : {};
  }

  #wakeUp(): void {
    this.#woken = true;
    this.#wake?.();
  }

  /** Waits `ms` (Infinity: until woken), or less when woken (new mail, a lost connection, an admin, stop). */
  async #sleep(ms: number): Promise<void> {
    if (this.#woken || this.#stopping) return;
    await new Promise<void>((resolve) => {
      const timer = Number.isFinite(ms) ? setTimeout(resolve, ms) : undefined;
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
  }

  async #loop(healths: Map<string, AliasHealth>): Promise<void> {
    const all = [...healths.values()];
    let mailbox: Mailbox | undefined;
    while (!this.#stopping) {
      let delay = this.#server.poll_interval * 1000;
      this.#woken = false;
      // No alias of the mailbox active: not fetched, except the retriever's timed retry (Cisco guide, ten minutes).
      const hold = Math.min(...all.map((h) => h.holdMs()));
      if (hold > 0) {
        await mailbox?.close();
        mailbox = undefined;
        await this.#sleep(hold);
        continue;
      }
      // The aliases this attempt is for: a failure counts against them, a success makes them active.
      const trying = all.filter((h) => receiving(h));
      try {
        if (!mailbox?.usable) {
          await mailbox?.close();
          const tokens = this.#tokens();
          mailbox = this.#server.type === 'imap' ? new ImapMailbox(this.#server, tokens) : new Pop3Mailbox(this.#server, tokens);
          mailbox.onNewMail(() => this.#wakeUp());
          // Cisco guide, "SSL disabled": permitted on the local network, never silently.
          if (plaintextOverNetwork(this.#server)) {
            const { host, port } = this.#server;
            this.#log.warn(
              { host, port },
              `alias ${this.alias.name}: logging in to ${host}:${port} without TLS (security = "none", allow_plaintext = true): the password crosses the network in clear`,
            );
          }
          await mailbox.open();
        }
        const result = await this.#poll(mailbox, healths);
        // Our own store failing to record it is not the mailbox's fault: not counted against the alias.
        for (const h of trying) await h.succeeded().catch((err: unknown) => this.#log.error({ err }, 'cannot record the alias health'));
        if (!mailbox.persistent) {
          await mailbox.close();
          mailbox = undefined;
        }
        this.#deps.hooks?.afterPoll?.(this.alias.name, result);
        // CCaaS: max_items is the most "to download from the mailbox in each iteration", not a
        // rate: with more waiting, the next iteration begins at once (issue 11: a backlog of
        // 10,000 took 3.3 hours at 50 a minute).
        if (result.deferred > 0) delay = 0;
      } catch (err) {
        // Another node fetches the mailbox now: not the alias's failure, and nothing to retry here.
        if (this.#leaseLost || hasCode(err, 'STORE_LEASE_LOST')) {
          this.#loseLease();
          this.#log.warn({ err, ...this.#leaseFields() }, `fetching for alias ${this.alias.name} stopped: this node no longer holds the mailbox's lease`);
          continue;
        }
        const kind = fetchFailureKind(err);
        this.#log.error({ err, kind, retry_in_s: this.#server.reconnect_interval }, `fetching for alias ${this.alias.name} failed; connecting again later`);
        await mailbox?.close();
        mailbox = undefined;
        this.#woken = false;
        // Not against an alias an admin deactivated meanwhile.
        for (const h of trying.filter((t) => receiving(t)))
          await h.failed(err, kind).catch((e: unknown) => this.#log.error({ err: e }, 'cannot record the alias health'));
        // Every alias made inactive now (or still inactive after a timed retry): the hold decides the wait.
        delay = all.some((h) => h.active) ? this.#server.reconnect_interval * 1000 : 0;
      }
      await this.#sleep(delay);
    }
    await mailbox?.close();
  }

  async #poll(mailbox: Mailbox, healths: Map<string, AliasHealth>): Promise<PollResult> {
    const items = await mailbox.list();
    const present = new Set(items.map((i) => i.key));
    for (const key of this.#held.keys()) if (!present.has(key)) this.#held.delete(key);
    const records = await this.#deps.store.getFetched(items.map((i) => ({ alias: this.alias.name, key: i.key })));
    const result: PollResult = { stored: 0, finished: 0, deferred: 0, held: 0 };
    const fresh: MailboxItem[] = [];
    const leftover: MailboxItem[] = [];
    const invalid: MailboxItem[] = [];
    for (const [i, item] of items.entries()) {
      const record = records[i];
      if (!record) fresh.push(item);
      else if (!this.#stopping) {
        // Stored before a crash or a failed move: only the post-store action is left to do.
        if (record.invalid) invalid.push(item);
        else leftover.push(item);
        if ((record.invalid ? this.#server.on_invalid : this.#server.on_stored) !== 'keep') result.finished++;
      }
    }
    if (await this.#mayMove(invalid.length + leftover.length)) {
      for (const item of invalid) await mailbox.markInvalid(item);
      await mailbox.markStored(leftover);
    }
    // Read live, message by message: an admin's change during a poll applies to the next message.
    const receives = (alias: AliasConfig) => receiving(healths.get(alias.name));
    // The backlog: messages to fetch, less those left for inactive aliases; its count read live as the lanes store.
    this.progress.listed(fresh.filter((i) => this.#held.get(i.key)?.some(receives) ?? true).length, () => result.stored);
    // CCaaS "Max email LW size": a message up to the lightweight size never waits behind a
    // large download. The small ones are taken first; IMAP takes large ones still waiting after
    // that over a second session too (below). POP3 gives one session per mailbox (RFC 1939
    // section 8, the maildrop lock).
    const limit = this.#server.lightweight_size;
    const small = fresh.filter((i) => i.size <= limit);
    const large = fresh.filter((i) => i.size > limit);
    const lanes: Lanes = { taken: 0, inFlight: 0, failed: false, running: 0 };
    // Stored messages are moved or deleted together, after their keys are durable. A failure
    // or a crash before that leaves them recorded: the next poll only finishes them.
    const stored: MailboxItem[] = [];
    const lane = (box: Mailbox, queues: readonly Waiting[]) => this.#lane(box, queues, lanes, receives, stored, result);
    const smalls: Waiting = { items: small, next: 0 };
    const larges: Waiting = { items: large, next: 0 };
    try {
      if (this.#server.type === 'imap' && small.length && large.length) {
        // This session takes the small ones first, then the large ones. A second session costs
        // a login (twelve round trips, half a second at 40 ms, and CPU on both sides), so it is
        // opened only once this one has taken every small message and some large ones and
        // large ones still wait: then it takes large ones only, and a small message never
        // waits behind a large download. A mailbox this session takes in one range (up to four
        // times bytes_in_flight) never needs it: opened at once, it came too late to get
        // work at 40 ms round trips, and gained nothing measurable on loopback.
        let done = false;
        let asked = false;
        let heavy: Promise<void> | undefined;
        lanes.took = () => {
          if (asked || smalls.next < small.length || larges.next === 0 || larges.next >= large.length) return;
          asked = true;
          // Not waited for: a session that opens after this one took everything is closed at once.
          void this.#openSecondSession().then((box) => {
            if (box && !done) heavy = lane(box, [larges]).finally(() => box.close());
            else void box?.close();
          });
        };
        const settled = await Promise.allSettled([lane(mailbox, [smalls, larges])]);
        done = true;
        if (heavy) settled.push(...(await Promise.allSettled([heavy])));
        const failure = settled.find((r) => r.status === 'rejected');
        if (failure) throw failure.reason;
      } else {
        await lane(mailbox, [smalls, larges]);
      }
    } finally {
      if (stored.length && (await this.#mayMove(stored.length))) await mailbox.markStored(stored);
    }
    const left = [...small.slice(smalls.next), ...large.slice(larges.next)];
    // Messages not reached, less those known to wait for an inactive alias (not a backlog to drain).
    for (const item of left) {
      if (this.#held.has(item.key)) result.held++;
      else result.deferred++;
    }
    this.progress.polled(result.deferred);
    return result;
  }

  /** The alias's OAuth2 token provider when it logs in with `oauth2`; one per alias, shared by its sessions. */
  #tokens(): TokenProvider | undefined {
    return this.#server.oauth2 !== undefined ? this.#deps.tokenProvider?.(this.alias) : undefined;
  }

  /**
   * A second IMAP session on the same folder, for the large messages of a poll; undefined when
   * the server refuses it (a per-user connection limit): then they follow the small ones on
   * the first session, as before. Without IDLE: the first session watches for new mail.
   */
  async #openSecondSession(): Promise<Mailbox | undefined> {
    const box = new ImapMailbox({ ...this.#server, idle: false }, this.#tokens());
    try {
      await box.open();
      return box;
    } catch (err) {
      this.#log.warn({ err }, 'cannot open a second IMAP session for the large messages; they follow the small ones on one session');
      return undefined;
    }
  }

  /**
   * Fetches on BOX the messages waiting in QUEUES, one queue after the other, taking from the
   * front of each (another lane may take from the same queue), until `max_items` messages are
   * taken over all lanes of the poll, or another lane failed. Runs of messages each within the
   * mailbox's `bytes_in_flight` come in ranges (RANGE_BOUNDS), several on the wire at once (Mailbox.messages),
   * and each is stored as it arrives without waiting for the one before, so the store's group
   * commit shares the synced writes (issue 15); a message bigger than the bound, over
   * `max_message_size`, or kept for inactive aliases is handled on its own, as before. Every
   * store started is waited for before this returns or throws. A failure marks the poll failed,
   * so the other lane stops after the message it is on.
   */
  async #lane(
    box: Mailbox,
    queues: readonly Waiting[],
    lanes: Lanes,
    receives: (alias: AliasConfig) => boolean,
    stored: MailboxItem[],
    result: PollResult,
  ): Promise<void> {
    const run: LaneRun = { pending: new Set(), failure: undefined, refused: [] };
    const allowed = () => this.#server.max_items - lanes.taken - lanes.inFlight;
    const going = () => !this.#stopping && !lanes.failed;
    const counted = (item: MailboxItem, outcome: Outcome) => {
      if (outcome === 'held') {
        result.held++;
        return;
      }
      lanes.taken++;
      result.stored++;
      if (outcome === 'stored') stored.push(item);
    };
    lanes.running++;
    try {
      for (const queue of queues) {
        const { items } = queue;
        while (queue.next < items.length && allowed() > 0 && going()) {
          const item = items[queue.next]!;
          const held = this.#held.get(item.key);
          // Still for inactive aliases only: untouched, without reading it again.
          if (held && !held.some(receives)) {
            result.held++;
            queue.next++;
            continue;
          }
          if (!this.#inRange(item)) {
            // Streamed from the session, one at a time: memory does not grow with the message's size.
            queue.next++;
            lanes.inFlight++;
            lanes.took?.();
            let outcome;
            try {
              outcome = await this.#fetch(this.#streamed(box, item), item, receives);
            } finally {
              lanes.inFlight--;
            }
            if (outcome === 'invalid' && (await this.#mayMove(1))) await box.markInvalid(item);
            counted(item, outcome);
            continue;
          }
          // Taken before the first await, so the other lane goes on after it.
          const range = this.#nextRange(box, queues.slice(queues.indexOf(queue)), lanes, allowed(), receives);
          lanes.took?.();
          await this.#range(box, range, lanes, receives, run, counted);
        }
      }
    } catch (err) {
      run.failure ??= err;
    } finally {
      lanes.running--;
      await Promise.allSettled(run.pending);
    }
    if (run.failure !== undefined) {
      lanes.failed = true;
      throw run.failure;
    }
    // Messages the ingest refused for good while a range was on the wire: no command could be issued then.
    if (run.refused.length && (await this.#mayMove(run.refused.length))) for (const item of run.refused) await box.markInvalid(item);
  }

  /**
   * Takes the following messages that go in one range, from the front of QUEUES: up to
   * RANGE_BOUNDS times the byte bound (the bound alone while another lane takes messages too)
   * and ALLOWED messages. At the end of a queue it runs on into the next (the small messages,
   * then the large): a second command there costs a round trip with nothing on the wire. A
   * range BOX answers in mailbox order (IMAP) runs on only with messages after every one taken
   * before, so no small message comes behind a large one. It stops before a message handled on
   * its own: that one is read with commands of its own.
   */
  #nextRange(box: Mailbox, queues: readonly Waiting[], lanes: Lanes, allowed: number, receives: (alias: AliasConfig) => boolean): MailboxItem[] {
    const range: MailboxItem[] = [];
    let bytes = 0;
    let last = -Infinity;
    const rangeBytes = (lanes.running > 1 ? 1 : RANGE_BOUNDS) * this.#server.bytes_in_flight;
    for (const [n, queue] of queues.entries()) {
      const { items } = queue;
      while (queue.next < items.length && range.length < allowed) {
        const candidate = items[queue.next]!;
        const waits = this.#held.get(candidate.key);
        if (!this.#inRange(candidate) || (waits && !waits.some(receives))) return range;
        if (range.length && bytes + candidate.size > rangeBytes) return range;
        if (n > 0 && box.rangeOrder === 'mailbox' && candidate.ref < last) return range;
        range.push(candidate);
        bytes += candidate.size;
        last = Math.max(last, candidate.ref);
        queue.next++;
      }
      if (queue.next < items.length) return range;
    }
    return range;
  }

  /** Whether ITEM is fetched within a range: not over `max_message_size` (only its headers are read) and within the byte bound. */
  #inRange(item: MailboxItem): boolean {
    return item.size <= this.#server.max_message_size && item.size <= this.#server.bytes_in_flight;
  }

  /**
   * Reads RANGE with one command and starts storing each message as it arrives. Before taking
   * the next message off the wire its size is held in the byte budgets (given back once it is
   * stored), so the bytes in memory stay within `bytes_in_flight` while the rest waits in the
   * socket. It stops early when the poll failed or is stopping.
   */
  async #range(
    box: Mailbox,
    range: readonly MailboxItem[],
    lanes: Lanes,
    receives: (alias: AliasConfig) => boolean,
    run: LaneRun,
    counted: (item: MailboxItem, outcome: Outcome) => void,
  ): Promise<void> {
    // Counted against max_items from now: a message a lane is about to read is taken unless it turns out held.
    lanes.inFlight += range.length;
    const index = new Map(range.map((item, i) => [item.key, i]));
    let started = 0;
    // Held for the message to be taken off the wire next; handed to its store once it arrived.
    let release: (() => void) | undefined = await acquireAll(this.#budgets, range[0]!.size);
    try {
      for await (const { item, content } of box.messages(range)) {
        // The next message to hold bytes for: the one after this in the range.
        const reached = index.get(item.key)! + 1;
        started++;
        const done = release ?? (() => {});
        release = undefined;
        const task = this.#fetch(this.#buffered(content), item, receives).then(
          (outcome) => {
            if (outcome === 'invalid') run.refused.push(item);
            counted(item, outcome);
          },
          (err: unknown) => {
            run.failure ??= err;
            lanes.failed = true;
          },
        );
        const tracked: Promise<void> = task.finally(() => {
          done();
          lanes.inFlight--;
          run.pending.delete(tracked);
        });
        run.pending.add(tracked);
        if (this.#stopping || lanes.failed) break;
        if (reached < range.length) {
          // No IMAP command here (imapflow issues 110, 159, 284): waiting for the budget only waits for stores.
          release = await acquireAll(this.#budgets, range[reached]!.size);
          if (this.#stopping || lanes.failed) break;
        }
      }
    } finally {
      // Bytes held for a message not taken after all (the loop ended early, or it was gone).
      release?.();
      // Messages of the range not started (not reached, or gone from the mailbox): no longer in flight.
      lanes.inFlight -= range.length - started;
    }
  }

  /** A message read whole in a range: its header block is cut from the bytes, with no command to the server. */
  #buffered(content: Buffer): MessageSource {
    const reopen = () => Readable.from([content]);
    return { headers: () => Promise.resolve(headerBlock(content)), body: () => Promise.resolve(reopen()), reopen };
  }

  /** A message read on its own from BOX: its headers with a command of their own, its body streamed. */
  #streamed(box: Mailbox, item: MailboxItem): MessageSource {
    return { headers: () => box.headers(item), body: () => box.message(item) };
  }

  /**
   * Stores one message (once per active alias it is for, or per recipient with
   * `split_recipients`), each copy recording its own key in its own synced batch and the last
   * one also the mailbox key. After a crash between copies, the copies already recorded are
   * skipped. `stored`: ready for `on_stored`; `invalid`: its record is stored and it is to get
   * `on_invalid` instead (the caller applies it); `held`: every alias it is for is inactive, so
   * it was left in the mailbox untouched. Issues no command on the session itself beyond SOURCE's.
   */
  async #fetch(source: MessageSource, item: MailboxItem, receives: (alias: AliasConfig) => boolean): Promise<Outcome> {
    let headers: Buffer | undefined;
    let targets: DeliveryTarget[];
    let aliases: readonly AliasConfig[];
    let written: string[] = [];
    if (needsTargets(this.#group, this.#deps.config.partition.unknown_recipient)) {
      headers = await source.headers();
      const addressed = addressedTo(headers, this.#group);
      written = addressed.toCc;
      aliases = addressed.aliases;
      targets = targetsFor(addressed, receives);
    } else {
      aliases = [this.alias];
      targets = receives(this.alias) ? [{ alias: this.alias }] : [];
    }
    if (!targets.length) {
      if (!this.#held.has(item.key))
        this.#log.info({ mailbox_key: item.key, for_aliases: aliases.map((a) => a.name) }, 'message left in the mailbox: every alias it is for is inactive');
      this.#held.set(item.key, aliases);
      return 'held';
    }
    this.#held.delete(item.key);
    // The record of a message too big to fetch goes to the first alias it is for that is active.
    const first = targets[0]!.alias;
    if (item.size > this.#server.max_message_size) return this.#storeOversize(source, item, first, headers).then(() => 'invalid');
    const keys = targets.map((t) => targetKey(t, item));
    // One copy under the mailbox key itself: the poll's listing already found it not stored
    // (and only this worker stores for this mailbox), so no read per message.
    const single = keys.length === 1 && keys[0]!.alias === this.alias.name && keys[0]!.key === item.key;
    const done = single ? [undefined] : await this.#deps.store.getFetched(keys);
    // Every copy recorded before a crash, and the alias whose copy was to carry the mailbox key
    // inactive since: record the mailbox key now, so the message counts as stored.
    // No lease check needed: it only says again what the copies' records already say.
    if (done.every((d) => d)) await this.#deps.store.putFetched({ alias: this.alias.name, key: item.key }, done[0]!);
    for (const [i, target] of targets.entries()) {
      if (done[i]) continue;
      const last = targets.slice(i + 1).every((_, j) => done[i + 1 + j]);
      const id = newMessageId();
      let meta;
      try {
        const request = this.#request(id, item, { target, mailboxKey: last });
        meta = await ingestMessage(this.#deps, await source.body(), source.reopen ? { ...request, reopen: source.reopen } : request);
      } catch (err) {
        // 5xx: the message itself is refused for good (bigger than the server said); anything else is retried.
        if (hasReply(err) && err.responseCode >= 500) return this.#storeOversize(source, item, first, headers).then(() => 'invalid');
        throw err;
      }
      const outcome = meta.tags.includes('wrapped') ? 'wrapped' : 'stored';
      this.#log.info(
        {
          msg_id: meta.id,
          outcome,
          size: meta.size,
          mailbox_key: item.key,
          for_alias: target.alias.name,
          ...(target.recipient ? { recipient: target.recipient } : {}),
        },
        'message fetched',
      );
      this.#deps.metrics?.inc('mailgate_messages_total', { source: this.#server.type, outcome });
      this.#deps.metrics?.inc('mailgate_message_bytes_total', { source: this.#server.type }, meta.size);
      await this.#autoReply(meta, target, written);
    }
    await this.#deps.hooks?.afterStore?.(this.alias.name, item);
    return 'stored'; // to be marked stored with the rest of the poll's
  }

  /**
   * The alias's acknowledgement, or the answer to mail for an unknown address when
   * `[partition] unknown_recipient = "auto_reply"` (gateway/auto-reply/). Never fails the fetch.
   */
  async #autoReply(meta: MessageMeta, target: DeliveryTarget, written: readonly string[]): Promise<void> {
    const mode = this.#deps.config.partition.unknown_recipient;
    if (target.unknownRecipient && mode === 'auto_reply') {
      const working = this.#group.filter((a) => a.status === 'active').map((a) => a.address);
      await autoReply(this.#deps, meta, target.alias, { written, working });
    } else if (target.alias.auto_reply && !(target.unknownRecipient && mode === 'quarantine')) {
      await autoReply(this.#deps, meta, target.alias);
    }
  }

  /** Stores for ALIAS a record of a message too big to fetch (its headers and size); the caller then applies `on_invalid`. */
  async #storeOversize(source: MessageSource, item: MailboxItem, alias: AliasConfig, headers?: Buffer): Promise<void> {
    const size = item.size;
    const record = oversizeRecord(headers ?? (await source.headers()), {
      size,
      limit: this.#server.max_message_size,
      alias: alias.name,
      action: this.#server.on_invalid,
      folder: this.#server.invalid_folder,
    });
    const id = newMessageId();
    const meta = await ingestMessage(this.#deps, Readable.from([record]), this.#request(id, item, { invalid: true, tags: ['oversize'], target: { alias } }));
    this.#log.warn(
      { msg_id: meta.id, outcome: 'oversize', size, limit: this.#server.max_message_size, mailbox_key: item.key, for_alias: alias.name },
      'message over max_message_size not fetched; stored a record of it',
    );
    this.#deps.metrics?.inc('mailgate_messages_total', { source: this.#server.type, outcome: 'oversize' });
    await this.#deps.hooks?.afterStore?.(this.alias.name, item);
  }

  #request(id: string, item: MailboxItem, opts: { invalid?: true; tags?: string[]; target?: DeliveryTarget; mailboxKey?: boolean }): IngestRequest {
    const record: FetchedRecord = opts.invalid ? { id, invalid: true } : { id };
    const target = opts.target ?? { alias: this.alias };
    const alias = target.alias;
    // The copy's own key, and with the last copy the mailbox key that says "all stored" (once, when they are the same).
    const own = targetKey(target, item);
    const keys = [
      own,
      ...(opts.mailboxKey !== false && (own.alias !== this.alias.name || own.key !== item.key) ? [{ alias: this.alias.name, key: item.key }] : []),
    ];
    // Several nodes: the commit is refused unless this node still holds the mailbox at this epoch (fencing).
    const lease = this.#lease?.lease;
    const records: SideRecord[] = keys.map((key) => ({ type: 'fetched', key, record, ...(lease ? { lease } : {}) }));
    // Enate "Inbound Email": mail for an address no alias has is marked for the answer or the quarantine.
    const unknownRecipient = this.#deps.config.partition.unknown_recipient;
    const unknown = target.unknownRecipient === true && unknownRecipient !== 'file';
    // Answered automatically (auto_reply): resolved, as Enate marks it; for the quarantine, a person decides.
    const unknownTags = unknown ? [UNKNOWN_RECIPIENT_TAG, ...(unknownRecipient === 'auto_reply' ? [RESOLVED_TAG] : [])] : [];
    return {
      id,
      envelope: { mailFrom: '', rcptTo: [target.recipient ?? alias.address] },
      source: { kind: this.#server.type, alias: alias.name },
      ...(alias.department ? { department: alias.department } : {}),
      // The record of an over-size message is ours, not the sender's: no limit on it.
      ...(opts.invalid ? {} : { maxSize: this.#server.max_message_size }),
      defaultDomain: this.#deps.config.partition.default_domain,
      sideRecords: records,
      ...(opts.tags || unknown ? { tags: [...(opts.tags ?? []), ...unknownTags] } : {}),
    };
  }
}
