import { createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { chmod, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Store } from '../../storage/store.js';
import type { AliasState, AliasStatus, MessageMeta, QuarantineRecord } from '../../storage/records.js';
import { openQuarantinedContent, restoreQuarantined } from '../../policy/attachments/quarantine.js';
import { setAliasStatusInStore } from '../fetch/alias-health.js';
import type { Retriever } from '../fetch/retriever.js';
import type { Dispatcher, QueueAccess } from '../dispatch/dispatcher.js';
import { submitOutbound, type SubmitDeps } from '../dispatch/submit.js';
import { aliasOfAddress } from '../config/alias-addresses.js';
import type { Config } from '../config/schema.js';
import type { Stage } from '../../policy/chain/stage.js';
import { errors } from '../../lib/errors.js';
import type { Metrics } from '../../lib/metrics.js';
import { firstChunk, framedMessage, readLine, type Reply } from './control-wire.js';

/**
 * The running gateway holds LevelDB's lock on the data directory, so CLI commands that
 * read the store talk to it over a Unix socket in that directory instead. One request per
 * connection: a JSON line `{"method","args"}`; the reply is a JSON line, then, for
 * methods that return a stream, the raw bytes until the connection ends. `submit` is the
 * one request with a body: after its line, the message in frames (see FrameWriter), then
 * the end of the client's side.
 */

/** What the CLI reads from a store, whether opened directly or through the gateway. */
export interface StoreReader {
  getMessage(id: string): Promise<MessageMeta | undefined>;
  listMessages(opts: { alias?: string; tag?: string; since?: Date; limit?: number }): Promise<MessageMeta[]>;
  openRaw(id: string): Readable;
  close(): Promise<void>;
}

/** Quarantine management, whether the store is opened directly or through the gateway. */
export interface QuarantineAccess {
  listQuarantine(opts: { messageId?: string }): Promise<QuarantineRecord[]>;
  getQuarantined(id: string): Promise<QuarantineRecord | undefined>;
  restoreQuarantined(id: string): Promise<QuarantineRecord>;
  deleteQuarantined(id: string): Promise<QuarantineRecord>;
  /** The attachment's decoded content. */
  openQuarantinedContent(id: string): Readable;
}

/** Alias health (`mailgate aliases ...`), whether the store is opened directly or through the gateway. */
export interface AliasStateAccess {
  /** Every recorded alias state, by alias name. */
  listAliasStates(): Promise<Record<string, AliasState>>;
  /** An admin's change of status; a running retriever applies it at once. */
  setAliasStatus(alias: string, status: AliasStatus): Promise<AliasState>;
}

/** What `mailgate send` asks for. */
export interface SendRequest {
  /** Name of the alias the message is sent as. */
  alias: string;
  /** Envelope sender: an address of the alias. */
  mailFrom: string;
  /** Envelope recipients (To, Cc and Bcc). */
  rcptTo: string[];
}

/** A message `mailgate send` stored and queued. */
export interface SendResult {
  id: string;
  /** Who it goes to: the envelope recipients after automatic BCC or send_mail_to. */
  recipients: string[];
}

/** `mailgate send`, whether through the running gateway or on a stopped one's store. */
export interface SendAccess {
  submit(request: SendRequest, message: Readable): Promise<SendResult>;
}

/**
 * Stores and queues a message from `mailgate send`: the submission listener's path
 * (submitOutbound), with the command line as its source.
 */
export async function submitFromCli(deps: SubmitDeps & { metrics?: Metrics | undefined }, message: Readable, request: SendRequest): Promise<SendResult> {
  const { config } = deps;
  try {
    const alias = config.alias.find((a) => a.name === request.alias);
    if (!alias) throw Object.assign(new Error(`no alias named "${request.alias}" in the gateway's configuration`), { code: 'UNKNOWN_ALIAS' });
    if (aliasOfAddress(config, request.mailFrom) !== alias) throw errors.sendAsDenied(request.mailFrom);
    const { meta, entry } = await submitOutbound(deps, message, {
      alias,
      envelope: { mailFrom: request.mailFrom, rcptTo: request.rcptTo },
      source: { kind: 'cli', alias: alias.name },
      maxSize: config.submission.max_message_size ?? config.smtp.max_message_size,
    });
    // Counted as the submission listener counts, under the source the metadata names (`cli`).
    deps.metrics?.inc('mailgate_messages_total', { source: 'cli', outcome: 'queued' });
    return { id: meta.id, recipients: entry.recipients.map((r) => r.address) };
  } catch (err) {
    deps.metrics?.inc('mailgate_messages_total', { source: 'cli', outcome: 'refused' });
    throw err;
  }
}

/** What the running gateway lends the control socket besides the store. */
export interface ControlContext {
  /** The running retriever, when there is one: admin status changes go through it. */
  retriever?: () => Retriever | undefined;
  /** The running dispatcher: queue commands and `mailgate send` go through it. */
  dispatcher?: Dispatcher;
  /** The gateway's configuration and policy, for messages submitted over the socket. */
  config?: Config;
  stages?: (department?: string) => readonly Stage[];
  /** The gateway's counters: `mailgate send` counts in them as the listeners do. */
  metrics?: Metrics;
}

/** The rest of a request besides its line: the connection (a body follows `submit`), and where to log. */
interface RequestIo {
  socket: Socket;
  logger: Logger;
}

type Method = (store: Store, args: unknown[], ctx: ControlContext, io: RequestIo) => Promise<unknown> | Readable;

/** Something the gateway lends the socket (ControlContext), or an error saying this gateway did not. */
function lent<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw Object.assign(new Error(`this gateway offers no ${what} on its control socket`), { code: 'NOT_AVAILABLE' });
  return value;
}

const queueOf = (ctx: ControlContext): QueueAccess => lent(ctx.dispatcher, 'dispatcher');

// Only these are reachable over the socket; later commands add theirs here.
const methods: Record<string, Method> = {
  getMessage: (store, [id]) => store.getMessage(String(id)),
  listMessages: (store, [opts]) => {
    const o = (opts ?? {}) as { alias?: string; tag?: string; since?: string; limit?: number };
    return store.listMessages({ ...o, since: o.since ? new Date(o.since) : undefined });
  },
  openRaw: (store, [id]) => store.openRaw(String(id)),
  listQuarantine: (store, [opts]) => store.listQuarantine((opts ?? {}) as { messageId?: string }),
  getQuarantined: (store, [id]) => store.getQuarantined(String(id)),
  restoreQuarantined: (store, [id]) => restoreQuarantined(store, String(id)),
  deleteQuarantined: (store, [id]) => store.deleteQuarantined(String(id)),
  openQuarantinedContent: (store, [id]) => openQuarantinedContent(store, String(id)),
  listAliasStates: (store) => store.listAliasStates(),
  setAliasStatus: async (store, [alias, status], ctx) => {
    if (status !== 'active' && status !== 'inactive')
      throw Object.assign(new Error(`status must be active or inactive, got ${String(status)}`), { code: 'BAD_REQUEST' });
    const name = String(alias);
    // The worker is the only writer of its alias's state while it runs: ask it, so the change takes effect now.
    return (await ctx.retriever?.()?.setStatus(name, status)) ?? setAliasStatusInStore(store, name, status);
  },
  listQueue: (_store, _args, ctx) => queueOf(ctx).listQueue(),
  getQueueEntry: (_store, [id], ctx) => queueOf(ctx).getQueueEntry(String(id)),
  // JSON turns a missing id into null: that is "every entry".
  retryQueued: (_store, [id], ctx) => queueOf(ctx).retryQueued(id === undefined || id === null ? undefined : String(id)),
  dropQueued: (_store, [id], ctx) => queueOf(ctx).dropQueued(String(id)),
  submit: async (store, [args], ctx, { socket, logger }) => {
    const request = sendRequest(args);
    const deps = {
      store,
      logger,
      config: lent(ctx.config, 'configuration'),
      stages: lent(ctx.stages, 'policy'),
      dispatcher: ctx.dispatcher,
      metrics: ctx.metrics,
    };
    const sent = await submitFromCli(deps, framedMessage(socket), request).catch((err: unknown) => {
      const e = err as { code?: string; message?: string };
      logger.info({ outcome: 'refused', reason: e.code, source: 'cli', alias: request.alias }, e.message ?? String(err));
      throw err;
    });
    logger.info({ msg_id: sent.id, outcome: 'queued', alias: request.alias, source: 'cli', rcpt: sent.recipients }, 'message queued by mailgate send');
    return sent;
  },
};

/** The `submit` request as the client sent it, checked: it comes over a socket. */
function sendRequest(value: unknown): SendRequest {
  const r = (value ?? {}) as Partial<SendRequest>;
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string');
  if (typeof r.alias !== 'string' || typeof r.mailFrom !== 'string' || !strings(r.rcptTo)) {
    throw Object.assign(new Error('submit needs {alias, mailFrom, rcptTo: [at least one address]}'), { code: 'BAD_REQUEST' });
  }
  return { alias: r.alias, mailFrom: r.mailFrom, rcptTo: r.rcptTo };
}

export const controlSocketPath = (dataDir: string) => path.join(dataDir, 'control.sock');

/** Serves the control socket for as long as the gateway runs. */
export async function startControlServer(store: Store, dataDir: string, logger: Logger, ctx: ControlContext = {}): Promise<{ close(): Promise<void> }> {
  const socketPath = controlSocketPath(dataDir);
  // A socket file left by a killed gateway would make listen() fail; we hold the store lock, so it is stale.
  await rm(socketPath, { force: true });
  // Half-open: a `submit` client ends its side after the message and still waits for the reply.
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => handle(store, socket, logger, ctx));
  server.listen(socketPath);
  await once(server, 'listening');
  await chmod(socketPath, 0o600); // the store's contents are as private as the data directory
  return {
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(socketPath, { force: true });
    },
  };
}

/** Longest request line accepted: requests are small; anything longer is not a client of ours. */
const MAX_REQUEST_LINE = 64 * 1024;

function handle(store: Store, socket: Socket, logger: Logger, ctx: ControlContext): void {
  socket.on('error', () => socket.destroy());
  void readLine(socket, MAX_REQUEST_LINE).then(
    (line) =>
      answer(store, socket, line.toString('utf8'), ctx, logger).catch((err: unknown) => {
        logger.warn({ err }, 'control request failed');
        socket.destroy();
      }),
    () => socket.destroy(),
  );
}

async function answer(store: Store, socket: Socket, line: string, ctx: ControlContext, logger: Logger): Promise<void> {
  const send = (reply: Reply) => socket.write(JSON.stringify(reply) + '\n');
  try {
    let request: { method?: string; args?: unknown[] };
    try {
      request = JSON.parse(line) as typeof request;
    } catch {
      send({ ok: false, error: { code: 'BAD_REQUEST', message: 'request is not JSON' } });
      return void socket.end();
    }
    const method = request.method ? methods[request.method] : undefined;
    if (!method) {
      send({ ok: false, error: { code: 'BAD_REQUEST', message: `unknown method ${request.method}` } });
      return void socket.end();
    }
    try {
      const result = method(store, request.args ?? [], ctx, { socket, logger });
      if (result instanceof Readable) {
        // Read the first chunk before promising a stream, so "not found" is an error reply, not a truncated body.
        const first = await firstChunk(result);
        send({ ok: true, stream: true });
        if (first) socket.write(first);
        result.pipe(socket);
        return;
      }
      send({ ok: true, result: await result });
    } catch (err) {
      const e = err as { code?: string; message?: string };
      send({ ok: false, error: { ...(e.code ? { code: e.code } : {}), message: e.message ?? String(err) } });
    }
    socket.end();
  } finally {
    // Read on to the client's end (a body no method read included), so the connection closes.
    socket.resume();
  }
}

export { ControlClient } from './control-client.js';
