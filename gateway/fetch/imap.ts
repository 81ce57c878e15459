/**
 * The retriever's view of an IMAP folder (mailbox.ts), with imapflow. Every command runs
 * under a mailbox lock released in `finally`, and no command is issued inside a
 * `for await (client.fetch(...))` loop (imapflow issues 110, 159, 284): listings are
 * collected first (fetchAll), acted on afterwards.
 */
import { finished } from 'node:stream';
import type { Readable } from 'node:stream';
import type { ImapFlow } from 'imapflow';
import type { IncomingServerConfig } from '../config/schema.js';
import { type FetchedMessage, type Mailbox, type MailboxItem } from './mailbox.js';
import { imapClient, mailboxCredentials } from './login.js';
import type { TokenProvider } from '../oauth/tokens.js';

/** An IMAP folder session for the retriever. */
export class ImapMailbox implements Mailbox {
  #client: ImapFlow | undefined;
  #onNewMail: () => void = () => {};
  readonly #folders = new Set<string>();

  /** TOKENS, when the alias sets `oauth2`: the session logs in with a fresh access token instead of the password. */
  readonly #server: IncomingServerConfig;
  readonly #tokens: TokenProvider | undefined;

  constructor(server: IncomingServerConfig, tokens?: TokenProvider) {
    this.#server = server;
    this.#tokens = tokens;
  }

  /** With IDLE the session stays open between polls so the server can tell us about new mail. */
  get persistent(): boolean {
    return this.#server.idle;
  }

  readonly rangeOrder = 'mailbox';

  get usable(): boolean {
    return this.#client?.usable ?? false;
  }

  async open(): Promise<void> {
    const s = this.#server;
    // The token first: an OAuthError then fails the session before any connection is made.
    const client = imapClient(s, await mailboxCredentials(s, this.#tokens), {
      disableAutoIdle: !s.idle,
      // Start IDLE soon after a poll, so mail delivered right after it is seen at once.
      autoIdleDelay: 1000,
      // No ENABLE CONDSTORE/UTF8=ACCEPT: the retriever uses neither (no CHANGEDSINCE, no
      // modseq), and the ENABLE cost a round trip at every session's start (two a poll with
      // the second session); without CONDSTORE no MODSEQ is parsed in each FETCH row either.
      disableAutoEnable: true,
    });
    client.on('exists', (e: { count: number; prevCount: number }) => {
      if (e.count > e.prevCount) this.#onNewMail();
    });
    client.on('close', () => this.#onNewMail()); // wake the retriever so it reconnects
    try {
      await client.connect();
      await client.mailboxOpen(s.folder);
    } catch (err) {
      client.close();
      throw err;
    }
    this.#client = client;
  }

  async list(): Promise<MailboxItem[]> {
    return this.#locked(async (client) => {
      const mailbox = client.mailbox;
      if (!mailbox || mailbox.exists === 0) return [];
      const validity = String(mailbox.uidValidity);
      const found = await client.fetchAll('1:*', { uid: true, size: true });
      return found.map((m) => ({ key: `${validity}:${m.uid}`, size: m.size ?? 0, ref: m.uid }));
    });
  }

  async message(item: MailboxItem): Promise<Readable> {
    const client = this.#session();
    const lock = await client.getMailboxLock(this.#server.folder);
    try {
      const download = await client.download(String(item.ref), undefined, { uid: true });
      if (!download.content) throw new Error(`IMAP message UID ${item.ref} is gone from ${this.#server.folder}`);
      // The lock is held until the caller has read the message (or given up on it).
      finished(download.content, () => lock.release());
      return download.content;
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  /**
   * One `UID FETCH <set> (UID BODY.PEEK[])` for the whole range (PEEK: \Seen is not set). imapflow
   * hands the rows over one at a time and parses the next only when asked for it, so a slow
   * caller leaves the rest in the socket (TCP pushes back) rather than in memory: the bytes held
   * are those of the messages the caller took. No other command runs until the loop ends.
   */
  async *messages(items: readonly MailboxItem[]): AsyncIterable<FetchedMessage> {
    if (!items.length) return;
    const client = this.#session();
    const byUid = new Map(items.map((i) => [i.ref, i]));
    const lock = await client.getMailboxLock(this.#server.folder);
    try {
      for await (const row of client.fetch(uidSet(items.map((i) => i.ref)), { uid: true, source: true }, { uid: true })) {
        // Unsolicited rows (a flag changed meanwhile) carry no source.
        const item = byUid.get(row.uid);
        if (!item || !row.source) continue;
        byUid.delete(row.uid);
        yield { item, content: row.source };
      }
    } finally {
      lock.release();
    }
  }

  headers(item: MailboxItem): Promise<Buffer> {
    return this.#locked(async (client) => {
      const msg = await client.fetchOne(String(item.ref), { headers: true }, { uid: true });
      if (!msg || !msg.headers) throw new Error(`IMAP message UID ${item.ref} is gone from ${this.#server.folder}`);
      return msg.headers;
    });
  }

  markStored(items: readonly MailboxItem[]): Promise<void> {
    return items.length ? this.#apply(items, this.#server.on_stored, this.#server.processed_folder) : Promise.resolve();
  }

  markInvalid(item: MailboxItem): Promise<void> {
    return this.#apply(item, this.#server.on_invalid, this.#server.invalid_folder);
  }

  onNewMail(callback: () => void): void {
    this.#onNewMail = callback;
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    if (!client) return;
    this.#onNewMail = () => {};
    // LOGOUT is sent, its answer not waited for: every move and deletion was answered before,
    // so nothing depends on it, and waiting cost a round trip at the end of every poll.
    // imapflow closes the socket on the answer (or after its own timeout).
    void client.logout().catch(() => client.close());
  }

  // One UID MOVE (or STORE + EXPUNGE) for many messages: a command per message cost more than the download.
  async #apply(items: MailboxItem | readonly MailboxItem[], action: 'move' | 'delete' | 'keep', folder: string): Promise<void> {
    if (action === 'keep') return;
    // CCaaS "Deleted emails folder name": a deletion is a move there, so the mailbox owner can still find it.
    const deleted = this.#server.deleted_folder;
    const target = action === 'move' ? folder : deleted;
    // Ascending, in runs: the messages of a poll are stored in the order their stores end, and 600 UIDs one by one made a 2.5 KB command.
    const uid = uidSet((Array.isArray(items) ? items : [items]).map((i: MailboxItem) => i.ref).sort((a, b) => a - b));
    if (target === undefined) {
      await this.#locked((client) => client.messageDelete(uid, { uid: true }));
      return;
    }
    // The move first, the folder made only when the move failed (RFC 3501 [TRYCREATE]): the
    // folder exists at every poll but the first, and a CREATE (and SUBSCRIBE) before each
    // move cost one or two round trips a poll on a session closed after every poll.
    // imapflow answers false for a move the server refused.
    const move = () => this.#locked((client) => client.messageMove(uid, target, { uid: true }));
    if (!this.#folders.has(target) && (await move())) {
      this.#folders.add(target);
      return;
    }
    await this.#ensureFolder(target);
    await move();
  }

  async #ensureFolder(folder: string): Promise<void> {
    if (this.#folders.has(folder)) return;
    // Answers `created: false` when it exists already.
    await this.#session().mailboxCreate(folder);
    this.#folders.add(folder);
  }

  async #locked<T>(run: (client: ImapFlow) => Promise<T>): Promise<T> {
    const client = this.#session();
    const lock = await client.getMailboxLock(this.#server.folder);
    try {
      return await run(client);
    } finally {
      lock.release();
    }
  }

  #session(): ImapFlow {
    if (!this.#client) throw new Error('IMAP session is not open');
    return this.#client;
  }
}

/** UIDS (ascending) as an IMAP sequence set, runs written `a:b`, so a long range stays a short command. */
export function uidSet(uids: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < uids.length;) {
    let j = i;
    while (j + 1 < uids.length && uids[j + 1] === uids[j]! + 1) j++;
    parts.push(j > i ? `${uids[i]}:${uids[j]}` : String(uids[i]));
    i = j + 1;
  }
  return parts.join(',');
}
