/**
 * Every admin operation, defined once: messages, quarantine, aliases, queue, send, policy
 * test. `Admin` does them on a store, and on the running gateway's parts when it is given
 * them (retriever, dispatcher, policy, metrics). The running gateway serves its `Admin` on the
 * control socket (http-server.ts); a CLI command gets an AdminApi from openAdminApi (open.ts):
 * the gateway's, through the socket (http-client.ts), while it runs and holds LevelDB's lock, or
 * its own `Admin` on the store when the gateway is stopped (stoppedGatewayAdmin, here). The
 * command cannot tell which.
 *
 * Inputs and outputs are plain: JSON-able records, a Readable for bytes, errors from the
 * catalogue (lib/errors.ts) with a code and a sentence. This file is the one place in
 * gateway/admin and gateway/commands that reaches the store.
 */
import { existsSync, mkdirSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Store } from '../../storage/store.js';
import { openStore } from '../../storage/open.js';
import type { AliasState, AliasStatus, AuditEntry, DeliveryResult, MessageMeta, QuarantineRecord, QueueEntry } from '../../storage/records.js';
import { requireQueueEntry } from '../../storage/queue.js';
import { isMessageId } from '../../storage/ids.js';
import type { Stage } from '../../policy/chain/stage.js';
import type { PolicySet } from '../../policy/policy-set.js';
import type { StoredAttachment } from './attachment-sizes.js';
import type { PolicyReport, PolicyTestRequest } from './policy-test.js';
import { errors, storeErrors } from '../../lib/errors.js';
import type { ConfigProblem } from '../../lib/config-file/toml.js';
import { silentLogger } from '../../lib/logger.js';
import type { Metrics } from '../../lib/metrics.js';
import type { Config, AliasConfig } from '../config/schema.js';
import { requireSecrets, type LoadedConfig } from '../config/load.js';
import { configuredStore } from '../config/storage.js';
import { aliasOfAddress } from '../config/alias-addresses.js';
import type { ConnectionTestOptions } from '../fetch/connection-test.js';
import { setAliasStatusInStore } from '../fetch/alias-health.js';
import type { Retriever } from '../fetch/retriever.js';
import type { TokenProvider } from '../oauth/tokens.js';
import type { Dispatcher } from '../dispatch/dispatcher.js';
import { dropQueued, retryQueued } from '../dispatch/queue-actions.js';
import { quarantineMatcher } from './quarantine-filter.js';
import { messageTimeline, type TimelineStep } from './timeline.js';
import { aliasRow, aliasTestReport, type AliasRow, type AliasTestReport } from './alias-rows.js';
import { aliasWarnings } from '../oauth/secret-expiry.js';
import { summarise, SUMMARY_SCAN_LIMIT, type GatewaySummary, type TrafficRow } from './summary.js';
import { ALIAS_STATUS_NOTICE, QUEUE_RETRY_NOTICE, mailboxHolder, mailboxHolders, tell } from './fleet.js';
import { sharedConfig, sharedDifferences } from './shared-config.js';
import { controlSocketPath } from './http-client.js';

// The stored records the operations answer with, named here so the commands need no storage import.
export type { MessageMeta, QuarantineRecord, AliasState, AliasStatus, QueueEntry, DeliveryResult, AuditEntry, Store };
export type { AliasRow, AliasTestReport, PolicyReport, PolicyTestRequest, TimelineStep, GatewaySummary, TrafficRow };
export { controlSocketPath };

/** Which stored messages `messages list` wants, newest first; every filter given must hold. */
export interface MessageQuery {
  /** Only messages fetched for or sent as this alias. */
  alias?: string;
  /** Only messages with this tag (exception-queue, wrapped, oversize...). */
  tag?: string;
  /** Only messages received at or after this ISO 8601 time. */
  since?: string;
  /** Only messages received before this ISO 8601 time. */
  until?: string;
  /** Only messages whose subject, From or To contains this text, in any letter case. */
  text?: string;
  /** true: only messages with an attachment (a blocked one counts); false: only those without. */
  hasAttachment?: boolean;
  /** true: only wrapping messages (the original could not be processed); false: only the others. */
  wrapped?: boolean;
  /** Only messages of this conversation (its reference token, e.g. `K7P2QX`). */
  thread?: string;
  /** The `next` of the page before: the page that follows it (new arrivals do not shift it). */
  cursor?: string;
  /** At most this many (default 100). */
  limit?: number;
}

/** One page of a message search. */
export interface MessagePage {
  /** Newest first. */
  messages: MessageMeta[];
  /** Give this as `cursor` for the next page; absent on the last page. */
  next?: string;
}

/** Which quarantined attachments an operation is about; every filter given must hold. */
export interface QuarantineQuery {
  /** Only the attachments of this message. */
  messageId?: string;
  /** Only those whose blocking rule contains this text, in any letter case (e.g. `.exe`). */
  rule?: string;
  /** Only those whose file name fits this pattern, in any letter case: `*` any run of characters, `?` one (e.g. `*.exe`). */
  fileName?: string;
  /** Only those quarantined before this ISO 8601 time. */
  olderThan?: string;
}

/** What a bulk restore or delete did, attachment by attachment. */
export interface QuarantineBulkResult {
  /** The records restored or deleted. */
  done: QuarantineRecord[];
  /** The ones that could not be (another admin got there first, a damaged message): the error's code and sentence. */
  failed: { id: string; code?: string; message: string }[];
}

/** An attachment of a stored message, as read back from its bytes and the quarantine. */
export interface AttachmentDetail extends StoredAttachment {
  /** A blocked attachment's quarantine record, while it is kept. */
  quarantined?: QuarantineRecord;
}

/** A stored message as `messages show` presents it. */
export interface MessageDetails {
  /** The metadata, each attachment with its `decodedSize` where it is known. */
  meta: MessageMeta;
  /** Per attachment of `meta.attachments`, in order: what the stored bytes and the quarantine say. */
  attachments: AttachmentDetail[];
  /** Received, each stage's outcome, queued, each attempt's reply, delivered or failed (timeline.ts). */
  timeline: TimelineStep[];
  /** The other messages of its conversation, newest first (at most 50). */
  conversation: ConversationMessage[];
}

/** A message of a conversation, as `messages show` lists it. */
export type ConversationMessage = Pick<MessageMeta, 'id' | 'receivedAt' | 'from' | 'subject' | 'direction' | 'inReplyTo'>;

/** Messages of a conversation `messages show` lists beside the message. */
const CONVERSATION_LIMIT = 50;

/** What `mailgate send` asks for. */
export interface SendRequest {
  /** Name of the alias the message is sent as. */
  alias: string;
  /** Envelope sender: an address of the alias. */
  mailFrom: string;
  /** Envelope recipients (To, Cc and Bcc). */
  rcptTo: string[];
}

/** An alias's status after an admin's change. */
export type AliasStatusChange = AliasState & {
  /** Several nodes on one store: the node that holds the alias's mailbox and applies the change (told through the store when it is not this one); absent when no node holds it. */
  node?: string;
};

/** What a retry did. */
export interface RetryResult {
  /** Entries made due now (or, while being sent, as soon as they can be). */
  retried: number;
  /** Several nodes on one store: retried entries another node is delivering now; that node was told, and tries again at once if this attempt does not end it. */
  delivering?: { id: string; node: string }[];
}

/** A node of the fleet as `mailgate nodes` lists it (on LevelDB: this one). */
export interface NodeRow {
  name: string;
  /** When this run of it started. */
  startedAt: string;
  /** Its last lease round. */
  seenAt: string;
  /** Seen within the lease time and not shut down. */
  live: boolean;
  /** The node answering this request. */
  thisNode?: true;
  /** Mailboxes it holds now. */
  mailboxes: number;
  /** Queued messages it is delivering now (several nodes on one store). */
  delivering?: number;
  /** Alias and department names whose settings differ from this node's (mailgate.toml copied unevenly); absent when the same or unknown. */
  configDiffers?: string[];
}

/** A message `mailgate send` stored and queued. */
export interface SendResult {
  id: string;
  /** Who it goes to: the envelope recipients after automatic BCC or send_mail_to. */
  recipients: string[];
}

/** Every admin operation. Implemented by `Admin` (on a store) and by the control socket's client. */
export interface AdminApi {
  /** True when the running gateway answers (its dispatcher sends what is queued now); false on a stopped gateway's store. */
  readonly gatewayRunning: boolean;

  /** A page of stored messages, newest first; fails with BAD_REQUEST for a cursor it did not give. */
  listMessages(query: MessageQuery): Promise<MessagePage>;
  /** Fails with MESSAGE_NOT_FOUND. */
  showMessage(id: string): Promise<MessageDetails>;
  /** The stored bytes; fails with MESSAGE_NOT_FOUND before any byte. */
  rawMessage(id: string): Promise<Readable>;
  /**
   * Deletes a message for good with everything stored for it (bytes, indexes, quarantined
   * attachments), as the retention sweep does; fails with MESSAGE_NOT_FOUND, or MESSAGE_QUEUED
   * while it is still in the outbound queue.
   */
  deleteMessage(id: string): Promise<MessageMeta>;

  /** Quarantined attachments, newest message first, narrowed by `query`. */
  listQuarantine(query: QuarantineQuery): Promise<QuarantineRecord[]>;
  /** Fails with QUARANTINE_NOT_FOUND, as the others below. */
  showQuarantined(id: string): Promise<QuarantineRecord>;
  /** Puts the attachment back into its message, byte for byte as received. */
  restoreQuarantined(id: string): Promise<QuarantineRecord>;
  /** Deletes it for good; the notice in the message stays. */
  deleteQuarantined(id: string): Promise<QuarantineRecord>;
  /** The attachment's decoded content (the file as the sender attached it). */
  exportQuarantined(id: string): Promise<Readable>;
  /**
   * Restores or deletes every quarantined attachment `query` matches, one after the other; one
   * that fails is reported and the others still done. Fails with BAD_REQUEST without a filter
   * (all of the quarantine at once is never what a slip of the keyboard should do).
   */
  bulkQuarantine(action: 'restore' | 'delete', query: QuarantineQuery): Promise<QuarantineBulkResult>;

  /** Every configured alias with its health, and the backfill of its mailbox while the running retriever works one. */
  listAliases(): Promise<AliasRow[]>;
  /**
   * An admin's change of status; the running retriever holding the alias's mailbox applies it
   * at once, on this node or (told through the store) another. Fails with UNKNOWN_ALIAS.
   */
  setAliasStatus(alias: string, status: AliasStatus): Promise<AliasStatusChange>;
  /** Tries the alias's incoming and outgoing servers step by step. */
  testAlias(alias: string): Promise<AliasTestReport>;

  /** Queued messages, oldest first. */
  listQueue(): Promise<QueueEntry[]>;
  /** Fails with QUEUE_ENTRY_NOT_FOUND, as retry of one id and drop. */
  showQueued(id: string): Promise<QueueEntry>;
  /**
   * Makes one queued message (or, without an id, all) due now, held ones included; with
   * `heldOnly` and no id, only the held ones (after the admin fixed what held them).
   */
  retryQueued(id?: string, opts?: { heldOnly?: boolean }): Promise<RetryResult>;
  /** Takes a message out of the queue unsent; fails with QUEUE_BUSY while it is being sent. */
  dropQueued(id: string): Promise<QueueEntry>;

  /** Stores and queues a message sent as an alias, as the submission listener does. */
  sendMessage(request: SendRequest, message: Readable): Promise<SendResult>;
  /** Runs the policy on a message without storing anything. */
  testPolicy(message: Readable, request: PolicyTestRequest): Promise<PolicyReport>;

  /** The nodes sharing the store, by name (on LevelDB: this one), with what each holds and delivers now. */
  listNodes(): Promise<NodeRow[]>;

  /** The audit log (changes made through the REST API, sign-ins), newest first. */
  listAudit(query: AuditQuery): Promise<AuditEntry[]>;
  /** The gateway at a glance: the last hour's and day's messages, the queue, the quarantine, the aliases (summary.ts). */
  summary(): Promise<GatewaySummary>;

  /** Lets go of what was opened for this caller (a stopped gateway's store). */
  close(): Promise<void>;
}

/** Which audit entries `audit list` wants, newest first. */
export interface AuditQuery {
  /** Only entries recorded at or after this ISO 8601 time. */
  since?: string;
  /** At most this many (default 100). */
  limit?: number;
}

/** What the operations work on. */
export interface AdminDeps {
  config: Config;
  /**
   * The store: the running gateway's, or a stopped gateway's that the CLI opens on first use;
   * undefined when none was ever made (then only what needs no store can be done).
   */
  store(): Promise<Store | undefined>;
  logger: Logger;
  /** The policy stages for the next message of a department (a running gateway's). */
  stages?: StagesFor;
  /**
   * Without `stages`: reads the policy when an operation first needs it (a stopped gateway's
   * CLI command), so that a command which runs no policy loads none of its code.
   */
  loadStages?: () => Promise<StagesFor>;
  /** The running dispatcher: queue changes and sent messages go through it. */
  dispatcher?: Dispatcher;
  /** The running retriever, when there is one: admin status changes go through it. */
  retriever?: () => Retriever | undefined;
  /** The gateway's counters: `mailgate send` counts in them as the listeners do. */
  metrics?: Metrics;
  /** The running gateway's OAuth2 token providers (the retriever's own), for `aliases test`. */
  tokens?: (alias: AliasConfig) => TokenProvider | undefined;
  /** Secrets unset in this environment (the CLI reads the configuration with secrets deferred). */
  unsetSecrets?: readonly ConfigProblem[];
  /** Called by close: closes what was opened for this caller. */
  release?: () => Promise<void>;
}

/** The policy stages for the next message of a department. */
export type StagesFor = (department?: string) => readonly Stage[];

export class Admin implements AdminApi {
  readonly gatewayRunning: boolean;
  readonly #deps: AdminDeps;
  #loadedStages: Promise<StagesFor> | undefined;

  constructor(deps: AdminDeps) {
    this.#deps = deps;
    this.gatewayRunning = deps.dispatcher !== undefined;
  }

  #stages(): Promise<StagesFor> {
    const { stages, loadStages } = this.#deps;
    if (stages) return Promise.resolve(stages);
    if (!loadStages) return Promise.reject(new Error('Admin: given neither stages nor loadStages'));
    return (this.#loadedStages ??= loadStages());
  }

  async listMessages(query: MessageQuery): Promise<MessagePage> {
    const { since, until, cursor, limit = DEFAULT_PAGE, ...rest } = query;
    const before = cursor === undefined ? undefined : cursorId(cursor);
    // One more than asked tells whether another page follows.
    const found = await (
      await this.#store()
    ).listMessages({
      ...rest,
      ...(since !== undefined ? { since: new Date(since) } : {}),
      ...(until !== undefined ? { until: new Date(until) } : {}),
      ...(before !== undefined ? { before } : {}),
      limit: limit + 1,
    });
    if (found.length <= limit) return { messages: found };
    const messages = found.slice(0, limit);
    return { messages, next: cursorOf(messages[messages.length - 1]!.id) };
  }

  async showMessage(id: string): Promise<MessageDetails> {
    const store = await this.#store();
    const stored = await store.getMessage(id);
    if (!stored) throw storeErrors.messageNotFound(id);
    // Whether and when the forward to the quarantine mailbox left is on the forward's own records.
    // Loaded only for a message whose quarantine forwarding waits (it sends through nodemailer).
    const forward = stored.quarantineForward && (await import('../quarantine-forward/forwarding.js')).forwardNow;
    const meta = forward && stored.quarantineForward ? { ...stored, quarantineForward: await forward(store, stored.quarantineForward) } : stored;
    const attachments = await attachmentDetails(store, meta);
    const timeline = messageTimeline(meta, await store.getQueueEntry(id));
    const thread = meta.conversation ? await store.listMessages({ thread: meta.conversation, limit: CONVERSATION_LIMIT + 1 }) : [];
    const conversation = thread
      .filter((m) => m.id !== id)
      .slice(0, CONVERSATION_LIMIT)
      .map(({ id, receivedAt, from, subject, direction, inReplyTo }) => ({
        id,
        receivedAt,
        ...(from !== undefined ? { from } : {}),
        ...(subject !== undefined ? { subject } : {}),
        ...(direction ? { direction } : {}),
        ...(inReplyTo ? { inReplyTo } : {}),
      }));
    return { meta: withDecodedSizes(meta, attachments), attachments, timeline, conversation };
  }

  async rawMessage(id: string): Promise<Readable> {
    const store = await this.#store();
    if (!(await store.getMessage(id))) throw storeErrors.messageNotFound(id);
    return store.openRaw(id);
  }

  async deleteMessage(id: string): Promise<MessageMeta> {
    const meta = await (await this.#store()).deleteMessage(id);
    this.#deps.logger.info({ msg_id: id, size: meta.size }, 'message deleted by an admin');
    return meta;
  }

  async listQuarantine(query: QuarantineQuery): Promise<QuarantineRecord[]> {
    const fits = quarantineMatcher(query);
    const { messageId } = query;
    return (await (await this.#store()).listQuarantine(messageId !== undefined ? { messageId } : {})).filter(fits);
  }

  async showQuarantined(id: string): Promise<QuarantineRecord> {
    const record = await (await this.#store()).getQuarantined(id);
    if (!record) throw storeErrors.quarantineNotFound(id);
    return record;
  }

  async restoreQuarantined(id: string): Promise<QuarantineRecord> {
    const { restoreQuarantined } = await import('../../policy/attachments/quarantine.js');
    return restoreQuarantined(await this.#store(), id);
  }

  async deleteQuarantined(id: string): Promise<QuarantineRecord> {
    return (await this.#store()).deleteQuarantined(id);
  }

  async exportQuarantined(id: string): Promise<Readable> {
    await this.showQuarantined(id);
    const { openQuarantinedContent } = await import('../../policy/attachments/quarantine.js');
    return openQuarantinedContent(await this.#store(), id);
  }

  async bulkQuarantine(action: 'restore' | 'delete', query: QuarantineQuery): Promise<QuarantineBulkResult> {
    if (!Object.values(query).some((v) => v !== undefined)) {
      throw errors.badRequest('a bulk restore or delete needs at least one filter: message, rule, file name or older than');
    }
    const result: QuarantineBulkResult = { done: [], failed: [] };
    // One at a time: a restore rewrites its message, and two of one message must not race.
    for (const record of await this.listQuarantine(query)) {
      try {
        result.done.push(await (action === 'restore' ? this.restoreQuarantined(record.id) : this.deleteQuarantined(record.id)));
      } catch (err) {
        const e = err as { code?: unknown; message?: string };
        result.failed.push({ id: record.id, ...(typeof e.code === 'string' ? { code: e.code } : {}), message: e.message ?? String(err) });
      }
    }
    return result;
  }

  async listAliases(): Promise<AliasRow[]> {
    const store = await this.#deps.store();
    // No store yet (the gateway never ran): every alias is as configured.
    const states = store ? await store.listAliasStates() : {};
    const { config } = this.#deps;
    const now = new Date();
    // A backlog is known only to the running retriever (the CLI reaches it through the control socket).
    const retriever = this.#deps.retriever?.();
    // Several nodes: which one fetches each alias's mailbox now.
    const holders = store ? await mailboxHolders(store, config) : new Map<string, string>();
    return config.alias.map((a) => {
      const row = aliasRow(a, states[a.name], aliasWarnings(config, a, now), retriever?.backfill(a.name));
      const node = holders.get(a.name);
      return node === undefined ? row : { ...row, node };
    });
  }

  async setAliasStatus(name: string, status: AliasStatus): Promise<AliasStatusChange> {
    const alias = this.#alias(name);
    // The worker is the only writer of its alias's state while it runs: ask it, so the change takes effect now.
    const applied = await this.#deps.retriever?.()?.setStatus(name, status);
    const store = await this.#store();
    const shared = store.leases.shared;
    if (applied) return shared ? { ...applied, node: store.leases.node } : applied;
    // Not fetched here: recorded in the store, where whichever node fetches it next reads it,
    // and the node holding the mailbox now (if another) is told, since its worker keeps the state in memory.
    const state = await setAliasStatusInStore(store, name, status);
    const holder = await mailboxHolder(store, this.#deps.config, alias);
    if (holder === undefined) return state;
    if (holder !== store.leases.node) await tell(store, this.#deps.logger, ALIAS_STATUS_NOTICE, { alias: name, status, holder });
    return { ...state, node: holder };
  }

  async testAlias(name: string): Promise<AliasTestReport> {
    const { config } = this.#deps;
    const alias = this.#alias(name);
    if (!alias.incoming && !alias.outgoing) throw errors.badRequest(`alias ${name} has neither [alias.incoming] nor [alias.outgoing]: nothing to test`);
    // It logs in as the retriever does: with the alias's passwords, or its OAuth app's client secret.
    const app = config.oauth_app.findIndex((a) => a.name === (alias.incoming?.oauth2 ?? alias.outgoing?.oauth2));
    requireSecrets({ config, unsetSecrets: this.#deps.unsetSecrets ?? [] }, [
      `alias[${config.alias.indexOf(alias)}]`,
      ...(app >= 0 ? [`oauth_app[${app}]`] : []),
    ]);
    // imapflow and friends load only for this operation.
    const { testAliasConnection } = await import('../fetch/connection-test.js');
    return aliasTestReport(name, await testAliasConnection(alias, await this.#incomingTokens(alias)));
  }

  async listQueue(): Promise<QueueEntry[]> {
    return (await this.#store()).listQueue();
  }

  async showQueued(id: string): Promise<QueueEntry> {
    return requireQueueEntry(await this.#store(), id);
  }

  async retryQueued(id?: string, opts: { heldOnly?: boolean } = {}): Promise<RetryResult> {
    const store = await this.#store();
    const elsewhere: string[] = [];
    const retried = await retryQueued(store, id, this.#deps.dispatcher, { ...opts, claimedElsewhere: (e) => elsewhere.push(e) });
    if (elsewhere.length === 0) return { retried };
    // Claimed by a node delivering it now: that node is told, and makes it due again when its attempt ends.
    const claims = new Map((await store.queueClaims.claims()).map((c) => [c.id, c.node]));
    const delivering: { id: string; node: string }[] = [];
    for (const e of elsewhere) {
      const node = claims.get(e);
      if (node === undefined) continue; // its claim ended meanwhile: the entry waits for any node's poll
      delivering.push({ id: e, node });
      if (node !== store.leases.node) await tell(store, this.#deps.logger, QUEUE_RETRY_NOTICE, { id: e, holder: node });
    }
    return delivering.length ? { retried, delivering } : { retried };
  }

  async listNodes(): Promise<NodeRow[]> {
    const store = await this.#store();
    const { leases } = store;
    const [nodes, held, claims] = await Promise.all([leases.nodes(), leases.list(), store.queueClaims.claims()]);
    const mine = sharedConfig(this.#deps.config);
    const count = (names: (string | undefined)[]) => names.reduce((m, n) => (n === undefined ? m : m.set(n, (m.get(n) ?? 0) + 1)), new Map<string, number>());
    const holds = count(held.filter((l) => l.held).map((l) => l.holder));
    const delivers = count(claims.map((c) => c.node));
    return nodes.map((n): NodeRow => {
      const row: NodeRow = {
        name: n.name,
        startedAt: n.startedAt.toISOString(),
        seenAt: n.seenAt.toISOString(),
        live: n.live,
        mailboxes: holds.get(n.name) ?? 0,
      };
      if (n.name === leases.node) row.thisNode = true;
      if (store.queueClaims.shared) row.delivering = delivers.get(n.name) ?? 0;
      const differ = n.name === leases.node ? undefined : sharedDifferences(mine, n.config);
      if (differ) row.configDiffers = [...differ.aliases.map((a) => `alias ${a}`), ...differ.departments.map((d) => `department ${d}`)];
      return row;
    });
  }

  async dropQueued(id: string): Promise<QueueEntry> {
    return dropQueued(await this.#store(), id, this.#deps.dispatcher);
  }

  /** The submission listener's path (submitOutbound), with the command line as its source. */
  async sendMessage(request: SendRequest, message: Readable): Promise<SendResult> {
    const { config, logger, metrics } = this.#deps;
    try {
      const alias = this.#alias(request.alias);
      if (aliasOfAddress(config, request.mailFrom) !== alias) throw errors.sendAsDenied(request.mailFrom);
      const deps = { store: await this.#store(), logger, config, stages: await this.#stages(), dispatcher: this.#deps.dispatcher };
      const { submitOutbound } = await import('../dispatch/submit.js');
      const { meta, entry } = await submitOutbound(deps, message, {
        alias,
        envelope: { mailFrom: request.mailFrom, rcptTo: request.rcptTo },
        source: { kind: 'cli', alias: alias.name },
        maxSize: config.submission.max_message_size ?? config.smtp.max_message_size,
      });
      const recipients = entry.recipients.map((r) => r.address);
      // Counted as the submission listener counts, under the source the metadata names (`cli`).
      metrics?.inc('mailgate_messages_total', { source: 'cli', outcome: 'queued' });
      logger.info({ msg_id: meta.id, outcome: 'queued', alias: request.alias, source: 'cli', rcpt: recipients }, 'message queued by mailgate send');
      return { id: meta.id, recipients };
    } catch (err) {
      metrics?.inc('mailgate_messages_total', { source: 'cli', outcome: 'refused' });
      const e = err as { code?: string; message?: string };
      logger.info({ outcome: 'refused', reason: e.code, source: 'cli', alias: request.alias }, e.message ?? String(err));
      throw err;
    }
  }

  async testPolicy(message: Readable, request: PolicyTestRequest): Promise<PolicyReport> {
    const { department } = request;
    if (department !== undefined && !this.#deps.config.department.some((d) => d.name === department)) throw errors.departmentNotConfigured(department);
    const { tryPolicy } = await import('./policy-test.js');
    return tryPolicy(message, (await this.#stages())(department), request);
  }

  async listAudit(query: AuditQuery): Promise<AuditEntry[]> {
    const { since, ...rest } = query;
    return (await this.#store()).listAudit({ ...rest, ...(since !== undefined ? { since: new Date(since) } : {}) });
  }

  async summary(): Promise<GatewaySummary> {
    const store = await this.#store();
    const now = new Date();
    const [messages, queue, quarantined, aliases] = await Promise.all([
      store.listMessages({ since: new Date(now.getTime() - 24 * 3_600_000), limit: SUMMARY_SCAN_LIMIT }),
      store.listQueue(),
      store.listQuarantine({}),
      this.listAliases(),
    ]);
    return summarise(now, messages, queue, quarantined.length, aliases);
  }

  async close(): Promise<void> {
    await this.#deps.release?.();
  }

  async #store(): Promise<Store> {
    const store = await this.#deps.store();
    if (!store) throw errors.noStore(this.#deps.config.data_dir);
    return store;
  }

  #alias(name: string): AliasConfig {
    const alias = this.#deps.config.alias.find((a) => a.name === name);
    if (!alias) throw errors.aliasNotConfigured(name);
    return alias;
  }

  /**
   * Where the login of ALIAS's incoming server gets its OAuth2 token, as the retriever would:
   * the running gateway lends its own providers; on a stopped gateway's store, client
   * credentials need nothing kept, and the delegated flow's tokens are in the store, encrypted
   * (a refresh rotates the refresh token, which is saved back).
   */
  async #incomingTokens(alias: AliasConfig): Promise<Pick<ConnectionTestOptions, 'tokens' | 'noTokens'>> {
    if (alias.incoming?.oauth2 === undefined) return {};
    if (this.#deps.tokens) return { tokens: this.#deps.tokens(alias) };
    const { config } = this.#deps;
    // msal loads only for OAuth aliases.
    const { aliasTokenCache, aliasTokenProvider, gatewaySecretKey, oauthAppOf } = await import('../oauth/store.js');
    if (oauthAppOf(config, alias)?.flow === 'client_credentials') return { tokens: aliasTokenProvider(config, alias) };
    let store: Store | undefined;
    try {
      store = await this.#deps.store();
    } catch (err) {
      // Held by a gateway that is starting or stopping (or does not answer): the tokens are its to use.
      if ((err as { code?: string }).code !== 'GATEWAY_NOT_ANSWERING') throw err;
      return {
        noTokens: `the running gateway holds this alias's OAuth2 tokens (authorization_code flow): see its status and last error in \`mailgate aliases list\`, or stop the gateway to test the login here`,
      };
    }
    if (!store) return { noTokens: `no tokens yet (no store at ${config.data_dir}): run \`mailgate oauth authorize ${alias.name}\`` };
    const key = await gatewaySecretKey(config);
    return { tokens: aliasTokenProvider(config, alias, (app) => aliasTokenCache(store, app.name, alias.name, key)) };
  }
}

/** Messages on a page when the caller does not say. */
const DEFAULT_PAGE = 100;
// A cursor is opaque to callers: what it holds may change (a PostgreSQL store may page otherwise).
const CURSOR_PREFIX = 'm1:';

/** The cursor that continues below message `id`. */
function cursorOf(id: string): string {
  return Buffer.from(CURSOR_PREFIX + id).toString('base64url');
}

/** The message id a cursor continues below; BAD_REQUEST for anything listMessages did not give. */
function cursorId(cursor: string): string {
  const text = Buffer.from(cursor, 'base64url').toString();
  const id = text.slice(CURSOR_PREFIX.length);
  if (!text.startsWith(CURSOR_PREFIX) || !isMessageId(id)) throw errors.badRequest(`cursor: not one that a message list gave, got "${cursor}"`);
  return id;
}

/** The message read back for its attachments' decoded sizes; a blocked one's size is its quarantine record's. */
async function attachmentDetails(store: Store, meta: MessageMeta): Promise<AttachmentDetail[]> {
  if (meta.attachments.length === 0) return [];
  const { storedAttachments } = await import('./attachment-sizes.js');
  const found: AttachmentDetail[] = await storedAttachments(store.openRaw(meta.id));
  for (const a of found) {
    if (a.quarantineId === undefined) continue;
    const record = await store.getQuarantined(a.quarantineId);
    if (record) {
      a.quarantined = record;
      a.decodedSize = record.size;
    }
  }
  return found;
}

/** The metadata with each attachment's `decodedSize` where it is known. */
function withDecodedSizes(meta: MessageMeta, details: AttachmentDetail[]): MessageMeta {
  return {
    ...meta,
    attachments: meta.attachments.map((a, i) => {
      const size = details[i]?.decodedSize;
      return size === undefined ? a : { ...a, decodedSize: size };
    }),
  };
}

/**
 * The admin API of a CLI command while the gateway is stopped (openAdminApi, open.ts, found no
 * gateway answering on `socket`): this process's own on the gateway's store, opened on first
 * use (`create`: made when there is none yet, for commands that add to it, as `serve` would).
 * The policy, when an operation needs it, is read from the files as `serve` would read it.
 */
export function stoppedGatewayAdmin(loaded: LoadedConfig, socket: string, opts: { create?: boolean } = {}): AdminApi {
  const { config } = loaded;
  let opened: Promise<Store | undefined> | undefined;
  return new Admin({
    config,
    unsetSecrets: loaded.unsetSecrets,
    logger: silentLogger(),
    store: () => (opened ??= openStoppedStore(loaded, socket, opts.create === true)),
    loadStages: async () => {
      const { withThreading } = await import('../../policy/threading/stage.js');
      const { PolicySet, policySources } = await import('../../policy/policy-set.js');
      let policy: PolicySet | undefined;
      return withThreading(config.partition, (department) => (policy ??= PolicySet.load(policySources(config))).stagesFor(department));
    },
    release: async () => {
      const store = await opened?.catch(() => undefined);
      await store?.close();
    },
  });
}

/**
 * A stopped gateway's store, or undefined when there is none and none is to be made. With
 * PostgreSQL the database is opened directly: there is no data-directory lock (several nodes
 * share it), and the tables are made only when `create`.
 */
async function openStoppedStore(loaded: LoadedConfig, socket: string, create: boolean): Promise<Store | undefined> {
  const dir = loaded.config.data_dir;
  const settings = configuredStore(loaded.config);
  // The data directory holds the spool whichever store keeps the records.
  if (create) mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (settings.postgres) {
    // The database's password, unlike a mail server's, is needed by every command that reads the store.
    requireSecrets(loaded, ['storage']);
    return openStore(dir, { ...settings, createIfEmpty: create });
  }
  if (!create && !existsSync(dir)) return undefined;
  try {
    return await openStore(dir);
  } catch (err) {
    // The gateway did not answer a moment ago: something else holds it, or it is starting or stopping.
    if ((err as { code?: string }).code === 'STORE_LOCKED') throw errors.gatewayNotAnswering(dir, socket, err);
    throw err;
  }
}

/**
 * The data directory's store, opened by this process and made when there is none: for `serve`,
 * and for `oauth authorize`, which writes tokens that the gateway reads. `locked` is the error
 * when another process (a running gateway) holds it.
 */
export async function openOwnStore(config: Config, locked: (cause: unknown) => Error, opts: { logger?: Logger } = {}): Promise<Store> {
  mkdirSync(config.data_dir, { recursive: true, mode: 0o700 });
  try {
    return await openStore(config.data_dir, { ...configuredStore(config), createIfEmpty: true, ...(opts.logger ? { logger: opts.logger } : {}) });
  } catch (err) {
    if ((err as { code?: string }).code === 'STORE_LOCKED') throw locked(err);
    throw err;
  }
}
