/**
 * Per-session and per-client limits for the SMTP listeners, the ones smtp-server does not
 * keep itself: connections per client address, recipients per message, errors per session,
 * failed logins per client address, a minimum data rate (slow senders cannot hold a slot
 * forever), and bare LF in command lines. Defaults follow Postfix (see schema.ts).
 */
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import type { SMTPServer, SMTPServerSession } from 'smtp-server';
import { errors, type MailgateError } from '../../lib/errors.js';
import { FailedLogins } from './failed-logins.js';

export interface SessionLimitSettings {
  max_connections_per_ip: number;
  max_recipients: number;
  max_errors: number;
  idle_timeout: number;
  min_data_rate: number;
  auth_failures_per_ip: number;
  auth_failure_window: number;
}

const LF = 0x0a;
const CR = 0x0d;

const keyOf = (address: string | undefined, port: number | undefined) => `${address ?? ''}|${port ?? 0}`;

interface Watched {
  socket: Socket;
  inData: boolean;
  lastByte: number;
  /** The start of the current command line, to see STARTTLS go by. */
  line: string;
  /** STARTTLS was sent: what follows on this socket is TLS, not lines. */
  tls: boolean;
}

interface Transfer {
  start: number;
  bytes: number;
  socket: Socket | undefined;
}

export class SessionGuard {
  readonly #limits: SessionLimitSettings;
  readonly #log: Logger;
  readonly #perIp = new Map<string, number>();
  readonly #errors = new Map<string, number>();
  readonly #failedLogins: FailedLogins;
  readonly #sockets = new Map<string, Watched>();
  readonly #transfers = new Set<Transfer>();
  #timer: NodeJS.Timeout | undefined;

  constructor(limits: SessionLimitSettings, logger: Logger) {
    this.#limits = limits;
    this.#log = logger;
    this.#failedLogins = new FailedLogins(limits);
  }

  /** Watches every connection of `server` for bare LF in command lines and for slow DATA. */
  attach(server: SMTPServer): void {
    // Before smtp-server's own handler, so the watch sees each chunk first.
    server.server.prependListener('connection', (socket: Socket) => this.#watch(socket, keyOf(socket.remoteAddress, socket.remotePort)));
    this.#timer ??= setInterval(() => this.#checkTransfers(), 1000);
    this.#timer.unref();
  }

  /** After STARTTLS the bytes to look at come from the TLS socket. */
  secured(socket: Socket, session: SMTPServerSession): void {
    const key = keyOf(session.remoteAddress, session.remotePort);
    const raw = this.#sockets.get(key);
    this.#watch(socket, key, raw?.socket);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #watch(socket: Socket, key: string, raw?: Socket): void {
    const watched: Watched = { socket: raw ?? socket, inData: false, lastByte: -1, line: '', tls: false };
    this.#sockets.set(key, watched);
    const onData = (chunk: Buffer) => {
      if (this.#sockets.get(key) !== watched || watched.tls) return socket.off('data', onData); // replaced after STARTTLS
      if (watched.inData) {
        watched.lastByte = chunk[chunk.length - 1] ?? -1;
        return;
      }
      for (let i = 0; i < chunk.length; i++) {
        const b = chunk[i]!;
        if (b !== LF) {
          if (watched.line.length < 16) watched.line += String.fromCharCode(b);
          continue;
        }
        if ((i > 0 ? chunk[i - 1] : watched.lastByte) !== CR) {
          // RFC 5321 2.3.8: lines end in CRLF. A bare LF in a command is how smuggling starts.
          this.#log.warn({ remote: socket.remoteAddress }, 'bare LF in an SMTP command; connection closed');
          const refusal = errors.bareLfInCommand();
          socket.end(`${refusal.responseCode} ${refusal.message}\r\n`);
          setTimeout(() => socket.destroy(), 1000).unref();
          return socket.off('data', onData);
        }
        // After STARTTLS the bytes are a TLS handshake: nothing more to read here.
        if (/^starttls\s*$/i.test(watched.line.replace(/\r$/, ''))) {
          watched.tls = true;
          return socket.off('data', onData);
        }
        watched.line = '';
      }
      watched.lastByte = chunk[chunk.length - 1] ?? -1;
    };
    socket.on('data', onData);
    socket.once('close', () => {
      if (this.#sockets.get(key) === watched) this.#sockets.delete(key);
    });
  }

  /** onConnect: refuses a client over its connection limit (Postfix `smtpd_client_connection_count_limit`). */
  connect(session: SMTPServerSession): MailgateError | undefined {
    const ip = session.remoteAddress;
    const count = (this.#perIp.get(ip) ?? 0) + 1;
    this.#perIp.set(ip, count);
    if (count > this.#limits.max_connections_per_ip) {
      this.#log.warn({ remote: ip, connections: count - 1 }, 'too many connections from one address; refused');
      return errors.tooManyConnections(ip);
    }
    return undefined;
  }

  /** onClose. */
  close(session: SMTPServerSession): void {
    const ip = session.remoteAddress;
    const count = (this.#perIp.get(ip) ?? 1) - 1;
    if (count > 0) this.#perIp.set(ip, count);
    else this.#perIp.delete(ip);
    this.#errors.delete(session.id);
  }

  /**
   * Counts a refusal in the session; at `max_errors` the refusal becomes a 421 and smtp-server
   * closes the connection (Postfix `smtpd_hard_error_limit`).
   */
  refuse(session: SMTPServerSession, err: MailgateError): MailgateError {
    const count = (this.#errors.get(session.id) ?? 0) + 1;
    this.#errors.set(session.id, count);
    if (count < this.#limits.max_errors) return err;
    this.#log.warn({ remote: session.remoteAddress, errors: count }, 'too many errors in one session; connection closed');
    return errors.tooManyErrors(err.message);
  }

  /** onRcptTo: past `max_recipients` the client must send the rest in another transaction (RFC 5321 4.5.3.1.8). */
  recipientLimit(session: SMTPServerSession): MailgateError | undefined {
    if (session.envelope.rcptTo.length < this.#limits.max_recipients) return undefined;
    return errors.tooManyRecipients(this.#limits.max_recipients);
  }

  /** True while the client's address has had too many failed logins lately. */
  authLocked(ip: string): boolean {
    return this.#failedLogins.locked(ip);
  }

  authFailed(ip: string): void {
    this.#failedLogins.failed(ip);
  }

  /**
   * onData: marks the session as in DATA (its lines are content, not commands) and returns
   * the counter of its bytes for the minimum data rate: a transfer may take `idle_timeout`
   * plus one second per `min_data_rate` bytes (Postfix `smtpd_min_data_rate` with
   * `smtpd_per_record_deadline`); past that the connection is closed.
   */
  data(stream: NodeJS.ReadableStream, session: SMTPServerSession): (bytes: number) => void {
    const watched = this.#sockets.get(keyOf(session.remoteAddress, session.remotePort));
    if (watched) watched.inData = true;
    const transfer: Transfer = { start: Date.now(), bytes: 0, socket: watched?.socket };
    this.#transfers.add(transfer);
    const finish = () => {
      this.#transfers.delete(transfer);
      if (watched) watched.inData = false;
    };
    stream.once('end', finish);
    stream.once('close', finish);
    stream.once('error', finish);
    return (bytes) => {
      transfer.bytes += bytes;
    };
  }

  #checkTransfers(): void {
    const now = Date.now();
    for (const t of this.#transfers) {
      const deadline = t.start + (this.#limits.idle_timeout + t.bytes / this.#limits.min_data_rate) * 1000;
      if (now <= deadline) continue;
      this.#transfers.delete(t);
      this.#log.warn(
        { remote: t.socket?.remoteAddress, bytes: t.bytes, seconds: Math.round((now - t.start) / 1000) },
        'DATA slower than min_data_rate; connection closed',
      );
      t.socket?.destroy();
    }
  }
}
