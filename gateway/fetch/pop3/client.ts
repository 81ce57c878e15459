/**
 * A small POP3 client for the retriever: TLS on connect or STLS, CAPA, USER/PASS, SASL PLAIN
 * and XOAUTH2, UIDL, LIST, TOP and RETR as streams, DELE, RSET, NOOP, QUIT.
 * RFC 1939 (POP3), 2449 (CAPA, response codes), 2595 (STLS), 3206 (SYS and AUTH codes),
 * 5034 (SASL AUTH), 7628 (OAuth over SASL). No library supports all of them with streaming RETR.
 *
 * Commands are strictly one at a time, in call order: a command called while a RETR or TOP
 * stream is still being read waits until that response has ended. Read or destroy every
 * stream you get; a destroyed stream's remaining bytes are read and thrown away, so the
 * session stays usable.
 */
import type { Readable } from 'node:stream';
import { Pop3Error, serverRefusal } from './errors.js';
import { Pop3Session, type Pop3Options } from './session.js';

export type { Pop3Options, Pop3Security } from './session.js';

/** One message's unique id (UIDL): stable across sessions, unlike its number. */
export interface Pop3Uid {
  msgno: number;
  uid: string;
}

/** One message's size in octets (LIST), as the server counts it (CRLF line ends). */
export interface Pop3Size {
  msgno: number;
  size: number;
}

const MAX_AUTH_LINE = 255; // RFC 5034 section 4: longer initial responses go after a "+" continuation

/** Decodes a SASL challenge for an error message (XOAUTH2 servers send a base64 JSON status). */
function decodeChallenge(text: string): string {
  const decoded = Buffer.from(text, 'base64').toString('utf8');
  return /^[\x20-\x7e\s]*$/.test(decoded) && decoded.length > 0 ? decoded : text;
}

function noLineBreaks(value: string, what: string): void {
  if (/[\r\n]/.test(value)) throw new Pop3Error('protocol', `The ${what} contains a line break, which POP3 cannot carry`);
}

/**
 * One POP3 session. Create it with {@link Pop3Client.connect}; log in with {@link login},
 * {@link authPlain} or {@link authXoauth2}; end with {@link quit} (which applies DELEs) or
 * {@link close} (which does not).
 */
export class Pop3Client {
  /** The server's greeting, after `+OK`. */
  greeting = '';
  /** Capabilities from the last CAPA (name upper-cased, then its arguments); empty when the server has no CAPA. */
  capabilities: ReadonlyMap<string, readonly string[]> = new Map();

  readonly #session: Pop3Session;

  private constructor(session: Pop3Session) {
    this.#session = session;
  }

  /**
   * Connects, reads the greeting, runs CAPA and, with `starttls`, upgrades with STLS (and runs
   * CAPA again, as RFC 2595 asks). Rejects with a {@link Pop3Error}.
   */
  static async connect(opts: Pop3Options): Promise<Pop3Client> {
    const client = new Pop3Client(await Pop3Session.open(opts));
    try {
      client.greeting = await client.#session.status('greeting', 'server');
      await client.capa();
      if (opts.security === 'starttls') await client.#startTls();
    } catch (err) {
      client.close();
      throw err;
    }
    client.#session.connected();
    return client;
  }

  /** True once the connection is protected by TLS (on connect or after STLS). */
  get secure(): boolean {
    return this.#session.secure;
  }

  /** Runs CAPA and updates {@link capabilities}. A server without CAPA gives an empty map. */
  capa(): Promise<ReadonlyMap<string, readonly string[]>> {
    const session = this.#session;
    return session.exclusive(async () => {
      const caps = new Map<string, string[]>();
      session.send('CAPA');
      const line = await session.readLine('CAPA');
      if (line.startsWith('+OK')) {
        for (const cap of await session.readListing('CAPA')) {
          const [name, ...args] = cap.split(/\s+/).filter(Boolean);
          if (name) caps.set(name.toUpperCase(), args);
        }
      } else if (!line.startsWith('-ERR')) {
        throw session.unexpected('CAPA', line);
      }
      this.capabilities = caps;
      return { value: caps };
    });
  }

  /** Logs in with USER and PASS (RFC 1939 section 7). */
  login(user: string, password: string): Promise<void> {
    noLineBreaks(user, 'user name');
    noLineBreaks(password, 'password');
    return this.#session.exclusive(async () => {
      await this.#session.command(`USER ${user}`, 'auth', 'USER');
      await this.#session.command(`PASS ${password}`, 'auth', 'PASS');
      return { value: undefined };
    });
  }

  /** Logs in with SASL PLAIN (RFC 4616); `authzid` names another mailbox to open (a shared mailbox) when the server allows it. */
  authPlain(user: string, password: string, authzid = ''): Promise<void> {
    const response = Buffer.from(`${authzid}\0${user}\0${password}`, 'utf8');
    return this.#session.exclusive(async () => ({ value: await this.#authenticate('PLAIN', response, '*') }));
  }

  /**
   * Logs in with SASL XOAUTH2 (the Microsoft and Google form of RFC 7628): the initial response
   * is `user=USER^Aauth=Bearer TOKEN^A^A`. A server that refuses sends a base64 JSON status as a
   * continuation; the client answers it with an empty line and the server then says `-ERR`.
   */
  authXoauth2(user: string, accessToken: string): Promise<void> {
    noLineBreaks(user, 'user name');
    noLineBreaks(accessToken, 'access token');
    const response = Buffer.from(`user=${user}\x01auth=Bearer ${accessToken}\x01\x01`, 'utf8');
    return this.#session.exclusive(async () => ({ value: await this.#authenticate('XOAUTH2', response, '') }));
  }

  /** STAT: the number of messages and their total size in octets. */
  stat(): Promise<{ count: number; size: number }> {
    return this.#session.exclusive(async () => {
      const text = await this.#session.command('STAT', 'protocol', 'STAT');
      const m = /^(\d+)\s+(\d+)/.exec(text);
      if (!m) throw this.#session.unexpected('STAT', `+OK ${text}`);
      return { value: { count: Number(m[1]), size: Number(m[2]) } };
    });
  }

  /** UIDL: every message's number and unique id (RFC 1939 section 7). */
  uidl(): Promise<Pop3Uid[]> {
    return this.#session.exclusive(async () => {
      await this.#session.command('UIDL', 'protocol', 'UIDL');
      const value = (await this.#session.readListing('UIDL')).map((line) => {
        const m = /^(\d+)\s+(\S+)/.exec(line);
        if (!m) throw this.#session.unexpected('UIDL', line);
        return { msgno: Number(m[1]), uid: m[2]! };
      });
      return { value };
    });
  }

  /** LIST: every message's number and size in octets. */
  list(): Promise<Pop3Size[]> {
    return this.#session.exclusive(async () => {
      await this.#session.command('LIST', 'protocol', 'LIST');
      const value = (await this.#session.readListing('LIST')).map((line) => {
        const m = /^(\d+)\s+(\d+)/.exec(line);
        if (!m) throw this.#session.unexpected('LIST', line);
        return { msgno: Number(m[1]), size: Number(m[2]) };
      });
      return { value };
    });
  }

  /**
   * RETR: the message as a stream of its bytes, dot-stuffing removed, ending where the server's
   * response ends. The socket is paused while the stream's buffer is full, so a message of any
   * size takes bounded memory.
   */
  retr(msgno: number): Promise<Readable> {
    return this.#streamed(`RETR ${msgno}`, 'RETR');
  }

  /** TOP: the message's header and the first `lines` lines of its body (0: the header only, for over-size messages), as a stream. */
  top(msgno: number, lines = 0): Promise<Readable> {
    return this.#streamed(`TOP ${msgno} ${lines}`, 'TOP');
  }

  /** DELE: marks a message for deletion; the server removes it at QUIT. */
  dele(msgno: number): Promise<void> {
    return this.#simple(`DELE ${msgno}`, 'DELE');
  }

  /** RSET: unmarks every message marked for deletion in this session. */
  rset(): Promise<void> {
    return this.#simple('RSET', 'RSET');
  }

  /** NOOP: keeps the session alive. */
  noop(): Promise<void> {
    return this.#simple('NOOP', 'NOOP');
  }

  /**
   * QUIT: ends the session; the server then deletes the messages marked with DELE. Rejects with
   * kind `server` when the server says it could not remove them.
   */
  quit(): Promise<void> {
    return this.#session.exclusive(async () => {
      const { answer, closed } = await this.#session.last('QUIT', 'QUIT');
      if (answer.startsWith('-ERR')) throw serverRefusal('QUIT', answer.slice(4).trim(), this.#session.where, 'server');
      if (!answer.startsWith('+OK')) throw this.#session.unexpected('QUIT', answer);
      await closed;
      return { value: undefined };
    });
  }

  /** Drops the connection without QUIT: messages marked with DELE stay (RFC 1939 section 6). */
  close(): void {
    this.#session.close();
  }

  #simple(line: string, name: string): Promise<void> {
    return this.#session.exclusive(async () => {
      await this.#session.command(line, 'protocol', name);
      return { value: undefined };
    });
  }

  #streamed(line: string, name: string): Promise<Readable> {
    return this.#session.exclusive(async () => {
      await this.#session.command(line, 'protocol', name);
      return this.#session.body(name);
    });
  }

  /** SASL AUTH (RFC 5034) with an initial response; CANCEL answers any challenge after it (`*` aborts, `''` is XOAUTH2's empty reply). */
  async #authenticate(mechanism: string, response: Buffer, cancel: string): Promise<void> {
    const session = this.#session;
    const encoded = response.length > 0 ? response.toString('base64') : '=';
    let pending: string | null = null;
    if (`AUTH ${mechanism} ${encoded}`.length <= MAX_AUTH_LINE) {
      session.send(`AUTH ${mechanism} ${encoded}`);
    } else {
      session.send(`AUTH ${mechanism}`);
      pending = encoded;
    }
    let challenge = '';
    for (let round = 0; ; round++) {
      const line = await session.readLine(`AUTH ${mechanism}`);
      if (line.startsWith('+OK')) return;
      if (line.startsWith('-ERR')) {
        const text = line.slice(4).trim() + (challenge ? ` (${challenge})` : '');
        throw serverRefusal(`AUTH ${mechanism}`, text, session.where, 'auth');
      }
      if (!line.startsWith('+')) throw session.unexpected(`AUTH ${mechanism}`, line);
      if (round > 3) {
        session.send('*');
        throw new Pop3Error('protocol', `AUTH ${mechanism} at ${session.where}: the server keeps sending challenges`, { serverText: line });
      }
      if (pending !== null) {
        session.send(pending);
        pending = null;
      } else {
        // RFC 7628 section 3.2.2: an error status arrives as a challenge; answer it and the server fails the exchange.
        challenge = decodeChallenge(line.slice(1).trim());
        session.send(cancel);
      }
    }
  }

  /** STLS (RFC 2595): refuses to go on in clear when the server does not offer it. */
  async #startTls(): Promise<void> {
    const session = this.#session;
    if (this.capabilities.size > 0 && !this.capabilities.has('STLS')) {
      throw new Pop3Error(
        'tls',
        `${session.where} does not offer STLS, so the password would travel in clear: enable TLS on the server, or use security tls (usually port 995)`,
      );
    }
    await session.exclusive(async () => {
      session.send('STLS');
      const reply = await session.readLine('STLS');
      if (!reply.startsWith('+OK')) {
        throw new Pop3Error('tls', `${session.where} refused STLS (${reply}): enable TLS on the server, or use security tls (usually port 995)`, {
          serverText: reply,
        });
      }
      await session.startTls();
      return { value: undefined };
    });
    await this.capa();
  }
}
