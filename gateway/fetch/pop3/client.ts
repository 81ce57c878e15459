/**
 * A small POP3 client for the retriever: TLS on connect or STLS, CAPA, USER/PASS, SASL PLAIN
 * and XOAUTH2, UIDL, LIST, TOP and RETR as streams, DELE, RSET, NOOP, QUIT.
 * RFC 1939 (POP3), 2449 (CAPA, response codes), 2595 (STLS), 3206 (SYS and AUTH codes),
 * 5034 (SASL AUTH), 7628 (OAuth over SASL). No library supports all of them with streaming RETR.
 *
 * Commands run in call order: a command called while a RETR or TOP stream is still being read
 * waits until that response has ended. Read or destroy every stream you get; a destroyed
 * stream's remaining bytes are read and thrown away, so the session stays usable. Where the
 * server offers PIPELINING (RFC 2449), the batch commands (`retrieve`, `deleMany`,
 * `uidlAndList`) send their commands without waiting for each answer.
 */
import type { Readable } from 'node:stream';
import { readAll } from '../mailbox.js';
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

/** One message of {@link Pop3Client.retrieve}: its bytes, dot-stuffing removed, or the server's `-ERR` (a message gone). */
export type Pop3Retrieved = { msgno: number; content: Buffer } | { msgno: number; refused: Pop3Error };

/** Pipelined RETR: the answers asked for and not yet read add up to about this many octets (by LIST's sizes). */
const RETR_WINDOW_BYTES = 1024 * 1024;
/** Pipelined commands sent and not yet answered, at most: a thousand DELEs are about 10 KB out and 30 KB back. */
const MAX_UNANSWERED = 1000;

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
      if (this.pipelining) {
        // Both at once (RFC 2449 section 6.6): a round trip less at every session's start.
        // Both answers are read, so the session stays in step; a refused USER is the one reported.
        this.#session.send(`USER ${user}`, `PASS ${password}`);
        const userAnswer = await this.#session.status('USER', 'auth').catch((err: unknown) => err);
        const passAnswer = await this.#session.status('PASS', 'auth').catch((err: unknown) => err);
        for (const answer of [userAnswer, passAnswer]) if (answer instanceof Error) throw answer;
        return { value: undefined };
      }
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

  /** True when the server offers PIPELINING (RFC 2449 section 6.6): commands may be sent without waiting for each answer. */
  get pipelining(): boolean {
    return this.capabilities.has('PIPELINING');
  }

  /** UIDL and LIST (RFC 1939 section 7): every message's number with its unique id and its size; with PIPELINING in one round trip. */
  uidlAndList(): Promise<{ uids: Pop3Uid[]; sizes: Pop3Size[] }> {
    return this.#session.exclusive(async () => {
      const [uidl, list] = await this.#pipelined(['UIDL', 'LIST'], (command) => this.#listing(command));
      // Both answers are read before either refusal is thrown, so the session stays in step.
      for (const answer of [uidl, list]) if (answer instanceof Pop3Error) throw answer;
      return { value: { uids: this.#uids(uidl as string[]), sizes: this.#sizes(list as string[]) } };
    });
  }

  /**
   * RETR for each of MESSAGES (number and LIST size), in order, each given whole once its
   * terminating line has arrived. With PIPELINING the commands go out without waiting, as many
   * as keep about `windowBytes` of answers on the way, topped up as answers are read, so socket
   * buffers stay bounded; without it the next RETR goes out as soon as the last answer is read,
   * so it downloads while the caller handles that one. A `-ERR` (a message gone since LIST) is
   * given as `refused` and the rest go on; a lost connection rejects. Ending the iteration early
   * reads and drops the answers already asked for, so the session stays usable. Make no other
   * call on this session while iterating: it would wait for the iteration's end.
   */
  async *retrieve(messages: readonly Pop3Size[], windowBytes = RETR_WINDOW_BYTES): AsyncGenerator<Pop3Retrieved, void, undefined> {
    const session = this.#session;
    let release!: () => void;
    const ended = new Promise<void>((resolve) => (release = resolve));
    await session.exclusive(async () => ({ value: undefined, hold: ended }));
    const pipelining = this.pipelining;
    const asked: Pop3Size[] = [];
    let askedBytes = 0;
    let next = 0;
    const askMore = () => {
      const lines: string[] = [];
      for (; next < messages.length; next++) {
        const m = messages[next]!;
        const room = asked.length === 0 || (pipelining && asked.length < MAX_UNANSWERED && askedBytes + m.size <= windowBytes);
        if (!room) break;
        asked.push(m);
        askedBytes += m.size;
        lines.push(`RETR ${m.msgno}`);
      }
      if (lines.length > 0) session.send(...lines);
    };
    try {
      askMore();
      for (let m = asked[0]; m; m = asked[0]) {
        const answer = await this.#retrAnswer(m.msgno);
        asked.shift();
        askedBytes -= m.size;
        // Before handing this one over: the next answers arrive while the caller works.
        askMore();
        yield answer;
      }
    } finally {
      try {
        for (let m = asked.shift(); m; m = asked.shift()) await this.#retrAnswer(m.msgno);
      } catch {
        // The session has failed: every later command reports it.
      }
      release();
    }
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

  /**
   * DELE for each of MSGNOS: with PIPELINING all sent at once, one round trip for the lot.
   * Every answer is read; then the first refusal, if any, rejects (the other DELEs stand).
   */
  deleMany(msgnos: readonly number[]): Promise<void> {
    const session = this.#session;
    return session.exclusive(async () => {
      const answers = await this.#pipelined(
        msgnos.map((n) => `DELE ${n}`),
        (command) => this.#answer(command),
      );
      const refused = answers.find((a) => a instanceof Pop3Error);
      if (refused) throw refused;
      return { value: undefined };
    });
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

  /**
   * Sends COMMANDS and reads each answer in turn with READ: with PIPELINING without waiting (at
   * most MAX_UNANSWERED unanswered, topped up as answers are read), otherwise one after another.
   */
  async #pipelined<T>(commands: readonly string[], read: (command: string) => Promise<T>): Promise<T[]> {
    const limit = this.pipelining ? MAX_UNANSWERED : 1;
    const answers: T[] = [];
    let sent = 0;
    while (answers.length < commands.length) {
      const more = commands.slice(sent, answers.length + limit);
      if (more.length > 0) this.#session.send(...more);
      sent += more.length;
      answers.push(await read(commands[answers.length]!));
    }
    return answers;
  }

  /**
   * Reads the status line answering COMMAND: the text after `+OK`, or a `-ERR` as a value so the
   * answers after it are still read. Any other line means we are out of step with the answers
   * to the commands sent after it: the session ends.
   */
  async #answer(command: string): Promise<string | Pop3Error> {
    const session = this.#session;
    const line = await session.readLine(command);
    if (line.startsWith('+OK')) return line.slice(3).trim();
    if (line.startsWith('-ERR')) return serverRefusal(command, line.slice(4).trim(), session.where, 'protocol');
    throw session.abort(session.unexpected(command, line));
  }

  /** Reads the answer to a listing COMMAND (UIDL, LIST): its lines, or the server's refusal. */
  async #listing(command: string): Promise<string[] | Pop3Error> {
    const status = await this.#answer(command);
    return status instanceof Pop3Error ? status : this.#session.readListing(command);
  }

  /** Reads the answer to RETR MSGNO: the message, or the server's refusal. */
  async #retrAnswer(msgno: number): Promise<Pop3Retrieved> {
    const command = `RETR ${msgno}`;
    const status = await this.#answer(command);
    if (status instanceof Pop3Error) return { msgno, refused: status };
    return { msgno, content: await readAll(this.#session.body(command).value) };
  }

  #uids(lines: readonly string[]): Pop3Uid[] {
    return lines.map((line) => {
      const m = /^(\d+)\s+(\S+)/.exec(line);
      if (!m) throw this.#session.unexpected('UIDL', line);
      return { msgno: Number(m[1]), uid: m[2]! };
    });
  }

  #sizes(lines: readonly string[]): Pop3Size[] {
    return lines.map((line) => {
      const m = /^(\d+)\s+(\d+)/.exec(line);
      if (!m) throw this.#session.unexpected('LIST', line);
      return { msgno: Number(m[1]), size: Number(m[2]) };
    });
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
