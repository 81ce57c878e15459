/**
 * The CLI's side of the control socket (control.ts): each method is one request to the
 * running gateway, which holds the store's lock.
 */
import { createConnection, type Socket } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { AliasState, AliasStatus, MessageMeta, QuarantineRecord, QueueEntry } from '../../storage/records.js';
import type { QueueAccess } from '../dispatch/dispatcher.js';
import type { AliasStateAccess, QuarantineAccess, SendAccess, SendRequest, SendResult, StoreReader } from './control.js';
import { FrameWriter, readReply, type Reply } from './control-wire.js';

/** Error as the gateway reported it, keeping its code for the CLI's exit status. */
class RemoteError extends Error {
  constructor(
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** A StoreReader that asks the running gateway. */
export class ControlClient implements StoreReader, QuarantineAccess, AliasStateAccess, QueueAccess, SendAccess {
  readonly #socketPath: string;

  constructor(socketPath: string) {
    this.#socketPath = socketPath;
  }

  listAliasStates(): Promise<Record<string, AliasState>> {
    return this.#call('listAliasStates', []) as Promise<Record<string, AliasState>>;
  }

  setAliasStatus(alias: string, status: AliasStatus): Promise<AliasState> {
    return this.#call('setAliasStatus', [alias, status]) as Promise<AliasState>;
  }

  getMessage(id: string): Promise<MessageMeta | undefined> {
    return this.#call('getMessage', [id]) as Promise<MessageMeta | undefined>;
  }

  listMessages(opts: { alias?: string; tag?: string; since?: Date; limit?: number }): Promise<MessageMeta[]> {
    return this.#call('listMessages', [{ ...opts, since: opts.since?.toISOString() }]) as Promise<MessageMeta[]>;
  }

  listQuarantine(opts: { messageId?: string }): Promise<QuarantineRecord[]> {
    return this.#call('listQuarantine', [opts]) as Promise<QuarantineRecord[]>;
  }

  getQuarantined(id: string): Promise<QuarantineRecord | undefined> {
    return this.#call('getQuarantined', [id]) as Promise<QuarantineRecord | undefined>;
  }

  restoreQuarantined(id: string): Promise<QuarantineRecord> {
    return this.#call('restoreQuarantined', [id]) as Promise<QuarantineRecord>;
  }

  deleteQuarantined(id: string): Promise<QuarantineRecord> {
    return this.#call('deleteQuarantined', [id]) as Promise<QuarantineRecord>;
  }

  openQuarantinedContent(id: string): Readable {
    return this.#stream('openQuarantinedContent', [id]);
  }

  openRaw(id: string): Readable {
    return this.#stream('openRaw', [id]);
  }

  listQueue(): Promise<QueueEntry[]> {
    return this.#call('listQueue', []) as Promise<QueueEntry[]>;
  }

  getQueueEntry(id: string): Promise<QueueEntry | undefined> {
    return this.#call('getQueueEntry', [id]) as Promise<QueueEntry | undefined>;
  }

  retryQueued(id?: string): Promise<number> {
    return this.#call('retryQueued', id === undefined ? [] : [id]) as Promise<number>;
  }

  dropQueued(id: string): Promise<QueueEntry> {
    return this.#call('dropQueued', [id]) as Promise<QueueEntry>;
  }

  /** Sends the request line, then the message in frames, then ends our side; the gateway answers once it is stored and queued. */
  async submit(request: SendRequest, message: Readable): Promise<SendResult> {
    const socket = this.#request('submit', [request]);
    let sendFailure: Error | undefined;
    // On a failure pipeline destroys the socket before the empty frame: the gateway stores nothing.
    const sending = pipeline(message, new FrameWriter(), socket).catch((err: Error) => {
      sendFailure = err;
    });
    let reply: Reply;
    try {
      reply = await readReply(socket);
    } catch (err) {
      socket.destroy();
      await sending;
      throw sendFailure ?? err; // the message could not be read: that is the cause, not the closed connection
    }
    socket.destroy(); // after an early refusal, this stops sending the rest
    if (!reply.ok) throw new RemoteError(reply.error?.code, reply.error?.message ?? 'failed');
    return reply.result as SendResult;
  }

  #stream(method: string, args: unknown[]): Readable {
    const out = new PassThrough();
    const socket = this.#request(method, args);
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

  #request(method: string, args: unknown[]): Socket {
    const socket = createConnection(this.#socketPath);
    socket.write(JSON.stringify({ method, args }) + '\n');
    return socket;
  }

  async #call(method: string, args: unknown[]): Promise<unknown> {
    const socket = this.#request(method, args);
    const reply = await readReply(socket).finally(() => socket.destroy());
    if (!reply.ok) throw new RemoteError(reply.error?.code, reply.error?.message ?? 'failed');
    return reply.result;
  }
}
