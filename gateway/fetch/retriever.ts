/**
 * The retriever: brings mail in from each active alias's `[alias.incoming]` mailbox through
 * ingestMessage, exactly once. The mailbox key (IMAP UIDVALIDITY:UID, POP3 UIDL) is recorded in
 * the `fetched` sublevel in the message's own synced batch; only then is the message moved or
 * deleted, so after a crash at any point a message found again gets only its post-store action.
 * One worker per alias; a failing alias never holds up another. `max_items` bounds one batch,
 * not the rate: a poll that stopped at it is followed by the next at once.
 */
import { Readable } from 'node:stream';
import type { AliasConfig, Config, IncomingServerConfig } from '../config/schema.js';
import { ingestMessage, type IngestDeps, type IngestRequest } from '../ingest.js';
import { MailgateError } from '../errors.js';
import { newMessageId, type StoreOp } from '../../storage/store.js';
import type { FetchedRecord } from '../../storage/layout.js';
import type { Metrics } from '../metrics.js';
import { Pop3Error } from './pop3.js';
import { ImapMailbox } from './imap.js';
import { Pop3Mailbox } from './pop3-mailbox.js';
import { oversizeRecord } from './oversize.js';
import type { Mailbox, MailboxItem } from './mailbox.js';
import { deliveryTargets, mailboxIdentity, needsTargets, type DeliveryTarget } from './recipients.js';
import { AliasHealth } from './alias-health.js';
import type { TokenProvider } from './oauth.js';
import type { AliasState, AliasStatus } from '../../storage/alias-state.js';

/** CCaaS "lightweight" size: messages up to this many bytes are fetched before larger ones in a poll. */
export const LIGHTWEIGHT_SIZE = 10_000;

/** Test seams: a test simulates a crash by throwing from `afterStore`, and waits for polls with `afterPoll`. */
export interface RetrieverHooks {
  /** Called after a message (or its over-size record) is durable and before its post-store action. */
  afterStore?(alias: string, item: MailboxItem): void | Promise<void>;
  /** Called after each poll that completed. */
  afterPoll?(alias: string, result: PollResult): void;
}

/** What one poll did. */
export interface PollResult {
  /** Messages stored in this poll (over-size records included). */
  stored: number;
  /** Messages found already stored that got their post-store action again. */
  finished: number;
  /** Messages left for the next poll by `max_items`; when there are any, it begins at once. */
  deferred: number;
}

/** What the retriever needs. */
export interface RetrieverDeps extends IngestDeps {
  config: Config;
  metrics?: Metrics;
  hooks?: RetrieverHooks;
  /** The alias's OAuth2 token provider when it sets `oauth2` (oauth-store.ts aliasTokenProviders). */
  tokenProvider?: (alias: AliasConfig) => TokenProvider | undefined;
}

/** The running retriever. */
export interface Retriever {
  /** Names of the aliases being fetched. */
  readonly aliases: readonly string[];
  /** Stops every worker; waits for the message being fetched to be stored, then closes the sessions. */
  stop(): Promise<void>;
  /**
   * An admin's `mailgate aliases activate|deactivate`: persisted, and the alias's worker is woken
   * (it connects, or closes its session and pauses) without a restart. Undefined when the retriever
   * does not run the alias (then the caller records the change in the store itself).
   */
  setStatus(alias: string, status: AliasStatus): Promise<AliasState | undefined>;
}

/** Starts one worker per alias that has an `[alias.incoming]` server and `status = "active"`. */
export function startRetriever(deps: RetrieverDeps): Retriever {
  // Aliases that fetch the same mailbox share one worker (the first configured leads it), so
  // a message for several of them is fetched once and stored once per alias (CCaaS).
  const groups = new Map<string, AliasConfig[]>();
  for (const a of deps.config.alias.filter((a) => a.incoming && a.status === 'active')) {
    const key = mailboxIdentity(a);
    groups.set(key, [...(groups.get(key) ?? []), a]);
  }
  const workers = [...groups.values()].map((group) => new AliasWorker(deps, group[0]!, group[0]!.incoming!, group));
  return {
    aliases: workers.map((w) => w.alias.name),
    async stop() {
      await Promise.all(workers.map((w) => w.stop()));
    },
    async setStatus(alias, status) {
      const worker = workers.find((w) => w.alias.name === alias);
      return worker ? worker.setStatus(status) : undefined;
    },
  };
}

/** Key of one stored copy: the alias it is for, and the recipient with `split_recipients`. */
function targetKey(target: DeliveryTarget, item: MailboxItem): string {
  return fetchedKey(target.alias.name, target.recipient ? `${item.key}#${target.recipient}` : item.key);
}

/** Key of a mailbox message in the `fetched` sublevel. */
export function fetchedKey(alias: string, itemKey: string): string {
  return `${alias}\x00${itemKey}`;
}

const DNS_ERRORS = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'EAI_NODATA']);

/** imapflow's own codes for a session that ended under us, and Node's for unreachable networks. */
const NETWORK_CODES = new Set(['ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'NoConnection', 'EConnectionClosed', 'ClosedAfterConnectText', 'ClosedAfterConnectTLS']);
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ETIMEOUT', 'CONNECT_TIMEOUT', 'GREETING_TIMEOUT', 'UPGRADE_TIMEOUT']);

/**
 * The kind of a fetch failure, in the words of Pop3ErrorKind (plus `folder_missing` for IMAP),
 * for the log and the alias health (alias-health.ts).
 */
export function fetchErrorKind(err: unknown): string {
  if (err instanceof Pop3Error) return err.kind;
  if (err instanceof MailgateError) return err.code.startsWith('STORE_') ? 'store' : 'ingest';
  const e = (err ?? {}) as { authenticationFailed?: boolean; code?: unknown; serverResponseCode?: unknown };
  const code = typeof e.code === 'string' ? e.code : '';
  const response = typeof e.serverResponseCode === 'string' ? e.serverResponseCode.toUpperCase() : '';
  if (e.authenticationFailed) return 'auth';
  // RFC 5530 response codes
  if (response === 'NONEXISTENT') return 'folder_missing';
  if (response === 'INUSE') return 'in_use';
  if (response === 'UNAVAILABLE' || response === 'SERVERBUG') return 'server';
  if (DNS_ERRORS.has(code)) return 'dns';
  if (code === 'ECONNREFUSED') return 'tcp_refused';
  if (TIMEOUT_CODES.has(code)) return 'timeout';
  if (/CERT|SELF_SIGNED|ISSUER|LEAF_SIGNATURE|HOSTNAME_MISMATCH/.test(code)) return 'tls_certificate';
  if (code.startsWith('ERR_SSL') || code === 'StartTLSFailed') return 'tls';
  if (NETWORK_CODES.has(code)) return 'network';
  return 'protocol';
}

class AliasWorker {
  readonly #log: IngestDeps['logger'];
  #stopping = false;
  #wake: (() => void) | undefined;
  #woken = false;
  readonly #health: Promise<AliasHealth>;
  readonly #running: Promise<void>;

  constructor(
    private readonly deps: RetrieverDeps,
    readonly alias: AliasConfig,
    private readonly server: IncomingServerConfig,
    /** Every alias served by this mailbox, the leading one first. */
    private readonly group: readonly AliasConfig[] = [alias],
  ) {
    this.#log = deps.logger.child({ alias: alias.name, source: server.type });
    this.#health = AliasHealth.load({ store: deps.store, logger: deps.logger, ...(deps.metrics ? { metrics: deps.metrics } : {}) }, alias.name, server);
    // A health that cannot be read (store closing) leaves the worker stopped, not crashed.
    this.#health.catch((err: unknown) => this.#log.error({ err }, `cannot read the health of alias ${alias.name}; not fetching it`));
    this.#running = this.#health.then((health) => this.#loop(health), () => {});
  }

  /** An admin's change: persisted, then the loop is woken to connect or to pause. */
  async setStatus(status: AliasStatus): Promise<AliasState> {
    const state = await (await this.#health).setByAdmin(status);
    this.#wakeUp();
    return state;
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wakeUp();
    await this.#running;
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

  async #loop(health: AliasHealth): Promise<void> {
    let mailbox: Mailbox | undefined;
    while (!this.#stopping) {
      let delay = this.server.poll_interval * 1000;
      this.#woken = false;
      // Inactive: not fetched, except the retriever's timed retry (Cisco guide, ten minutes).
      const hold = health.holdMs();
      if (hold > 0) {
        await mailbox?.close();
        mailbox = undefined;
        await this.#sleep(hold);
        continue;
      }
      try {
        if (!mailbox?.usable) {
          await mailbox?.close();
          const tokens = this.server.oauth2 !== undefined ? this.deps.tokenProvider?.(this.alias) : undefined;
          mailbox = this.server.type === 'imap' ? new ImapMailbox(this.server, tokens) : new Pop3Mailbox(this.server, tokens);
          mailbox.onNewMail(() => this.#wakeUp());
          await mailbox.open();
        }
        const result = await this.#poll(mailbox);
        // Our own store failing to record it is not the mailbox's fault: not counted against the alias.
        await health.succeeded().catch((err: unknown) => this.#log.error({ err }, 'cannot record the alias health'));
        if (!mailbox.persistent) {
          await mailbox.close();
          mailbox = undefined;
        }
        this.deps.hooks?.afterPoll?.(this.alias.name, result);
        // CCaaS: max_items is the most "to download from the mailbox in each iteration", not a
        // rate: with more waiting, the next iteration begins at once (issue 11: a backlog of
        // 10,000 took 3.3 hours at 50 a minute).
        if (result.deferred > 0) delay = 0;
      } catch (err) {
        const kind = fetchErrorKind(err);
        this.#log.error({ err, kind, retry_in_s: this.server.reconnect_interval }, `fetching for alias ${this.alias.name} failed; connecting again later`);
        await mailbox?.close();
        mailbox = undefined;
        this.#woken = false;
        await health.failed(err, kind).catch((e: unknown) => this.#log.error({ err: e }, 'cannot record the alias health'));
        // Made inactive now (or still inactive after a timed retry): the hold decides the wait.
        delay = health.active ? this.server.reconnect_interval * 1000 : 0;
      }
      await this.#sleep(delay);
    }
    await mailbox?.close();
  }

  async #poll(mailbox: Mailbox): Promise<PollResult> {
    const { fetched } = this.deps.store.sublevels;
    const items = await mailbox.list();
    const records = items.length ? await fetched.getMany(items.map((i) => fetchedKey(this.alias.name, i.key))) : [];
    const result: PollResult = { stored: 0, finished: 0, deferred: 0 };
    const fresh: MailboxItem[] = [];
    const leftover: MailboxItem[] = [];
    for (const [i, item] of items.entries()) {
      const record = records[i];
      if (!record) fresh.push(item);
      else if (!this.#stopping) {
        // Stored before a crash or a failed move: only the post-store action is left to do.
        if (record.invalid) await mailbox.markInvalid(item);
        else leftover.push(item);
        if ((record.invalid ? this.server.on_invalid : this.server.on_stored) !== 'keep') result.finished++;
      }
    }
    await mailbox.markStored(leftover);
    // A small message never waits behind a large one (CCaaS lightweight size).
    const ordered = [...fresh.filter((i) => i.size <= LIGHTWEIGHT_SIZE), ...fresh.filter((i) => i.size > LIGHTWEIGHT_SIZE)];
    const batch = ordered.slice(0, this.server.max_items);
    result.deferred = ordered.length - batch.length;
    // Stored messages are moved or deleted together, after their keys are durable. A failure
    // or a crash before that leaves them recorded: the next poll only finishes them.
    const stored: MailboxItem[] = [];
    try {
      for (const item of batch) {
        if (this.#stopping) break;
        if (await this.#fetch(mailbox, item)) stored.push(item);
        result.stored++;
      }
    } finally {
      if (stored.length) await mailbox.markStored(stored);
    }
    return result;
  }

  /**
   * Stores one message (once per alias it is for, or per recipient with `split_recipients`),
   * each copy recording its own key in its own synced batch and the last one also the
   * mailbox key. After a crash between copies, the copies already recorded are skipped.
   * True when the message is ready for `on_stored` (false: it got `on_invalid` instead).
   */
  async #fetch(mailbox: Mailbox, item: MailboxItem): Promise<boolean> {
    if (item.size > this.server.max_message_size) return this.#storeOversize(mailbox, item, item.size).then(() => false);
    const targets: DeliveryTarget[] = needsTargets(this.group) ? deliveryTargets(await mailbox.headers(item), this.group) : [{ alias: this.alias }];
    const keys = targets.map((t) => targetKey(t, item));
    const done = await this.deps.store.sublevels.fetched.getMany(keys);
    for (const [i, target] of targets.entries()) {
      if (done[i]) continue;
      const last = targets.slice(i + 1).every((_, j) => done[i + 1 + j]);
      const id = newMessageId();
      let meta;
      try {
        meta = await ingestMessage(this.deps, await mailbox.message(item), this.#request(id, item, { target, mailboxKey: last }));
      } catch (err) {
        // 5xx: the message itself is refused for good (bigger than the server said); anything else is retried.
        if (err instanceof MailgateError && err.responseCode >= 500) return this.#storeOversize(mailbox, item, item.size).then(() => false);
        throw err;
      }
      const outcome = meta.tags.includes('wrapped') ? 'wrapped' : 'stored';
      this.#log.info({ msg_id: meta.id, outcome, size: meta.size, mailbox_key: item.key, for_alias: target.alias.name, ...(target.recipient ? { recipient: target.recipient } : {}) }, 'message fetched');
      this.deps.metrics?.inc('mailgate_messages_total', { source: this.server.type, outcome });
      this.deps.metrics?.inc('mailgate_message_bytes_total', { source: this.server.type }, meta.size);
    }
    await this.deps.hooks?.afterStore?.(this.alias.name, item);
    return true; // to be marked stored with the rest of the poll's
  }

  /** Stores a record of a message too big to fetch (its headers and size), then applies `on_invalid`. */
  async #storeOversize(mailbox: Mailbox, item: MailboxItem, size: number): Promise<void> {
    const headers = await mailbox.headers(item);
    const record = oversizeRecord(headers, {
      size,
      limit: this.server.max_message_size,
      alias: this.alias.name,
      action: this.server.on_invalid,
      folder: this.server.invalid_folder,
    });
    const id = newMessageId();
    const meta = await ingestMessage(this.deps, Readable.from([record]), this.#request(id, item, { invalid: true, tags: ['oversize'] }));
    this.#log.warn({ msg_id: meta.id, outcome: 'oversize', size, limit: this.server.max_message_size, mailbox_key: item.key }, 'message over max_message_size not fetched; stored a record of it');
    this.deps.metrics?.inc('mailgate_messages_total', { source: this.server.type, outcome: 'oversize' });
    await this.deps.hooks?.afterStore?.(this.alias.name, item);
    await mailbox.markInvalid(item);
  }

  #request(id: string, item: MailboxItem, opts: { invalid?: true; tags?: string[]; target?: DeliveryTarget; mailboxKey?: boolean }): IngestRequest {
    const record: FetchedRecord = opts.invalid ? { id, invalid: true } : { id };
    const target = opts.target ?? { alias: this.alias };
    const alias = target.alias;
    // The copy's own key, and with the last copy the mailbox key that says "all stored".
    const keys = new Set([targetKey(target, item), ...(opts.mailboxKey !== false ? [fetchedKey(this.alias.name, item.key)] : [])]);
    const ops: StoreOp[] = [...keys].map((key) => ({ type: 'put', sublevel: this.deps.store.sublevels.fetched, key, value: record }));
    return {
      id,
      envelope: { mailFrom: '', rcptTo: [target.recipient ?? alias.address] },
      source: { kind: this.server.type, alias: alias.name },
      ...(alias.department ? { department: alias.department } : {}),
      // The record of an over-size message is ours, not the sender's: no limit on it.
      ...(opts.invalid ? {} : { maxSize: this.server.max_message_size }),
      defaultDomain: this.deps.config.partition.default_domain,
      commitOps: ops,
      ...(opts.tags ? { tags: opts.tags } : {}),
    };
  }
}
