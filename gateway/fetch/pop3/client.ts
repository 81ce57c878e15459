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
import net from 'node:net';
import tls from 'node:tls';
import { Readable } from 'node:stream';
import { DotDecoder, LineBuffer } from './stream.js';
import { Pop3Error, serverRefusal, socketError, type Pop3ErrorKind } from './errors.js';

/** How the connection is protected: `tls` is TLS on connect (port 995), `starttls` upgrades with STLS (port 110), `none` is clear text. */
export type Pop3Security = 'tls' | 'starttls' | 'none';

/** Connection options. */
export interface Pop3Options {
  /** Server host name or IP address. */
  host: string;
  /** Server port (995 for `tls`, 110 otherwise, by convention; the caller chooses). */
  port: number;
  /** `tls`, `starttls` (refuses to go on in clear when the server lacks STLS) or `none`. */
  security: Pop3Security;
  /** Extra TLS options, e.g. `{ ca }` to trust a private CA. Certificates are verified unless `rejectUnauthorized: false`. */
  tls?: tls.ConnectionOptions;
  /** Local address to connect from. */
  localAddress?: string;
  /** Time allowed for DNS, TCP, TLS, the greeting, CAPA and STLS, each step anew (default 30,000 ms). */
  connectTimeoutMs?: number;
  /** Longest silence allowed while the server owes an answer (default 60,000 ms). Time a RETR reader spends not reading does not count. */
  commandTimeoutMs?: number;
}

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

const MAX_LINE = 64 * 1024;
const MAX_AUTH_LINE = 255; // RFC 5034 section 4: longer initial responses go after a "+" continuation
/** Decodes a SASL challenge for an error message (XOAUTH2 servers send a base64 JSON status). */
function decodeChallenge(text: string): string {
  const decoded = Buffer.from(text, 'base64').toString('utf8');
  return /^[\x20-\x7e\s]*$/.test(decoded) && decoded.length > 0 ? decoded : text;
}

function noLineBreaks(value: string, what: string): void {
  if (/[\r\n]/.test(value)) throw new Pop3Error('protocol', `The ${what} contains a line break, which POP3 cannot carry`);
}

/** An active multi-line response being read (RETR, TOP). */
interface BodyReader {
  feed(chunk: Buffer): void;
  fail(err: Pop3Error): void;
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

  #socket: net.Socket;
  readonly #where: string;
  readonly #lines = new LineBuffer(MAX_LINE);
  #lineWaiter: { resolve: (line: Buffer) => void; reject: (err: Pop3Error) => void } | null = null;
  #body: BodyReader | null = null;
  #paused = false;
  #failure: Pop3Error | null = null;
  #closing = false;
  #waitingFor = 'the greeting';
  #timeoutMs: number;
  #timer: NodeJS.Timeout | null = null;
  #queue: Promise<unknown> = Promise.resolve();
  #tlsActive: boolean;

  readonly #opts: Pop3Options;

  private constructor(socket: net.Socket, opts: Pop3Options) {
    this.#opts = opts;
    this.#socket = socket;
    this.#where = `${opts.host}:${opts.port}`;
    this.#timeoutMs = opts.connectTimeoutMs ?? 30_000;
    this.#tlsActive = socket instanceof tls.TLSSocket;
    this.#attach(socket);
  }

  /**
   * Connects, reads the greeting, runs CAPA and, with `starttls`, upgrades with STLS (and runs
   * CAPA again, as RFC 2595 asks). Rejects with a {@link Pop3Error}.
   */
  static async connect(opts: Pop3Options): Promise<Pop3Client> {
    const socket = await openSocket(opts);
    const client = new Pop3Client(socket, opts);
    try {
      client.greeting = await client.#status('greeting', 'server');
      await client.capa();
      if (opts.security === 'starttls') await client.#startTls();
    } catch (err) {
      client.close();
      throw err;
    }
    client.#timeoutMs = opts.commandTimeoutMs ?? 60_000;
    return client;
  }

  /** True once the connection is protected by TLS (on connect or after STLS). */
  get secure(): boolean {
    return this.#tlsActive;
  }

  /** Runs CAPA and updates {@link capabilities}. A server without CAPA gives an empty map. */
  capa(): Promise<ReadonlyMap<string, readonly string[]>> {
    return this.#exclusive(async () => {
      const caps = new Map<string, string[]>();
      this.#send('CAPA');
      const line = await this.#readLine('CAPA');
      if (line.startsWith('+OK')) {
        for (const cap of await this.#readListing('CAPA')) {
          const [name, ...args] = cap.split(/\s+/).filter(Boolean);
          if (name) caps.set(name.toUpperCase(), args);
        }
      } else if (!line.startsWith('-ERR')) {
        throw this.#unexpected('CAPA', line);
      }
      this.capabilities = caps;
      return { value: caps };
    });
  }

  /** Logs in with USER and PASS (RFC 1939 section 7). */
  login(user: string, password: string): Promise<void> {
    noLineBreaks(user, 'user name');
    noLineBreaks(password, 'password');
    return this.#exclusive(async () => {
      await this.#command(`USER ${user}`, 'auth', 'USER');
      await this.#command(`PASS ${password}`, 'auth', 'PASS');
      return { value: undefined };
    });
  }

  /** Logs in with SASL PLAIN (RFC 4616); `authzid` names another mailbox to open (a shared mailbox) when the server allows it. */
  authPlain(user: string, password: string, authzid = ''): Promise<void> {
    const response = Buffer.from(`${authzid}\0${user}\0${password}`, 'utf8');
    return this.#exclusive(async () => ({ value: await this.#authenticate('PLAIN', response, '*') }));
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
    return this.#exclusive(async () => ({ value: await this.#authenticate('XOAUTH2', response, '') }));
  }

  /** STAT: the number of messages and their total size in octets. */
  stat(): Promise<{ count: number; size: number }> {
    return this.#exclusive(async () => {
      const text = await this.#command('STAT', 'protocol', 'STAT');
      const m = /^(\d+)\s+(\d+)/.exec(text);
      if (!m) throw this.#unexpected('STAT', `+OK ${text}`);
      return { value: { count: Number(m[1]), size: Number(m[2]) } };
    });
  }

  /** UIDL: every message's number and unique id (RFC 1939 section 7). */
  uidl(): Promise<Pop3Uid[]> {
    return this.#exclusive(async () => {
      await this.#command('UIDL', 'protocol', 'UIDL');
      const value = (await this.#readListing('UIDL')).map((line) => {
        const m = /^(\d+)\s+(\S+)/.exec(line);
        if (!m) throw this.#unexpected('UIDL', line);
        return { msgno: Number(m[1]), uid: m[2]! };
      });
      return { value };
    });
  }

  /** LIST: every message's number and size in octets. */
  list(): Promise<Pop3Size[]> {
    return this.#exclusive(async () => {
      await this.#command('LIST', 'protocol', 'LIST');
      const value = (await this.#readListing('LIST')).map((line) => {
        const m = /^(\d+)\s+(\d+)/.exec(line);
        if (!m) throw this.#unexpected('LIST', line);
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
    return this.#exclusive(async () => {
      // The server hangs up after answering; that close is expected, not a failure to report.
      this.#closing = true;
      this.#send('QUIT');
      const line = await this.#readLine('QUIT');
      const closed = new Promise<void>((resolve) => {
        if (this.#socket.destroyed) resolve();
        else this.#socket.once('close', () => resolve());
      });
      this.#socket.end();
      setTimeout(() => this.#socket.destroy(), 1000).unref();
      if (line.startsWith('-ERR')) throw serverRefusal('QUIT', line.slice(4).trim(), this.#where, 'server');
      if (!line.startsWith('+OK')) throw this.#unexpected('QUIT', line);
      await closed;
      return { value: undefined };
    });
  }

  /** Drops the connection without QUIT: messages marked with DELE stay (RFC 1939 section 6). */
  close(): void {
    this.#closing = true;
    this.#fail(new Pop3Error('network', `The connection to ${this.#where} was closed by the client`));
  }

  // --- commands --------------------------------------------------------------------------

  #simple(line: string, name: string): Promise<void> {
    return this.#exclusive(async () => {
      await this.#command(line, 'protocol', name);
      return { value: undefined };
    });
  }

  #streamed(line: string, name: string): Promise<Readable> {
    return this.#exclusive(async () => {
      await this.#command(line, 'protocol', name);
      return this.#startBody(name);
    });
  }

  /** Runs FN after every earlier command, and holds later ones until its `hold` (a stream's end) settles. */
  #exclusive<T>(fn: () => Promise<{ value: T; hold?: Promise<void> }>): Promise<T> {
    const result = this.#queue.then(() => {
      if (this.#failure) throw this.#failure;
      return fn();
    });
    this.#queue = result
      .then(
        (r) => r.hold,
        () => undefined,
      )
      .catch(() => undefined);
    return result.then((r) => r.value);
  }

  /** Sends LINE and reads a `+OK` answer, returning its text; `-ERR` becomes an error of kind FALLBACK (or the response code's). */
  async #command(line: string, fallback: Pop3ErrorKind, name: string): Promise<string> {
    this.#send(line);
    return this.#status(name, fallback);
  }

  async #status(name: string, fallback: Pop3ErrorKind): Promise<string> {
    const reply = await this.#readLine(name);
    if (reply.startsWith('+OK')) return reply.slice(3).trim();
    if (reply.startsWith('-ERR')) throw serverRefusal(name, reply.slice(4).trim(), this.#where, fallback);
    throw this.#unexpected(name, reply);
  }

  /** SASL AUTH (RFC 5034) with an initial response; CANCEL answers any challenge after it (`*` aborts, `''` is XOAUTH2's empty reply). */
  async #authenticate(mechanism: string, response: Buffer, cancel: string): Promise<void> {
    const encoded = response.length > 0 ? response.toString('base64') : '=';
    let pending: string | null = null;
    if (`AUTH ${mechanism} ${encoded}`.length <= MAX_AUTH_LINE) {
      this.#send(`AUTH ${mechanism} ${encoded}`);
    } else {
      this.#send(`AUTH ${mechanism}`);
      pending = encoded;
    }
    let challenge = '';
    for (let round = 0; ; round++) {
      const line = await this.#readLine(`AUTH ${mechanism}`);
      if (line.startsWith('+OK')) return;
      if (line.startsWith('-ERR')) {
        const text = line.slice(4).trim() + (challenge ? ` (${challenge})` : '');
        throw serverRefusal(`AUTH ${mechanism}`, text, this.#where, 'auth');
      }
      if (!line.startsWith('+')) throw this.#unexpected(`AUTH ${mechanism}`, line);
      if (round > 3) {
        this.#send('*');
        throw new Pop3Error('protocol', `AUTH ${mechanism} at ${this.#where}: the server keeps sending challenges`, { serverText: line });
      }
      if (pending !== null) {
        this.#send(pending);
        pending = null;
      } else {
        // RFC 7628 section 3.2.2: an error status arrives as a challenge; answer it and the server fails the exchange.
        challenge = decodeChallenge(line.slice(1).trim());
        this.#send(cancel);
      }
    }
  }

  /** STLS (RFC 2595): refuses to go on in clear when the server does not offer it. */
  async #startTls(): Promise<void> {
    if (this.capabilities.size > 0 && !this.capabilities.has('STLS')) {
      throw new Pop3Error(
        'tls',
        `${this.#where} does not offer STLS, so the password would travel in clear: enable TLS on the server, or use security tls (usually port 995)`,
      );
    }
    await this.#exclusive(async () => {
      this.#send('STLS');
      const reply = await this.#readLine('STLS');
      if (!reply.startsWith('+OK')) {
        throw new Pop3Error('tls', `${this.#where} refused STLS (${reply}): enable TLS on the server, or use security tls (usually port 995)`, {
          serverText: reply,
        });
      }
      const raw = this.#socket;
      raw.removeAllListeners('data');
      raw.removeAllListeners('close');
      // RFC 2595 section 4: anything the server sent in clear after +OK is not to be trusted.
      this.#lines.clear();
      const secure = await upgradeSocket(raw, this.#opts, this.#timeoutMs);
      this.#socket = secure;
      this.#tlsActive = true;
      this.#attach(secure);
      return { value: undefined };
    });
    await this.capa();
  }

  // --- reading ---------------------------------------------------------------------------

  #attach(socket: net.Socket): void {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => this.#fail(socketError(err, this.#where, false)));
    socket.on('close', () => this.#fail(new Pop3Error('network', `${this.#where} closed the connection while we waited for ${this.#waitingFor}`)));
  }

  #onData(chunk: Buffer): void {
    if (this.#body) {
      this.#body.feed(chunk);
    } else {
      this.#lines.push(chunk);
      this.#deliverLine();
    }
    this.#armTimer();
  }

  #deliverLine(): void {
    if (!this.#lineWaiter) return;
    let line: Buffer | null;
    try {
      line = this.#lines.shift();
    } catch (err) {
      this.#fail(new Pop3Error('protocol', `${this.#where} sent a ${(err as Error).message} while we waited for ${this.#waitingFor}`));
      return;
    }
    if (line === null) return;
    const waiter = this.#lineWaiter;
    this.#lineWaiter = null;
    this.#armTimer();
    waiter.resolve(line);
  }

  #readLine(what: string): Promise<string> {
    if (this.#failure) return Promise.reject(this.#failure);
    this.#waitingFor = what === 'greeting' ? 'the greeting' : `the answer to ${what}`;
    return new Promise<Buffer>((resolve, reject) => {
      this.#lineWaiter = { resolve, reject };
      this.#deliverLine();
      this.#armTimer();
    }).then((line) => line.toString('utf8'));
  }

  /** The lines of a multi-line answer up to the terminating ".", dot-stuffing removed. For short listings only. */
  async #readListing(what: string): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.#readLine(what);
      if (line === '.') return lines;
      lines.push(line.startsWith('.') ? line.slice(1) : line);
    }
  }

  /** Hands the socket's bytes to a stream until the multi-line answer ends. */
  #startBody(name: string): { value: Readable; hold: Promise<void> } {
    const decoder = new DotDecoder();
    let discard = false;
    let settle!: () => void;
    const hold = new Promise<void>((resolve) => (settle = resolve));
    const stream = new Readable({
      highWaterMark: 64 * 1024,
      read: () => this.#resume(),
      destroy: (err, callback) => {
        if (!decoder.done) {
          // The reader gave up: keep reading to the terminator so the session stays in step.
          discard = true;
          this.#resume();
        }
        callback(err);
      },
    });
    this.#waitingFor = `the rest of the ${name} answer`;
    this.#body = {
      feed: (chunk) => {
        let result;
        try {
          result = decoder.write(chunk);
        } catch (err) {
          this.#fail(new Pop3Error('protocol', `${name} at ${this.#where}: ${(err as Error).message}`));
          return;
        }
        let full = false;
        if (!discard) for (const piece of result.out) full = !stream.push(piece) || full;
        if (result.rest !== null) {
          this.#body = null;
          if (!discard) stream.push(null);
          this.#resume();
          this.#lines.unshift(result.rest);
          settle();
          this.#deliverLine();
        } else if (full && !discard) {
          this.#pause();
        }
      },
      fail: (err) => {
        this.#body = null;
        if (!discard) stream.destroy(err);
        settle();
      },
    };
    const early = this.#lines.drain();
    if (early.length > 0) this.#body.feed(early);
    this.#armTimer();
    return { value: stream, hold };
  }

  #pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    this.#socket.pause();
    this.#armTimer();
  }

  #resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#socket.resume();
    this.#armTimer();
  }

  /** Runs the silence timer while the server owes us bytes and we are ready to take them. */
  #armTimer(): void {
    const waiting = !this.#failure && (this.#lineWaiter !== null || (this.#body !== null && !this.#paused));
    if (!waiting) {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = null;
    } else if (this.#timer) {
      this.#timer.refresh();
    } else {
      this.#timer = setTimeout(() => {
        this.#fail(
          new Pop3Error(
            'timeout',
            `No answer from ${this.#where} within ${this.#timeoutMs} ms while waiting for ${this.#waitingFor}` +
              (this.#waitingFor === 'the greeting' && this.#opts.security !== 'tls' ? ': if the port expects TLS on connect, use security tls' : ''),
          ),
        );
      }, this.#timeoutMs);
    }
  }

  #send(line: string): void {
    if (this.#failure) throw this.#failure;
    this.#socket.write(line + '\r\n');
  }

  #unexpected(command: string, line: string): Pop3Error {
    return new Pop3Error('protocol', `${command} at ${this.#where}: unexpected answer "${line.slice(0, 200)}"`, { serverText: line });
  }

  /** Ends the session after a failure: every waiter and every later command gets ERR. */
  #fail(err: Pop3Error): void {
    if (this.#failure) return;
    if (this.#closing && err.kind === 'network') {
      err = new Pop3Error('network', `The connection to ${this.#where} is closed`);
    }
    this.#failure = err;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const waiter = this.#lineWaiter;
    this.#lineWaiter = null;
    waiter?.reject(err);
    this.#body?.fail(err);
    this.#socket.destroy();
  }
}

/** Opens the TCP (or TLS-on-connect) socket, within the connect timeout, with errors classified. */
function openSocket(opts: Pop3Options): Promise<net.Socket> {
  const where = `${opts.host}:${opts.port}`;
  const timeoutMs = opts.connectTimeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const base = { host: opts.host, port: opts.port, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) };
    const socket = opts.security === 'tls' ? tls.connect({ ...base, ...tlsOptions(opts) }) : net.connect(base);
    const ready = opts.security === 'tls' ? 'secureConnect' : 'connect';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Pop3Error('timeout', `Connecting to ${where} took longer than ${timeoutMs} ms: check the host, port and firewall`));
    }, timeoutMs);
    let tcpUp = false;
    socket.once('connect', () => (tcpUp = true));
    socket.once(ready, () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(socketError(err, where, opts.security === 'tls' && tcpUp));
    });
  });
}

/** TLS over an open socket after STLS. */
function upgradeSocket(raw: net.Socket, opts: Pop3Options, timeoutMs: number): Promise<tls.TLSSocket> {
  const where = `${opts.host}:${opts.port}`;
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ socket: raw, ...tlsOptions(opts) });
    const timer = setTimeout(() => {
      secure.destroy();
      reject(new Pop3Error('timeout', `The TLS handshake with ${where} took longer than ${timeoutMs} ms`));
    }, timeoutMs);
    secure.once('secureConnect', () => {
      clearTimeout(timer);
      secure.removeAllListeners('error');
      resolve(secure);
    });
    secure.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      secure.destroy();
      reject(socketError(err, where, true));
    });
  });
}

/** The caller's TLS options, with the host for certificate checks and SNI (never an IP address, RFC 6066 section 3). */
function tlsOptions(opts: Pop3Options): tls.ConnectionOptions {
  return {
    host: opts.host,
    ...(net.isIP(opts.host) ? {} : { servername: opts.host }),
    ...opts.tls,
  };
}
