/**
 * The retriever's view of a POP3 mailbox (mailbox.ts) over our client (client.ts). POP3 has no
 * folders: stored and invalid messages are deleted or kept. Deletions apply at QUIT, so the
 * session is closed after every poll.
 */
import type { Readable } from 'node:stream';
import type { IncomingServerConfig } from '../../config/schema.js';
import type { Pop3Client } from './client.js';
import { readAll, type FetchedMessage, type Mailbox, type MailboxItem } from '../mailbox.js';
import { mailboxCredentials, pop3Connect, pop3Login } from '../login.js';
import type { TokenProvider } from '../../oauth/tokens.js';

/** A POP3 mailbox session for the retriever. */
export class Pop3Mailbox implements Mailbox {
  readonly persistent = false;
  readonly rangeOrder = 'given';
  #client: Pop3Client | undefined;

  /** TOKENS, when the alias sets `oauth2`: the session logs in with SASL XOAUTH2 instead of the password. */
  readonly #server: IncomingServerConfig;
  readonly #tokens: TokenProvider | undefined;

  constructor(server: IncomingServerConfig, tokens?: TokenProvider) {
    this.#server = server;
    this.#tokens = tokens;
  }

  get usable(): boolean {
    return this.#client !== undefined;
  }

  async open(): Promise<void> {
    // The token first: an OAuthError then fails the session before any connection is made.
    const creds = await mailboxCredentials(this.#server, this.#tokens);
    const client = await pop3Connect(this.#server);
    try {
      await pop3Login(client, creds);
    } catch (err) {
      client.close();
      throw err;
    }
    this.#client = client;
  }

  async list(): Promise<MailboxItem[]> {
    const { uids, sizes } = await this.#session().uidlAndList();
    const sizeOf = new Map(sizes.map((s) => [s.msgno, s.size]));
    return uids.map((u) => ({ key: `pop3:${u.uid}`, size: sizeOf.get(u.msgno) ?? 0, ref: u.msgno }));
  }

  message(item: MailboxItem): Promise<Readable> {
    return this.#session().retr(item.ref);
  }

  async *messages(items: readonly MailboxItem[]): AsyncIterable<FetchedMessage> {
    // RETRs pipelined where the server offers PIPELINING (RFC 2449), else each sent as the last arrives.
    // Up to the mailbox's byte bound asked for at once: a window of 1 MiB was one round trip per MiB,
    // about 25 MB/s at 40 ms, slower than the server sends. Answers not yet read stay in the network
    // (the session pauses the socket), so memory is still bounded by what the caller takes.
    let index = 0;
    const asked = items.map((i) => ({ msgno: i.ref, size: i.size }));
    for await (const answer of this.#session().retrieve(asked, this.#server.bytes_in_flight)) {
      const item = items[index++]!;
      // -ERR: gone since LIST (another session deleted it). Left out; were it still there, the next poll tries again.
      if ('refused' in answer) continue;
      yield { item, content: answer.content };
    }
  }

  async headers(item: MailboxItem): Promise<Buffer> {
    return readAll(await this.#session().top(item.ref, 0));
  }

  async markStored(items: readonly MailboxItem[]): Promise<void> {
    if (this.#server.on_stored !== 'delete' || items.length === 0) return;
    // Pipelined where the server allows: one round trip for the lot.
    await this.#session().deleMany(items.map((i) => i.ref));
  }

  async markInvalid(item: MailboxItem): Promise<void> {
    if (this.#server.on_invalid === 'delete') await this.#session().dele(item.ref);
  }

  onNewMail(): void {
    // POP3 cannot tell: polling only.
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    if (!client) return;
    // QUIT applies the DELEs; if it fails they are simply done again at the next poll (the UIDLs are recorded).
    await client.quit().catch(() => client.close());
  }

  #session(): Pop3Client {
    if (!this.#client) throw new Error('POP3 session is not open');
    return this.#client;
  }
}
