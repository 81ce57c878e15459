/**
 * The on-disk layout of the store: one LevelDB database, keys and values utf8 unless said.
 *
 *   schema                          layout version, a decimal string (see `migrations`)
 *   !messages!<id>                  MessageMeta as JSON, written once at commit
 *   !chunks!<id>!<8-digit seq>      up to 64 KiB of the message's bytes (Buffer), seq from 00000000
 *   !by-alias!<alias>\x00<id>       '' : index of messages by source.alias
 *   !pending!<id>                   '' while a message is being written; swept at open
 *   !quarantine!<qid>               QuarantineRecord as JSON; `<qid>` is `<message id>.<n>`
 *   !quarantine-chunks!<qid>!<seq>  the blocked part's bytes (Buffer): raw header block and encoded body as received
 *   !generations!<id>               n (JSON number) when the message's bytes were rewritten (restore from quarantine):
 *                                   its chunks are then `!chunks!<id>#<n>!<seq>`; absent means generation 0, `!chunks!<id>!<seq>`
 *   !rewrites!<id>                  {generation, quarantineId?} (JSON): chunks of that generation (and that quarantined
 *                                   part) are garbage if we stop now; removed once they are gone; swept at open
 *   !fetched!<alias>\x00<uidvalidity>:<uid>   FetchedRecord (JSON): an IMAP message the retriever stored; or
 *   !fetched!<alias>\x00pop3:<uidl>            a POP3 one. Written in the message's own synced batch, so a
 *                                   message found again after a crash gets only its post-store action
 *   !alias-state!<alias>            AliasState (JSON, records.ts): the alias's health as the retriever or
 *                                   an admin last set it (status, failures, last error and its reason)
 *   !oauth-cache!<alias>            the alias's msal token cache (Buffer), AES-256-GCM sealed by gateway/oauth/cache.ts
 *                                   (refresh tokens are as good as a password: never in clear)
 *   !queue!<id>                     QueueEntry (JSON, records.ts): a stored message still to be sent (outbound) or
 *                                   forwarded (relay), recipient by recipient. Put in the message's own synced
 *                                   batch; removed in the batch that records the outcome on the message's metadata
 *   !audit!<id>                     AuditEntry (JSON, records.ts): one change made through the REST API or one
 *                                   sign-in; `<id>` from ids.ts sorts by time. Added without a migration: a new
 *                                   sublevel is simply empty in an older store, and nothing existing changes
 *   !by-message-id!<message-id>\x00<id>   '' : index of messages by their Message-ID (without angle brackets), for
 *                                   reply threading; put in the message's commit batch; built for older messages
 *                                   by migration 8. Message-IDs with NUL or over 500 characters are not indexed
 *   !by-conversation!<ref>\x00<id>  '' : index of messages by conversation reference (MessageMeta.conversation);
 *                                   put in the message's commit batch; no migration (older messages have no conversation)
 *   !auto-replies!<alias>\x00<sender>   ISO time of the last auto-reply the alias sent the sender (gateway/auto-reply/)
 *
 * A rewrite writes the new generation's chunks under a `rewrites` mark naming the new
 * generation, then in one synced batch records the new generation and metadata, deletes
 * the quarantine record and points the mark at the old generation; it then removes the old
 * chunks and the mark. Readers see the old bytes or the new, never a mix.
 *
 * `<id>` is a message id from ids.ts (26 chars, sorts by time). A message is committed when
 * its `messages` key exists; the last chunk, the metadata, the index entry and the removal
 * of `pending` are one synced batch. The `pending` key goes in the same batch as the first
 * chunk (or before it), and LevelDB recovers a prefix of its log, so after a crash every
 * surviving chunk of an unfinished message still has its `pending` key.
 *
 * Deleting a message (retention.ts) is the same in reverse: one synced batch removes its
 * `messages`, `by-alias`, `by-message-id`, `by-conversation`, `generations` and `quarantine`
 * keys and puts its `pending` mark; then its chunks (every generation) and quarantined bytes go,
 * then the mark. A crash in between leaves a mark without a message, which the open-time sweep
 * finishes. `fetched` keys stay.
 *
 * To add a sublevel: add one line to `openSublevels` and one line above; if existing data
 * must change, append a migration to `migrations`.
 */
import { Level } from 'level';
import type { BatchOperation } from 'level';
import type { AliasState, AuditEntry, FetchedKey, FetchedRecord, MessageMeta, QuarantineRecord, QueueEntry } from '../records.js';
import type { StoreLogger } from '../store.js';
import { storeErrors } from '../../lib/errors.js';

/** The root database: utf8 keys and values. */
export type RootDb = Level<string, string>;

/** Opens the sublevels of the layout on `db`. */
export function openSublevels(db: RootDb) {
  return {
    /** id → MessageMeta. */
    messages: db.sublevel<string, MessageMeta>('messages', { valueEncoding: 'json' }),
    /** `<id>!<seq>` → bytes. */
    chunks: db.sublevel<string, Buffer>('chunks', { valueEncoding: 'buffer' }),
    /** `<alias>\x00<id>` → ''. */
    byAlias: db.sublevel<string, string>('by-alias', {}),
    /** id → '' while the message is being written. */
    pending: db.sublevel<string, string>('pending', {}),
    /** `<message id>.<n>` → quarantine record (JSON). */
    quarantine: db.sublevel<string, QuarantineRecord>('quarantine', { valueEncoding: 'json' }),
    /** `<message id>.<n>!<seq>` → bytes of a blocked part. */
    quarantineChunks: db.sublevel<string, Buffer>('quarantine-chunks', { valueEncoding: 'buffer' }),
    /** id → generation of the message's chunks, when not 0 (see the header comment). */
    generations: db.sublevel<string, number>('generations', { valueEncoding: 'json' }),
    /** id → chunks left over by a rewrite, to remove (see the header comment). */
    rewrites: db.sublevel<string, RewriteMark>('rewrites', { valueEncoding: 'json' }),
    /** `<alias>\x00<uidvalidity>:<uid>` or `<alias>\x00pop3:<uidl>` → what the retriever stored for it. */
    fetched: db.sublevel<string, FetchedRecord>('fetched', { valueEncoding: 'json' }),
    /** alias name → its health: status, failures, last error (gateway/fetch/alias-health.ts). */
    aliasState: db.sublevel<string, AliasState>('alias-state', { valueEncoding: 'json' }),
    /** alias name → its encrypted OAuth token cache (gateway/oauth/cache.ts). */
    oauthCache: db.sublevel<string, Buffer>('oauth-cache', { valueEncoding: 'buffer' }),
    /** message id → its delivery still to do (storage/queue.ts). */
    queue: db.sublevel<string, QueueEntry>('queue', { valueEncoding: 'json' }),
    /** audit id → AuditEntry: the admin's changes and sign-ins. */
    audit: db.sublevel<string, AuditEntry>('audit', { valueEncoding: 'json' }),
    /** `<message-id>\x00<id>` → ''. */
    byMessageId: db.sublevel<string, string>('by-message-id', {}),
    /** `<conversation ref>\x00<id>` → ''. */
    byConversation: db.sublevel<string, string>('by-conversation', {}),
    /** `<alias>\x00<sender>` → ISO time of the last auto-reply. */
    autoReplies: db.sublevel<string, string>('auto-replies', {}),
  };
}

/**
 * Removes everything an unfinished message may have written besides its pending mark:
 * its chunks and the bytes of parts it quarantined. Used by abort and the sweep.
 */
export async function clearUnfinished(sublevels: Sublevels, id: string): Promise<void> {
  // Every generation: a deleted message (retention.ts) may have been rewritten; an unfinished one has generation 0 only.
  await sublevels.chunks.clear(allChunksRange(id));
  await sublevels.quarantineChunks.clear(quarantineRange(id));
  await sublevels.quarantine.clear(quarantineRange(id));
}

/** What a rewrite of a message's bytes may leave behind if it stops: see the header comment. */
export interface RewriteMark {
  /** Generation whose chunks are garbage. */
  generation: number;
  /** Quarantined part whose chunks are garbage (restored into the message). */
  quarantineId?: string;
}

/** Removes what a rewrite mark names (old or unfinished generation, restored quarantine bytes). */
export async function clearRewriteGarbage(
  chunks: Sublevels['chunks'],
  quarantineChunks: Sublevels['quarantineChunks'],
  id: string,
  mark: RewriteMark,
): Promise<void> {
  await chunks.clear(chunkRange(id, mark.generation));
  if (mark.quarantineId) await quarantineChunks.clear({ gte: `${mark.quarantineId}!`, lt: `${mark.quarantineId}"` });
}

/** The sublevels of the layout, by name. */
export type Sublevels = ReturnType<typeof openSublevels>;

/** One put or del in a store batch; `sublevel` names where it goes, as in abstract-level. */
export type StoreOp = BatchOperation<RootDb, string, unknown>;

/** Root key of the layout version. */
export const SCHEMA_KEY = 'schema';

/** A step from layout `version - 1` to `version`. */
export interface Migration {
  /** The layout version the store has after this step. */
  version: number;
  /** What the step changes, for the log. */
  description: string;
  /**
   * Rewrites the data. It must be safe to run again: a crash after it but before the new
   * version is recorded runs it again at the next open.
   */
  up(db: RootDb): Promise<void>;
}

/** Every migration, in order; the last one's version is the layout this code writes. */
export const migrations: readonly Migration[] = [
  { version: 1, description: 'initial layout: messages, chunks, by-alias, pending', up: async () => {} },
  { version: 2, description: 'quarantine sublevels (new, nothing to rewrite)', up: async () => {} },
  { version: 3, description: 'generations and rewrites sublevels for rewritten messages (new, nothing to rewrite)', up: async () => {} },
  { version: 4, description: 'fetched sublevel: mailbox messages the retriever stored (new, nothing to rewrite)', up: async () => {} },
  { version: 5, description: 'alias-state sublevel: alias health kept by the retriever and admins (new, nothing to rewrite)', up: async () => {} },
  { version: 6, description: 'oauth-cache sublevel: encrypted OAuth token caches per alias (new, nothing to rewrite)', up: async () => {} },
  { version: 7, description: 'queue sublevel: outbound and relayed messages still to deliver (new, nothing to rewrite)', up: async () => {} },
  { version: 8, description: 'by-message-id index of stored messages, for reply threading', up: indexMessageIds },
];

/** Longest Message-ID indexed: a longer one is no real mailer's, and keys stay small. */
const MAX_INDEXED_MESSAGE_ID = 500;

/** The `by-message-id` key of message `id` whose Message-ID is `messageId`, or undefined when it is not indexed. */
export function messageIdKey(messageId: string | undefined, id: string): string | undefined {
  if (!messageId || messageId.length > MAX_INDEXED_MESSAGE_ID || messageId.includes('\x00')) return undefined;
  return `${messageId}\x00${id}`;
}

// Migration 8: index the Message-IDs of messages stored before threading, so a reply to one joins it.
async function indexMessageIds(db: RootDb): Promise<void> {
  const { messages, byMessageId } = openSublevels(db);
  let ops: StoreOp[] = [];
  for await (const meta of messages.values()) {
    const key = messageIdKey(meta.messageId, meta.id);
    if (key) ops.push({ type: 'put', sublevel: byMessageId, key, value: '' });
    if (ops.length >= 1000) {
      await db.batch<string, unknown>(ops, {});
      ops = [];
    }
  }
  if (ops.length > 0) await db.batch<string, unknown>(ops, {});
}

/** The layout version this code reads and writes. */
export const SCHEMA_VERSION = migrations[migrations.length - 1]?.version ?? 0;

/** Width of the chunk sequence number in chunk keys, so keys sort in order. */
const SEQ_WIDTH = 8;

/** Key prefix of the chunks of generation `generation` of message `id`. */
function chunkPrefix(id: string, generation: number): string {
  return generation === 0 ? id : `${id}#${generation}`;
}

/** Key of chunk `seq` of message `id` (of a rewritten generation when given) in the `chunks` sublevel. */
export function chunkKey(id: string, seq: number, generation = 0): string {
  return `${chunkPrefix(id, generation)}!${String(seq).padStart(SEQ_WIDTH, '0')}`;
}

/** Range of all chunk keys of message `id` (of one generation; default the first). */
export function chunkRange(id: string, generation = 0): { gte: string; lt: string } {
  // '"' is the character after '!', so this covers exactly the keys `<prefix>!...`; '#' sorts
  // after '"', so a rewritten generation's keys are outside generation 0's range.
  const prefix = chunkPrefix(id, generation);
  return { gte: `${prefix}!`, lt: `${prefix}"` };
}

/** Range of the chunk keys of message `id` in every generation: `<id>!...` and `<id>#<n>!...` ('$' follows '#'). */
export function allChunksRange(id: string): { gte: string; lt: string } {
  return { gte: `${id}!`, lt: `${id}$` };
}

/** Key of message `id` in the `by-alias` index. */
export function aliasKey(alias: string, id: string): string {
  return `${alias}\x00${id}`;
}

/** Range of the `by-alias` keys of `alias`, from id `fromId` on and below id `toId` when given. */
export function aliasRange(alias: string, fromId = '', toId?: string): { gte: string; lt: string } {
  return { gte: `${alias}\x00${fromId}`, lt: toId === undefined ? `${alias}\x01` : `${alias}\x00${toId}` };
}

/** Key of a mailbox message in the `fetched` sublevel. */
export function fetchedKey({ alias, key }: FetchedKey): string {
  if (alias.includes('\x00')) throw new TypeError('alias contains NUL');
  return `${alias}\x00${key}`;
}

/** Range of the keys of message `id`'s quarantined parts (`<id>.<n>`) in the `quarantine` sublevels. */
export function quarantineRange(id: string): { gte: string; lt: string } {
  // '/' is the character after '.', so this covers the quarantine ids `<id>.<n>`.
  return { gte: `${id}.`, lt: `${id}/` };
}

/** Id part of a `by-alias` key. */
export function idOfAliasKey(key: string): string {
  return key.slice(key.lastIndexOf('\x00') + 1);
}

/**
 * Opens the database, turning "locked by another process" into `STORE_LOCKED` so the CLI
 * can fall back to talking to the running gateway.
 */
export async function openDatabase(dir: string): Promise<RootDb> {
  const db: RootDb = new Level<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  try {
    await db.open();
  } catch (err) {
    // classic-level: LEVEL_DATABASE_NOT_OPEN with cause LEVEL_LOCKED, also within one process.
    if (codeOf(err) === 'LEVEL_DATABASE_NOT_OPEN' && codeOf((err as { cause?: unknown }).cause) === 'LEVEL_LOCKED') {
      throw storeErrors.storeLocked(dir, err);
    }
    throw err;
  }
  return db;
}

/**
 * Brings the layout to `SCHEMA_VERSION` (or the last of `steps`), running each missing step
 * in order and recording each new version durably. Refuses a store newer than this code.
 */
export async function runMigrations(db: RootDb, dir: string, logger: StoreLogger, steps: readonly Migration[] = migrations): Promise<number> {
  const target = steps[steps.length - 1]?.version ?? 0;
  steps.forEach((step, i) => {
    if (step.version !== i + 1) throw new Error(`store migrations out of order: step ${i} has version ${step.version}`);
  });
  const stored = await db.get(SCHEMA_KEY);
  let version = 0;
  if (stored !== undefined) {
    version = Number(stored);
    if (!/^\d+$/.test(stored) || !Number.isSafeInteger(version)) throw storeErrors.schemaInvalid(dir, stored);
  }
  if (version > target) throw storeErrors.schemaTooNew(dir, version, target);
  for (const step of steps) {
    if (step.version <= version) continue;
    logger.info({ dir, from: version, to: step.version }, `store migration: ${step.description}`);
    await step.up(db);
    await db.put(SCHEMA_KEY, String(step.version), { sync: true });
    version = step.version;
  }
  return version;
}

function codeOf(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}
