/**
 * The storage interface: everything the rest of mailgate may ask of a store, in mailgate's
 * own terms. Today's implementation is LevelDB (storage/leveldb/, opened by storage/open.ts);
 * a PostgreSQL one, shared by several nodes, is to satisfy the same interface without any
 * caller changing. So nothing here names how records are kept (database keys, batches,
 * versions of a message's bytes): only messages and the records that go with them. test/helpers/store-contract.ts
 * is the contract every implementation must pass.
 */
import type { Readable, Writable } from 'node:stream';
import type { MailgateError } from '../lib/errors.js';
import type { AliasState, AuditEntry, DeliveryRecord, FetchedKey, FetchedRecord, MessageMeta, QuarantineRecord, QueueEntry } from './records.js';

/**
 * A record that must become durable and visible in the same commit as a message, or not at
 * all: after a crash or a failed commit either the message and all its side records are
 * there, or none of them is.
 */
export type SideRecord =
  /** Queue the message (submitted for an alias, or relayed downstream); `entry.id` is the message's id. */
  | { type: 'queue-entry'; entry: QueueEntry }
  /**
   * Another message left the queue: its entry goes and `delivery` is recorded on its metadata
   * (a delivery status notification is stored and queued in the same commit as this).
   */
  | {
      type: 'queue-finished';
      id: string;
      delivery: DeliveryRecord;
      /** Several nodes on one store: the commit fails with `QUEUE_CLAIM_LOST` unless this node still holds the entry's claim ({@link QueueClaims}). */
      claimed?: true;
    }
  /** An attachment of the message kept in quarantine; its bytes were written through a {@link QuarantineSpool}. */
  | { type: 'quarantine'; record: QuarantineRecord }
  /** The retriever's record that a mailbox message is stored (so it is never stored twice). */
  | {
      type: 'fetched';
      key: FetchedKey;
      record: FetchedRecord;
      /**
       * The lease the fetching node holds on the mailbox (several nodes on one store): the
       * commit fails with `STORE_LEASE_LOST` unless this node still holds it at this epoch, so
       * a node that lost its mailbox (paused, partitioned) cannot record a message.
       */
      lease?: { mailbox: string; epoch: number };
    };

/** Which messages {@link Store.listMessages} returns: every filter given must hold. */
export interface ListOptions {
  /** Only messages whose `source.alias` is this. */
  alias?: string | undefined;
  /** Only messages whose id was made at or after this time (ids follow arrival). */
  since?: Date | undefined;
  /** Only messages whose id was made before this time. */
  until?: Date | undefined;
  /**
   * Paging: only messages older than the message with this id (ids sort by arrival, so a page
   * read after new mail arrived still continues where the last one stopped).
   */
  before?: string | undefined;
  /** Only messages carrying this tag, e.g. `exception-queue`; read newest first until `limit` of them are found. */
  tag?: string | undefined;
  /** Only messages whose subject, From or To contains this text, in any letter case. */
  text?: string | undefined;
  /** true: only messages with at least one attachment (a blocked one counts); false: only those without. */
  hasAttachment?: boolean | undefined;
  /** true: only wrapping messages (the original could not be processed); false: only the others. */
  wrapped?: boolean | undefined;
  /** Only messages of this conversation (`MessageMeta.conversation`, the reference token). */
  thread?: string | undefined;
  /** At most this many, newest first. Default 100. */
  limit?: number | undefined;
}

/**
 * The writable end of the store for one new message. Pipe the message into it, then
 * `commit(meta, sideRecords)` to make it durable and visible, or `abort()` to remove what was
 * written. Nothing of the message is visible before its commit.
 *
 * @example
 * const writer = store.createMessageWriter(newMessageId());
 * try {
 *   await pipeline(source, writer);
 *   await writer.commit(meta, [{ type: 'queue-entry', entry }]);
 * } catch (err) {
 *   await writer.abort();
 *   throw errors.storeFailed(err);
 * }
 */
export interface MessageWriter extends Writable {
  /** The id the message is stored under. */
  readonly id: string;
  /** Bytes received so far; after `commit()`, the stored size. */
  readonly bytesWritten: number;
  /**
   * Makes the message (`meta`, with `size` set to the bytes actually stored) and its side
   * records durable and visible at once. Call after the stream has ended. Rejects with the
   * cause on failure; then call `abort()`.
   */
  commit(meta: MessageMeta, sideRecords?: readonly SideRecord[]): Promise<void>;
  /**
   * Removes whatever was written for the message, its quarantine spools' bytes included, and
   * stops the stream if it is still open. Safe to call twice; refuses once `commit()` has begun.
   */
  abort(): Promise<void>;
}

/**
 * New bytes for a committed message (an attachment restored from quarantine). Readers see the
 * old bytes until `commit`, the new ones after, never a mix; one rewrite of a message at a time.
 */
export interface MessageRewrite extends Writable {
  /** Bytes written so far. */
  readonly bytesWritten: number;
  /**
   * Swaps the new bytes in with `meta` (its `size` set to the bytes written), atomically with
   * the removal of the quarantined attachment `restoredQuarantineId` when given.
   */
  commit(meta: MessageMeta, opts?: { restoredQuarantineId?: string }): Promise<void>;
  /** Drops the new bytes; the message keeps its old ones. */
  abandon(): Promise<void>;
}

/**
 * The bytes of one MIME part, written while its message streams: a blocked part kept as the
 * quarantined original, or a part whose verdict is known only at its end (archives, attached
 * messages), which waits here, not in memory, and is played back into the message if it
 * passes. They belong to the message: its commit keeps them (with a `quarantine` side record
 * naming this spool's id), its abort removes them.
 */
export interface QuarantineSpool {
  /** The quarantine id, `<message id>.<n>`. */
  readonly id: string;
  /** Bytes written so far. */
  readonly bytes: number;
  /** Appends bytes; resolves once they may be released (backpressure for the caller). */
  write(data: Buffer): Promise<void>;
  /** Writes what is still held in memory; call before `replay` and before the message commits. */
  close(): Promise<void>;
  /** The written bytes from `offset` on, in order (after `close`). */
  replay(offset?: number): AsyncIterable<Buffer>;
  /** Removes the written bytes (the part passed, or the action is delete). */
  discard(): Promise<void>;
}

/** What {@link Store.deleteMessagesBefore} did. */
export interface DeletedMessages {
  /** Messages deleted. */
  messages: number;
  /** Their quarantined attachments, deleted with them. */
  quarantined: number;
  /** Bytes of the messages deleted (their stored size). */
  bytes: number;
  /** Messages old enough but kept because they are still in the outbound queue. */
  queued: number;
}

/** Where a store reports its sweeps, migrations and recoveries; pino's `info/warn/error(obj, msg)` fit. */
export interface StoreLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** A node's hold on one mailbox (the identity aliases share: type, host, port, user, folder). */
export interface MailboxLease {
  /** The mailbox's identity (gateway/fetch/recipients.ts `mailboxIdentity`). */
  mailbox: string;
  /** The node holding it. */
  holder: string;
  /** Grows with every change of holder: a fetched record carries it, so a former holder's commit is refused. */
  epoch: number;
  /** When it lapses unless renewed, by the database's clock. */
  expiresAt: Date;
}

/** One row of the lease table, for the console: a mailbox free or lapsed has no live holder. */
export interface LeaseState {
  mailbox: string;
  /** The node that holds it, or held it last (absent once released). */
  holder?: string;
  epoch: number;
  expiresAt?: Date;
  /** Whether `holder` holds it now (not released, not expired by the database's clock). */
  held: boolean;
}

/** A node of the fleet as the lease table knows it. */
export interface FleetNode {
  name: string;
  /** When this run of the node first balanced its leases. */
  startedAt: Date;
  /** Its last balancing round. */
  seenAt: Date;
  /** Seen within the lease time and not shut down: counted when mailboxes are shared out. */
  live: boolean;
  /** What it announced of its configuration (Leases.announce), when it did. */
  config?: Record<string, unknown>;
}

/**
 * Which node fetches which mailbox (issue 16, "Several nodes: Fetching"): each mailbox is held
 * by one node at a time through a lease with an expiry and an epoch. The retriever balances
 * every third of the lease time, fetches only what it holds, and confirms a lease right before
 * moving or deleting a poll's messages.
 */
export interface Leases {
  /** This node's name (`[node] name`). */
  readonly node: string;
  /**
   * Whether other nodes may share the store. false for a store only one process can open
   * (LevelDB): it holds every mailbox, so the retriever needs no lease rounds and logs none.
   */
  readonly shared: boolean;
  /**
   * One round: records this node as seen, renews the leases it holds, takes free or expired
   * ones among MAILBOXES up to its fair share (ceil(mailboxes / live nodes)), gives back
   * those above it when another live node has fewer (so a node that joins gets work), and
   * resolves to the leases it holds now. Two nodes balancing at once never both get one. A
   * new holder always gets the last epoch + 1. Mailboxes it holds that are not in MAILBOXES
   * (no longer in this node's configuration) are given back.
   */
  balance(mailboxes: readonly string[], ttlMs: number): Promise<MailboxLease[]>;
  /** Whether this node still holds LEASE at its epoch; if so it is extended by the lease time. */
  confirm(lease: { mailbox: string; epoch: number }): Promise<boolean>;
  /** Gives back these mailboxes' leases (default: every one this node holds, and it leaves the fleet); resolves to those given back. */
  release(mailboxes?: readonly string[]): Promise<MailboxLease[]>;
  /** Every mailbox ever leased, by mailbox. */
  list(): Promise<LeaseState[]>;
  /** Every node that ever balanced, by name. */
  nodes(): Promise<FleetNode[]>;
  /**
   * Records with this node's row what it says of its configuration (the aliases and
   * departments the nodes share, normalised: gateway/admin/shared-config.ts), for the others to
   * compare; kept across its lease rounds.
   */
  announce(config: Record<string, unknown>): Promise<void>;
}

/**
 * A notice from one node to the others (issue 16, "Several nodes: Admin"): an admin's change
 * that the node holding a mailbox or a queued message applies. Best effort: a node that is
 * not listening at that moment (restarting, its database connection lost) misses it, so what a
 * notice asks for is always recorded in the store first and the notice only makes it quick.
 */
export interface Notice {
  /** What it is about, e.g. `alias-status`. */
  topic: string;
  /** The sending node's name (`[node] name`). */
  from: string;
  /** Small JSON: the whole notice stays under {@link NOTICE_MAX_BYTES}. */
  payload: Record<string, unknown>;
}

/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; every store keeps to it, so what works on one works on the other. */
export const NOTICE_MAX_BYTES = 7900;

/** The message store. One per gateway; opened by storage/open.ts. */
export interface Store {
  /**
   * This node's data directory. The spool of messages being received (ingest/spool.ts) and
   * the control socket live there, whatever keeps the records.
   */
  readonly dir: string;

  /** Which node fetches which mailbox. */
  readonly leases: Leases;

  // Messages.

  /** A writer for a new message; `id` comes from `newMessageId()` (storage/ids.ts). */
  createMessageWriter(id: string): MessageWriter;
  /** The metadata of a committed message, or undefined. */
  getMessage(id: string): Promise<MessageMeta | undefined>;
  /** Committed messages, newest first, narrowed by `opts`. */
  listMessages(opts?: ListOptions): Promise<MessageMeta[]>;
  /**
   * The stored bytes of a message, byte for byte. The stream errors with code
   * `MESSAGE_NOT_FOUND` if there is no such committed message, `MESSAGE_DAMAGED` if the bytes
   * do not add up to the recorded size.
   */
  openRaw(id: string): Readable;
  /** Starts new bytes for committed message `id`, once any other rewrite of it is done. */
  rewriteMessage(id: string): Promise<MessageRewrite>;

  /** Committed messages whose Message-ID (without angle brackets) is `messageId`, oldest first (reply threading). */
  findByMessageId(messageId: string): Promise<MessageMeta[]>;

  // Quarantine.

  /** A spool for the bytes of a part of a message being written; `id` is `<message id>.<n>`. */
  createQuarantineSpool(id: string): QuarantineSpool;
  /** Quarantined attachments, newest message first; only one message's with `messageId`. */
  listQuarantine(opts?: { messageId?: string }): Promise<QuarantineRecord[]>;
  /** One quarantined attachment, or undefined. */
  getQuarantined(id: string): Promise<QuarantineRecord | undefined>;
  /** The original part's bytes (raw header block and encoded body, as received); errors with `QUARANTINE_NOT_FOUND`. */
  openQuarantined(id: string): Readable;
  /** Removes a quarantined attachment for good and returns its record; rejects with `QUARANTINE_NOT_FOUND`. */
  deleteQuarantined(id: string): Promise<QuarantineRecord>;

  // Outbound queue.

  /** Saves new or updated entries durably, all or none (after each attempt: a recipient delivered must stay delivered). */
  putQueueEntries(entries: readonly QueueEntry[]): Promise<void>;
  /** The entry of message `id`, or undefined when it is not queued. */
  getQueueEntry(id: string): Promise<QueueEntry | undefined>;
  /** Every queued message, oldest first. */
  listQueue(): Promise<QueueEntry[]>;
  /** Takes message `id` out of the queue and records `delivery` on its metadata (if the message is still there), at once. */
  finishQueueEntry(id: string, delivery: DeliveryRecord): Promise<void>;

  /** Which node delivers which queued message, when several nodes share this store. */
  readonly queueClaims: QueueClaims;

  // Notices between nodes (a Notice). On a store of one process (LevelDB) they reach this
  // process's handlers only; on a shared one, every node's, the sender's included.

  /** Sends a notice to every node's {@link onNotice} handlers; rejects with a RangeError when it is {@link NOTICE_MAX_BYTES} or more as JSON. */
  notify(topic: string, payload: Record<string, unknown>): Promise<void>;
  /** Calls HANDLER with every notice from now on, until the returned function is called. */
  onNotice(handler: (notice: Notice) => void): () => void;
  /**
   * Calls HANDLER each time this node starts listening for notices: the first time, and again
   * after every loss of the listening connection (a PostgreSQL restart, a failover). Notices
   * sent while it was not listening were missed, so a handler reads again, from the store,
   * what they would have told. Never called on a store of one process: its notices cannot be lost.
   */
  onNoticesResumed(handler: () => void): () => void;

  // Alias health.

  /** The stored state of `alias`, or undefined when none was ever recorded. */
  getAliasState(alias: string): Promise<AliasState | undefined>;
  /** Every stored alias state, by alias name. */
  listAliasStates(): Promise<Record<string, AliasState>>;
  /** Records the state of `alias` durably. */
  putAliasState(alias: string, state: AliasState): Promise<void>;

  // The retriever's fetched keys.

  /** What was stored for each key, in the order given (undefined: not stored). */
  getFetched(keys: readonly FetchedKey[]): Promise<(FetchedRecord | undefined)[]>;
  /** Records durably that a mailbox message is stored (on its own; with a message, use a `fetched` side record). */
  putFetched(key: FetchedKey, record: FetchedRecord): Promise<void>;

  // OAuth token cache.

  /** The alias's sealed token cache (gateway/oauth/cache.ts encrypts it), or undefined. */
  readTokenCache(alias: string): Promise<Buffer | undefined>;
  /** Replaces the alias's sealed token cache durably (a rotated refresh token lost in a crash would need a new sign-in). */
  writeTokenCache(alias: string, sealed: Buffer): Promise<void>;

  // Auto-replies (gateway/auto-reply/; RFC 3834 section 2: not more than one per sender per interval).

  /**
   * Records that `alias` answers `sender` at `at`, unless an answer was recorded at or after
   * `notBefore`: true when recorded (send it), false when one was (do not). Check and record are
   * one step, so two messages of one sender arriving together get one answer; durable.
   */
  claimAutoReply(alias: string, sender: string, at: Date, notBefore: Date): Promise<boolean>;

  // The audit log.

  /** Records ENTRY durably, giving it its id (or keeping the one it has: `mailgate storage copy`). */
  appendAudit(entry: Omit<AuditEntry, 'id'> & { id?: string }): Promise<AuditEntry>;
  /**
   * Audit entries, newest first (by id): at most `limit` (default 100), at or after `since`,
   * and with `before`, only those whose id is smaller (paging: the last id of the page before).
   */
  listAudit(opts?: { limit?: number; since?: Date; before?: string }): Promise<AuditEntry[]>;

  // Retention (gateway/retention/): what is deleted for good, and the space it gives back.

  /**
   * Deletes committed message `id` for good: its bytes, metadata, index entries and quarantined
   * attachments. The retriever's fetched-key records stay: they say the mailbox message is
   * stored, and without them a mailbox that still holds it would have it fetched again.
   * Rejects with `MESSAGE_NOT_FOUND`, or `MESSAGE_QUEUED` while it is in the outbound queue.
   */
  deleteMessage(id: string): Promise<MessageMeta>;
  /**
   * Deletes, as {@link deleteMessage} does, every committed message that arrived before
   * `before`, oldest first, except those in the outbound queue; stops between messages once
   * `signal` aborts.
   */
  deleteMessagesBefore(before: Date, opts?: { signal?: AbortSignal }): Promise<DeletedMessages>;
  /** Deletes the audit entries recorded before `before`; resolves to how many. */
  deleteAuditBefore(before: Date): Promise<number>;
  /** Gives the space of what was deleted back to the file system (for LevelDB: compaction of the deleted key ranges). */
  compact(): Promise<void>;

  // Everything else, record by record, for `mailgate storage copy` (messages, quarantine, the
  // queue, alias states and the audit log are listed by the methods above).

  /** Every fetched-key record, in no particular order. */
  listFetched(): AsyncIterable<{ key: FetchedKey; record: FetchedRecord }>;
  /** Every alias's sealed token cache. */
  listTokenCaches(): AsyncIterable<{ alias: string; sealed: Buffer }>;
  /** Every auto-reply on record: who was last answered for which alias, and when. */
  listAutoReplies(): AsyncIterable<{ alias: string; sender: string; at: Date }>;

  /**
   * Whether ERR (or one of its causes) is a failure of this store: a `STORE_*` error of
   * `storeErrors`, its database's own errors, a full disk. Ingest answers those 451/452 instead of wrapping the
   * message, which was not at fault.
   */
  isStoreFailure(err: unknown): boolean;

  /**
   * Holds this node's name (`[node] name`) for this process until the store closes. `serve`
   * takes it before anything works under the name, since leases, queue claims and unfinished
   * writes are recorded by name; CLI commands, which open the store under the same name, do
   * not. Rejects with `NODE_NAME_IN_USE` when another process holds it. On a shared store the
   * hold lives on a database connection of its own: lost, it is taken again once the database
   * answers, and ONTAKEN is called (once) if another process took the name meanwhile; this
   * process must then stop working under it. LevelDB: resolves at once (its data directory is
   * one process's already: `STORE_LOCKED`, and two LevelDB nodes with one name share nothing).
   */
  holdNodeName(onTaken: (err: MailgateError) => void): Promise<void>;

  /** Waits for writes in progress, then closes the store. Safe to call twice. */
  close(): Promise<void>;
}

/**
 * Delivery claims on the outbound queue. With several nodes on one store any node may deliver
 * any queued message, but one at a time: a node claims an entry for a lease, renews the claim
 * while its attempt runs (an attempt can take minutes on a slow server), and records the
 * attempt only if the claim is still its own; a dead node's claims expire and another node
 * takes its entries. The store's clock decides expiry (for PostgreSQL, the database's
 * `now()`), not the nodes' clocks. A store used by one node alone (LevelDB) has `shared`
 * false: every claim is granted without reading or writing anything, and the dispatcher keeps
 * its schedule in memory as it always did.
 */
export interface QueueClaims {
  /** Whether other nodes may deliver from this store's queue (the dispatcher then polls {@link claimDue}). */
  readonly shared: boolean;
  /**
   * Claims up to `limit` entries that are due (their next attempt is now or past), not held
   * for an admin, and claimed by nobody (or by a node whose claim expired), oldest due first,
   * for `leaseMs`; two nodes claiming at once never get the same entry. Resolves to the
   * entries as stored, each with the node whose expired claim was taken over, if any.
   */
  claimDue(limit: number, leaseMs: number): Promise<{ entry: QueueEntry; tookOverFrom?: string }[]>;
  /**
   * Claims entry `id` for `leaseMs` (a new entry before its first attempt, an admin's retry or
   * drop): its entry as stored, or undefined when it is not queued, another node (or this one)
   * holds a live claim on it, or with `onlyIfDue` its next attempt is still to come.
   */
  claim(id: string, leaseMs: number, opts?: { onlyIfDue?: boolean }): Promise<QueueEntry | undefined>;
  /** Extends this node's claims on `ids` to `leaseMs` from now; resolves to the ids still claimed by this node (the others were lost). */
  renew(ids: readonly string[], leaseMs: number): Promise<string[]>;
  /** Gives up this node's claims on `ids` at once (shutdown): any node may take them. */
  release(ids: readonly string[]): Promise<void>;
  /**
   * Saves `entry` (progress during an attempt, or its outcome) durably, only if this node
   * still holds its claim; with `release`, gives the claim up in the same write (the entry
   * waits for its next attempt, on whichever node). False, and nothing written, when the
   * claim was lost: the node holding it now retries the message.
   */
  saveClaimed(entry: QueueEntry, opts?: { release?: boolean }): Promise<boolean>;
  /** {@link Store.finishQueueEntry}, only if this node still holds the entry's claim; false, and nothing written, when it was lost. */
  finishClaimed(id: string, delivery: DeliveryRecord): Promise<boolean>;
  /** The live claims (not expired), by entry id, with the node holding each: who delivers what now. None when not `shared`. */
  claims(): Promise<{ id: string; node: string }[]>;
}
