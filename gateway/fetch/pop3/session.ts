/**
 * The POP3 session under the client's commands (client.ts): the socket (TLS on connect, or
 * upgraded after STLS), answers read line by line or as a multi-line body stream, one command
 * at a time in call order, the silence timer, and the one failure that ends the session.
 */
import net from 'node:net';
import tls from 'node:tls';
import { Readable } from 'node:stream';
import { DotDecoder, LineBuffer } from './stream.js';
import { Pop3Error, serverRefusal, socketError, unexpectedAnswer, type Pop3ErrorKind } from './errors.js';

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

const MAX_LINE = 64 * 1024;
/**
 * Answers received ahead of their reader (pipelined RETRs) are held up to about this many bytes;
 * beyond it the socket is paused, so the rest waits in the network (TCP pushes back) and the
 * client can ask for many answers at once without holding them all in memory.
 */
const MAX_UNREAD = 256 * 1024;

/** An active multi-line response being read (RETR, TOP). */
interface BodyReader {
  feed(chunk: Buffer): void;
  fail(err: Pop3Error): void;
}

/** What a command gives back, and (a stream's end) what later commands must wait for. */
export interface CommandResult<T> {
  value: T;
  hold?: Promise<void>;
}

/** One connection to a POP3 server. Open it with {@link Pop3Session.open}. */
export class Pop3Session {
  /** `host:port`, for messages. */
  readonly where: string;

  #socket: net.Socket;
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
    this.where = `${opts.host}:${opts.port}`;
    this.#timeoutMs = opts.connectTimeoutMs ?? 30_000;
    this.#tlsActive = socket instanceof tls.TLSSocket;
    this.#attach(socket);
  }

  /** Connects (TCP, or TLS on connect), within the connect timeout. Rejects with a {@link Pop3Error}. */
  static async open(opts: Pop3Options): Promise<Pop3Session> {
    return new Pop3Session(await openSocket(opts), opts);
  }

  /** True once the connection is protected by TLS (on connect or after STLS). */
  get secure(): boolean {
    return this.#tlsActive;
  }

  /** The greeting, CAPA and STLS are done: from now on the command timeout applies. */
  connected(): void {
    this.#timeoutMs = this.#opts.commandTimeoutMs ?? 60_000;
  }

  /** Runs FN after every earlier command, and holds later ones until its `hold` (a stream's end) settles. */
  exclusive<T>(fn: () => Promise<CommandResult<T>>): Promise<T> {
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
  async command(line: string, fallback: Pop3ErrorKind, name: string): Promise<string> {
    this.send(line);
    return this.status(name, fallback);
  }

  /** Reads a `+OK` answer to NAME (or the greeting), returning its text; `-ERR` becomes an error of kind FALLBACK (or the response code's). */
  async status(name: string, fallback: Pop3ErrorKind): Promise<string> {
    const reply = await this.readLine(name);
    if (reply.startsWith('+OK')) return reply.slice(3).trim();
    if (reply.startsWith('-ERR')) throw serverRefusal(name, reply.slice(4).trim(), this.where, fallback);
    throw this.unexpected(name, reply);
  }

  /** Sends command LINES in one write (several: pipelined, RFC 2449); throws the session's failure once it has failed. */
  send(...lines: string[]): void {
    if (this.#failure) throw this.#failure;
    this.#socket.write(lines.join('\r\n') + '\r\n');
  }

  /** The next line the server sends, as the answer to WHAT (`greeting` for the greeting). */
  readLine(what: string): Promise<string> {
    if (this.#failure) return Promise.reject(this.#failure);
    this.#waitingFor = what === 'greeting' ? 'the greeting' : `the answer to ${what}`;
    return new Promise<Buffer>((resolve, reject) => {
      this.#lineWaiter = { resolve, reject };
      // A reader again: the bytes held back in the network may come.
      this.#resume();
      this.#deliverLine();
      this.#armTimer();
    }).then((line) => line.toString('utf8'));
  }

  /** The lines of a multi-line answer up to the terminating ".", dot-stuffing removed. For short listings only. */
  async readListing(what: string): Promise<string[]> {
    const lines: string[] = [];
    for (;;) {
      const line = await this.readLine(what);
      if (line === '.') return lines;
      lines.push(line.startsWith('.') ? line.slice(1) : line);
    }
  }

  /** An answer COMMAND does not expect. */
  unexpected(command: string, line: string): Pop3Error {
    return unexpectedAnswer(command, line, this.where);
  }

  /**
   * Sends LINE as the last command: the server hangs up after answering, which is expected, not
   * a failure to report. Gives the answer, and when the connection has closed.
   */
  async last(line: string, name: string): Promise<{ answer: string; closed: Promise<void> }> {
    this.#closing = true;
    this.send(line);
    const answer = await this.readLine(name);
    const closed = new Promise<void>((resolve) => {
      if (this.#socket.destroyed) resolve();
      else this.#socket.once('close', () => resolve());
    });
    this.#socket.end();
    setTimeout(() => this.#socket.destroy(), 1000).unref();
    return { answer, closed };
  }

  /** Ends the session with ERR, e.g. when an answer shows the client is out of step with the server; gives ERR back to throw. */
  abort(err: Pop3Error): Pop3Error {
    this.#fail(err);
    return err;
  }

  /** Drops the connection at once. */
  close(): void {
    this.#closing = true;
    this.#fail(new Pop3Error('network', `The connection to ${this.where} was closed by the client`));
  }

  /** After the server's `+OK` to STLS: TLS over the same connection (RFC 2595). */
  async startTls(): Promise<void> {
    const raw = this.#socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    // RFC 2595 section 4: anything the server sent in clear after +OK is not to be trusted.
    this.#lines.clear();
    const secure = await upgradeSocket(raw, this.#opts, this.#timeoutMs);
    this.#socket = secure;
    this.#tlsActive = true;
    this.#attach(secure);
  }

  /** Hands the socket's bytes to a stream until the multi-line answer to NAME ends. */
  body(name: string): CommandResult<Readable> {
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
    const reader: BodyReader = {
      feed: (chunk) => {
        let result;
        try {
          result = decoder.write(chunk);
        } catch (err) {
          this.#fail(new Pop3Error('protocol', `${name} at ${this.where}: ${(err as Error).message}`));
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
    this.#body = reader;
    // Bytes already received (pipelined answers): chunk by chunk, until this answer ends.
    while (this.#body === reader) {
      const chunk = this.#lines.take();
      if (!chunk) break;
      reader.feed(chunk);
    }
    this.#armTimer();
    return { value: stream, hold };
  }

  #attach(socket: net.Socket): void {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => this.#fail(socketError(err, this.where, false)));
    socket.on('close', () => this.#fail(new Pop3Error('network', `${this.where} closed the connection while we waited for ${this.#waitingFor}`)));
  }

  #onData(chunk: Buffer): void {
    if (this.#body) {
      this.#body.feed(chunk);
    } else {
      this.#lines.push(chunk);
      this.#deliverLine();
      if (this.#lines.size > MAX_UNREAD && !this.#lineWaiter) this.#pause();
    }
    this.#armTimer();
  }

  #deliverLine(): void {
    if (!this.#lineWaiter) return;
    let line: Buffer | null;
    try {
      line = this.#lines.shift();
    } catch (err) {
      this.#fail(new Pop3Error('protocol', `${this.where} sent a ${(err as Error).message} while we waited for ${this.#waitingFor}`));
      return;
    }
    if (line === null) return;
    const waiter = this.#lineWaiter;
    this.#lineWaiter = null;
    this.#armTimer();
    waiter.resolve(line);
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
            `No answer from ${this.where} within ${this.#timeoutMs} ms while waiting for ${this.#waitingFor}` +
              (this.#waitingFor === 'the greeting' && this.#opts.security !== 'tls' ? ': if the port expects TLS on connect, use security tls' : ''),
          ),
        );
      }, this.#timeoutMs);
    }
  }

  /** Ends the session after a failure: every waiter and every later command gets ERR. */
  #fail(err: Pop3Error): void {
    if (this.#failure) return;
    if (this.#closing && err.kind === 'network') {
      err = new Pop3Error('network', `The connection to ${this.where} is closed`);
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
