import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { chmod, rm } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Store } from '../storage/store.js';
import type { MessageMeta } from '../storage/message-meta.js';
import {
  deleteQuarantined, getQuarantined, listQuarantine, openQuarantinedContent, restoreQuarantined, type QuarantineRecord,
} from '../storage/quarantine.js';
import { listAliasStates, type AliasState, type AliasStatus } from '../storage/alias-state.js';
import { setAliasStatusInStore } from './fetch/alias-health.js';
import type { Retriever } from './fetch/retriever.js';
import type { Dispatcher } from './dispatch/dispatcher.js';
import type { Config } from './config/schema.js';
import type { Stage } from '../policy/stage.js';

/**
 * The running gateway holds LevelDB's lock on the data directory, so CLI commands that
 * read the store talk to it over a Unix socket in that directory instead. One request per
 * connection: a JSON line `{"method","args"}`; the reply is a JSON line, then, for
 * methods that return a stream, the raw bytes until the connection ends.
 */

/** What the CLI reads from a store, whether opened directly or through the gateway. */
export interface StoreReader {
  getMessage(id: string): Promise<MessageMeta | undefined>;
  listMessages(opts: { alias?: string; since?: Date; limit?: number }): Promise<MessageMeta[]>;
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

/** What the running gateway lends the control socket besides the store. */
export interface ControlContext {
  /** The running retriever, when there is one: admin status changes go through it. */
  retriever?: () => Retriever | undefined;
  /** The running dispatcher: queue commands and `mailgate send` go through it. */
  dispatcher?: Dispatcher;
  /** The gateway's configuration and policy, for messages submitted over the socket. */
  config?: Config;
  stages?: (department?: string) => readonly Stage[];
}

type Method = (store: Store, args: unknown[], ctx: ControlContext) => Promise<unknown> | Readable;

// Only these are reachable over the socket; later commands add theirs here.
const methods: Record<string, Method> = {
  getMessage: (store, [id]) => store.getMessage(String(id)),
  listMessages: (store, [opts]) => {
    const o = (opts ?? {}) as { alias?: string; since?: string; limit?: number };
    return store.listMessages({ ...o, since: o.since ? new Date(o.since) : undefined });
  },
  openRaw: (store, [id]) => store.openRaw(String(id)),
  listQuarantine: (store, [opts]) => listQuarantine(store, (opts ?? {}) as { messageId?: string }),
  getQuarantined: (store, [id]) => getQuarantined(store, String(id)),
  restoreQuarantined: (store, [id]) => restoreQuarantined(store, String(id)),
  deleteQuarantined: (store, [id]) => deleteQuarantined(store, String(id)),
  openQuarantinedContent: (store, [id]) => openQuarantinedContent(store, String(id)),
  listAliasStates: (store) => listAliasStates(store),
  setAliasStatus: async (store, [alias, status], ctx) => {
    if (status !== 'active' && status !== 'inactive') throw Object.assign(new Error(`status must be active or inactive, got ${String(status)}`), { code: 'BAD_REQUEST' });
    const name = String(alias);
    // The worker is the only writer of its alias's state while it runs: ask it, so the change takes effect now.
    return (await ctx.retriever?.()?.setStatus(name, status)) ?? setAliasStatusInStore(store, name, status);
  },
};

export const controlSocketPath = (dataDir: string) => path.join(dataDir, 'control.sock');

interface Reply {
  ok: boolean;
  stream?: boolean;
  result?: unknown;
  error?: { code?: string; message: string };
}

/** Serves the control socket for as long as the gateway runs. */
export async function startControlServer(store: Store, dataDir: string, logger: Logger, ctx: ControlContext = {}): Promise<{ close(): Promise<void> }> {
  const socketPath = controlSocketPath(dataDir);
  // A socket file left by a killed gateway would make listen() fail; we hold the store lock, so it is stale.
  await rm(socketPath, { force: true });
  const server: Server = createServer((socket) => handle(store, socket, logger, ctx));
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

function handle(store: Store, socket: Socket, logger: Logger, ctx: ControlContext): void {
  let buffered = '';
  socket.setEncoding('utf8');
  const onData = (text: string) => {
    buffered += text;
    const nl = buffered.indexOf('\n');
    if (nl < 0) {
      if (buffered.length > 64 * 1024) socket.destroy();
      return;
    }
    socket.off('data', onData);
    void answer(store, socket, buffered.slice(0, nl), ctx).catch((err: unknown) => {
      logger.warn({ err }, 'control request failed');
      socket.destroy();
    });
  };
  socket.on('data', onData);
  socket.on('error', () => socket.destroy());
}

async function answer(store: Store, socket: Socket, line: string, ctx: ControlContext): Promise<void> {
  const send = (reply: Reply) => socket.write(JSON.stringify(reply) + '\n');
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
    const result = method(store, request.args ?? [], ctx);
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
    send({ ok: false, error: { code: e.code, message: e.message ?? String(err) } });
  }
  socket.end();
}

async function firstChunk(stream: Readable): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.off('readable', onReadable);
      stream.off('error', reject);
      stream.off('end', onEnd);
    };
    const onReadable = () => {
      const chunk = stream.read() as Buffer | null;
      if (chunk === null && !stream.readableEnded) return;
      cleanup();
      resolve(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(null);
    };
    stream.on('readable', onReadable);
    stream.once('error', (err) => {
      cleanup();
      reject(err);
    });
    stream.once('end', onEnd);
  });
}

/** Error as the gateway reported it, keeping its code for the CLI's exit status. */
class RemoteError extends Error {
  constructor(readonly code: string | undefined, message: string) {
    super(message);
  }
}

/** A StoreReader that asks the running gateway. */
export class ControlClient implements StoreReader, QuarantineAccess, AliasStateAccess {
  constructor(private readonly socketPath: string) {}

  listAliasStates(): Promise<Record<string, AliasState>> {
    return this.call('listAliasStates', []) as Promise<Record<string, AliasState>>;
  }

  setAliasStatus(alias: string, status: AliasStatus): Promise<AliasState> {
    return this.call('setAliasStatus', [alias, status]) as Promise<AliasState>;
  }

  getMessage(id: string): Promise<MessageMeta | undefined> {
    return this.call('getMessage', [id]) as Promise<MessageMeta | undefined>;
  }

  listMessages(opts: { alias?: string; since?: Date; limit?: number }): Promise<MessageMeta[]> {
    return this.call('listMessages', [{ ...opts, since: opts.since?.toISOString() }]) as Promise<MessageMeta[]>;
  }

  listQuarantine(opts: { messageId?: string }): Promise<QuarantineRecord[]> {
    return this.call('listQuarantine', [opts]) as Promise<QuarantineRecord[]>;
  }

  getQuarantined(id: string): Promise<QuarantineRecord | undefined> {
    return this.call('getQuarantined', [id]) as Promise<QuarantineRecord | undefined>;
  }

  restoreQuarantined(id: string): Promise<QuarantineRecord> {
    return this.call('restoreQuarantined', [id]) as Promise<QuarantineRecord>;
  }

  deleteQuarantined(id: string): Promise<QuarantineRecord> {
    return this.call('deleteQuarantined', [id]) as Promise<QuarantineRecord>;
  }

  openQuarantinedContent(id: string): Readable {
    return this.stream('openQuarantinedContent', [id]);
  }

  openRaw(id: string): Readable {
    return this.stream('openRaw', [id]);
  }

  private stream(method: string, args: unknown[]): Readable {
    const out = new PassThrough();
    const socket = this.request(method, args);
    readReply(socket).then(
      (reply) => {
        if (!reply.ok) return out.destroy(new RemoteError(reply.error?.code, reply.error?.message ?? 'failed'));
        socket.pipe(out);
      },
      (err: Error) => out.destroy(err),
    );
    return out;
  }

  async close(): Promise<void> {}

  private request(method: string, args: unknown[]): Socket {
    const socket = createConnection(this.socketPath);
    socket.write(JSON.stringify({ method, args }) + '\n');
    return socket;
  }

  private async call(method: string, args: unknown[]): Promise<unknown> {
    const socket = this.request(method, args);
    const reply = await readReply(socket).finally(() => socket.destroy());
    if (!reply.ok) throw new RemoteError(reply.error?.code, reply.error?.message ?? 'failed');
    return reply.result;
  }
}

/** Reads the JSON reply line and leaves whatever follows it (a stream body) unread on the socket. */
function readReply(socket: Socket): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0);
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('end', onEnd);
    };
    const onData = (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      const nl = buffered.indexOf(0x0a);
      if (nl < 0) return;
      cleanup();
      socket.pause();
      const rest = buffered.subarray(nl + 1);
      if (rest.length) socket.unshift(rest);
      try {
        resolve(JSON.parse(buffered.subarray(0, nl).toString('utf8')) as Reply);
      } catch (err) {
        reject(err as Error);
      }
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onEnd = () => {
      cleanup();
      reject(new Error('the gateway closed the control connection without answering'));
    };
    socket.on('data', onData);
    socket.once('error', onError);
    socket.once('end', onEnd);
  });
}
